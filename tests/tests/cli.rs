//! The operator CLI against a running gatewayd, as an operator runs it (inside gatewayd's
//! namespace): gatewayd and a wireguard-go peer joined by one tunnel ([`Pair`]), with the eBPF
//! data path and with `--no-ebpf`, pings both ways through it, then every read command in
//! human and JSON form checked against what the daemon and `wg show` say — the peer's
//! endpoint, its latest handshake, its allowed IPs, the counters of the path that carried the
//! pings, the kernel's routes into the interface, the forwards. Then `export` of the peer's
//! client configuration (text, terminal QR, PNG), `remove-peer` by a key prefix (gone from
//! `wg show`), and the completion scripts.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, ensure};
use gateway::daemon::status::Status;
use gateway_tests::forward::Forwards;
use gateway_tests::gatewayd::{DataPath, gateway_cli_binary};
use gateway_tests::pair::{GATEWAYD_TUNNEL, PEER_TUNNEL, Pair, PairSpec};
use gateway_tests::traffic::ping_until_clean;
use gateway_tests::wg::WgDump;
use gateway_tests::{Netns, TestDir, require_root, require_tools};
use serde_json::Value;

const TOOLS: &[&str] = &["ip", "ping", "wg", "wireguard-go"];
const PINGS: u32 = 5;
const RETRY_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn every_command_on_the_ebpf_path() -> Result<()> {
    every_command(DataPath::Ebpf)
}

#[test]
fn every_command_on_the_userspace_path() -> Result<()> {
    every_command(DataPath::Userspace)
}

fn every_command(data_path: DataPath) -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new(&format!("cli-{data_path}"))?;
    let pair = Pair::build(&dir, &PairSpec::with_wireguard_go(data_path))?;
    run(&pair, &dir).map_err(|error| dir.attach_logs(error))
}

/// `gateway args...` in gatewayd's namespace; its stdout, an error on a non-zero exit.
fn gateway(netns: &Netns, args: &[&str]) -> Result<String> {
    let output = netns
        .command(gateway_cli_binary()?)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running gateway")?;
    ensure!(
        output.status.success(),
        "`gateway {}` failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8(output.stdout).context("gateway printed something else than UTF-8")
}

fn json(netns: &Netns, args: &[&str]) -> Result<Value> {
    let text = gateway(netns, args)?;
    serde_json::from_str(&text)
        .with_context(|| format!("`gateway {}` printed {text:?}", args.join(" ")))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn run(pair: &Pair, dir: &TestDir) -> Result<()> {
    let started = unix_now();
    pair.establish(dir)?;
    for (from, to) in [
        (pair.gatewayd_ns(), IpAddr::V4(PEER_TUNNEL.0)),
        (pair.peer_ns(), IpAddr::V4(GATEWAYD_TUNNEL.0)),
    ] {
        ping_until_clean(from, to, PINGS, RETRY_TIMEOUT)?;
    }
    let ns = pair.gatewayd_ns();
    let ifname = pair.gatewayd.ifname();
    let key = pair.peer_keys.public_key.as_str();
    let short = format!("{}…", &key[..10]);
    let endpoint = pair.peer_endpoint()?.to_string();
    let wg = WgDump::parse(&ns.run("wg", &["show", ifname, "dump"])?)?;
    let handshake = wg.peer(key)?.latest_handshake.context("wg show: no handshake")?;
    ensure!(
        handshake >= started.saturating_sub(1),
        "wg show's handshake {handshake} before the test"
    );
    let data_path = pair.spec.gatewayd.data_path.to_string();

    // status
    let status: Status = serde_json::from_str(&gateway(ns, &["status", ifname, "--json"])?)?;
    let peer =
        status.peers.iter().find(|p| p.public_key == key).context("status --json: no peer")?;
    ensure!(
        status.interface == ifname
            && status.data_path == data_path
            && peer.endpoint.as_deref() == Some(endpoint.as_str()),
        "status --json: {status:?}"
    );
    let text = gateway(ns, &["status", ifname])?;
    eprintln!("gateway status {ifname}:\n{text}");
    for wanted in [
        format!("interface: {ifname}"),
        format!("peer: {key}"),
        format!("endpoint: {endpoint}"),
        "allowed ips: 10.77.0.2/32, fd77::2/128".to_string(),
    ] {
        ensure!(text.contains(&wanted), "status does not show {wanted:?}:\n{text}");
    }
    ensure!(
        text.lines().any(|l| l.starts_with("  latest handshake: ")
            && (l.ends_with(" ago") || l.ends_with("Now"))),
        "status: no handshake time:\n{text}"
    );

    // peers
    let peers = json(ns, &["peers", ifname, "--json"])?;
    let now = unix_now();
    ensure!(
        peers["interface"] == ifname && peers["data_path"] == data_path.as_str(),
        "peers --json: {peers}"
    );
    let list = peers["peers"].as_array().context("peers --json: no list")?;
    ensure!(list.len() == 1, "peers --json: {peers}");
    let p = &list[0];
    ensure!(
        p["public_key"] == key
            && p["endpoint"] == endpoint.as_str()
            && p["path"] == data_path.as_str(),
        "peers --json: {p}"
    );
    ensure!(
        p["latest_handshake"].as_u64() == Some(handshake),
        "peers --json handshake {} is not wg show's {handshake}",
        p["latest_handshake"]
    );
    let ago =
        p["latest_handshake_seconds_ago"].as_u64().context("peers --json: no handshake age")?;
    ensure!(
        ago <= now - started + 1,
        "peers --json: a handshake {ago} s ago, the test began {} s ago",
        now - started
    );
    ensure!(
        p["allowed_ips"] == serde_json::json!(["10.77.0.2/32", "fd77::2/128"]),
        "peers --json allowed IPs: {}",
        p["allowed_ips"]
    );
    // The pings went through the data path's counters (userspace also counts the handshakes).
    let carried = &p[if data_path == "ebpf" { "ebpf" } else { "userspace" }];
    for counter in ["rx_packets", "tx_packets", "rx_bytes", "tx_bytes"] {
        ensure!(
            carried[counter].as_u64().is_some_and(|n| n >= u64::from(PINGS)),
            "peers --json: {counter} of the {data_path} path: {p}"
        );
    }
    let text = gateway(ns, &["peers", ifname])?;
    eprintln!("gateway peers {ifname}:\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    ensure!(
        lines.len() == 2 && lines[0].starts_with("PEER") && lines[0].contains("HANDSHAKE"),
        "peers:\n{text}"
    );
    let path_shown = if data_path == "ebpf" { "eBPF" } else { "userspace" };
    for wanted in [short.as_str(), endpoint.as_str(), path_shown, "10.77.0.2/32, fd77::2/128"] {
        ensure!(lines[1].contains(wanted), "peers does not show {wanted:?}:\n{text}");
    }
    ensure!(!lines[1].contains(key), "peers shows the whole key:\n{text}");
    ensure!(
        lines[1].contains(" ago") || lines[1].contains("Now"),
        "peers: no handshake time:\n{text}"
    );

    // routes
    let routes = json(ns, &["routes", ifname, "--json"])?;
    let allowed = routes["allowed_ips"].as_array().context("routes --json")?;
    let prefixes: Vec<(&str, &str)> =
        allowed.iter().filter_map(|r| Some((r["prefix"].as_str()?, r["peer"].as_str()?))).collect();
    ensure!(prefixes == [("10.77.0.2/32", key), ("fd77::2/128", key)], "routes --json: {routes}");
    let kernel: Vec<&str> = routes["kernel_routes"]
        .as_array()
        .context("routes --json: no kernel routes")?
        .iter()
        .filter_map(|r| r["destination"].as_str())
        .collect();
    for wanted in ["10.77.0.0/24", "fd77::/64"] {
        ensure!(kernel.contains(&wanted), "routes --json: no kernel route {wanted}: {routes}");
    }
    let text = gateway(ns, &["routes", ifname])?;
    eprintln!("gateway routes {ifname}:\n{text}");
    ensure!(
        text.lines()
            .any(|l| l.starts_with("10.77.0.2/32") && l.contains(&short) && l.contains(&endpoint)),
        "routes:\n{text}"
    );
    ensure!(
        text.lines().any(|l| l.starts_with("10.77.0.0/24") && l.contains("main")),
        "routes: no kernel route:\n{text}"
    );

    // forwards: the same as `forward list`
    let forwards = Forwards::new(ns, ifname);
    ensure!(
        json(ns, &["forwards", ifname, "--json"])? == serde_json::json!([]),
        "forwards --json before any"
    );
    forwards.add(&["tcp", "8080", "--to", "10.77.0.2:80"])?;
    ensure!(
        gateway(ns, &["forwards", ifname])? == forwards.list()?,
        "forwards differs from forward list"
    );
    let listed = json(ns, &["forwards", ifname, "--json"])?;
    ensure!(
        listed == forwards.list_json()?
            && listed[0]["ports"] == "8080"
            && listed[0]["to"] == "10.77.0.2:80",
        "forwards --json: {listed}"
    );
    ensure!(
        gateway(ns, &["forwards", ifname])?
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("tcp") && l.contains("8080")),
        "forwards"
    );

    check_export(pair, dir)?;

    // remove-peer by a prefix of its key
    let said = gateway(ns, &["remove-peer", ifname, &key[..6]])?;
    ensure!(said.contains(key), "remove-peer said {said:?}");
    let wg = WgDump::parse(&ns.run("wg", &["show", ifname, "dump"])?)?;
    ensure!(wg.peers.is_empty(), "remove-peer left {:?}", wg.peers);
    ensure!(gateway(ns, &["peers", ifname])?.contains("has no peers"), "peers after remove-peer");

    // completions
    for (shell, marker) in
        [("bash", "complete -F"), ("zsh", "#compdef gateway"), ("fish", "complete -c gateway")]
    {
        let script = gateway(ns, &["completions", shell])?;
        ensure!(
            script.contains(marker) && script.contains("remove-peer") && script.contains("export"),
            "completions {shell}: {script}"
        );
    }
    Ok(())
}

/// `export`: the client configuration of the pair's peer, with its own private key; as a PNG
/// QR code and in the terminal; without the key, the text says where it goes.
fn check_export(pair: &Pair, dir: &TestDir) -> Result<()> {
    let ns = pair.gatewayd_ns();
    let ifname = pair.gatewayd.ifname();
    let key = pair.peer_keys.public_key.as_str();
    let gatewayd_endpoint = pair.gatewayd_endpoint()?.to_string();
    let private = dir.file("peer.key");
    std::fs::write(&private, format!("{}\n", pair.peer_keys.private_key))?;
    let png = dir.file("peer.png");
    let private_arg = private.to_string_lossy().into_owned();
    let png_arg = png.to_string_lossy().into_owned();
    let base = [
        "export",
        ifname,
        &key[..8],
        "--endpoint",
        &gatewayd_endpoint,
        "--keepalive",
        "0",
        "--route",
        "10.77.0.0/24",
    ];

    let mut args = base.to_vec();
    args.extend(["--private-key", &private_arg, "--png", &png_arg]);
    let conf = gateway(ns, &args)?;
    let expected = format!(
        "[Interface]\nPrivateKey = {}\nAddress = 10.77.0.2/32, fd77::2/128\n\n[Peer]\nPublicKey = {}\n\
         AllowedIPs = 10.77.0.0/24\nEndpoint = {gatewayd_endpoint}\n",
        pair.peer_keys.private_key, pair.gatewayd_keys.public_key
    );
    ensure!(conf == expected, "export printed:\n{conf}\nnot:\n{expected}");
    let image = std::fs::read(&png).context("export --png wrote nothing")?;
    ensure!(
        image.starts_with(b"\x89PNG\r\n\x1a\n") && image.len() > 100,
        "export --png: not a PNG ({} bytes)",
        image.len()
    );

    let mut args = base.to_vec();
    args.extend(["--private-key", &private_arg, "--qr"]);
    let with_qr = gateway(ns, &args)?;
    ensure!(with_qr.starts_with(&expected) && with_qr.contains('█'), "export --qr:\n{with_qr}");

    let without = gateway(ns, &base)?;
    ensure!(
        without.starts_with("[Interface]\n# PrivateKey = ")
            && without.contains(&pair.gatewayd_keys.public_key)
            && !without.contains(&pair.peer_keys.private_key),
        "export without the key:\n{without}"
    );
    // What export printed is what the peer runs on: wireguard-go set from it (less wg-quick's
    // Address) still reaches gatewayd through the tunnel.
    let stripped: String =
        conf.lines().filter(|l| !l.starts_with("Address")).map(|l| format!("{l}\n")).collect();
    pair.peer.setconf(&stripped).context("wg setconf with the exported configuration")?;
    ping_until_clean(pair.peer_ns(), IpAddr::V4(GATEWAYD_TUNNEL.0), PINGS, RETRY_TIMEOUT)
        .context("pinging gatewayd from the peer set up with the exported configuration")?;
    Ok(())
}
