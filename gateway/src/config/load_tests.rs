use std::fs;
use std::os::unix::fs::PermissionsExt as _;

use super::*;

const KEY_1: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const KEY_2: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
const KEY_3: &str = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";

/// A fresh folder for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let path =
            std::env::temp_dir().join(format!("gateway-config-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn good() -> String {
    format!(
        r#"# the VPS
[interface]
private_key = "{KEY_1}"
listen_port = 51820
addresses = ["10.8.0.1/24", "fd00::1/64"]
mtu = 1420
table = "off"

[dataplane]
xdp_mode = "tc"
underlays = ["eth0"]
max_peers = 64

[metrics]
listen = "9100"

[[peer]]
name = "phone"
public_key = "{KEY_2}"
allowed_ips = ["10.8.0.2/32"]
persistent_keepalive = 25

[[peer]]
public_key = "{KEY_3}"
endpoint = "192.0.2.7:51820"
allowed_ips = ["10.8.0.3", "0.0.0.0/0"]

[[forward]]
protocol = "tcp"
ports = "2222"
to = "10.8.0.2:22"
"#
    )
}

/// The error `text` (as /etc/gateway/wg0.toml) gets, checked to be one line.
fn error(text: &str) -> String {
    let message = parse(Path::new("/etc/gateway/wg0.toml"), text).unwrap_err().to_string();
    assert!(!message.contains('\n'), "not one line: {message}");
    message
}

#[test]
fn a_whole_file_is_read_into_what_the_daemon_applies() {
    let config = parse(Path::new("/etc/gateway/wg0.toml"), &good()).unwrap();
    assert_eq!(config.device.private_key, Some(Key::from_base64(KEY_1).unwrap().clamped()));
    assert_eq!(config.device.listen_port, Some(51820));
    assert_eq!(config.device.fwmark, None);
    assert_eq!(config.device.peers.len(), 2);
    let phone = &config.device.peers[0];
    assert_eq!(phone.public_key, Key::from_base64(KEY_2).unwrap());
    assert_eq!(phone.persistent_keepalive, Some(25));
    assert_eq!(phone.endpoint, None);
    assert_eq!(config.device.peers[1].endpoint.as_deref(), Some("192.0.2.7:51820"));
    assert_eq!(
        config.device.peers[1].allowed_ips,
        vec!["10.8.0.3/32".parse::<IpNet>().unwrap(), "0.0.0.0/0".parse().unwrap()]
    );
    assert_eq!(config.peer_names.get(&phone.public_key).map(String::as_str), Some("phone"));
    assert_eq!(config.peer_names.len(), 1);
    assert_eq!(config.addresses.len(), 2);
    assert_eq!(config.mtu, Some(1420));
    assert_eq!(config.table, Table::Off);
    assert_eq!(config.dataplane.xdp_mode, super::super::values::XdpMode::Tc);
    assert!(config.dataplane.ebpf && config.dataplane.fast_forward);
    assert_eq!(config.dataplane.max_peers, Some(64));
    assert_eq!(config.metrics, Some("127.0.0.1:9100".parse().unwrap()));
    assert_eq!(config.forwards.len(), 1);
}

#[test]
fn the_least_file_is_an_interface_section() {
    let config = parse(Path::new("wg0.toml"), "[interface]\n").unwrap();
    assert_eq!(config.device.private_key, None);
    assert!(config.device.peers.is_empty() && config.forwards.is_empty());
    assert_eq!(config.table, Table::Auto);
    assert_eq!(config.metrics, None);
    assert_eq!(error(""), "/etc/gateway/wg0.toml: interface: missing");
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let text = good().replace("mtu = 1420", "mtu = 1420\nlisten_prot = 1");
    assert_eq!(
        error(&text),
        "/etc/gateway/wg0.toml:7: interface.listen_prot: unknown field `listen_prot`, expected \
         one of `private_key`, `private_key_file`, `listen_port`, `fwmark`, `addresses`, `mtu`, \
         `table`, `include`"
    );
    let text = good().replace("[metrics]", "[metric]");
    assert!(error(&text).starts_with("/etc/gateway/wg0.toml:14: metric: unknown field `metric`"));
}

#[test]
fn a_wrong_type_is_named_with_its_line() {
    let text = good().replace("listen_port = 51820", "listen_port = \"51820\"");
    assert_eq!(
        error(&text),
        "/etc/gateway/wg0.toml:4: interface.listen_port: invalid type: string \"51820\", \
         expected u16"
    );
    let text = good().replace("listen_port = 51820", "listen_port = 70000");
    assert_eq!(
        error(&text),
        "/etc/gateway/wg0.toml:4: interface.listen_port: invalid value: integer `70000`, \
         expected u16"
    );
    let text = good().replace("persistent_keepalive = 25", "persistent_keepalive = true");
    assert_eq!(
        error(&text),
        "/etc/gateway/wg0.toml:21: peer[0].persistent_keepalive: invalid type: boolean `true`, \
         expected u16"
    );
}

#[test]
fn a_bad_key_is_named_with_its_line_and_peer() {
    let text = good().replace(&format!("public_key = \"{KEY_3}\""), "public_key = \"abc\"");
    assert_eq!(
        error(&text),
        "/etc/gateway/wg0.toml:24: peer[1].public_key: not a base64 key (a key is 44 characters \
         long, this is 3)"
    );
    let text = good().replace(KEY_1, "not-a-key!");
    assert!(
        error(&text).starts_with("/etc/gateway/wg0.toml:3: interface.private_key: not a base64"),
        "{}",
        error(&text)
    );
}

#[test]
fn a_bad_cidr_or_endpoint_is_named_with_its_line() {
    let text = good().replace("\"10.8.0.2/32\"", "\"10.8.0.2/33\"");
    assert_eq!(
        error(&text),
        "/etc/gateway/wg0.toml:20: peer[0].allowed_ips[0]: `10.8.0.2/33' is not an address with \
         an optional /prefix"
    );
    let text = good().replace("192.0.2.7:51820", "192.0.2.7");
    assert_eq!(
        error(&text),
        "/etc/gateway/wg0.toml:25: peer[1].endpoint: `192.0.2.7' is not host:port or [IPv6]:port"
    );
    let text = good().replace("mtu = 1420", "mtu = 20");
    assert_eq!(
        error(&text),
        "/etc/gateway/wg0.toml:6: interface.mtu: 20 is not an MTU from 68 to 65535"
    );
    let text = good().replace("listen = \"9100\"", "listen = \"nowhere:x\"");
    assert!(
        error(&text).starts_with("/etc/gateway/wg0.toml:15: metrics.listen: "),
        "{}",
        error(&text)
    );
}

#[test]
fn a_peer_twice_is_refused_naming_both() {
    let text = good().replace(KEY_3, KEY_2);
    assert_eq!(
        error(&text),
        "/etc/gateway/wg0.toml:24: peer[1].public_key: the same peer as peer[0] (line 19)"
    );
    let text = good().replace(
        &format!("public_key = \"{KEY_3}\""),
        &format!("name = \"phone\"\npublic_key = \"{KEY_3}\""),
    );
    assert_eq!(
        error(&text),
        "/etc/gateway/wg0.toml:23: peer[1].name: `phone' names another peer already"
    );
}

#[test]
fn a_default_route_needs_a_table_that_is_not_auto() {
    let text = good().replace("table = \"off\"\n", "");
    assert_eq!(
        error(&text),
        "/etc/gateway/wg0.toml: interface.table: a peer's allowed_ips hold the default route \
         0.0.0.0/0: gatewayd does not set up policy routing; set table = \"off\" or a table number"
    );
    let text = good().replace("table = \"off\"", "table = 1234");
    assert_eq!(parse(Path::new("wg0.toml"), &text).unwrap().table, Table::Named("1234".into()));
}

#[test]
fn forwards_are_checked_as_the_cli_checks_them() {
    let text = good().replace("ports = \"2222\"", "ports = \"70000\"");
    assert_eq!(
        error(&text),
        "/etc/gateway/wg0.toml:28: forward[0]: '70000' is not a port: ports are 1 to 65535"
    );
    let text = format!(
        "{}\n[[forward]]\nprotocol = \"tcp\"\nports = \"2000-3000\"\nto = \"10.8.0.3\"\n",
        good()
    );
    assert_eq!(
        error(&text),
        "/etc/gateway/wg0.toml:33: forward[1]: tcp 2000-3000 overlaps the forward 'tcp 2222 --to 10.8.0.2:22'"
    );
}

#[test]
fn a_missing_file_is_one_line() {
    let scratch = Scratch::new("missing");
    let path = scratch.0.join("wg9.toml");
    assert_eq!(load(&path).unwrap_err().to_string(), format!("{}: no such file", path.display()));
}

#[test]
fn key_files_are_read_beside_the_file_and_checked() {
    let scratch = Scratch::new("key-files");
    scratch.write("wg0.key", &format!("{KEY_1}\n"));
    scratch.write("psk", KEY_3);
    let text = format!(
        "[interface]\nprivate_key_file = \"wg0.key\"\n[[peer]]\npublic_key = \"{KEY_2}\"\n\
         preshared_key_file = \"psk\"\n"
    );
    let path = scratch.write("wg0.toml", &text);
    let config = load(&path).unwrap();
    assert_eq!(config.device.private_key, Some(Key::from_base64(KEY_1).unwrap().clamped()));
    assert_eq!(config.device.peers[0].preshared_key, Some(Key::from_base64(KEY_3).unwrap()));

    let missing = scratch.write("wg1.toml", &text.replace("wg0.key", "absent.key"));
    assert_eq!(
        load(&missing).unwrap_err().to_string(),
        format!(
            "{}:2: interface.private_key_file: cannot read {}: No such file or directory (os \
             error 2)",
            missing.display(),
            scratch.0.join("absent.key").display()
        )
    );
    // Root reads any file: an unreadable key is a key file that is a folder, for everyone.
    fs::create_dir(scratch.0.join("folder.key")).unwrap();
    fs::set_permissions(scratch.0.join("folder.key"), fs::Permissions::from_mode(0o700)).unwrap();
    let folder = scratch.write("wg2.toml", &text.replace("wg0.key", "folder.key"));
    assert!(
        load(&folder).unwrap_err().to_string().starts_with(&format!(
            "{}:2: interface.private_key_file: cannot read ",
            folder.display()
        ))
    );
    scratch.write("bad.key", "hello\n");
    let bad = scratch.write("wg3.toml", &text.replace("wg0.key", "bad.key"));
    assert_eq!(
        load(&bad).unwrap_err().to_string(),
        format!(
            "{}:2: interface.private_key_file: {} does not hold a base64 key (a key is 44 \
             characters long, this is 5)",
            bad.display(),
            scratch.0.join("bad.key").display()
        )
    );
    let both = scratch.write(
        "wg4.toml",
        &text.replace("[interface]\n", &format!("[interface]\nprivate_key = \"{KEY_1}\"\n")),
    );
    assert_eq!(
        load(&both).unwrap_err().to_string(),
        format!(
            "{}:3: interface.private_key_file: set private_key or private_key_file, not both",
            both.display()
        )
    );
}

#[test]
fn an_include_adds_a_wg_quick_files_keys_and_peers() {
    let scratch = Scratch::new("include");
    scratch.write(
        "wg0.conf",
        &format!("[Interface]\nPrivateKey = {KEY_1}\nListenPort = 51000\n[Peer]\nPublicKey = {KEY_3}\nAllowedIPs = 10.8.0.3/32\n"),
    );
    let text = format!("[interface]\ninclude = \"wg0.conf\"\n[[peer]]\npublic_key = \"{KEY_2}\"\n");
    let path = scratch.write("wg0.toml", &text);
    let config = load(&path).unwrap();
    assert_eq!(config.device.listen_port, Some(51000));
    assert!(config.device.private_key.is_some());
    let keys: Vec<Key> = config.device.peers.iter().map(|p| p.public_key).collect();
    assert_eq!(keys, [Key::from_base64(KEY_2).unwrap(), Key::from_base64(KEY_3).unwrap()]);

    scratch.write("dns.conf", "[Interface]\nDNS = 1.1.1.1\n");
    let dns = scratch.write("wg1.toml", &text.replace("wg0.conf", "dns.conf"));
    assert_eq!(
        load(&dns).unwrap_err().to_string(),
        format!(
            "{}:2: interface.include: {} sets DNS: an included file may hold only PrivateKey, \
             ListenPort, FwMark and [Peer]s (set the rest in this file)",
            dns.display(),
            scratch.0.join("dns.conf").display()
        )
    );
    let twice = scratch.write("wg2.toml", &text.replace(KEY_2, KEY_3));
    assert_eq!(
        load(&twice).unwrap_err().to_string(),
        format!(
            "{}:2: interface.include: {} [Peer] 1 is the same peer as peer[0] (line 4)",
            twice.display(),
            scratch.0.join("wg0.conf").display()
        )
    );
}
