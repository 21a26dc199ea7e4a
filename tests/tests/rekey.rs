//! Session rotation against the reference implementations, eBPF on and off:
//! - by time: gatewayd runs with `--test-timer-divisor 60` (rekey after 2 s, reject after 3 s),
//!   and sessions must rotate several times while a ping stream keeps flowing without loss;
//! - by a private-key change on either side followed by an immediate handshake: the old
//!   sessions must be gone at once (also from the eBPF maps: a stale session there would keep
//!   encrypting for a peer that can no longer decrypt).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use gateway_common::maps::Stat;
use gateway_tests::gatewayd::{DataPath, EbpfStats, GatewaydOptions};
use gateway_tests::pair::{Family, GATEWAYD_TUNNEL, Initiator, PEER_TUNNEL, Pair, PairSpec};
use gateway_tests::traffic::{PingOptions, ping_until_clean, ping_with, wait_for_ping};
use gateway_tests::wg::{Implementation, KeyPair};
use gateway_tests::{TestDir, require_root, require_tools};

const TOOLS: &[&str] = &["ip", "ping", "wg", "wireguard-go", "boringtun-cli"];
/// REKEY_AFTER_TIME (120 s) becomes 2 s, REJECT_AFTER_TIME (180 s) 3 s.
const TIMER_DIVISOR: u32 = 60;
/// How long the ping stream runs while sessions rotate.
const STREAM: Duration = Duration::from_secs(7);
const STREAM_INTERVAL: Duration = Duration::from_millis(50);
/// A handshake needs one round trip; a lost initiation would be retried only after
/// REKEY_TIMEOUT (5 s). Replies within this prove the first attempt worked.
const IMMEDIATE: Duration = Duration::from_secs(4);
/// How long a burst of pings may be retried on a loaded machine.
const RETRY: Duration = Duration::from_secs(15);

fn pair_for(
    test: &str,
    peer: Implementation,
    data_path: DataPath,
    divisor: Option<u32>,
) -> Result<(TestDir, Pair)> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new(&format!("{test}-{peer}-{data_path}"))?;
    let mut gatewayd = GatewaydOptions::new(data_path);
    gatewayd.timer_divisor = divisor;
    let initiator = match peer {
        Implementation::WireguardGo => Initiator::Gatewayd,
        Implementation::Boringtun => Initiator::Peer,
    };
    let spec = PairSpec { peer, initiator, underlay: Family::V4, gatewayd };
    let pair = Pair::build(&dir, &spec)?;
    Ok((dir, pair))
}

fn rekey_by_time(peer: Implementation, data_path: DataPath) -> Result<()> {
    let (dir, pair) = pair_for("rekey-time", peer, data_path, Some(TIMER_DIVISOR))?;
    rotate_while_streaming(&pair, &dir).map_err(|error| dir.attach_logs(error))
}

fn rotate_while_streaming(pair: &Pair, dir: &TestDir) -> Result<()> {
    pair.establish(dir)?;
    let stats_before = pair.gatewayd.ebpf_stats()?;
    let count = (STREAM.as_millis() / STREAM_INTERVAL.as_millis()) as u32;
    let options = PingOptions { count, interval: STREAM_INTERVAL, ..PingOptions::count(count) };
    let peer_key = &pair.peer_keys.public_key;
    let (report, handshakes) = thread::scope(|scope| -> Result<_> {
        let stream =
            scope.spawn(|| ping_with(pair.gatewayd_ns(), IpAddr::V4(PEER_TUNNEL.0), &options));
        // `wg show` gives the latest handshake to the second; rotations 2 s apart each
        // leave a distinct value.
        let mut handshakes = BTreeSet::new();
        while !stream.is_finished() {
            if let Some(at) = pair.gatewayd.show()?.peer(peer_key)?.latest_handshake {
                handshakes.insert(at);
            }
            thread::sleep(Duration::from_millis(100));
        }
        let report = stream.join().expect("the ping thread panicked")?;
        Ok((report, handshakes))
    })?;
    let rotations = handshakes.len().saturating_sub(1) as u64;
    ensure!(
        rotations >= 2,
        "sessions rotated {rotations} time(s) in {STREAM:?} with REKEY_AFTER_TIME at 2 s \
         (handshakes seen at {handshakes:?})"
    );
    ensure!(
        report.all_received(),
        "traffic did not keep flowing across {rotations} rotations: {report:?}"
    );
    let stats = pair.gatewayd.ebpf_stats()?.since(&stats_before);
    eprintln!("{rotations} rotations, {report:?}; eBPF counters grew by {}", stats.nonzero());
    let replies = u64::from(report.received);
    check_path(pair, &stats, replies, rotations)
}

/// With eBPF on, the programs carried the stream: every packet but the few around each
/// rotation (a responder's first packet on a fresh session confirms it in the daemon).
fn check_path(pair: &Pair, stats: &EbpfStats, replies: u64, rotations: u64) -> Result<()> {
    match pair.spec.gatewayd.data_path {
        DataPath::Ebpf => {
            let allowance = 2 * (rotations + 1);
            for stat in [Stat::RxDeliveredLocal, Stat::TxEncrypted] {
                ensure!(
                    stats.get(stat) + allowance >= replies,
                    "{stat:?} grew by {} for {replies} echo exchanges: {}",
                    stats.get(stat),
                    stats.nonzero()
                );
            }
            ensure!(stats.get(Stat::Error) == 0, "program errors: {}", stats.nonzero());
        }
        DataPath::Userspace => {
            ensure!(stats.all_zero(), "eBPF counters moved with --no-ebpf: {}", stats.nonzero());
        }
    }
    Ok(())
}

fn rekey_by_key_change(peer: Implementation, data_path: DataPath) -> Result<()> {
    let (dir, pair) = pair_for("rekey-key", peer, data_path, None)?;
    change_keys(pair, &dir).map_err(|error| dir.attach_logs(error))
}

fn change_keys(mut pair: Pair, dir: &TestDir) -> Result<()> {
    pair.establish(dir)?;
    let gatewayd_v4 = IpAddr::V4(GATEWAYD_TUNNEL.0);
    let peer_v4 = IpAddr::V4(PEER_TUNNEL.0);
    let gatewayd_allowed = format!("{}/32,{}/128", GATEWAYD_TUNNEL.0, GATEWAYD_TUNNEL.1);
    let peer_allowed = format!("{}/32,{}/128", PEER_TUNNEL.0, PEER_TUNNEL.1);
    let gatewayd_endpoint = pair.gatewayd_endpoint()?.to_string();
    let peer_endpoint = pair.peer_endpoint()?.to_string();

    // gatewayd's key changes; the peer is told the new public key and nothing else.
    let new_keys = KeyPair::generate()?;
    let key_file = dir.file("gatewayd-new.key");
    std::fs::write(&key_file, &new_keys.private_key)?;
    pair.gatewayd.set(&["private-key", &key_file.to_string_lossy()])?;
    let old_public = std::mem::replace(&mut pair.gatewayd_keys, new_keys).public_key;
    // Two requests: boringtun drops the rest of a request after a `remove`.
    pair.peer.set(&["peer", &old_public, "remove"])?;
    pair.peer.set(&["peer", &pair.gatewayd_keys.public_key, "allowed-ips", &gatewayd_allowed])?;
    let stats_before = pair.gatewayd.ebpf_stats()?;
    // Only gatewayd knows an endpoint now: it must handshake at once with its new key.
    wait_for_ping(pair.gatewayd_ns(), peer_v4, IMMEDIATE)
        .context("no immediate handshake after gatewayd's private key changed")?;
    let seen = pair.peer.show()?.peer(&pair.gatewayd_keys.public_key)?.clone();
    // Counters rather than the handshake time: boringtun reports that as seconds elapsed,
    // which reads as "never" in the first second.
    ensure!(
        seen.rx_bytes > 0 && seen.tx_bytes > 0,
        "the peer has no session with the new key: {seen:?}"
    );
    ensure!(
        seen.endpoint.is_some_and(|endpoint| endpoint.to_string() == gatewayd_endpoint),
        "the peer learned gatewayd at {:?}, not {gatewayd_endpoint}",
        seen.endpoint
    );
    check_carried(&pair, &stats_before, "after gatewayd's key change")?;

    // The peer's key changes; gatewayd replaces the peer (in one request), and the
    // peer, which knows gatewayd's endpoint from the handshake above, initiates.
    let new_peer_keys = KeyPair::generate()?;
    let peer_key_file = dir.file("peer-new.key");
    std::fs::write(&peer_key_file, &new_peer_keys.private_key)?;
    pair.peer.set(&["private-key", &peer_key_file.to_string_lossy()])?;
    let old_peer_public = std::mem::replace(&mut pair.peer_keys, new_peer_keys).public_key;
    pair.gatewayd.set(&[
        "peer",
        &old_peer_public,
        "remove",
        "peer",
        &pair.peer_keys.public_key,
        "allowed-ips",
        &peer_allowed,
        "endpoint",
        &peer_endpoint,
    ])?;
    let listed = pair.gatewayd.show()?;
    ensure!(
        listed.peers.len() == 1 && listed.peer(&pair.peer_keys.public_key).is_ok(),
        "gatewayd should list only the new peer: {listed:?}"
    );
    let stats_before = pair.gatewayd.ebpf_stats()?;
    wait_for_ping(pair.peer_ns(), gatewayd_v4, IMMEDIATE)
        .context("no immediate handshake after the peer's private key changed")?;
    let seen = pair.gatewayd.show()?.peer(&pair.peer_keys.public_key)?.clone();
    ensure!(seen.latest_handshake.is_some(), "gatewayd has no handshake with the new peer key");
    check_carried(&pair, &stats_before, "after the peer's key change")?;
    let status = pair.gatewayd.status()?;
    ensure!(status.peers.len() == 1, "the removed peer is still in the status: {status:?}");
    Ok(())
}

/// A clean burst both ways, and with eBPF on the programs carried it on the new sessions.
fn check_carried(pair: &Pair, before: &EbpfStats, when: &str) -> Result<()> {
    let mut replies = 0;
    for (from, to) in [
        (pair.gatewayd_ns(), IpAddr::V4(PEER_TUNNEL.0)),
        (pair.peer_ns(), IpAddr::V4(GATEWAYD_TUNNEL.0)),
    ] {
        let report = ping_until_clean(from, to, 5, RETRY)
            .with_context(|| format!("{when}: pings to {to}"))?;
        replies += u64::from(report.received);
    }
    let stats = pair.gatewayd.ebpf_stats()?.since(before);
    eprintln!("{when}: eBPF counters grew by {}", stats.nonzero());
    match pair.spec.gatewayd.data_path {
        DataPath::Ebpf => {
            for stat in [Stat::RxDeliveredLocal, Stat::TxEncrypted] {
                ensure!(
                    stats.get(stat) >= replies,
                    "{when}: {stat:?} grew by {} for {replies} echo exchanges: {}",
                    stats.get(stat),
                    stats.nonzero()
                );
            }
        }
        DataPath::Userspace => {
            ensure!(stats.all_zero(), "eBPF counters moved with --no-ebpf: {}", stats.nonzero());
        }
    }
    Ok(())
}

macro_rules! cases {
    ($body:ident: $($name:ident: $peer:ident, $path:ident;)*) => {$(
        #[test]
        fn $name() -> Result<()> {
            $body(Implementation::$peer, DataPath::$path)
        }
    )*};
}

cases! { rekey_by_time:
    time_wireguard_go_ebpf: WireguardGo, Ebpf;
    time_wireguard_go_userspace: WireguardGo, Userspace;
    time_boringtun_ebpf: Boringtun, Ebpf;
    time_boringtun_userspace: Boringtun, Userspace;
}

cases! { rekey_by_key_change:
    key_change_wireguard_go_ebpf: WireguardGo, Ebpf;
    key_change_wireguard_go_userspace: WireguardGo, Userspace;
    key_change_boringtun_ebpf: Boringtun, Ebpf;
    key_change_boringtun_userspace: Boringtun, Userspace;
}
