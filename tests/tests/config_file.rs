//! `gatewayd --config FILE IFACE`: one TOML file brings the interface up, and changes made
//! while it runs are written back into it.
//!
//! Against a wireguard-go peer: gatewayd started from a commented file with a key, an address,
//! a peer (endpoint, keepalive) and a forward; pings cross the tunnel; then `gateway forward
//! add`, `gateway forward remove` and `wg set … allowed-ips` appear in the file, which keeps
//! the operator's comments, its mode and reads back as the device is. Deleting the interface
//! stops the daemon with nothing left behind.
//!
//! gatewayd runs `--no-ebpf`: what is tested is the file around it, not the data path.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use gateway::config::load;
use gateway_tests::gatewayd::{DetachedGatewayd, gateway_cli_binary, gatewayd_binary, leftovers};
use gateway_tests::pair::{GATEWAYD_TUNNEL, PEER_PORT, PEER_TUNNEL, TUNNEL_MTU, tunnel_cidrs};
use gateway_tests::topology::{Direct, TopologyOptions};
use gateway_tests::traffic::{ping_until_clean, wait_for_ping};
use gateway_tests::wg::{Implementation, KeyPair, WgPeer};
use gateway_tests::{Netns, Probe, TestDir, require_root, require_tools, unique_ifname};

const TOOLS: &[&str] = &["ip", "ping", "wg", "wireguard-go"];
const TIMEOUT: Duration = Duration::from_secs(15);

/// The peer on `server`: wireguard-go knowing our key and tunnel address, no endpoint.
fn start_peer(direct: &Direct, dir: &TestDir, ours: &KeyPair, theirs: &KeyPair) -> Result<WgPeer> {
    let peer =
        WgPeer::start(Implementation::WireguardGo, &direct.server, dir, &unique_ifname("wg")?)?;
    peer.setconf(&format!(
        "[Interface]\nPrivateKey = {}\nListenPort = {PEER_PORT}\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = {}/32\n",
        theirs.private_key, ours.public_key, GATEWAYD_TUNNEL.0
    ))?;
    peer.bring_up(&tunnel_cidrs(PEER_TUNNEL), TUNNEL_MTU)?;
    Ok(peer)
}

fn config_text(ours: &KeyPair, theirs: &KeyPair, endpoint: &str) -> String {
    format!(
        "# written by the config_file test\n\
         [interface]\n\
         private_key_file = \"wg.key\"   # beside this file\n\
         addresses = [\"{v4}/24\"]\n\
         mtu = 1380\n\
         \n\
         # the wireguard-go side\n\
         [[peer]]\n\
         name = \"server\"\n\
         public_key = \"{public}\"\n\
         endpoint = \"{endpoint}\"\n\
         allowed_ips = [\"{peer_v4}/32\"]\n\
         persistent_keepalive = 25\n\
         \n\
         # ssh to the server\n\
         [[forward]]\n\
         protocol = \"tcp\"\n\
         ports = \"2222\"\n\
         to = \"{peer_v4}:22\"\n",
        v4 = GATEWAYD_TUNNEL.0,
        public = theirs.public_key,
        peer_v4 = PEER_TUNNEL.0,
    )
    .replace("wg.key", &format!("{}.key", short(&ours.public_key)))
}

/// A file-name-safe token from a key.
fn short(key: &str) -> String {
    key.chars().filter(char::is_ascii_alphanumeric).take(8).collect()
}

fn gateway(netns: &Netns, args: &[&str]) -> Result<String> {
    let output = netns.command(gateway_cli_binary()?).args(args).output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(output.status.success(), "gateway {} failed: {said}", args.join(" "));
    Ok(said)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

#[test]
fn a_config_file_brings_the_interface_up_and_keeps_up_with_changes() -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new("config-file")?;
    let direct = Direct::build(&TopologyOptions::default())?;
    let ifname = unique_ifname("cf")?;
    let (ours, theirs) = (KeyPair::generate()?, KeyPair::generate()?);
    let _peer = start_peer(&direct, &dir, &ours, &theirs)?;
    let endpoint = format!("{}:{PEER_PORT}", direct.server_if.v4);
    let key_file = dir.file(&format!("{}.key", short(&ours.public_key)));
    std::fs::write(&key_file, format!("{}\n", ours.private_key))?;
    let config = dir.file(&format!("{ifname}.toml"));
    std::fs::write(&config, config_text(&ours, &theirs, &endpoint))?;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640))?;

    let client = &direct.client;
    let started = client
        .command(gatewayd_binary()?)
        .args(["--no-ebpf", "--config", &config.to_string_lossy(), &ifname])
        .output()?;
    let daemon = DetachedGatewayd::find(&ifname)?;
    let result = (|| -> Result<()> {
        ensure!(
            started.status.success(),
            "gatewayd --config failed: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        let daemon = daemon.as_ref().context("no gatewayd process after gatewayd --config")?;
        let link = client.ip(&["-o", "link", "show", "dev", &ifname])?;
        ensure!(link.contains("mtu 1380 ") && link.contains("UP"), "link not set up: {link}");
        let addresses = client.ip(&["-o", "address", "show", "dev", &ifname])?;
        ensure!(addresses.contains(&format!("{}/24", GATEWAYD_TUNNEL.0)), "{addresses}");
        wait_for_ping(client, IpAddr::V4(PEER_TUNNEL.0), TIMEOUT)?;
        ping_until_clean(client, IpAddr::V4(PEER_TUNNEL.0), 3, TIMEOUT)?;
        let forwards = gateway(client, &["forward", "list", &ifname])?;
        ensure!(forwards.contains("2222"), "the file's forward is not served: {forwards}");

        // Changes while running land in the file, the operator's comments kept.
        let backend = format!("{}:53", PEER_TUNNEL.0);
        gateway(client, &["forward", "add", &ifname, "udp", "5353", "--to", &backend])?;
        gateway(client, &["forward", "remove", &ifname, "tcp", "2222"])?;
        let extra = "10.200.0.0/16";
        let allowed = format!("{}/32,{extra}", PEER_TUNNEL.0);
        client.run("wg", &["set", &ifname, "peer", &theirs.public_key, "allowed-ips", &allowed])?;
        let text = read(&config)?;
        for kept in [
            "# written by the config_file test\n",
            "# beside this file\n",
            "# the wireguard-go side\n",
            "name = \"server\"",
            &format!("endpoint = \"{endpoint}\""),
        ] {
            ensure!(text.contains(kept), "`{kept}` lost from the file:\n{text}");
        }
        ensure!(!text.contains("2222") && !text.contains("# ssh"), "removed forward:\n{text}");
        ensure!(text.contains("ports = \"5353\""), "added forward missing:\n{text}");
        ensure!(text.contains(extra), "wg set allowed-ips missing:\n{text}");
        let mode = std::fs::metadata(&config)?.permissions().mode() & 0o777;
        ensure!(mode == 0o640, "the file's mode became {mode:o}");
        let reread = load::load(&config).with_context(|| format!("reading back:\n{text}"))?;
        let peer = reread.device.peers.first().context("no peer read back")?;
        ensure!(peer.allowed_ips.len() == 2 && peer.persistent_keepalive == Some(25), "{text}");
        ensure!(reread.forwards.len() == 1, "forwards read back:\n{text}");
        ping_until_clean(client, IpAddr::V4(PEER_TUNNEL.0), 3, TIMEOUT)?;

        client.ip(&["link", "delete", "dev", &ifname])?;
        dir.wait_for("gatewayd to exit", TIMEOUT, || {
            Ok(if daemon.alive() { Probe::NotYet("alive".into()) } else { Probe::Ready(()) })
        })?;
        let left = leftovers(client, &ifname, &[])?;
        ensure!(left.is_empty(), "left behind: {left:?}");
        Ok(())
    })();
    drop(daemon);
    result.map_err(|error| dir.attach_logs(error))
}
