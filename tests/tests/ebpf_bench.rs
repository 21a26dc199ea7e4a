//! Nanoseconds per packet of the fast paths, as BPF_PROG_TEST_RUN measures them (the
//! program's own run time, no syscall): decrypt + local delivery (XDP), encrypt (LAN XDP),
//! and hub re-encryption (XDP), at 64, 512 and 1420 inner bytes.
//!
//! `cargo test -p gateway-tests --test ebpf_bench -- --ignored --nocapture`
//!
//! Each run processes a fresh packet (a repeated test run would process its own output again:
//! a replayed counter, an already encrypted frame), so every number is the median of single
//! runs, which includes some cold-cache cost a loaded system would not pay per packet.

mod ebpf_common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ebpf_common::frames;
use ebpf_common::lab::{LAN_HOST_MAC, Lab};
use ebpf_common::{Keys, LISTEN_PORT, Rng, add_peer, config, load};
use gateway::dataplane::{PeerEndpoint, Program, TestRunInput};

const RUNS: usize = 3000;
const SIZES: [usize; 3] = [64, 512, 1420];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn median(mut v: Vec<Duration>) -> u128 {
    v.sort_unstable();
    v[v.len() / 2].as_nanos()
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn bench_ns_per_packet() {
    let lab = Lab::new();
    let mut dp = load();
    let mut c = config(lab.tun_ifindex, 1420);
    c.hub_forward = true;
    dp.set_config(&c).unwrap();
    let e = |addr: &str, port| PeerEndpoint {
        addr: (ip(addr), port).into(),
        local: None,
        ifindex: lab.underlay_ifindex,
    };
    let p1 = add_peer(
        &mut dp,
        Keys::new(1),
        &["10.9.0.2/32"],
        Some(e("192.0.2.2", 40001)),
        Instant::now(),
    );
    add_peer(
        &mut dp,
        Keys::new(2),
        &["10.9.0.3/32", "10.77.0.0/16"],
        Some(e("192.0.2.2", 40002)),
        Instant::now(),
    );
    let _in = lab.ns.enter();
    let mut rng = Rng(99);
    let mut counter = 0u64;
    let run = |program: Program, frame: &[u8], ifindex: u32, verdict: u32| -> Duration {
        let out = dp.test_run(program, &TestRunInput { data: frame, ifindex, repeat: 1 }).unwrap();
        assert_eq!(out.verdict, verdict, "{program:?}");
        out.duration
    };
    println!(
        "\n{:>6} | {:>12} {:>12} {:>12} | {:>10}",
        "inner", "decrypt", "encrypt", "hub", "Gbit/s dec"
    );
    for size in SIZES {
        // Frames first, then each program in a tight loop of single runs.
        let k = p1.keys;
        let mut sealed = |src: &str, dst: &str| {
            let (s, d) = (ip(src), ip(dst));
            let inner =
                frames::ip_packet(s, d, 17, 64, 0, &frames::udp(s, d, 1, 2, &rng.bytes(size - 28)));
            let msg = frames::wg_data(
                &k.gateway_recv,
                k.gateway_index,
                counter,
                &frames::padded(&inner, 1420),
            );
            counter += 1;
            frames::outer_frame(ip("192.0.2.2"), ip("192.0.2.1"), 40001, LISTEN_PORT, &msg)
        };
        let to_us: Vec<Vec<u8>> = (0..RUNS).map(|_| sealed("10.9.0.2", "10.9.0.1")).collect();
        let via_hub: Vec<Vec<u8>> = (0..RUNS).map(|_| sealed("10.9.0.2", "10.9.0.3")).collect();
        let (s, d) = (ip("10.8.0.5"), ip("10.77.1.2"));
        let inner =
            frames::ip_packet(s, d, 17, 64, 0, &frames::udp(s, d, 1, 2, &rng.bytes(size - 28)));
        let from_lan = frames::ethernet(lab.lan_mac, LAN_HOST_MAC, 0x0800, &inner);
        let dec: Vec<Duration> =
            to_us.iter().map(|f| run(Program::RxXdp, f, lab.underlay_ifindex, 2)).collect();
        let enc: Vec<Duration> =
            (0..RUNS).map(|_| run(Program::TxLan, &from_lan, lab.lan_ifindex, 4)).collect();
        let hub: Vec<Duration> =
            via_hub.iter().map(|f| run(Program::RxXdp, f, lab.underlay_ifindex, 3)).collect();
        let empty: Vec<Duration> =
            (0..RUNS).map(|_| run(Program::XdpPass, &[0u8; 64], 0, 2)).collect();
        println!("        (an empty XDP program, single runs: {} ns)", median(empty));
        let d = median(dec);
        println!(
            "{size:>6} | {:>9} ns {:>9} ns {:>9} ns | {:>10.2}",
            d,
            median(enc),
            median(hub),
            size as f64 * 8.0 / d as f64
        );
    }
}
