//! Endpoints that change under gatewayd, eBPF on and off:
//! - roaming: the peer moves to a new listen port, then to a new address, and gatewayd
//!   follows it from its authenticated packets (in XDP when eBPF is on);
//! - persistent keepalive through a masquerading NAT whose UDP mappings expire after 3 s:
//!   with keepalives the mapping survives idle time and the far side can still reach us;
//!   without them it expires and the far side cannot.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use gateway_common::maps::Stat;
use gateway_tests::gatewayd::{DataPath, EbpfStats, Gatewayd, GatewaydOptions};
use gateway_tests::pair::{
    Family, GATEWAYD_PORT, GATEWAYD_TUNNEL, Initiator, PEER_TUNNEL, Pair, PairSpec, TUNNEL_MTU,
    tunnel_cidrs, wg_config,
};
use gateway_tests::topology::{Hub, TopologyOptions};
use gateway_tests::traffic::{PingOptions, ping_until_clean, ping_with, wait_for_ping};
use gateway_tests::wg::{Implementation, KeyPair, WgPeer};
use gateway_tests::{Netns, Probe, TestDir, require_root, require_tools, unique_ifname};

const TOOLS: &[&str] = &["ip", "nft", "ping", "wg", "wireguard-go", "boringtun-cli"];
const TIMEOUT: Duration = Duration::from_secs(15);
const NEW_PEER_PORT: u16 = 51900;
/// The peer's second address on its underlay link (the first is 10.201.2.1).
const NEW_PEER_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 201, 2, 3);

fn roaming(peer: Implementation, data_path: DataPath) -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new(&format!("roaming-{peer}-{data_path}"))?;
    let spec = PairSpec {
        peer,
        initiator: Initiator::Gatewayd,
        underlay: Family::V4,
        gatewayd: GatewaydOptions::new(data_path),
    };
    let pair = Pair::build(&dir, &spec)?;
    follow_the_peer(&pair, &dir).map_err(|error| dir.attach_logs(error))
}

fn follow_the_peer(pair: &Pair, dir: &TestDir) -> Result<()> {
    pair.establish(dir)?;
    let before = pair.gatewayd.ebpf_stats()?;
    let mut exchanges = 0;

    pair.peer.set(&["listen-port", &NEW_PEER_PORT.to_string()])?;
    let new_port = SocketAddr::new(IpAddr::V4(pair.direct.server_if.v4), NEW_PEER_PORT);
    exchanges += roam_to(pair, dir, new_port).context("after the peer's port changed")?;

    // The peer's address moves, and its port with it (as when a phone changes networks):
    // the new address is added, the old one removed (the new one, secondary until then,
    // takes its place rather than going with it). The new port matters to the peers, not to
    // gatewayd: boringtun's sockets stay connected from the old address, and wireguard-go
    // keeps sending from it, until they are rebound.
    let server = pair.peer_ns();
    let iface = &pair.direct.server_if.name;
    for scope in ["all", iface.as_str()] {
        server.set_sysctl(&format!("net.ipv4.conf.{scope}.promote_secondaries"), "1")?;
    }
    server.add_address(iface, IpAddr::V4(NEW_PEER_ADDRESS), 24)?;
    server.ip(&["address", "del", &format!("{}/24", pair.direct.server_if.v4), "dev", iface])?;
    pair.peer.set(&["listen-port", &(NEW_PEER_PORT + 1).to_string()])?;
    let new_address = SocketAddr::new(IpAddr::V4(NEW_PEER_ADDRESS), NEW_PEER_PORT + 1);
    exchanges += roam_to(pair, dir, new_address).context("after the peer's address changed")?;

    let stats = pair.gatewayd.ebpf_stats()?.since(&before);
    eprintln!("{exchanges} echo exchanges; eBPF counters grew by {}", stats.nonzero());
    check_path(pair.spec.gatewayd.data_path, &stats, exchanges)
}

/// The peer speaks first from where it is now; gatewayd must then show that endpoint and
/// reach the peer there. Returns the echo exchanges that crossed.
fn roam_to(pair: &Pair, dir: &TestDir, expected: SocketAddr) -> Result<u64> {
    wait_for_ping(pair.peer_ns(), IpAddr::V4(GATEWAYD_TUNNEL.0), TIMEOUT)?;
    let key = &pair.peer_keys.public_key;
    dir.wait_for(&format!("gatewayd to follow the peer to {expected}"), TIMEOUT, || {
        let shown = pair.gatewayd.show()?.peer(key)?.endpoint;
        let status = pair.gatewayd.status()?;
        let reported =
            status.peers.iter().find(|p| &p.public_key == key).and_then(|p| p.endpoint.clone());
        Ok(if shown == Some(expected) && reported == Some(expected.to_string()) {
            Probe::Ready(())
        } else {
            Probe::NotYet(format!("wg show: {shown:?}, status: {reported:?}"))
        })
    })?;
    let mut exchanges = 0;
    for (from, to) in [
        (pair.gatewayd_ns(), IpAddr::V4(PEER_TUNNEL.0)),
        (pair.peer_ns(), IpAddr::V4(GATEWAYD_TUNNEL.0)),
    ] {
        exchanges += u64::from(ping_until_clean(from, to, 5, TIMEOUT)?.received);
    }
    Ok(exchanges)
}

fn check_path(data_path: DataPath, stats: &EbpfStats, exchanges: u64) -> Result<()> {
    match data_path {
        DataPath::Ebpf => {
            for stat in [Stat::RxDeliveredLocal, Stat::TxEncrypted] {
                ensure!(
                    stats.get(stat) >= exchanges,
                    "{stat:?} grew by {} for {exchanges} echo exchanges: {}",
                    stats.get(stat),
                    stats.nonzero()
                );
            }
            ensure!(stats.get(Stat::Error) == 0, "program errors: {}", stats.nonzero());
        }
        DataPath::Userspace => {
            ensure!(stats.all_zero(), "eBPF counters moved with --no-ebpf: {}", stats.nonzero())
        }
    }
    Ok(())
}

/// How long the carrier keeps an idle UDP mapping.
const NAT_TIMEOUT_SECS: u32 = 3;
/// Idle time the keepalives must bridge: more than twice the mapping's lifetime.
const IDLE: Duration = Duration::from_secs(7);
const KEEPALIVE_SECS: &str = "1";
const WG_MESSAGE_KEEPALIVE_LEN: u64 = 32;

/// gatewayd at the home behind the carrier NAT, wireguard-go on the VPS, which knows no
/// endpoint for it: the VPS can reach the home only through the mapping the home keeps open.
fn keepalive_through_nat(data_path: DataPath) -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new(&format!("nat-keepalive-{data_path}"))?;
    let hub = Hub::build(&TopologyOptions::default())?;
    for key in ["nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"] {
        hub.cgnat.set_sysctl(&format!("net.netfilter.{key}"), &NAT_TIMEOUT_SECS.to_string())?;
    }
    let (home_keys, vps_keys) = (KeyPair::generate()?, KeyPair::generate()?);
    let home =
        Gatewayd::start(&hub.home, &dir, &unique_ifname("gw")?, &GatewaydOptions::new(data_path))?;
    let vps = WgPeer::start(Implementation::WireguardGo, &hub.vps, &dir, &unique_ifname("wg")?)?;
    let vps_endpoint = SocketAddr::new(IpAddr::V4(hub.vps_wan.v4), GATEWAYD_PORT);
    home.setconf(&format!(
        "{}PersistentKeepalive = {KEEPALIVE_SECS}\n",
        wg_config(&home_keys, GATEWAYD_PORT, &vps_keys, PEER_TUNNEL, Some(vps_endpoint))
    ))?;
    vps.setconf(&wg_config(&vps_keys, GATEWAYD_PORT, &home_keys, GATEWAYD_TUNNEL, None))?;
    home.bring_up(&tunnel_cidrs(GATEWAYD_TUNNEL), TUNNEL_MTU)?;
    vps.bring_up(&tunnel_cidrs(PEER_TUNNEL), TUNNEL_MTU)?;
    let world =
        NatWorld { hub: &hub, home: &home, vps: &vps, home_keys: &home_keys, vps_keys: &vps_keys };
    world.run(&dir, data_path).map_err(|error| dir.attach_logs(error))
}

struct NatWorld<'a> {
    hub: &'a Hub,
    home: &'a Gatewayd,
    vps: &'a WgPeer,
    home_keys: &'a KeyPair,
    vps_keys: &'a KeyPair,
}

impl NatWorld<'_> {
    fn run(&self, dir: &TestDir, data_path: DataPath) -> Result<()> {
        wait_for_ping(&self.hub.home, IpAddr::V4(PEER_TUNNEL.0), TIMEOUT)
            .context("the home's first handshake through the NAT")?;
        let carrier = IpAddr::V4(self.hub.cgnat_wan.v4);
        let seen = self.vps.show()?.peer(&self.home_keys.public_key)?.endpoint;
        ensure!(
            seen.is_some_and(|e| e.ip() == carrier),
            "the VPS sees the home at {seen:?}, not behind {carrier}"
        );

        // Idle with keepalives: the mapping must be there at every look.
        let rx_before = self.vps.show()?.peer(&self.home_keys.public_key)?.rx_bytes;
        let started = Instant::now();
        while started.elapsed() < IDLE {
            ensure!(
                !self.mappings()?.is_empty(),
                "the NAT mapping expired after {:?} despite persistent keepalives",
                started.elapsed()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let received = self.vps.show()?.peer(&self.home_keys.public_key)?.rx_bytes - rx_before;
        let expected = WG_MESSAGE_KEEPALIVE_LEN * (IDLE.as_secs() - 2);
        ensure!(
            received >= expected,
            "the VPS got {received} bytes of keepalives in {IDLE:?}, expected ≥ {expected}"
        );
        let before = self.home.ebpf_stats()?;
        let report = ping_until_clean(&self.hub.vps, IpAddr::V4(GATEWAYD_TUNNEL.0), 5, TIMEOUT)
            .context("the VPS reaching the home after idling")?;
        let stats = self.home.ebpf_stats()?.since(&before);
        eprintln!(
            "after idling with keepalives: {report:?}; eBPF counters grew by {}",
            stats.nonzero()
        );
        check_path(data_path, &stats, u64::from(report.received))?;

        // Without keepalives the same idle time loses the mapping, and the VPS the home.
        self.home.set(&["peer", &self.vps_keys.public_key, "persistent-keepalive", "0"])?;
        dir.wait_for("the NAT mapping to expire without keepalives", TIMEOUT, || {
            let mappings = self.mappings()?;
            Ok(if mappings.is_empty() {
                Probe::Ready(())
            } else {
                Probe::NotYet(mappings.join("; "))
            })
        })?;
        let report =
            ping_with(&self.hub.vps, IpAddr::V4(GATEWAYD_TUNNEL.0), &PingOptions::count(3))?;
        ensure!(report.received == 0, "the VPS reached the home with the mapping gone: {report:?}");
        Ok(())
    }

    /// The carrier's conntrack entries for the tunnel (UDP to the VPS's WireGuard port).
    fn mappings(&self) -> Result<Vec<String>> {
        conntrack_udp(&self.hub.cgnat, GATEWAYD_PORT)
    }
}

/// Lines of the namespace's conntrack table for UDP with this destination port.
fn conntrack_udp(netns: &Netns, port: u16) -> Result<Vec<String>> {
    let table = netns.run("cat", &["/proc/net/nf_conntrack"])?;
    let needle = format!("dport={port} ");
    Ok(table
        .lines()
        .filter(|line| line.contains(" udp ") && line.contains(&needle))
        .map(String::from)
        .collect())
}

#[test]
fn roaming_wireguard_go_ebpf() -> Result<()> {
    roaming(Implementation::WireguardGo, DataPath::Ebpf)
}

#[test]
fn roaming_wireguard_go_userspace() -> Result<()> {
    roaming(Implementation::WireguardGo, DataPath::Userspace)
}

#[test]
fn roaming_boringtun_ebpf() -> Result<()> {
    roaming(Implementation::Boringtun, DataPath::Ebpf)
}

#[test]
fn roaming_boringtun_userspace() -> Result<()> {
    roaming(Implementation::Boringtun, DataPath::Userspace)
}

#[test]
fn nat_keepalive_ebpf() -> Result<()> {
    keepalive_through_nat(DataPath::Ebpf)
}

#[test]
fn nat_keepalive_userspace() -> Result<()> {
    keepalive_through_nat(DataPath::Userspace)
}
