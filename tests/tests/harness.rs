//! The harness checked against real peers before our daemon exists: the hub topology with
//! wireguard-go on the phone and at home and boringtun on the VPS (two peers on the hub), and
//! that nothing is left behind, whether the test body succeeds or panics.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use gateway_tests::topology::{Direct, Hub, TopologyOptions};
use gateway_tests::traffic::{
    EchoServer, IperfOptions, IperfServer, Protocol, echo_check, iperf3_client, ping, wait_for_ping,
};
use gateway_tests::wg::{Implementation, KeyPair, UAPI_DIR, WgDump, WgPeer};
use gateway_tests::{
    Probe, TestDir, cleanup_stale, list_namespaces, require_root, require_tools, unique_ifname,
};

const TOOLS: &[&str] = &["ip", "nft", "ping", "ncat", "ss", "wg", "wireguard-go", "boringtun-cli"];
const PORT: u16 = 51820;
const TUNNEL_MTU: u32 = 1420;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The overlay: 10.77.0.0/24 and fd77::/64, VPS .1, phone .2, home .3.
const VPS_TUNNEL: (Ipv4Addr, Ipv6Addr) = tunnel_addresses(1);
const PHONE_TUNNEL: (Ipv4Addr, Ipv6Addr) = tunnel_addresses(2);
const HOME_TUNNEL: (Ipv4Addr, Ipv6Addr) = tunnel_addresses(3);

const fn tunnel_addresses(host: u8) -> (Ipv4Addr, Ipv6Addr) {
    (Ipv4Addr::new(10, 77, 0, host), Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, host as u16))
}

fn tunnel_ips((v4, v6): (Ipv4Addr, Ipv6Addr)) -> [(IpAddr, u8); 2] {
    [(IpAddr::V4(v4), 24), (IpAddr::V6(v6), 64)]
}

#[test]
fn hub_relays_phone_to_home_lan_between_wireguard_go_and_boringtun() -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new("hub_real_peers")?;
    let hub = Hub::build(&TopologyOptions { ipv6: true, ..TopologyOptions::default() })?;
    let namespaces = hub.namespace_names();
    let sockets = run_hub_tunnels(&hub, &dir).map_err(|error| dir.attach_logs(error))?;
    drop(hub);
    assert_all_gone(&namespaces, &sockets)
}

fn run_hub_tunnels(hub: &Hub, dir: &TestDir) -> Result<Vec<PathBuf>> {
    let (vps_keys, phone_keys, home_keys) =
        (KeyPair::generate()?, KeyPair::generate()?, KeyPair::generate()?);
    let vps = WgPeer::start(Implementation::Boringtun, &hub.vps, dir, &unique_ifname("wg")?)?;
    let phone = WgPeer::start(Implementation::WireguardGo, &hub.phone, dir, &unique_ifname("wg")?)?;
    let home = WgPeer::start(Implementation::WireguardGo, &hub.home, dir, &unique_ifname("wg")?)?;

    // The VPS learns both endpoints from their handshakes (the home's is the carrier's NAT).
    vps.setconf(&format!(
        "[Interface]\nPrivateKey = {}\nListenPort = {PORT}\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = {}/32, {}/128\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = {}/32, {}/128, {}, {}\n",
        vps_keys.private_key,
        phone_keys.public_key,
        PHONE_TUNNEL.0,
        PHONE_TUNNEL.1,
        home_keys.public_key,
        HOME_TUNNEL.0,
        HOME_TUNNEL.1,
        Hub::HOME_LAN_V4,
        Hub::HOME_LAN_V6,
    ))?;
    // The phone dials the VPS over the IPv6 underlay, the home over IPv4 through the NAT.
    let vps_v6 = hub.vps_wan.v6()?;
    phone.setconf(&format!(
        "[Interface]\nPrivateKey = {}\n\n\
         [Peer]\nPublicKey = {}\nEndpoint = [{vps_v6}]:{PORT}\nAllowedIPs = 10.77.0.0/24, fd77::/64, {}, {}\n",
        phone_keys.private_key,
        vps_keys.public_key,
        Hub::HOME_LAN_V4,
        Hub::HOME_LAN_V6,
    ))?;
    home.setconf(&format!(
        "[Interface]\nPrivateKey = {}\n\n\
         [Peer]\nPublicKey = {}\nEndpoint = {}:{PORT}\nAllowedIPs = 10.77.0.0/24, fd77::/64\n\
         PersistentKeepalive = 25\n",
        home_keys.private_key, vps_keys.public_key, hub.vps_wan.v4,
    ))?;
    vps.bring_up(&tunnel_ips(VPS_TUNNEL), TUNNEL_MTU)?;
    phone.bring_up(&tunnel_ips(PHONE_TUNNEL), TUNNEL_MTU)?;
    home.bring_up(&tunnel_ips(HOME_TUNNEL), TUNNEL_MTU)?;
    for (netns, peer) in [(&hub.vps, &vps), (&hub.phone, &phone)] {
        netns.add_route_dev(Hub::HOME_LAN_V4, peer.ifname())?;
        netns.add_route_dev(Hub::HOME_LAN_V6, peer.ifname())?;
    }

    // The home's keepalive opens the NAT mapping; the VPS then knows the home by the carrier's
    // address, which is what makes the relay to the home possible at all.
    let carrier = IpAddr::V4(hub.cgnat_wan.v4);
    let home_seen_at =
        dir.wait_for("the VPS to learn the home's endpoint", HANDSHAKE_TIMEOUT, || {
            let status = vps.show()?.peer(&home_keys.public_key)?.clone();
            Ok(match status.endpoint {
                Some(endpoint) if status.latest_handshake.is_some() => Probe::Ready(endpoint),
                _ => Probe::NotYet(format!("{status:?}")),
            })
        })?;
    ensure!(
        home_seen_at.ip() == carrier,
        "the VPS sees the home at {home_seen_at}, not behind the carrier NAT ({carrier})"
    );

    let lan_host_v4 = IpAddr::V4(hub.lan_host_if.v4);
    let lan_host_v6 = IpAddr::V6(hub.lan_host_if.v6()?);
    for destination in [lan_host_v4, lan_host_v6] {
        wait_for_ping(&hub.phone, destination, HANDSHAKE_TIMEOUT)?;
    }
    let before = phone.show()?;
    // A clean burst each way. Retried: under heavy load from other processes on this machine a
    // burst through the userspace peers has (rarely) lost replies; a broken tunnel never passes.
    for destination in [lan_host_v4, lan_host_v6] {
        let what = format!("5 of 5 replies from {destination} through the hub");
        dir.wait_for(&what, HANDSHAKE_TIMEOUT, || {
            let report = ping(&hub.phone, destination, 5)?;
            Ok(if report.all_received() {
                Probe::Ready(())
            } else {
                Probe::NotYet(format!("{report:?}"))
            })
        })?;
    }
    let after = phone.show()?;
    check_counters_moved(&before, &after, &vps_keys.public_key, "phone's VPS peer")?;
    let phone_v6 = IpAddr::V6(hub.phone_wan.v6()?);
    let phone_endpoint = vps.show()?.peer(&phone_keys.public_key)?.endpoint;
    ensure!(
        phone_endpoint.is_some_and(|endpoint| endpoint.ip() == phone_v6),
        "the VPS should see the phone at {phone_v6}, not at {phone_endpoint:?}"
    );
    let relayed = vps.show()?;
    for (key, who) in [(&phone_keys.public_key, "phone"), (&home_keys.public_key, "home")] {
        let peer = relayed.peer(key)?;
        ensure!(peer.rx_bytes > 0 && peer.tx_bytes > 0, "VPS counters for the {who}: {peer:?}");
    }

    // TCP and UDP from the LAN host back to the phone: the reverse path through the relay.
    let tcp_echo = EchoServer::start(&hub.phone, dir, Protocol::Tcp, 7001)?;
    let udp_echo = EchoServer::start(&hub.phone, dir, Protocol::Udp, 7002)?;
    let phone_tunnel = IpAddr::V4(PHONE_TUNNEL.0);
    for server in [&tcp_echo, &udp_echo] {
        let payload = format!("hello over {:?}", server.protocol);
        echo_check(
            &hub.lan_host,
            server.protocol,
            phone_tunnel,
            server.port,
            payload.as_bytes(),
            HANDSHAKE_TIMEOUT,
        )?;
    }

    Ok([&vps, &phone, &home].iter().map(|peer| peer.uapi_socket()).collect())
}

fn check_counters_moved(before: &WgDump, after: &WgDump, key: &str, who: &str) -> Result<()> {
    let (before, after) = (before.peer(key)?, after.peer(key)?);
    ensure!(
        after.tx_bytes > before.tx_bytes && after.rx_bytes > before.rx_bytes,
        "{who}: transfer counters did not move: before {before:?}, after {after:?}"
    );
    Ok(())
}

/// The traffic tools against a plain routed path: iperf3 (TCP and UDP, JSON parsed), ncat echo
/// over IPv4 and IPv6, ping statistics.
#[test]
fn direct_underlay_carries_iperf3_echo_and_ping() -> Result<()> {
    require_root()?;
    require_tools(&["ip", "ping", "ncat", "ss", "iperf3"])?;
    let dir = TestDir::new("direct_traffic")?;
    let direct = Direct::build(&TopologyOptions { ipv6: true, ..TopologyOptions::default() })?;
    let server_v4 = IpAddr::V4(direct.server_if.v4);
    let server_v6 = IpAddr::V6(direct.server_if.v6()?);

    let report = ping(&direct.client, server_v6, 3)?;
    ensure!(report.all_received() && report.rtt_avg_ms.is_some(), "ping over IPv6: {report:?}");

    let iperf = IperfServer::start(&direct.server, &dir, 5201)?;
    let second = Duration::from_secs(1);
    let tcp = iperf3_client(
        &direct.client,
        server_v4,
        iperf.port,
        &IperfOptions { duration: second, ..IperfOptions::default() },
    )?;
    ensure!(tcp.received_bytes > 0 && tcp.retransmits.is_some(), "TCP report: {tcp:?}");
    let udp_options = IperfOptions {
        protocol: Protocol::Udp,
        duration: second,
        bitrate: Some(10_000_000),
        length: Some(1200),
        ..IperfOptions::default()
    };
    let udp = iperf3_client(&direct.client, server_v6, iperf.port, &udp_options)?;
    ensure!(
        udp.received_bytes > 0 && udp.packets.is_some_and(|packets| packets > 0),
        "UDP report: {udp:?}"
    );
    ensure!(udp.lost_packets.is_some() && udp.retransmits.is_none(), "UDP report: {udp:?}");
    // Nothing listens on 5202: the error from iperf3 must come through.
    let refused = iperf3_client(&direct.client, server_v4, 5202, &udp_options);
    ensure!(refused.is_err(), "iperf3 against a closed port reported {refused:?}");

    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let echo = EchoServer::start(&direct.server, &dir, protocol, 7000)?;
        for server in [server_v4, server_v6] {
            let payload = format!("{protocol:?} echo to {server}");
            echo_check(
                &direct.client,
                protocol,
                server,
                echo.port,
                payload.as_bytes(),
                second * 5,
            )?;
        }
    }
    let silent = echo_check(
        &direct.client,
        Protocol::Udp,
        server_v4,
        7999,
        b"nobody listens",
        Duration::from_millis(600),
    );
    ensure!(silent.is_err(), "an echo check with no server succeeded");
    Ok(())
}

/// What the panicking body had built, for the checks after it unwound.
#[derive(Default)]
struct Built {
    namespaces: Vec<String>,
    sockets: Vec<PathBuf>,
    pids: Vec<u32>,
}

#[test]
fn a_failing_test_body_still_removes_namespaces_processes_and_sockets() -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new("failing_body")?;
    let built = Mutex::new(Built::default());
    eprintln!("the next panic (\"deliberate failure\") is part of the test");
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let options = TopologyOptions { ipv6: true, ..TopologyOptions::default() };
        let direct = Direct::build(&options).expect("direct topology");
        let mut peer = WgPeer::start(
            Implementation::WireguardGo,
            &direct.server,
            &dir,
            &unique_ifname("wg").expect("interface name"),
        )
        .expect("wireguard-go");
        {
            let mut built = built.lock().unwrap();
            built.namespaces = direct.namespace_names();
            built.sockets.push(peer.uapi_socket());
            built.pids.push(peer.process().pid());
        }
        panic!("deliberate failure");
    }));
    ensure!(outcome.is_err(), "the inner closure was meant to panic");
    let built = built.into_inner().unwrap();
    ensure!(!built.namespaces.is_empty(), "the closure panicked before building anything");
    for pid in &built.pids {
        ensure!(
            !PathBuf::from(format!("/proc/{pid}")).exists(),
            "process {pid} survived the panic"
        );
    }
    assert_all_gone(&built.namespaces, &built.sockets)
}

fn assert_all_gone(namespaces: &[String], sockets: &[PathBuf]) -> Result<()> {
    let remaining = list_namespaces()?;
    let leaked: Vec<&String> = namespaces.iter().filter(|name| remaining.contains(name)).collect();
    ensure!(leaked.is_empty(), "namespaces left behind: {leaked:?}");
    let leaked: Vec<&PathBuf> = sockets.iter().filter(|socket| socket.exists()).collect();
    ensure!(leaked.is_empty(), "UAPI sockets left behind: {leaked:?}");
    Ok(())
}

#[test]
fn stale_leftovers_of_a_killed_run_are_removed_and_live_ones_kept() -> Result<()> {
    require_root()?;
    require_tools(&["ip"])?;
    // A prefix of its own, so concurrent runs' automatic cleanup of `gt…` names cannot race it.
    let prefix = "xstale";
    let dead_pid = find_dead_pid()?;
    let dead = format!("{prefix}vps{dead_pid}-0");
    let live = format!("{prefix}vps1-0"); // pid 1 is always alive
    let dead_socket = PathBuf::from(UAPI_DIR).join(format!("{prefix}wg{dead_pid}-1.sock"));
    fs::create_dir_all(UAPI_DIR)?;
    fs::write(&dead_socket, "")?;
    for name in [&dead, &live] {
        let status = Command::new("ip").args(["netns", "add", name]).status()?;
        ensure!(status.success(), "ip netns add {name} failed");
    }
    let removed = cleanup_stale(prefix);
    let remaining = list_namespaces()?;
    let _ = Command::new("ip").args(["netns", "delete", &live]).status();
    let _ = Command::new("ip").args(["netns", "delete", &dead]).status();
    let _ = fs::remove_file(&dead_socket);
    let removed = removed?;
    ensure!(
        removed.contains(&dead),
        "{dead} (owner {dead_pid} is gone) was not removed: {removed:?}"
    );
    ensure!(!remaining.contains(&dead), "{dead} still listed");
    ensure!(remaining.contains(&live), "{live} (owner alive) was removed");
    let socket_text = dead_socket.display().to_string();
    ensure!(removed.contains(&socket_text), "{socket_text} was not removed: {removed:?}");
    Ok(())
}

fn find_dead_pid() -> Result<u32> {
    let pid_max: u32 = fs::read_to_string("/proc/sys/kernel/pid_max")?.trim().parse()?;
    (2..pid_max)
        .rev()
        .find(|pid| !PathBuf::from(format!("/proc/{pid}")).exists())
        .context("every pid is in use")
}
