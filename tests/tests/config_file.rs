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

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use gateway::config::load;
use gateway_tests::gatewayd::{DetachedGatewayd, gateway_cli_binary, gatewayd_binary, leftovers};
use gateway_tests::pair::{GATEWAYD_TUNNEL, PEER_PORT, PEER_TUNNEL, TUNNEL_MTU, tunnel_cidrs};
use gateway_tests::topology::{Direct, TopologyOptions};
use gateway_tests::traffic::{ping_until_clean, wait_for_ping};
use gateway_tests::wg::{Implementation, KeyPair, WgDump, WgPeer};
use gateway_tests::{Netns, Probe, TestDir, require_root, require_tools, unique_ifname};

const TOOLS: &[&str] = &["ip", "ping", "wg", "wireguard-go"];
const TIMEOUT: Duration = Duration::from_secs(15);

/// A peer on `server`: wireguard-go on `port`, knowing our key and our tunnel address `ours_ip`,
/// with `addresses` on its interface; no endpoint.
fn start_peer(
    direct: &Direct,
    dir: &TestDir,
    (ours, theirs): (&KeyPair, &KeyPair),
    port: u16,
    ours_ip: Ipv4Addr,
    addresses: &[(IpAddr, u8)],
) -> Result<WgPeer> {
    let peer =
        WgPeer::start(Implementation::WireguardGo, &direct.server, dir, &unique_ifname("wg")?)?;
    peer.setconf(&format!(
        "[Interface]\nPrivateKey = {}\nListenPort = {port}\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = {ours_ip}/32\n",
        theirs.private_key, ours.public_key
    ))?;
    peer.bring_up(addresses, TUNNEL_MTU)?;
    Ok(peer)
}

/// The second peer's overlay, beside the first's: its own subnet, so that both wireguard-go
/// interfaces live in one namespace without their routes colliding.
const SECOND_OURS: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
const SECOND_PEER: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
const SECOND_PORT: u16 = PEER_PORT + 1;

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
    let first = (&ours, &theirs);
    let _peer =
        start_peer(&direct, &dir, first, PEER_PORT, GATEWAYD_TUNNEL.0, &tunnel_cidrs(PEER_TUNNEL))?;
    let second = KeyPair::generate()?;
    let second_address = [(IpAddr::V4(SECOND_PEER), 24)];
    let _second_peer =
        start_peer(&direct, &dir, (&ours, &second), SECOND_PORT, SECOND_OURS, &second_address)?;
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
        let peers = gateway(client, &["peers", &ifname])?;
        ensure!(peers.contains("server "), "the peer's name is not shown: {peers}");
        let json = gateway(client, &["peers", "--json", &ifname])?;
        ensure!(json.contains("\"name\": \"server\""), "no name in peers --json: {json}");

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

        reload_keeps_sessions(client, &dir, &config, &ifname, daemon.pid, &theirs, &second)?;
        bad_reloads_change_nothing(client, &config, &ifname)?;

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

/// The device as `wg show IFACE dump` reports it.
fn dump(client: &Netns, ifname: &str) -> Result<WgDump> {
    WgDump::parse(&client.run("wg", &["show", ifname, "dump"])?)
}

/// Adds the second peer and an address for it, and changes the first peer's keepalive, then
/// applies the file with SIGHUP and again (unchanged) with `gateway reload`: the second peer
/// answers pings, the first keeps its session (same handshake) and its traffic.
fn reload_keeps_sessions(
    client: &Netns,
    dir: &TestDir,
    config: &Path,
    ifname: &str,
    pid: u32,
    first: &KeyPair,
    second: &KeyPair,
) -> Result<()> {
    let before = dump(client, ifname)?;
    let handshake = before.peer(&first.public_key)?.latest_handshake;
    ensure!(handshake.is_some(), "no handshake with the first peer before the reload");
    let text =
        read(config)?.replace("persistent_keepalive = 25", "persistent_keepalive = 15").replace(
            &format!("addresses = [\"{}/24\"]", GATEWAYD_TUNNEL.0),
            &format!("addresses = [\"{}/24\", \"{SECOND_OURS}/24\"]", GATEWAYD_TUNNEL.0),
        );
    let endpoint = format!("{}:{SECOND_PORT}", direct_server_address(&before, &first.public_key)?);
    let text = format!(
        "{text}\n# added for the reload\n[[peer]]\npublic_key = \"{}\"\nendpoint = \"{endpoint}\"\n\
         allowed_ips = [\"{SECOND_PEER}/32\"]\n",
        second.public_key
    );
    std::fs::write(config, &text)?;
    // SAFETY: a plain syscall on the pid of the daemon this test started.
    ensure!(unsafe { libc::kill(pid as i32, libc::SIGHUP) } == 0, "cannot signal gatewayd");
    dir.wait_for("the SIGHUP reload to add the second peer", TIMEOUT, || {
        let now = dump(client, ifname)?;
        Ok(if now.peer(&second.public_key).is_ok() {
            Probe::Ready(())
        } else {
            Probe::NotYet(format!("{now:?}"))
        })
    })?;
    wait_for_ping(client, IpAddr::V4(SECOND_PEER), TIMEOUT)?;
    ping_until_clean(client, IpAddr::V4(PEER_TUNNEL.0), 3, TIMEOUT)?;
    let said = gateway(client, &["reload", ifname])?;
    ensure!(said.contains("peers +0 -0 ~0"), "an unchanged file changed something: {said}");
    let after = dump(client, ifname)?;
    let kept = after.peer(&first.public_key)?;
    ensure!(kept.persistent_keepalive == Some(15), "keepalive not reloaded: {kept:?}");
    ensure!(
        kept.latest_handshake == handshake,
        "the first peer's session was dropped: handshake {handshake:?} became {:?}",
        kept.latest_handshake
    );
    ensure!(read(config)?.contains("# added for the reload"), "the file was rewritten");
    Ok(())
}

/// Where the first peer's endpoint points: the server's underlay address.
fn direct_server_address(dump: &WgDump, public_key: &str) -> Result<IpAddr> {
    Ok(dump.peer(public_key)?.endpoint.context("the first peer has no endpoint")?.ip())
}

/// A bad key and a metrics address already taken: the reload fails with one line naming file,
/// line and field, and the device, and the metrics endpoint, are as they were.
fn bad_reloads_change_nothing(client: &Netns, config: &Path, ifname: &str) -> Result<()> {
    let metrics = format!("127.0.0.1:{}", free_port(client)?);
    let good = format!("{}\n[metrics]\nlisten = \"{metrics}\"\n", read(config)?);
    std::fs::write(config, &good)?;
    let said = gateway(client, &["reload", ifname])?;
    ensure!(said.contains(&format!("metrics at {metrics}")), "metrics not started: {said}");
    ensure!(scrape(client, &metrics)?.contains("gateway_"), "metrics do not serve");

    let before = dump(client, ifname)?;
    let bad_key = good.replacen("public_key = \"", "public_key = \"x", 1);
    std::fs::write(config, &bad_key)?;
    let line = bad_key
        .lines()
        .position(|l| l.starts_with("public_key = \"x"))
        .context("no bad key written")?
        + 1;
    let refused = refused_reload(client, ifname)?;
    let expected = format!("{}:{line}: peer[0].public_key: not a base64 key", config.display());
    ensure!(refused.contains(&expected), "expected `{expected}`, got: {refused}");

    let taken = {
        let _inside = client.enter()?;
        std::net::TcpListener::bind("127.0.0.1:0")?
    };
    let taken_port = taken.local_addr()?.port();
    std::fs::write(config, good.replace(&metrics, &format!("127.0.0.1:{taken_port}")))?;
    let refused = refused_reload(client, ifname)?;
    ensure!(refused.contains("metrics.listen"), "the taken address is not named: {refused}");
    ensure!(scrape(client, &metrics)?.contains("gateway_"), "the old metrics endpoint stopped");
    ensure!(dump(client, ifname)?.peers == before.peers, "a refused reload changed the device");
    std::fs::write(config, &good)?;
    Ok(())
}

/// `gateway reload` that must fail: its one line.
fn refused_reload(client: &Netns, ifname: &str) -> Result<String> {
    let output = client.command(gateway_cli_binary()?).args(["reload", ifname]).output()?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    ensure!(!output.status.success(), "a bad reload succeeded: {stderr}");
    ensure!(stderr.trim().lines().count() == 1, "not one line: {stderr}");
    Ok(stderr)
}

/// A TCP port nobody listens on in `netns` now.
fn free_port(netns: &Netns) -> Result<u16> {
    let _inside = netns.enter()?;
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// GET /metrics at `address` inside `netns`.
fn scrape(netns: &Netns, address: &str) -> Result<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = {
        let _inside = netns.enter()?;
        std::net::TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?
    };
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// `gateway up IFACE.toml` / `gateway down IFACE.toml`: gatewayd started with the file, which
/// it applies itself; down deletes the interface and the daemon goes, nothing left. A bad file
/// is refused in one line before anything starts.
#[test]
fn gateway_up_and_down_take_a_toml_file() -> Result<()> {
    require_root()?;
    require_tools(&["ip"])?;
    let dir = TestDir::new("config-file-up")?;
    let netns = Netns::new("cfu")?;
    let ifname = unique_ifname("cu")?;
    let key = KeyPair::generate()?;
    let config = dir.file(&format!("{ifname}.toml"));
    let text = format!(
        "[interface]\nprivate_key = \"{}\"\naddresses = [\"10.79.0.1/24\"]\nmtu = 1300\n",
        key.private_key
    );
    std::fs::write(&config, &text)?;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600))?;
    let path = config.to_string_lossy().into_owned();

    let up = gateway(&netns, &["up", &path, "--", "--no-ebpf"]);
    let daemon = DetachedGatewayd::find(&ifname)?;
    let result = (|| -> Result<()> {
        up?;
        let daemon = daemon.as_ref().context("no gatewayd after gateway up")?;
        let link = netns.ip(&["-o", "link", "show", "dev", &ifname])?;
        ensure!(link.contains("mtu 1300 ") && link.contains("UP"), "link: {link}");
        let addresses = netns.ip(&["-o", "address", "show", "dev", &ifname])?;
        ensure!(addresses.contains("10.79.0.1/24"), "addresses: {addresses}");
        gateway(&netns, &["down", &path])?;
        dir.wait_for("gatewayd to exit after gateway down", TIMEOUT, || {
            Ok(if daemon.alive() { Probe::NotYet("alive".into()) } else { Probe::Ready(()) })
        })?;
        let left = leftovers(&netns, &ifname, &[])?;
        ensure!(left.is_empty(), "left behind: {left:?}");
        Ok(())
    })();
    drop(daemon);
    result.map_err(|error| dir.attach_logs(error))?;

    std::fs::write(&config, text.replace("mtu = 1300", "mtu = 1300\nmtus = 1"))?;
    let output = netns.command(gateway_cli_binary()?).args(["up", &path]).output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(!output.status.success(), "a bad file was brought up");
    ensure!(
        stderr.trim().lines().count() == 1
            && stderr.contains(&format!("{path}:5: interface.mtus: unknown field `mtus`")),
        "not one line naming file, line and field: {stderr}"
    );
    ensure!(DetachedGatewayd::find(&ifname)?.is_none(), "a gatewayd started for a bad file");
    Ok(())
}
