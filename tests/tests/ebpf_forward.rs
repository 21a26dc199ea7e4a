//! Forwarding decisions of the receive programs through BPF_PROG_TEST_RUN in a namespace
//! with real routes: hub forwarding (a packet from one peer for another is re-encrypted
//! toward the other's endpoint, across address families) and LAN redirect (a packet routed
//! out of an attached LAN interface is sent there directly), with their fallbacks.

mod ebpf_common;

use std::net::IpAddr;
use std::time::Instant;

use ebpf_common::frames::{self, PEER_MAC};
use ebpf_common::lab::{LAN_HOST_MAC, Lab};
use ebpf_common::{Keys, LISTEN_PORT, Rng, TestPeer, add_peer, config, load};
use gateway::dataplane::{Dataplane, PeerEndpoint, Program, Stats, TestRunInput};
use gateway_common::maps::Stat;

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;
const TC_ACT_REDIRECT: u32 = 7;
const MTU: usize = 1420;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Fwd {
    lab: Lab,
    dp: Dataplane,
    p1: TestPeer,
    p2: TestPeer,
}

/// Peer 1 (10.9.0.2) at 192.0.2.2:40001, peer 2 (10.9.0.3, fd00::3) at
/// [2001:db8::2]:40002, both through the underlay `u0`.
fn setup(hub: bool, lan: bool) -> Fwd {
    let lab = Lab::new();
    let mut dp = load();
    let mut c = config(lab.tun_ifindex, MTU as u32);
    c.hub_forward = hub;
    c.lan_redirect = lan;
    dp.set_config(&c).unwrap();
    let endpoint = |addr: &str, port: u16| PeerEndpoint {
        addr: (ip(addr), port).into(),
        local: None,
        ifindex: lab.underlay_ifindex,
    };
    let now = Instant::now();
    let p1 = add_peer(
        &mut dp,
        Keys::new(1),
        &["10.9.0.2/32", "fd00::2/128"],
        Some(endpoint("192.0.2.2", 40001)),
        now,
    );
    let p2 = add_peer(
        &mut dp,
        Keys::new(2),
        &["10.9.0.3/32", "fd00::3/128"],
        Some(endpoint("2001:db8::2", 40002)),
        now,
    );
    if lan {
        let _in = lab.ns.enter();
        dp.attach_lan(lab.lan_ifindex).expect("attach_lan");
    }
    Fwd { lab, dp, p1, p2 }
}

struct Ran {
    verdict: u32,
    data: Vec<u8>,
    stats: Stats,
}

impl Fwd {
    /// A frame from peer 1 (over IPv4 or IPv6) carrying `inner`.
    fn sealed_by_p1(&self, outer_v6: bool, counter: u64, inner: &[u8]) -> Vec<u8> {
        let k = self.p1.keys;
        let message =
            frames::wg_data(&k.gateway_recv, k.gateway_index, counter, &frames::padded(inner, MTU));
        let (src, dst) =
            if outer_v6 { ("2001:db8::2", "2001:db8::1") } else { ("192.0.2.2", "192.0.2.1") };
        frames::outer_frame(ip(src), ip(dst), 40001, LISTEN_PORT, &message)
    }

    fn run(&self, program: Program, frame: &[u8]) -> Ran {
        let _in = self.lab.ns.enter();
        let before = self.dp.stats().unwrap();
        let input = TestRunInput { data: frame, ifindex: self.lab.underlay_ifindex, repeat: 1 };
        let out = self.dp.test_run(program, &input).unwrap();
        Ran { verdict: out.verdict, data: out.data, stats: self.dp.stats().unwrap().since(&before) }
    }
}

fn packet(src: &str, dst: &str, ttl: u8, len: usize, rng: &mut Rng) -> Vec<u8> {
    let header = if src.contains(':') { 40 } else { 20 };
    frames::ip_packet(ip(src), ip(dst), 17, ttl, 0, &rng.bytes(len - header))
}

/// `packet` as a router leaves it: TTL / hop limit one lower (IPv4 checksum updated).
fn forwarded(packet: &[u8]) -> Vec<u8> {
    let mut p = packet.to_vec();
    if p[0] >> 4 == 4 {
        p[8] -= 1;
        p[10..12].copy_from_slice(&[0, 0]);
        let c = frames::checksum(0, &p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        p[7] -= 1;
    }
    p
}

#[test]
fn hub_reencrypts_for_the_other_peer_across_families() {
    let f = setup(true, false);
    let mut rng = Rng(31);
    let mut counter = 0;
    for (outer_v6, src, dst) in [
        (false, "10.9.0.2", "10.9.0.3"),
        (true, "10.9.0.2", "10.9.0.3"),
        (false, "fd00::2", "fd00::3"),
        (true, "fd00::2", "fd00::3"),
    ] {
        for len in [40usize, 64, 65, 200, 1000, MTU] {
            let inner = packet(src, dst, 64, len, &mut rng);
            let what = format!("outer v6 {outer_v6}, {src} -> {dst}, {len}");
            let ran = f.run(Program::RxXdp, &f.sealed_by_p1(outer_v6, counter, &inner));
            assert_eq!(ran.stats.nonzero(), vec![(Stat::RxHubForwarded, 1)], "{what}");
            assert_eq!(ran.verdict, XDP_TX, "{what}: back out of the interface it came in on");
            let o = frames::parse_outer(&ran.data).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!((o.dst_mac, o.src_mac), (PEER_MAC, f.lab.underlay_mac), "{what}");
            assert_eq!((o.src, o.dst), (ip("2001:db8::1"), ip("2001:db8::2")), "{what}");
            assert_eq!((o.sport, o.dport), (LISTEN_PORT, 40002), "{what}");
            let k = f.p2.keys;
            let (receiver, sent_counter, plain) = frames::open_wg_data(&k.gateway_send, &o.message)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(receiver, k.peer_index, "{what}");
            assert_eq!(sent_counter, counter, "{what}: peer 2's own counter");
            assert!(plain == frames::padded(&forwarded(&inner), MTU), "{what}: plaintext");
            counter += 1;
        }
    }
    let a1 = f.dp.peer_activity(f.p1.slot).unwrap();
    let a2 = f.dp.peer_activity(f.p2.slot).unwrap();
    assert_eq!((a1.rx_packets, a2.tx_packets), (counter, counter));
}

#[test]
fn hub_forwarding_in_tc_too() {
    let f = setup(true, false);
    let inner = packet("10.9.0.2", "10.9.0.3", 64, 300, &mut Rng(32));
    let ran = f.run(Program::RxTc, &f.sealed_by_p1(false, 0, &inner));
    assert_eq!(ran.stats.nonzero(), vec![(Stat::RxHubForwarded, 1)]);
    assert_eq!(ran.verdict, TC_ACT_REDIRECT);
    let o = frames::parse_outer(&ran.data).unwrap();
    assert_eq!((o.dst, o.dport), (ip("2001:db8::2"), 40002));
    let (_, _, plain) = frames::open_wg_data(&f.p2.keys.gateway_send, &o.message).unwrap();
    assert!(plain == frames::padded(&forwarded(&inner), MTU));
}

#[test]
fn hub_falls_back_to_the_stack() {
    let mut f = setup(true, false);
    let mut rng = Rng(33);
    let local = |f: &Fwd, frame: &[u8], inner: &[u8], what: &str| {
        let ran = f.run(Program::RxXdp, frame);
        assert_eq!(ran.stats.nonzero(), vec![(Stat::RxDeliveredLocal, 1)], "{what}");
        assert_eq!(ran.verdict, XDP_PASS, "{what}");
        assert!(ran.data[14..] == *inner, "{what}: delivered unchanged (the stack routes it)");
    };
    // TTL about to expire: the stack answers with time exceeded.
    let inner = packet("10.9.0.2", "10.9.0.3", 1, 100, &mut rng);
    local(&f, &f.sealed_by_p1(false, 0, &inner), &inner, "TTL 1");
    // Peer 2 has no session to send with: the stack routes it into the TUN (the daemon).
    f.dp.set_peer_tx_session(f.p2.slot, None).unwrap();
    let inner = packet("10.9.0.2", "10.9.0.3", 64, 100, &mut rng);
    local(&f, &f.sealed_by_p1(false, 1, &inner), &inner, "no session");
    f.dp.set_peer_tx_session(f.p2.slot, Some(f.p2.session)).unwrap();
    // Nobody has the destination.
    let inner = packet("10.9.0.2", "10.9.0.99", 64, 100, &mut rng);
    local(&f, &f.sealed_by_p1(false, 2, &inner), &inner, "no peer");
    // For this host.
    let inner = packet("10.9.0.2", "10.9.0.1", 64, 100, &mut rng);
    local(&f, &f.sealed_by_p1(false, 3, &inner), &inner, "local");
    // Hub forwarding off.
    let mut c = config(f.lab.tun_ifindex, MTU as u32);
    c.hub_forward = false;
    f.dp.set_config(&c).unwrap();
    let inner = packet("10.9.0.2", "10.9.0.3", 64, 100, &mut rng);
    local(&f, &f.sealed_by_p1(false, 4, &inner), &inner, "hub off");
    assert_eq!(f.dp.peer_activity(f.p2.slot).unwrap().tx_packets, 0);
}

#[test]
fn lan_redirect_sends_straight_out_of_the_lan_port() {
    let f = setup(false, true);
    let mut rng = Rng(34);
    for (counter, (program, verdict, outer_v6, len)) in [
        (Program::RxXdp, XDP_REDIRECT, false, 40usize),
        (Program::RxXdp, XDP_REDIRECT, true, 700),
        (Program::RxXdp, XDP_REDIRECT, false, MTU),
        (Program::RxTc, TC_ACT_REDIRECT, false, 300),
        (Program::RxTc, TC_ACT_REDIRECT, true, 300),
    ]
    .into_iter()
    .enumerate()
    {
        let inner = packet("10.9.0.2", "10.8.0.5", 64, len, &mut rng);
        let what = format!("{program:?} outer v6 {outer_v6} {len}");
        let ran = f.run(program, &f.sealed_by_p1(outer_v6, counter as u64, &inner));
        assert_eq!(ran.stats.nonzero(), vec![(Stat::RxLanRedirected, 1)], "{what}");
        assert_eq!(ran.verdict, verdict, "{what}");
        let expected = frames::ethernet(LAN_HOST_MAC, f.lab.lan_mac, 0x0800, &forwarded(&inner));
        assert!(
            ran.data == expected,
            "{what}: frame\n got {:02x?}\nwant {:02x?}",
            &ran.data[..34],
            &expected[..34]
        );
    }
    // TTL 1: the stack answers.
    let inner = packet("10.9.0.2", "10.8.0.5", 1, 100, &mut rng);
    let ran = f.run(Program::RxXdp, &f.sealed_by_p1(false, 100, &inner));
    assert_eq!(ran.stats.nonzero(), vec![(Stat::RxDeliveredLocal, 1)]);
}
