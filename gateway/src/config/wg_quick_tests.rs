use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::*;

const PRIVATE: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
const PUBLIC: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
const PSK: &str = "FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE=";

fn parsed(text: &str) -> QuickConfig {
    parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn error(text: &str) -> ConfigError {
    parse(text).expect_err("accepted a bad configuration")
}

#[test]
fn every_key() {
    let config = parsed(&format!(
        "[Interface]\n\
         PrivateKey = {PRIVATE}\n\
         ListenPort = 51820\n\
         FwMark = 0x1234\n\
         Address = 10.0.0.1/24, fd00::1/64\n\
         Address = 10.0.1.1\n\
         DNS = 1.1.1.1, 2606:4700:4700::1111, example.com\n\
         MTU = 1380\n\
         Table = 1234\n\
         PreUp = echo pre-up %i\n\
         PostUp = echo post-up %i; echo again\n\
         PreDown = echo pre-down\n\
         PostDown = echo post-down\n\
         SaveConfig = true\n\
         \n\
         [Peer]\n\
         PublicKey = {PUBLIC}\n\
         PresharedKey = {PSK}\n\
         AllowedIPs = 10.0.0.2/32, 192.168.7.9/24\n\
         AllowedIPs = fd00::2/128\n\
         Endpoint = [2001:db8::1]:51820\n\
         PersistentKeepalive = 25\n"
    ));
    assert_eq!(
        config.addresses,
        ["10.0.0.1/24", "fd00::1/64", "10.0.1.1/32"].map(|a| a.parse::<IpNet>().unwrap()).to_vec()
    );
    assert_eq!(
        config.dns.servers,
        vec!["1.1.1.1".parse::<IpAddr>().unwrap(), "2606:4700:4700::1111".parse().unwrap()]
    );
    assert_eq!(config.dns.search, vec!["example.com".to_string()]);
    assert_eq!(config.mtu, Some(1380));
    assert_eq!(config.table, Table::Named("1234".into()));
    assert_eq!(config.pre_up, vec!["echo pre-up %i".to_string()]);
    assert_eq!(config.post_up, vec!["echo post-up %i; echo again".to_string()]);
    assert_eq!(config.pre_down, vec!["echo pre-down".to_string()]);
    assert_eq!(config.post_down, vec!["echo post-down".to_string()]);
    assert!(config.save_config);
    let device = &config.device;
    assert_eq!(device.private_key, Some(Key::from_base64(PRIVATE).unwrap().clamped()));
    assert_eq!(device.listen_port, Some(51820));
    assert_eq!(device.fwmark, Some(0x1234));
    assert_eq!(device.peers.len(), 1);
    let peer = &device.peers[0];
    assert_eq!(peer.public_key, Key::from_base64(PUBLIC).unwrap());
    assert_eq!(peer.preshared_key, Some(Key::from_base64(PSK).unwrap()));
    // AllowedIPs are prefixes: host bits go, as the kernel masks them.
    assert_eq!(
        peer.allowed_ips,
        ["10.0.0.2/32", "192.168.7.0/24", "fd00::2/128"]
            .map(|a| a.parse::<IpNet>().unwrap())
            .to_vec()
    );
    assert_eq!(peer.endpoint.as_deref(), Some("[2001:db8::1]:51820"));
    assert_eq!(peer.persistent_keepalive, Some(25));
}

#[test]
fn defaults_when_keys_are_absent() {
    let config = parsed("[Interface]\n");
    assert!(config.addresses.is_empty());
    assert!(!config.dns.is_configured());
    assert_eq!(config.mtu, None);
    assert_eq!(config.table, Table::Auto);
    assert!(!config.save_config);
    assert_eq!(config.device, DeviceConfig::default());
}

#[test]
fn keys_and_sections_are_case_insensitive() {
    let config = parsed(&format!(
        "[interface]\nprivatekey={PRIVATE}\naddress=10.0.0.1/24\nmtu=1400\nTABLE=OFF\n\
         saveconfig=TRUE\n[PEER]\npublickey={PUBLIC}\nallowedips=0.0.0.0/0\n\
         persistentkeepalive=off\n"
    ));
    assert_eq!(config.mtu, Some(1400));
    assert_eq!(config.table, Table::Off);
    assert!(config.save_config);
    assert_eq!(config.device.peers[0].persistent_keepalive, Some(0));
}

#[test]
fn comments_blank_lines_and_whitespace() {
    let config = parsed(&format!(
        "# a whole-line comment\n\
         \n\
         [ Interface ]   # trailing comment\n\
         \tAddress   =   10.0.0.1/24   # the tunnel address\n\
         PostUp = touch /tmp/%i.up # not part of the command\n\
         [Peer]\n  PublicKey = {PUBLIC}\n"
    ));
    assert_eq!(config.addresses, vec!["10.0.0.1/24".parse::<IpNet>().unwrap()]);
    assert_eq!(config.post_up, vec!["touch /tmp/%i.up".to_string()]);
    assert_eq!(config.device.peers.len(), 1);
}

#[test]
fn several_peers_in_order() {
    let other = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
    let config = parsed(&format!(
        "[Interface]\n[Peer]\nPublicKey = {PUBLIC}\n[Peer]\nPublicKey = {other}\n\
         Endpoint = vpn.example.com:443\n"
    ));
    let keys: Vec<String> =
        config.device.peers.iter().map(|peer| peer.public_key.to_base64()).collect();
    assert_eq!(keys, vec![PUBLIC.to_string(), other.to_string()]);
    assert_eq!(config.device.peers[1].endpoint.as_deref(), Some("vpn.example.com:443"));
}

#[test]
fn table_values() {
    for (value, table) in [
        ("auto", Table::Auto),
        ("Auto", Table::Auto),
        ("off", Table::Off),
        ("51820", Table::Named("51820".into())),
        ("main", Table::Named("main".into())),
    ] {
        assert_eq!(parsed(&format!("[Interface]\nTable = {value}\n")).table, table, "{value}");
    }
}

#[test]
fn fwmark_forms() {
    for (value, mark) in [("off", 0), ("0", 0), ("51820", 51820), ("0xca6c", 0xca6c)] {
        let config = parsed(&format!("[Interface]\nFwMark = {value}\n"));
        assert_eq!(config.device.fwmark, Some(mark), "{value}");
    }
}

#[test]
fn setconf_request_replaces_peers_and_their_allowed_ips() {
    let config = parsed(&format!(
        "[Interface]\nPrivateKey = {PRIVATE}\nListenPort = 1234\n\
         [Peer]\nPublicKey = {PUBLIC}\nAllowedIPs = 10.0.0.2/32\nEndpoint = 192.0.2.1:51820\n"
    ));
    let update = config
        .device
        .to_update(|text| text.parse::<SocketAddr>().map_err(|e| e.to_string()))
        .unwrap();
    assert!(update.replace_peers);
    assert_eq!(update.listen_port, Some(1234));
    assert_eq!(update.fwmark, None);
    let peer = &update.peers[0];
    assert_eq!(peer.endpoint, Some(SocketAddr::new(Ipv4Addr::new(192, 0, 2, 1).into(), 51820)));
    assert_eq!(
        peer.allowed_ips,
        vec![AllowedIpChange::RemoveAll, AllowedIpChange::Add("10.0.0.2/32".parse().unwrap())]
    );
}

#[test]
fn bad_values_name_the_line_and_the_problem() {
    let cases = [
        ("[Interface]\nAddress = 10.0.0.300/24\n", 2, "bad Address `10.0.0.300/24'"),
        ("[Interface]\nAddress = 10.0.0.1/33\n", 2, "bad Address `10.0.0.1/33'"),
        ("[Interface]\nMTU = big\n", 2, "bad MTU `big'"),
        ("[Interface]\nMTU = 70000\n", 2, "bad MTU `70000'"),
        ("[Interface]\nTable = a b\n", 2, "bad Table `a b'"),
        ("[Interface]\nSaveConfig = yes\n", 2, "bad SaveConfig `yes'"),
        ("[Interface]\nDNS = 1.2.3\n", 2, "bad DNS server `1.2.3'"),
        ("[Interface]\nDNS = exa$mple\n", 2, "bad DNS search domain"),
        ("[Interface]\nListenPort = 70000\n", 2, "bad ListenPort `70000'"),
        ("[Interface]\nFwMark = 0xzz\n", 2, "bad FwMark `0xzz'"),
        ("[Interface]\nPrivateKey = short\n", 2, "bad PrivateKey"),
        ("[Interface]\nFoo = bar\n", 2, "unknown key `Foo' in [Interface]"),
        ("[Interface]\nAddress\n", 2, "not `Key = Value'"),
        ("Address = 10.0.0.1/24\n", 1, "before any [Interface]"),
        ("[Interface]\n[Tunnel]\n", 2, "unknown section `[Tunnel]'"),
        ("[Interface]\n\n[Peer]\nAllowedIPs = 10.0.0.0/8\n", 3, "[Peer] without a PublicKey"),
        (
            &format!("[Interface]\n[Peer]\nPublicKey = {PUBLIC}\nAddress = 10.0.0.1/24\n"),
            4,
            "`Address' belongs in [Interface]",
        ),
        (
            &format!("[Interface]\n[Peer]\nPublicKey = {PUBLIC}\nAllowedIPs = 10.0.0.0/40\n"),
            4,
            "bad AllowedIPs `10.0.0.0/40'",
        ),
        (
            &format!("[Interface]\n[Peer]\nPublicKey = {PUBLIC}\nEndpoint = 192.0.2.1\n"),
            4,
            "bad Endpoint `192.0.2.1'",
        ),
        (
            &format!("[Interface]\n[Peer]\nPublicKey = {PUBLIC}\nEndpoint = 2001:db8::1:80\n"),
            4,
            "bad Endpoint",
        ),
        (
            &format!("[Interface]\n[Peer]\nPublicKey = {PUBLIC}\nPersistentKeepalive = -1\n"),
            4,
            "bad PersistentKeepalive `-1'",
        ),
    ];
    for (text, line, expected) in cases {
        let error = error(text);
        assert_eq!(error.line, line, "{text}: {error}");
        assert!(error.message.contains(expected), "{text}: `{error}' lacks `{expected}'");
        assert!(!error.to_string().contains('\n'), "more than one line: {error}");
    }
}

#[test]
fn argument_names_a_file_or_an_interface() {
    assert_eq!(
        resolve_argument("wg0").unwrap(),
        (PathBuf::from("/etc/wireguard/wg0.conf"), "wg0".to_string())
    );
    assert_eq!(
        resolve_argument("/tmp/x/office.conf").unwrap(),
        (PathBuf::from("/tmp/x/office.conf"), "office".to_string())
    );
    assert_eq!(
        resolve_argument("wg0.conf").unwrap(),
        (PathBuf::from("wg0.conf"), "wg0".to_string())
    );
    assert_eq!(
        resolve_argument("./my-vpn_1.conf").unwrap(),
        (PathBuf::from("./my-vpn_1.conf"), "my-vpn_1".to_string())
    );
    for bad in ["/tmp/x/wg0.txt", "/tmp/a-name-that-is-too-long.conf", "/tmp/bad name.conf", ""] {
        assert!(resolve_argument(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn saved_lines_parse_back_to_the_same_settings() {
    let config = parsed(
        "[Interface]\nAddress = 10.0.0.1/24\nDNS = 10.0.0.53, corp.example\nMTU = 1400\n\
         Table = off\nSaveConfig = true\nPreUp = echo a\nPostUp = echo b %i\n\
         PreDown = echo c\nPostDown = echo d\n",
    );
    let live: Vec<IpNet> = vec!["10.0.0.1/24".parse().unwrap(), "10.9.9.9/32".parse().unwrap()];
    let lines = config.saved_interface_lines(&live, Some(1380));
    let again = parsed(&format!("[Interface]\n{lines}"));
    assert_eq!(again.addresses, live);
    assert_eq!(again.dns, config.dns);
    assert_eq!(again.mtu, Some(1380));
    assert_eq!(again.table, Table::Off);
    assert!(again.save_config);
    assert_eq!(
        (again.pre_up, again.post_up, again.pre_down, again.post_down),
        (config.pre_up, config.post_up, config.pre_down, config.post_down)
    );
    // Without an MTU in the file, the derived one is not frozen into it.
    let derived = parsed("[Interface]\nSaveConfig = true\n");
    assert!(!derived.saved_interface_lines(&[], Some(1420)).contains("MTU"));
}
