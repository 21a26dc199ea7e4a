//! Thousands of random and malformed datagrams at gatewayd's port, eBPF on and off: every
//! message type with wrong lengths and random contents, random receiver indexes, truncated
//! handshakes, unknown types, empty datagrams. The daemon must stay up, count what it threw
//! away, and the tunnel must still carry a ping afterwards (and take new handshakes).

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use gateway_common::maps::Stat;
use gateway_tests::gatewayd::{DataPath, GatewaydOptions};
use gateway_tests::pair::{
    Family, GATEWAYD_PORT, GATEWAYD_TUNNEL, Initiator, PEER_TUNNEL, Pair, PairSpec,
};
use gateway_tests::traffic::{
    PacketCapture, PingOptions, ping_until_clean, ping_with, send_all, udp_socket, wait_for_ping,
};
use gateway_tests::wg::Implementation;
use gateway_tests::{TestDir, require_root, require_tools};

const TOOLS: &[&str] = &["ip", "ping", "wg", "wireguard-go"];
const ROUNDS: usize = 40;
/// Replayed and tampered copies of a real data message, each.
const TAMPERED: usize = 25;

/// xorshift64*: reproducible garbage without a dependency.
struct Garbage(u64);

impl Garbage {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn bytes(&mut self, length: usize) -> Vec<u8> {
        (0..length).map(|_| self.next() as u8).collect()
    }

    /// A message of `kind` (the first byte; three reserved zero bytes follow) of `length`.
    fn message(&mut self, kind: u8, length: usize) -> Vec<u8> {
        let mut message = self.bytes(length);
        if let Some(first) = message.first_mut() {
            *first = kind;
        }
        for reserved in message.iter_mut().take(4).skip(1) {
            *reserved = 0;
        }
        message
    }
}

/// The lengths of the four message types, and a data message's minimum (header + tag).
const INITIATION: usize = 148;
const RESPONSE: usize = 92;
const COOKIE_REPLY: usize = 64;
const DATA_MIN: usize = 32;

/// One round of every kind of mistake: about 120 datagrams.
fn round(garbage: &mut Garbage) -> Vec<Vec<u8>> {
    let mut datagrams = Vec::new();
    for (kind, length) in [(1u8, INITIATION), (2, RESPONSE), (3, COOKIE_REPLY)] {
        // Right length, random contents (fails MAC1); off by one either way; truncated.
        for length in [length, length - 1, length + 1, garbage.below(length), 4, 1] {
            datagrams.push(garbage.message(kind, length));
        }
    }
    for _ in 0..60 {
        // Transport data with random receiver indexes, counters and lengths, from below the
        // minimum up to jumbo sizes, some of them block-aligned as real ones are.
        let length = match garbage.below(4) {
            0 => garbage.below(DATA_MIN),
            1 => DATA_MIN + 16 * garbage.below(90),
            _ => DATA_MIN + garbage.below(1500),
        };
        datagrams.push(garbage.message(4, length));
    }
    for _ in 0..30 {
        // Unknown types, non-zero reserved bytes, or no structure at all.
        let length = garbage.below(200);
        let mut datagram = garbage.bytes(length);
        if length > 0 && garbage.below(2) == 0 {
            datagram[0] = [0u8, 5, 255, 1, 4][garbage.below(5)];
        }
        datagrams.push(datagram);
    }
    datagrams.push(Vec::new());
    datagrams
}

/// A real transport-data message from the peer to gatewayd, picked off the peer's link.
fn capture_data_message(pair: &Pair, capture: &PacketCapture) -> Result<Vec<u8>> {
    let report = ping_with(pair.peer_ns(), IpAddr::V4(GATEWAYD_TUNNEL.0), &PingOptions::count(1))?;
    ensure!(report.all_received(), "the ping meant to be captured failed: {report:?}");
    capture
        .next_udp(Duration::from_secs(5), |udp| {
            udp.destination_port == GATEWAYD_PORT
                && udp.payload.first() == Some(&4)
                && udp.payload.len() > DATA_MIN
        })
        .map(|udp| udp.payload)
        .context("no data message from the peer to gatewayd was seen on the wire")
}

fn survive(data_path: DataPath) -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new(&format!("garbage-{data_path}"))?;
    let spec = PairSpec {
        peer: Implementation::WireguardGo,
        initiator: Initiator::Peer,
        underlay: Family::V4,
        gatewayd: GatewaydOptions::new(data_path),
    };
    let mut pair = Pair::build(&dir, &spec)?;
    let result = (|| -> Result<()> {
        pair.establish(&dir)?;
        let capture = PacketCapture::open(pair.peer_ns(), &pair.direct.server_if.name)?;
        let real = capture_data_message(&pair, &capture)?;
        let before = pair.gatewayd.status()?;
        // From the peer's host, another port: the same path the peer's packets take.
        let socket = udp_socket(pair.peer_ns(), "0.0.0.0:0".parse()?)?;
        let target = pair.gatewayd_endpoint()?;
        let mut garbage = Garbage(0x9e37_79b9_7f4a_7c15);
        let mut sent = 0;
        // Authentic messages replayed, and tampered copies with fresh counters, from a
        // stranger's port: dropped, and never a reason to move the peer's endpoint.
        send_all(&socket, target, &vec![real.clone(); TAMPERED], Duration::ZERO)?;
        let tampered: Vec<Vec<u8>> = (0..TAMPERED)
            .map(|index| {
                let mut copy = real.clone();
                let counter = u64::from_le_bytes(copy[8..16].try_into().expect("a data header"));
                copy[8..16].copy_from_slice(&(counter + 1000 + index as u64).to_le_bytes());
                let last = copy.len() - 1 - index % 16;
                copy[last] ^= 0x80;
                copy
            })
            .collect();
        send_all(&socket, target, &tampered, Duration::ZERO)?;
        sent += 2 * TAMPERED;
        for _ in 0..ROUNDS {
            let datagrams = round(&mut garbage);
            sent += datagrams.len();
            send_all(&socket, target, &datagrams, Duration::ZERO)?;
            // Let the receive paths drain between rounds (the point is malformed input, not
            // a socket-buffer overflow).
            std::thread::sleep(Duration::from_millis(5));
        }
        pair.gatewayd.check_running()?;

        for (from, to) in [
            (pair.peer_ns(), IpAddr::V4(GATEWAYD_TUNNEL.0)),
            (pair.gatewayd_ns(), IpAddr::V4(PEER_TUNNEL.0)),
        ] {
            ping_until_clean(from, to, 5, Duration::from_secs(15))
                .with_context(|| format!("after {sent} bad datagrams, pings to {to}"))?;
        }
        let after = pair.gatewayd.status()?;
        let threw_away = |status: &gateway::daemon::status::Status| -> u64 {
            status.userspace_drops.values().sum::<u64>()
                + [
                    Stat::RxDropTruncated,
                    Stat::RxPassUnknownIndex,
                    Stat::RxPassHandshake,
                    Stat::RxPassOther,
                ]
                .iter()
                .map(|stat| status.ebpf_stats.get(&format!("{stat:?}")).copied().unwrap_or(0))
                .sum::<u64>()
        };
        let counted = threw_away(&after) - threw_away(&before);
        eprintln!(
            "{data_path}: {sent} bad datagrams; userspace drops {:?}; eBPF {:?}",
            after.userspace_drops,
            after.ebpf_stats.iter().filter(|(_, v)| **v > 0).collect::<Vec<_>>()
        );
        let rejected = |status: &gateway::daemon::status::Status| -> u64 {
            ["Replayed", "Forged"]
                .iter()
                .filter_map(|why| status.userspace_drops.get(*why))
                .sum::<u64>()
                + [Stat::RxDropReplay, Stat::RxDropAuth]
                    .iter()
                    .map(|stat| status.ebpf_stats.get(&format!("{stat:?}")).copied().unwrap_or(0))
                    .sum::<u64>()
        };
        let rejected = rejected(&after) - rejected(&before);
        ensure!(
            rejected >= 2 * TAMPERED as u64,
            "{rejected} replayed or forged messages were rejected, of {}",
            2 * TAMPERED
        );
        let endpoint = after
            .peers
            .iter()
            .find(|p| p.public_key == pair.peer_keys.public_key)
            .and_then(|p| p.endpoint.clone());
        ensure!(
            endpoint == Some(pair.peer_endpoint()?.to_string()),
            "forged or replayed messages moved the peer's endpoint to {endpoint:?}"
        );
        ensure!(
            counted >= (sent as u64) / 2,
            "only {counted} of {sent} bad datagrams were counted anywhere: the flood did not reach gatewayd"
        );

        // New handshakes still complete: the peer forgets gatewayd and meets it again.
        let gatewayd_key = pair.gatewayd_keys.public_key.clone();
        let handshake_before =
            pair.gatewayd.show()?.peer(&pair.peer_keys.public_key)?.latest_handshake;
        pair.peer.set(&["peer", &gatewayd_key, "remove"])?;
        let allowed = format!("{}/32,{}/128", GATEWAYD_TUNNEL.0, GATEWAYD_TUNNEL.1);
        let endpoint = target.to_string();
        pair.peer.set(&["peer", &gatewayd_key, "allowed-ips", &allowed, "endpoint", &endpoint])?;
        wait_for_ping(pair.peer_ns(), IpAddr::V4(GATEWAYD_TUNNEL.0), Duration::from_secs(15))?;
        let handshake_after =
            pair.gatewayd.show()?.peer(&pair.peer_keys.public_key)?.latest_handshake;
        ensure!(
            handshake_after.is_some() && handshake_after >= handshake_before,
            "no new handshake after the flood: {handshake_before:?} → {handshake_after:?}"
        );
        pair.gatewayd.check_running()
    })();
    result.map_err(|error| dir.attach_logs(error))
}

#[test]
fn malformed_datagrams_with_ebpf() -> Result<()> {
    survive(DataPath::Ebpf)
}

#[test]
fn malformed_datagrams_without_ebpf() -> Result<()> {
    survive(DataPath::Userspace)
}
