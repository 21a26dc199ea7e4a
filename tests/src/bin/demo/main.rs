//! `cargo xtask demo`: gatewayd on a VPS and on a home router behind CGNAT, a phone with a
//! stock WireGuard implementation, a NAS on the home LAN and a client on the internet — all
//! network namespaces on this machine — and real traffic through it, with what each data path
//! (eBPF or userspace) carried. Everything is torn down at the end, on failure and on Ctrl-C.

mod report;
mod topology;

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use gateway_tests::gatewayd::{DataPath, Gatewayd, GatewaydOptions, gateway_cli_binary};
use gateway_tests::traffic::{
    IperfOptions, IperfServer, Protocol, iperf3_client, ping, wait_for_ping,
};
use gateway_tests::wg::{Implementation, KeyPair, WgPeer};
use gateway_tests::{Probe, Process, TestDir, unique_ifname};

use topology::{CGNAT_PUBLIC, CLIENT_PUBLIC, HOME_LAN_IF, NAS, VPS_PUBLIC, World};

const PORT: u16 = 51820;
const WEB_PORT: u16 = 80;
const FORWARDED_PORT: u16 = 8080;

fn say(text: impl AsRef<str>) {
    println!("[demo] {}", text.as_ref());
}

/// The phone's WireGuard app understands the wg-quick format; `wg setconf` does not take its
/// `Address` and `DNS` lines, which the "app" applies itself.
/// `gateway add-peer --qr` prints the config, a blank line, then the QR code of the config.
fn split_config_and_qr(printed: &str) -> Option<(&str, &str)> {
    let peer = printed.find("[Peer]")?;
    let (conf, qr) = printed[peer..].split_once("\n\n")?;
    let conf = &printed[..peer + conf.len() + 1];
    (!qr.trim().is_empty()).then_some((conf, qr))
}

fn app_config(conf: &str) -> (String, Vec<String>) {
    let mut wg = String::new();
    let mut addresses = Vec::new();
    for line in conf.lines() {
        if let Some(rest) = line.strip_prefix("Address = ") {
            addresses.extend(rest.split(", ").map(str::to_string));
        } else if !line.starts_with("DNS = ") {
            wg.push_str(line);
            wg.push('\n');
        }
    }
    (wg, addresses)
}

/// The VPS's file: the home as its peer (with the home's LAN behind it), and the port forward.
fn vps_config(vps: &KeyPair, home: &KeyPair) -> String {
    format!(
        "# The VPS: a hub for the phone and the home, and the home's public entry point.\n\
         [interface]\n\
         private_key = \"{}\"\n\
         listen_port = {PORT}\n\
         addresses = [\"10.88.0.1/24\"]\n\
         mtu = 1420\n\
         \n\
         [[peer]]\n\
         name = \"home\"\n\
         public_key = \"{}\"\n\
         allowed_ips = [\"10.88.0.2/32\", \"192.168.1.0/24\"]\n\
         \n\
         # The NAS's web server on the VPS's public port {FORWARDED_PORT}: the NAS sees each\n\
         # client's own address.\n\
         [[forward]]\n\
         protocol = \"tcp\"\n\
         ports = \"{FORWARDED_PORT}\"\n\
         to = \"{NAS}:{WEB_PORT}\"\n",
        vps.private_key, home.public_key
    )
}

/// The home router's file: the VPS as its one peer, named an entry point so that replies to
/// the clients the VPS forwards go back through it, and the LAN port served in XDP.
fn home_config(home: &KeyPair, vps: &KeyPair) -> String {
    format!(
        "# The home router, behind CGNAT: it keeps the path to the VPS open.\n\
         [interface]\n\
         private_key = \"{}\"\n\
         addresses = [\"10.88.0.2/24\"]\n\
         mtu = 1420\n\
         \n\
         [dataplane]\n\
         lan = [\"{HOME_LAN_IF}\"]\n\
         entry_peers = [\"{}\"]\n\
         \n\
         [[peer]]\n\
         name = \"vps\"\n\
         public_key = \"{}\"\n\
         endpoint = \"{VPS_PUBLIC}:{PORT}\"\n\
         allowed_ips = [\"10.88.0.0/24\"]\n\
         persistent_keepalive = 25\n",
        home.private_key, vps.public_key, vps.public_key
    )
}

/// Writes a file only its owner may read: it holds a private key.
fn write_private(path: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// Prints a configuration file, its private key hidden.
fn show_file(path: &std::path::Path) -> Result<()> {
    for line in std::fs::read_to_string(path)?.lines() {
        let shown = if line.starts_with("private_key") { "private_key = (hidden)" } else { line };
        println!("         | {shown}");
    }
    Ok(())
}

fn run() -> Result<()> {
    let gateway_cli = gateway_cli_binary()?;
    let dir = TestDir::new("demo")?;
    say("building the world: isp, VPS, CGNAT, home router, NAS, phone, internet client");
    let world = World::build()?;
    let vps_if = unique_ifname("wgv")?;
    let home_if = unique_ifname("wgh")?;
    let phone_if = unique_ifname("wgp")?;

    let vps_keys = KeyPair::generate()?;
    let home_keys = KeyPair::generate()?;
    // Each gatewayd reads one file: keys, addresses, peers, data path, forwards.
    let vps_file = dir.file(&format!("{vps_if}.toml"));
    write_private(&vps_file, &vps_config(&vps_keys, &home_keys))?;
    say(format!(
        "VPS {VPS_PUBLIC}: gatewayd --config {vps_if}.toml (eBPF data path, hub for the phone and \
         the home, public entry point):"
    ));
    show_file(&vps_file)?;
    let vps_options =
        GatewaydOptions { config: Some(vps_file.clone()), ..GatewaydOptions::new(DataPath::Ebpf) };
    let vps = Gatewayd::start(&world.vps, &dir, &vps_if, &vps_options)?;

    let home_file = dir.file(&format!("{home_if}.toml"));
    write_private(&home_file, &home_config(&home_keys, &vps_keys))?;
    say(format!(
        "home router (behind CGNAT {CGNAT_PUBLIC}): gatewayd --config {home_if}.toml, LAN port \
         {HOME_LAN_IF}:"
    ));
    show_file(&home_file)?;
    let home_options =
        GatewaydOptions { config: Some(home_file), ..GatewaydOptions::new(DataPath::Ebpf) };
    let home = Gatewayd::start(&world.home, &dir, &home_if, &home_options)?;

    say(
        "provisioning the phone on the VPS: gateway add-peer (prints the app's config and a QR code)",
    );
    let output = std::process::Command::new(&gateway_cli)
        .args(["add-peer", &vps_if, "--address", "10.88.0.3/32"])
        .args(["--endpoint", &format!("{VPS_PUBLIC}:{PORT}")])
        .args(["--route", "10.88.0.0/24", "--route", "192.168.1.0/24", "--qr"])
        .output()
        .context("running gateway add-peer")?;
    if !output.status.success() {
        bail!("gateway add-peer failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    let (conf, qr) = split_config_and_qr(&printed)
        .ok_or_else(|| anyhow!("gateway add-peer --qr printed no QR code after the config"))?;
    for line in conf.lines() {
        let shown = if line.starts_with("PrivateKey") { "PrivateKey = (hidden)" } else { line };
        println!("         | {shown}");
    }
    // The code carries the private key too: it is what the phone's app scans.
    for line in qr.lines() {
        println!("           {line}");
    }
    let (phone_conf, _) = app_config(conf);
    say(format!("the VPS wrote the new peer into {vps_if}.toml (atomically, comments kept):"));
    let written = std::fs::read_to_string(&vps_file)?;
    let phone_peer = written.rfind("[[peer]]").map_or("", |at| &written[at..]);
    for line in phone_peer.lines().take_while(|line| !line.is_empty()) {
        println!("         | {line}");
    }
    say(format!(
        "phone {}: wireguard-go {phone_if} with that config (a stock WireGuard app)",
        topology::PHONE_PUBLIC
    ));
    let phone = WgPeer::start(Implementation::WireguardGo, &world.phone, &dir, &phone_if)?;
    phone.setconf(&phone_conf)?;
    phone.bring_up(&[(IpAddr::from([10, 88, 0, 3]), 32)], 1420)?;
    world.phone.add_route_dev("10.88.0.0/24", &phone_if)?;
    world.phone.add_route_dev("192.168.1.0/24", &phone_if)?;

    say(format!(
        "the NAS serves http on {NAS}:{WEB_PORT}; the VPS forwards {VPS_PUBLIC}:{FORWARDED_PORT} to \
         it (the [[forward]] in its file)"
    ));
    let _web = Process::spawn(
        &dir,
        "nas-web",
        world.nas.command("ncat").args(["-lk", "-p", &WEB_PORT.to_string(), "-c"]).arg(
            "read -r request; printf 'HTTP/1.0 200 OK\\r\\n\\r\\nhello from the NAS at home; you are %s\\n' \"$NCAT_REMOTE_ADDR\"",
        ),
    )?;

    let hold = Hold;
    say("waiting for the home router's handshake through the CGNAT");
    wait_for_ping(&world.home, IpAddr::from([10, 88, 0, 1]), Duration::from_secs(20))?;

    let before = report::Snapshot::take(&[&vps, &home])?;

    let step = |n: u32, what: &str| say(format!("{n}. {what}"));
    step(1, "phone → VPS → home → NAS: ping 192.168.1.10");
    wait_for_ping(&world.phone, IpAddr::V4(NAS), Duration::from_secs(20))?;
    let p = ping(&world.phone, IpAddr::V4(NAS), 10)?;
    say(format!(
        "   {}/{} replies, rtt avg {:.3} ms",
        p.received,
        p.transmitted,
        p.rtt_avg_ms.unwrap_or(f64::NAN)
    ));
    if !p.all_received() {
        bail!("the phone lost pings to the NAS: {p:?}");
    }

    step(2, "phone → NAS bulk TCP (iperf3, 3 s): the VPS forwards between its peers");
    let _iperf = IperfServer::start(&world.nas, &dir, 5201)?;
    let options = IperfOptions { duration: Duration::from_secs(3), ..Default::default() };
    let r = iperf3_client(&world.phone, IpAddr::V4(NAS), 5201, &options)?;
    say(format!("   {:.0} Mbit/s received by the NAS", r.received_bits_per_second / 1e6));
    let options = IperfOptions {
        protocol: Protocol::Udp,
        duration: Duration::from_secs(3),
        bitrate: Some(200_000_000),
        length: Some(1200),
        ..Default::default()
    };
    let r = iperf3_client(&world.phone, IpAddr::V4(NAS), 5201, &options)?;
    say(format!(
        "   UDP 200 Mbit/s offered: {:.0} Mbit/s received, {:.2}% lost",
        r.received_bits_per_second / 1e6,
        r.lost_percent.unwrap_or(f64::NAN)
    ));

    step(
        3,
        &format!(
            "internet client {CLIENT_PUBLIC} → {VPS_PUBLIC}:{FORWARDED_PORT} → the NAS at home"
        ),
    );
    // The server answers and lingers; the client keeps its side open (no half-close, which
    // would make the server's ncat drop the reply) and gives up after 2 s of silence.
    let request = format!(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | ncat --no-shutdown -w 2 -i 2 {VPS_PUBLIC} {FORWARDED_PORT}; true"
    );
    let body = dir.wait_for(
        "the NAS's web reply through the port forward",
        Duration::from_secs(15),
        || match world.client.run("sh", &["-c", &request]) {
            Ok(reply) if !reply.trim().is_empty() => {
                Ok(Probe::Ready(reply.lines().last().unwrap_or("").trim().to_string()))
            }
            Ok(_) => Ok(Probe::NotYet("an empty reply".into())),
            Err(e) => Ok(Probe::NotYet(format!("{e:#}"))),
        },
    )?;
    say(format!("   reply: {body:?}"));
    if !body.contains(&CLIENT_PUBLIC.to_string()) {
        bail!("the NAS did not see the client's real address: {body:?}");
    }

    step(
        4,
        "NAS → VPS bulk (a backup to the VPS, iperf3 3 s): LAN traffic encrypted in XDP at home",
    );
    let _vps_iperf = IperfServer::start(&world.vps, &dir, 5202)?;
    let options = IperfOptions {
        protocol: Protocol::Udp,
        duration: Duration::from_secs(3),
        bitrate: Some(300_000_000),
        length: Some(1200),
        ..Default::default()
    };
    let r = iperf3_client(&world.nas, IpAddr::from([10, 88, 0, 1]), 5202, &options)?;
    say(format!(
        "   {:.0} Mbit/s received by the VPS, {:.2}% lost",
        r.received_bits_per_second / 1e6,
        r.lost_percent.unwrap_or(f64::NAN)
    ));

    let after = report::Snapshot::take(&[&vps, &home])?;
    say("what flowed where (this demo's traffic; bytes are WireGuard message bytes):");
    report::print(&before, &after, &[("VPS", &vps_if), ("home", &home_if)]);
    let peers = vps.show()?;
    say(format!(
        "wg show {vps_if}: {} peers, every one with a recent handshake",
        peers.peers.len()
    ));
    std::mem::forget(hold);
    drop((phone, home, vps));
    say("tearing down");
    Ok(())
}

/// With GATEWAY_DEMO_HOLD=<seconds>, a failing demo keeps its world that long before tearing
/// it down, so it can be inspected (`ip netns`, `gateway status`, `wg show`).
struct Hold;

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(secs) = std::env::var("GATEWAY_DEMO_HOLD").ok().and_then(|v| v.parse().ok()) {
            eprintln!("[demo] holding the world for {secs} s (GATEWAY_DEMO_HOLD)");
            std::thread::sleep(Duration::from_secs(secs));
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            say("done: everything was removed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("[demo] FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}
