//! Nanoseconds per packet of the fast paths, as BPF_PROG_TEST_RUN measures them (the program's
//! own run time, no syscall): decrypt + local delivery (XDP receive), encrypt (LAN XDP), and
//! hub re-encryption (XDP receive with hub forwarding), at a given inner packet size.
//!
//! Each run processes a fresh packet (a repeated test run would process its own output again:
//! a replayed counter, an already encrypted frame), so every number is the median of single
//! runs, which includes some cold-cache cost a loaded system would not pay per packet. The
//! median of an empty XDP program's single runs is reported alongside: the floor of the method.
//!
//! Used by the ignored test `ebpf_bench` and by `cargo xtask bench` (through `gateway-bench
//! ebpf-micro`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use gateway::dataplane::{Dataplane, PeerEndpoint, Program, TestRunInput};

use super::lab::{LAN_HOST_MAC, Lab};
use super::{Keys, LISTEN_PORT, Rng, add_peer, config, frames, load};

/// The inner sizes the benchmark reports by default.
pub const SIZES: [usize; 3] = [64, 512, 1420];

/// The tunnel MTU of the lab: the largest inner packet.
const TUNNEL_MTU: usize = 1420;
/// An IPv4 header and a UDP header: the smallest inner packet.
const HEADERS: usize = 28;

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

/// Medians over single runs at one inner packet size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramTimes {
    pub inner_bytes: usize,
    /// XDP receive: parse, replay check, decrypt, AllowedIPs check, hand-off for local delivery.
    pub decrypt_ns: u64,
    /// LAN XDP: route lookup, encrypt, outer headers, redirect to the underlay.
    pub encrypt_ns: u64,
    /// XDP receive with hub forwarding: decrypt, then re-encrypt to another peer and XDP_TX.
    pub hub_ns: u64,
    /// An empty XDP program: what the measurement itself costs.
    pub empty_ns: u64,
}

/// Runs each program `runs` times per size in `sizes` (inner IPv4/UDP packet bytes).
pub fn measure(runs: usize, sizes: &[usize]) -> Result<Vec<ProgramTimes>> {
    ensure!(runs > 0, "the number of runs must be at least 1");
    for &size in sizes {
        ensure!(
            (HEADERS..=TUNNEL_MTU).contains(&size),
            "inner packet size {size} is outside {HEADERS}..={TUNNEL_MTU} (IPv4 + UDP headers up \
             to the tunnel MTU)"
        );
    }
    let lab = Lab::new();
    let mut bench = Bench::new(&lab)?;
    let _inside = lab.ns.enter();
    sizes.iter().map(|&size| bench.measure_size(&lab, runs, size)).collect()
}

struct Bench {
    dataplane: Dataplane,
    /// The peer packets come from (and are decrypted for).
    sender: Keys,
    rng: Rng,
    counter: u64,
    /// Held so the sessions' slots stay published.
    _peers: Vec<super::TestPeer>,
}

impl Bench {
    fn new(lab: &Lab) -> Result<Bench> {
        let mut dataplane = load();
        let mut tunnel = config(lab.tun_ifindex, TUNNEL_MTU as u32);
        tunnel.hub_forward = true;
        dataplane.set_config(&tunnel).context("setting the data plane's CONFIG")?;
        let endpoint = |port| PeerEndpoint {
            addr: (v4([192, 0, 2, 2]), port).into(),
            local: None,
            ifindex: lab.underlay_ifindex,
        };
        let sender = add_peer(
            &mut dataplane,
            Keys::new(1),
            &["10.9.0.2/32"],
            Some(endpoint(40001)),
            Instant::now(),
        );
        let hub_target = add_peer(
            &mut dataplane,
            Keys::new(2),
            &["10.9.0.3/32", "10.77.0.0/16"],
            Some(endpoint(40002)),
            Instant::now(),
        );
        Ok(Bench {
            dataplane,
            sender: sender.keys,
            rng: Rng(99),
            counter: 0,
            _peers: vec![sender, hub_target],
        })
    }

    fn measure_size(&mut self, lab: &Lab, runs: usize, size: usize) -> Result<ProgramTimes> {
        // Frames first, then each program in a tight loop of single runs.
        let to_us: Vec<Vec<u8>> = (0..runs).map(|_| self.sealed([10, 9, 0, 1], size)).collect();
        let via_hub: Vec<Vec<u8>> = (0..runs).map(|_| self.sealed([10, 9, 0, 3], size)).collect();
        let from_lan = self.lan_frame(lab, size);
        let decrypt = to_us
            .iter()
            .map(|frame| self.run(Program::RxXdp, frame, lab.underlay_ifindex, XDP_PASS))
            .collect::<Result<Vec<_>>>()?;
        let encrypt = (0..runs)
            .map(|_| self.run(Program::TxLan, &from_lan, lab.lan_ifindex, XDP_REDIRECT))
            .collect::<Result<Vec<_>>>()?;
        let hub = via_hub
            .iter()
            .map(|frame| self.run(Program::RxXdp, frame, lab.underlay_ifindex, XDP_TX))
            .collect::<Result<Vec<_>>>()?;
        let empty = (0..runs)
            .map(|_| self.run(Program::XdpPass, &[0u8; 64], 0, XDP_PASS))
            .collect::<Result<Vec<_>>>()?;
        Ok(ProgramTimes {
            inner_bytes: size,
            decrypt_ns: median_ns(decrypt),
            encrypt_ns: median_ns(encrypt),
            hub_ns: median_ns(hub),
            empty_ns: median_ns(empty),
        })
    }

    /// An IPv4/UDP packet of `size` bytes with a random payload.
    fn udp_packet(&mut self, source: IpAddr, destination: IpAddr, size: usize) -> Vec<u8> {
        let payload = self.rng.bytes(size - HEADERS);
        let udp = frames::udp(source, destination, 1, 2, &payload);
        frames::ip_packet(source, destination, 17, 64, 0, &udp)
    }

    /// A transport-data frame from the sender peer carrying a UDP packet to `destination`.
    fn sealed(&mut self, destination: [u8; 4], size: usize) -> Vec<u8> {
        let inner = self.udp_packet(v4([10, 9, 0, 2]), v4(destination), size);
        let keys = self.sender;
        let message = frames::wg_data(
            &keys.gateway_recv,
            keys.gateway_index,
            self.counter,
            &frames::padded(&inner, TUNNEL_MTU),
        );
        self.counter += 1;
        let (peer, gateway) = (v4([192, 0, 2, 2]), v4([192, 0, 2, 1]));
        frames::outer_frame(peer, gateway, 40001, LISTEN_PORT, &message)
    }

    /// A frame from a LAN host to a destination behind the hub-target peer.
    fn lan_frame(&mut self, lab: &Lab, size: usize) -> Vec<u8> {
        let inner = self.udp_packet(v4([10, 8, 0, 5]), v4([10, 77, 1, 2]), size);
        frames::ethernet(lab.lan_mac, LAN_HOST_MAC, 0x0800, &inner)
    }

    fn run(&self, program: Program, frame: &[u8], ifindex: u32, verdict: u32) -> Result<Duration> {
        let input = TestRunInput { data: frame, ifindex, repeat: 1 };
        let output = self
            .dataplane
            .test_run(program, &input)
            .with_context(|| format!("BPF_PROG_TEST_RUN of {}", program.name()))?;
        if output.verdict != verdict {
            bail!(
                "{} returned verdict {} instead of {verdict}: the benchmark's setup is not what \
                 the program expects",
                program.name(),
                output.verdict
            );
        }
        Ok(output.duration)
    }
}

fn median_ns(mut durations: Vec<Duration>) -> u64 {
    durations.sort_unstable();
    let median = durations.get(durations.len() / 2).copied().unwrap_or_default();
    u64::try_from(median.as_nanos()).unwrap_or(u64::MAX)
}

fn v4(octets: [u8; 4]) -> IpAddr {
    IpAddr::from(octets)
}
