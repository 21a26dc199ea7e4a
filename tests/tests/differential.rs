//! The eBPF data path against the userspace one, as observed from outside: the same traffic
//! (a fixed sequence of UDP datagrams each way, a fixed ping run) through a gatewayd with eBPF
//! and one with `--no-ebpf`, each paired with a fresh wireguard-go. The receivers must get the
//! same bytes in the same order, and `wg show` must count the same transfer on both sides
//! (the kernel's counting: every WireGuard message, handshakes included, padded as sent).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Result, ensure};
use gateway_common::maps::Stat;
use gateway_tests::gatewayd::{DataPath, GatewaydOptions};
use gateway_tests::pair::{Family, GATEWAYD_TUNNEL, Initiator, PEER_TUNNEL, Pair, PairSpec};
use gateway_tests::traffic::{PingOptions, ping_with, receive_all, send_all, udp_socket};
use gateway_tests::wg::Implementation;
use gateway_tests::{TestDir, require_root, require_tools};

const TOOLS: &[&str] = &["ip", "ping", "wg", "wireguard-go"];
const DATAGRAMS: usize = 60;
const UDP_PORT: u16 = 7100;
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the outside world can see of one run.
#[derive(Debug, PartialEq, Eq)]
struct Observation {
    /// Datagrams the receiver behind gatewayd got, in order.
    into_gatewayd: Vec<Vec<u8>>,
    /// Datagrams the receiver behind the peer got, in order.
    from_gatewayd: Vec<Vec<u8>>,
    /// Echo requests sent and replies received, by size.
    pings: Vec<(u32, u32, u32)>,
    /// `wg show` transfer (rx, tx) of gatewayd's peer and of the peer's gatewayd.
    gatewayd_transfer: (u64, u64),
    peer_transfer: (u64, u64),
}

/// Sizes from 0 to beyond the tunnel MTU's padding boundary, each payload unique.
fn payloads(direction: u8) -> Vec<Vec<u8>> {
    (0..DATAGRAMS)
        .map(|index| {
            let length = (index * 97 + usize::from(direction) * 13) % 1350;
            (0..length).map(|byte| (byte * 31 + index + usize::from(direction)) as u8).collect()
        })
        .collect()
}

#[test]
fn ebpf_and_userspace_paths_are_indistinguishable_from_outside() -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let mut observations = Vec::new();
    for data_path in [DataPath::Ebpf, DataPath::Userspace] {
        let dir = TestDir::new(&format!("differential-{data_path}"))?;
        let spec = PairSpec {
            peer: Implementation::WireguardGo,
            initiator: Initiator::Peer,
            underlay: Family::V4,
            gatewayd: GatewaydOptions::new(data_path),
        };
        let pair = Pair::build(&dir, &spec)?;
        let observation = observe(&pair).map_err(|error| dir.attach_logs(error))?;
        observations.push((data_path, observation));
    }
    let (_, ebpf) = &observations[0];
    let (_, userspace) = &observations[1];
    for (direction, (sent, got)) in [(1, &ebpf.into_gatewayd), (2, &ebpf.from_gatewayd)]
        .into_iter()
        .map(|(d, got)| (d, (payloads(d), got)))
    {
        ensure!(
            &sent == got,
            "direction {direction}: the receiver did not get exactly what was sent ({} of {} datagrams)",
            got.len(),
            sent.len()
        );
    }
    let carried: u64 = payloads(1).iter().map(|p| p.len() as u64).sum();
    ensure!(
        ebpf.gatewayd_transfer.0 > carried && ebpf.peer_transfer.0 > carried,
        "the transfer counters do not cover the {carried} payload bytes: gatewayd {:?}, peer {:?}",
        ebpf.gatewayd_transfer,
        ebpf.peer_transfer
    );
    eprintln!(
        "both runs: gatewayd transfer {:?}, peer transfer {:?}",
        userspace.gatewayd_transfer, userspace.peer_transfer
    );
    ensure!(
        ebpf == userspace,
        "the paths differ as seen from outside:\n  eBPF:      pings {:?}, gatewayd transfer {:?}, peer transfer {:?}\n  userspace: pings {:?}, gatewayd transfer {:?}, peer transfer {:?}\n  datagrams equal: in {}, out {}",
        ebpf.pings,
        ebpf.gatewayd_transfer,
        ebpf.peer_transfer,
        userspace.pings,
        userspace.gatewayd_transfer,
        userspace.peer_transfer,
        ebpf.into_gatewayd == userspace.into_gatewayd,
        ebpf.from_gatewayd == userspace.from_gatewayd,
    );
    Ok(())
}

fn observe(pair: &Pair) -> Result<Observation> {
    // Exactly one handshake and one echo exchange, whatever the load: a retried ping would
    // add messages to one run's counters and not the other's.
    let first = ping_with(
        pair.peer_ns(),
        IpAddr::V4(GATEWAYD_TUNNEL.0),
        &PingOptions { reply_timeout: Duration::from_secs(10), ..PingOptions::count(1) },
    )?;
    ensure!(first.all_received(), "the first exchange failed: {first:?}");
    let stats_before = pair.gatewayd.ebpf_stats()?;

    let gatewayd_address = SocketAddr::new(IpAddr::V4(GATEWAYD_TUNNEL.0), UDP_PORT);
    let peer_address = SocketAddr::new(IpAddr::V4(PEER_TUNNEL.0), UDP_PORT);
    let gatewayd_socket = udp_socket(pair.gatewayd_ns(), gatewayd_address)?;
    let peer_socket = udp_socket(pair.peer_ns(), peer_address)?;
    let gap = Duration::from_millis(2);
    send_all(&peer_socket, gatewayd_address, &payloads(1), gap)?;
    let into_gatewayd = receive_all(&gatewayd_socket, DATAGRAMS, RECEIVE_TIMEOUT)?;
    send_all(&gatewayd_socket, peer_address, &payloads(2), gap)?;
    let from_gatewayd = receive_all(&peer_socket, DATAGRAMS, RECEIVE_TIMEOUT)?;

    let mut pings = Vec::new();
    for size in [0, 56, 1000, 1392] {
        let options = PingOptions {
            size: Some(size),
            interval: Duration::from_millis(50),
            ..PingOptions::count(5)
        };
        let report = ping_with(pair.gatewayd_ns(), IpAddr::V4(PEER_TUNNEL.0), &options)?;
        pings.push((size, report.transmitted, report.received));
    }
    // Read before any timer can add a keepalive (the first would come 10 s after the last
    // data received without a reply).
    let gatewayd_peer = pair.gatewayd.show()?.peer(&pair.peer_keys.public_key)?.clone();
    let peer_gatewayd = pair.peer.show()?.peer(&pair.gatewayd_keys.public_key)?.clone();

    let stats = pair.gatewayd.ebpf_stats()?.since(&stats_before);
    eprintln!("{}: eBPF counters grew by {}", pair.spec.gatewayd.data_path, stats.nonzero());
    match pair.spec.gatewayd.data_path {
        // The comparison means something only if the programs carried this run.
        DataPath::Ebpf => {
            let echoes: u32 = pings.iter().map(|&(_, _, received)| received).sum();
            let carried_in = (into_gatewayd.len() as u64) + u64::from(echoes);
            let carried_out = (from_gatewayd.len() as u64) + u64::from(echoes);
            ensure!(
                stats.get(Stat::RxDeliveredLocal) >= carried_in
                    && stats.get(Stat::TxEncrypted) >= carried_out,
                "the eBPF run did not go through the programs: {}",
                stats.nonzero()
            );
        }
        DataPath::Userspace => {
            ensure!(stats.all_zero(), "eBPF counters moved with --no-ebpf: {}", stats.nonzero())
        }
    }
    Ok(Observation {
        into_gatewayd,
        from_gatewayd,
        pings,
        gatewayd_transfer: (gatewayd_peer.rx_bytes, gatewayd_peer.tx_bytes),
        peer_transfer: (peer_gatewayd.rx_bytes, peer_gatewayd.tx_bytes),
    })
}
