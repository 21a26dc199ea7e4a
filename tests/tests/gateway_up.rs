//! `gateway up <conf>` / `gateway down <conf>`: wg-quick's job done with gatewayd whether or
//! not the kernel has a WireGuard module.
//!
//! - The whole cycle against a wireguard-go peer: Address, MTU, Table = auto with a default
//!   route (fwmark table, policy rules, nftables) for IPv4 and a plain route for IPv6, every
//!   hook kind leaving a trace named after the interface, SaveConfig. Pings cross the tunnel;
//!   after `down` no interface, socket, process, rule or nftables table is left, the hooks ran
//!   in order and the saved file holds the live configuration (mode 0600).
//! - Bad input: a bad CIDR, an unknown key or a bad MTU fails before anything happens (one
//!   line, no PreUp); a ListenPort in use and a failing PostUp hook fail after the daemon
//!   started, and everything done is undone.
//!
//! gatewayd runs `--no-ebpf`: what is tested here is the setup around it, not the data path.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use gateway::config::wg_quick;
use gateway_tests::gatewayd::{DetachedGatewayd, gateway_cli_binary, leftovers};
use gateway_tests::pair::{GATEWAYD_TUNNEL, PEER_PORT, PEER_TUNNEL, TUNNEL_MTU, tunnel_cidrs};
use gateway_tests::topology::{Direct, TopologyOptions};
use gateway_tests::traffic::{ping_until_clean, udp_socket, wait_for_ping};
use gateway_tests::wg::{Implementation, KeyPair, WgPeer};
use gateway_tests::{Netns, Probe, TestDir, require_root, require_tools, unique_ifname};

const TOOLS: &[&str] = &["ip", "ping", "wg", "nft", "bpftool", "wireguard-go"];
const TIMEOUT: Duration = Duration::from_secs(15);
/// Not the 1420 gatewayd starts with, so the test sees that MTU was applied.
const CONFIGURED_MTU: u32 = 1380;

/// `gateway <action> <config> [-- --no-ebpf]` inside `netns`.
fn gateway(netns: &Netns, action: &str, config: &Path) -> Result<Output> {
    let mut command = netns.command(gateway_cli_binary()?);
    command.args([action, &config.to_string_lossy()]);
    if action == "up" {
        command.args(["--", "--no-ebpf"]);
    }
    command.output().with_context(|| format!("running gateway {action}"))
}

/// As an operator keeps a file with a private key (else `up` warns, as wg-quick does).
fn write_private(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The peer on `server`: wireguard-go knowing our key and tunnel addresses, no endpoint.
fn start_peer(direct: &Direct, dir: &TestDir, ours: &KeyPair, theirs: &KeyPair) -> Result<WgPeer> {
    let peer =
        WgPeer::start(Implementation::WireguardGo, &direct.server, dir, &unique_ifname("wg")?)?;
    peer.setconf(&format!(
        "[Interface]\nPrivateKey = {}\nListenPort = {PEER_PORT}\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = {}/32, {}/128\n",
        theirs.private_key, ours.public_key, GATEWAYD_TUNNEL.0, GATEWAYD_TUNNEL.1
    ))?;
    peer.bring_up(&tunnel_cidrs(PEER_TUNNEL), TUNNEL_MTU)?;
    Ok(peer)
}

/// Our side's file. Host addresses (/32, /128) only: the routes to the peer must come from
/// Table = auto, not from the addresses' subnets. IPv4 goes through a default route (the
/// fwmark policy-routing path), IPv6 through a plain route.
fn config_text(dir: &TestDir, ours: &KeyPair, theirs: &KeyPair, endpoint: &str) -> String {
    let trace = |hook: &str| dir.file(&format!("%i.{hook}")).display().to_string();
    format!(
        "# written by the gateway_up test\n\
         [Interface]\n\
         PrivateKey = {private}\n\
         address = {v4}/32, {v6}/128   # case-insensitive keys, as wg-quick reads them\n\
         MTU = {CONFIGURED_MTU}\n\
         Table = auto\n\
         SaveConfig = true\n\
         PreUp = echo pre-up >> {order}\n\
         PostUp = ip -o address show dev %i > {post_up}; echo post-up >> {order}\n\
         PreDown = echo pre-down >> {order}\n\
         PostDown = touch {post_down}; echo post-down >> {order}\n\
         \n\
         [Peer]\n\
         PublicKey = {public}\n\
         AllowedIPs = 0.0.0.0/0, {peer_v6}/128\n\
         Endpoint = {endpoint}\n",
        private = ours.private_key,
        public = theirs.public_key,
        v4 = GATEWAYD_TUNNEL.0,
        v6 = GATEWAYD_TUNNEL.1,
        peer_v6 = PEER_TUNNEL.1,
        order = trace("order"),
        post_up = trace("post-up"),
        post_down = trace("post-down"),
    )
}

#[test]
fn gateway_up_pings_then_down_saves_and_leaves_nothing() -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new("gateway-up")?;
    let direct = Direct::build(&TopologyOptions::default())?;
    let ifname = unique_ifname("up")?;
    let (ours, theirs) = (KeyPair::generate()?, KeyPair::generate()?);
    let _peer = start_peer(&direct, &dir, &ours, &theirs)?;
    let config = dir.file(&format!("{ifname}.conf"));
    let endpoint = format!("{}:{PEER_PORT}", direct.server_if.v4);
    write_private(&config, &config_text(&dir, &ours, &theirs, &endpoint))?;

    let up = gateway(&direct.client, "up", &config)?;
    // Found before anything is checked, so that a failure below still stops it.
    let daemon = DetachedGatewayd::find(&ifname)?;
    let result = (|| -> Result<()> {
        ensure!(up.status.success(), "`gateway up` failed ({}):\n{}", up.status, said(&up));
        let daemon = daemon.as_ref().context("no gatewayd process after gateway up")?;
        let client = &direct.client;

        let link = client.ip(&["-o", "link", "show", "dev", &ifname])?;
        ensure!(link.contains(&format!("mtu {CONFIGURED_MTU} ")), "MTU not applied: {link}");
        ensure!(link.contains("UP"), "{ifname} is not up: {link}");
        let post_up = std::fs::read_to_string(dir.file(&format!("{ifname}.post-up")))
            .context("PostUp left no trace")?;
        ensure!(
            post_up.contains(&format!("{}/32", GATEWAYD_TUNNEL.0)),
            "PostUp ran before the addresses were set: {post_up}"
        );
        let rules = client.ip(&["-4", "rule", "show"])?;
        ensure!(
            rules.contains("not from all fwmark 0xca6c lookup 51820")
                && rules.contains("lookup main suppress_prefixlength 0"),
            "the default route's policy rules are missing:\n{rules}"
        );
        let table = client.ip(&["-4", "route", "show", "table", "51820"])?;
        ensure!(table.contains(&format!("default dev {ifname}")), "table 51820: {table}");
        let routes = client.ip(&["-6", "route", "show", "dev", &ifname])?;
        ensure!(routes.contains(&format!("{}", PEER_TUNNEL.1)), "no IPv6 route: {routes}");
        let tables = client.run("nft", &["list", "tables"])?;
        ensure!(tables.contains(&format!("wg-quick-{ifname}")), "no nftables table: {tables}");

        wait_for_ping(client, IpAddr::V4(PEER_TUNNEL.0), TIMEOUT)?;
        ping_until_clean(client, IpAddr::V4(PEER_TUNNEL.0), 3, TIMEOUT)?;
        ping_until_clean(client, IpAddr::V6(PEER_TUNNEL.1), 3, TIMEOUT)?;

        // A live change SaveConfig must keep.
        client.run(
            "wg",
            &["set", &ifname, "peer", &theirs.public_key, "persistent-keepalive", "17"],
        )?;
        let down = gateway(client, "down", &config)?;
        ensure!(down.status.success(), "`gateway down` failed ({}):\n{}", down.status, said(&down));
        dir.wait_for("gatewayd to exit after gateway down", TIMEOUT, || {
            Ok(if daemon.alive() {
                Probe::NotYet(format!(
                    "pid {} alive; gateway down said: {}",
                    daemon.pid,
                    said(&down)
                ))
            } else {
                Probe::Ready(())
            })
        })?;
        let left = leftovers(client, &ifname, &[])?;
        ensure!(left.is_empty(), "left behind after gateway down: {left:?}");
        let rules = client.ip(&["rule", "show"])? + &client.ip(&["-6", "rule", "show"])?;
        ensure!(
            !rules.contains("51820") && !rules.contains("suppress_prefixlength"),
            "policy rules left:\n{rules}"
        );
        let tables = client.run("nft", &["list", "tables"])?;
        ensure!(!tables.contains(&ifname), "nftables table left: {tables}");

        let order = std::fs::read_to_string(dir.file(&format!("{ifname}.order")))?;
        ensure!(
            order == "pre-up\npost-up\npre-down\npost-down\n",
            "hooks ran out of order or not at all:\n{order}"
        );
        ensure!(dir.file(&format!("{ifname}.post-down")).exists(), "PostDown left no trace");

        let mode = std::fs::metadata(&config)?.permissions().mode() & 0o777;
        ensure!(mode == 0o600, "the saved configuration has mode {mode:o}");
        let saved = std::fs::read_to_string(&config)?;
        let parsed = wg_quick::parse(&saved).with_context(|| format!("saved:\n{saved}"))?;
        let peer = parsed.device.peers.first().with_context(|| format!("no peer:\n{saved}"))?;
        ensure!(peer.public_key.to_base64() == theirs.public_key, "wrong peer saved:\n{saved}");
        ensure!(peer.persistent_keepalive == Some(17), "the live change was not saved:\n{saved}");
        ensure!(peer.endpoint.as_deref() == Some(endpoint.as_str()), "endpoint:\n{saved}");
        ensure!(
            parsed.addresses.len() == 2
                && parsed.mtu == Some(CONFIGURED_MTU)
                && parsed.save_config
                && parsed.post_down.len() == 1,
            "the wg-quick settings were not saved:\n{saved}"
        );
        Ok(())
    })();
    drop(daemon);
    result.map_err(|error| dir.attach_logs(error))
}

/// `gateway up` that must fail: non-zero, stderr ending in one `gateway:` line containing
/// `expected`, and nothing left: no interface, socket, process, rule or PreUp trace (when the
/// failure comes before PreUp).
fn refused_up(
    netns: &Netns,
    dir: &TestDir,
    ifname: &str,
    text: &str,
    expected: &str,
) -> Result<String> {
    let config = dir.file(&format!("{ifname}.conf"));
    write_private(&config, text)?;
    let output = gateway(netns, "up", &config)?;
    let daemon = DetachedGatewayd::find(ifname)?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    ensure!(!output.status.success(), "`gateway up` accepted:\n{text}\nit said: {stderr}");
    ensure!(daemon.is_none(), "a gatewayd for {ifname} still runs after a failed up:\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    ensure!(
        last.starts_with("gateway: ") && last.contains(expected),
        "the last line does not name the problem ({expected}):\n{stderr}"
    );
    ensure!(!stderr.contains("panicked"), "gateway panicked:\n{stderr}");
    let left = leftovers(netns, ifname, &[])?;
    ensure!(left.is_empty(), "left behind after a failed up: {left:?}\n{stderr}");
    let rules = netns.ip(&["rule", "show"])?;
    ensure!(!rules.contains("suppress_prefixlength"), "policy rules left:\n{rules}\n{stderr}");
    let tables = netns.run("nft", &["list", "tables"])?;
    ensure!(!tables.contains(ifname), "nftables table left: {tables}");
    Ok(stderr)
}

#[test]
fn gateway_up_refuses_bad_input_and_undoes_a_failed_up() -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new("gateway-up-bad")?;
    let netns = Netns::new("upb")?;
    let key = KeyPair::generate()?;
    let peer = KeyPair::generate()?;
    let pre_up_trace = dir.file("pre-up-ran");
    let base = |extra: &str, allowed: &str| {
        format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.77.0.1/24\n\
             PreUp = touch {}\n{extra}\n[Peer]\nPublicKey = {}\nAllowedIPs = {allowed}\n",
            key.private_key,
            pre_up_trace.display(),
            peer.public_key
        )
    };

    // Caught by the parser: exactly one line, and PreUp never ran.
    for (text, expected) in [
        (base("", "10.77.0.300/32"), "line 8: bad AllowedIPs `10.77.0.300/32'"),
        (base("Adress = 10.0.0.1/24", "0.0.0.0/0"), "line 5: unknown key `Adress'"),
        (base("MTU = 1420a", "0.0.0.0/0"), "line 5: bad MTU `1420a'"),
    ] {
        let ifname = unique_ifname("upb")?;
        let stderr = refused_up(&netns, &dir, &ifname, &text, expected)?;
        ensure!(stderr.lines().count() == 1, "more than one line for a bad file:\n{stderr}");
        ensure!(!pre_up_trace.exists(), "PreUp ran for a file that does not parse");
    }

    let missing = dir.file("gtnothere.conf");
    let output = gateway(&netns, "up", &missing)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success() && stderr.trim_end().ends_with("does not exist"),
        "a missing file: {stderr}"
    );

    // Caught by the daemon: the port is taken (by a socket of this test).
    let taken = udp_socket(&netns, "0.0.0.0:0".parse()?)?;
    let port = taken.local_addr()?.port();
    let ifname = unique_ifname("upb")?;
    let text = base(&format!("ListenPort = {port}"), "10.77.0.2/32");
    refused_up(&netns, &dir, &ifname, &text, &format!("ListenPort {port} is already in use"))?;
    drop(taken);
    std::fs::remove_file(&pre_up_trace)?;

    // Caught after the daemon, addresses, routes and policy rules are in place: all undone.
    let ifname = unique_ifname("upb")?;
    let failing = base("PostUp = exit 3", "0.0.0.0/0");
    refused_up(&netns, &dir, &ifname, &failing, "the PostUp hook `exit 3' failed")?;
    ensure!(pre_up_trace.exists(), "PreUp did not run before the failing PostUp");
    Ok(())
}
