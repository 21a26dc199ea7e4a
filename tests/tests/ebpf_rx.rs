//! The receive programs (XDP `wg_rx_xdp`, TC `wg_rx_tc`) through BPF_PROG_TEST_RUN: every
//! verdict and STATS counter of the receive path, decryption byte-exact against the
//! `chacha20poly1305` crate. No namespace needed: local delivery does no route lookups.

mod ebpf_common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ebpf_common::frames::{self, GATEWAY_MAC, PEER_MAC};
use ebpf_common::{Keys, LISTEN_PORT, Rng, TestPeer, add_peer, config, load};
use gateway::dataplane::{Dataplane, PeerEndpoint, Program, SessionUse, Stats, TestRunInput};
use gateway_common::ecn;
use gateway_common::maps::{Stat, XDP_HANDOFF_MAGIC};
use gateway_common::wire::REJECT_AFTER_MESSAGES;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

const PEER4: &str = "192.0.2.2";
const GW4: &str = "192.0.2.1";
const PEER6: &str = "2001:db8::2";
const GW6: &str = "2001:db8::1";
const INNER_PEER4: &str = "10.9.0.2";
const INNER_GW4: &str = "10.9.0.1";
const INNER_PEER6: &str = "fd00::2";
const INNER_GW6: &str = "fd00::1";
const PEER_PORT: u16 = 40000;
const MTU: usize = 1420;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Rx {
    dp: Dataplane,
    peer: TestPeer,
}

fn setup() -> Rx {
    let mut dp = load();
    dp.set_config(&config(1, MTU as u32)).unwrap();
    let endpoint = PeerEndpoint { addr: (ip(PEER4), PEER_PORT).into(), local: None, ifindex: 0 };
    let peer = add_peer(
        &mut dp,
        Keys::new(1),
        &["10.9.0.2/32", "fd00::2/128"],
        Some(endpoint),
        Instant::now(),
    );
    Rx { dp, peer }
}

impl Rx {
    fn frame_from(
        &self,
        outer_src: &str,
        outer_dst: &str,
        counter: u64,
        plaintext: &[u8],
    ) -> Vec<u8> {
        let k = &self.peer.keys;
        let message = frames::wg_data(&k.gateway_recv, k.gateway_index, counter, plaintext);
        frames::outer_frame(ip(outer_src), ip(outer_dst), PEER_PORT, LISTEN_PORT, &message)
    }

    fn frame(&self, counter: u64, plaintext: &[u8]) -> Vec<u8> {
        self.frame_from(PEER4, GW4, counter, plaintext)
    }

    fn run(&self, program: Program, frame: &[u8]) -> (u32, Vec<u8>, Vec<u8>, Stats) {
        let before = self.dp.stats().unwrap();
        let out = self
            .dp
            .test_run(program, &TestRunInput { data: frame, ifindex: 0, repeat: 1 })
            .unwrap();
        let delta = self.dp.stats().unwrap().since(&before);
        (out.verdict, out.data, out.meta, delta)
    }

    /// Runs the XDP program and checks the verdict and that exactly `stat` was counted.
    fn expect(&self, frame: &[u8], verdict: u32, stat: Stat) -> Vec<u8> {
        let (v, data, _, delta) = self.run(Program::RxXdp, frame);
        assert_eq!(
            delta.nonzero(),
            vec![(stat, 1)],
            "counters for a frame expected to be {stat:?}"
        );
        assert_eq!(v, verdict, "verdict for {stat:?}");
        data
    }
}

fn inner4(len: usize, rng: &mut Rng) -> Vec<u8> {
    frames::ip_packet(ip(INNER_PEER4), ip(INNER_GW4), 17, 64, 0, &rng.bytes(len - 20))
}

fn inner6(len: usize, rng: &mut Rng) -> Vec<u8> {
    frames::ip_packet(ip(INNER_PEER6), ip(INNER_GW6), 17, 64, 0, &rng.bytes(len - 40))
}

fn expect_delivered(rx: &Rx, program: Program, frame: &[u8], inner: &[u8], what: &str) {
    expect_delivered_with_tail(rx, program, frame, inner, 0, what);
}

/// As `expect_delivered`, with `tail` bytes left after the inner packet (multi-buffer XDP
/// frames keep their padding and tag: the stack trims to the IP length).
fn expect_delivered_with_tail(
    rx: &Rx,
    program: Program,
    frame: &[u8],
    inner: &[u8],
    tail: usize,
    what: &str,
) {
    let (verdict, mut data, meta, delta) = rx.run(program, frame);
    assert_eq!(delta.nonzero(), vec![(Stat::RxDeliveredLocal, 1)], "{what}");
    let ethertype: u16 = if inner[0] >> 4 == 4 { 0x0800 } else { 0x86dd };
    let expected = frames::ethernet(GATEWAY_MAC, PEER_MAC, ethertype, inner);
    assert_eq!(data.len(), expected.len() + tail, "{what}: delivered length");
    data.truncate(expected.len());
    assert!(
        data == expected,
        "{what}: delivered frame differs\n got {:02x?}\nwant {:02x?}",
        &data[..data.len().min(80)],
        &expected[..expected.len().min(80)]
    );
    match program {
        Program::RxXdp => {
            assert_eq!(verdict, XDP_PASS, "{what}");
            assert_eq!(meta.len(), 8, "{what}: metadata");
            assert_eq!(u32::from_ne_bytes(meta[0..4].try_into().unwrap()), XDP_HANDOFF_MAGIC);
            assert_eq!(u32::from_ne_bytes(meta[4..8].try_into().unwrap()), rx.peer.slot.0);
        }
        _ => assert_eq!(verdict, TC_ACT_REDIRECT, "{what}"),
    }
}

#[test]
fn decrypts_every_size_byte_exact() {
    let rx = setup();
    let mut rng = Rng(7);
    let mut counter = 0;
    for len in 20..=MTU {
        let inner = inner4(len, &mut rng);
        // Padded as senders pad, and also unpadded (padding is not mandatory).
        for plaintext in [frames::padded(&inner, MTU), inner.clone()] {
            let frame = rx.frame(counter, &plaintext);
            counter += 1;
            expect_delivered(&rx, Program::RxXdp, &frame, &inner, &format!("IPv4 inner {len}"));
        }
    }
    for len in (40..=MTU).step_by(7) {
        let inner = inner6(len, &mut rng);
        let frame = rx.frame_from(PEER6, GW6, counter, &frames::padded(&inner, MTU));
        counter += 1;
        expect_delivered(&rx, Program::RxXdp, &frame, &inner, &format!("IPv6/IPv6 inner {len}"));
        let inner = inner4(len, &mut rng);
        let frame = rx.frame_from(PEER6, GW6, counter, &frames::padded(&inner, MTU));
        counter += 1;
        expect_delivered(&rx, Program::RxXdp, &frame, &inner, &format!("IPv4/IPv6 inner {len}"));
        let inner = inner6(len, &mut rng);
        let frame = rx.frame(counter, &frames::padded(&inner, MTU));
        counter += 1;
        expect_delivered(&rx, Program::RxXdp, &frame, &inner, &format!("IPv6/IPv4 inner {len}"));
    }
    let a = rx.dp.peer_activity(rx.peer.slot).unwrap();
    assert_eq!(a.rx_packets, counter);
    assert!(a.last_data_rx.is_some() && a.last_rx.is_some());
}

#[test]
fn decrypts_jumbo_multi_buffer_frames() {
    let mut rx = setup();
    rx.dp.set_config(&config(1, 9000)).unwrap();
    let mut rng = Rng(9);
    for (counter, len) in [1421usize, 3000, 4000, 8000, 8960, 9000].into_iter().enumerate() {
        let inner = inner4(len, &mut rng);
        let padded = frames::padded(&inner, 9000);
        let frame = rx.frame(counter as u64, &padded);
        // Frames past a page are multi-buffer: their tail (padding, tag) stays.
        let tail = if frame.len() > 3500 { padded.len() - len + 16 } else { 0 };
        expect_delivered_with_tail(
            &rx,
            Program::RxXdp,
            &frame,
            &inner,
            tail,
            &format!("jumbo {len}"),
        );
    }
}

#[test]
fn tc_receive_decrypts_like_xdp() {
    let rx = setup();
    let mut rng = Rng(11);
    let mut counter = 0;
    for len in (20..=MTU).step_by(13) {
        let inner = inner4(len, &mut rng);
        let frame = rx.frame(counter, &frames::padded(&inner, MTU));
        counter += 1;
        expect_delivered(&rx, Program::RxTc, &frame, &inner, &format!("TC IPv4 inner {len}"));
        let inner = inner6(len.max(40), &mut rng);
        let frame = rx.frame_from(PEER6, GW6, counter, &frames::padded(&inner, MTU));
        counter += 1;
        expect_delivered(&rx, Program::RxTc, &frame, &inner, &format!("TC IPv6 inner {len}"));
    }
    // A forgery is dropped there too.
    let mut bad = rx.frame(counter, &inner4(100, &mut rng));
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let (verdict, _, _, delta) = rx.run(Program::RxTc, &bad);
    assert_eq!((verdict, delta.nonzero()), (TC_ACT_SHOT, vec![(Stat::RxDropAuth, 1)]));
    let other = frames::outer_frame(ip(PEER4), ip(GW4), 1, 53, b"not wireguard");
    let (verdict, data, _, delta) = rx.run(Program::RxTc, &other);
    assert_eq!((verdict, delta.nonzero()), (TC_ACT_OK, vec![(Stat::RxPassOther, 1)]));
    assert_eq!(data, other);
}

#[test]
fn keepalives_are_counted_and_consumed() {
    let rx = setup();
    rx.expect(&rx.frame(0, &[]), XDP_DROP, Stat::RxKeepalive);
    let a = rx.dp.peer_activity(rx.peer.slot).unwrap();
    assert_eq!((a.rx_packets, a.rx_bytes), (1, 32), "a keepalive counts as a 32-byte message");
    assert!(a.last_rx.is_some());
    assert!(a.last_data_rx.is_none(), "a keepalive is not data");
}

#[test]
fn forgeries_are_dropped_and_do_not_burn_the_counter() {
    let rx = setup();
    let mut rng = Rng(3);
    let inner = inner4(200, &mut rng);
    let good = rx.frame(5, &frames::padded(&inner, MTU));
    let header_end = 14 + 20 + 8 + 16;
    for pos in [header_end, header_end + 50, good.len() - 17, good.len() - 16, good.len() - 1] {
        let mut bad = good.clone();
        bad[pos] ^= 0x04;
        rx.expect(&bad, XDP_DROP, Stat::RxDropAuth);
    }
    // The counter was not consumed by the forgeries: the real packet still goes through.
    expect_delivered(&rx, Program::RxXdp, &good, &inner, "after forgeries");
    assert_eq!(rx.dp.peer_activity(rx.peer.slot).unwrap().rx_packets, 1);
}

#[test]
fn replays_and_old_counters_are_dropped() {
    let rx = setup();
    let mut rng = Rng(4);
    let inner = inner4(60, &mut rng);
    let plaintext = frames::padded(&inner, MTU);
    expect_delivered(&rx, Program::RxXdp, &rx.frame(10_000, &plaintext), &inner, "first");
    rx.expect(&rx.frame(10_000, &plaintext), XDP_DROP, Stat::RxDropReplay);
    // Within the window, below the top: accepted once.
    expect_delivered(&rx, Program::RxXdp, &rx.frame(9_000, &plaintext), &inner, "in window");
    rx.expect(&rx.frame(9_000, &plaintext), XDP_DROP, Stat::RxDropReplay);
    // Far below the window.
    rx.expect(&rx.frame(10_000 - 8_200, &plaintext), XDP_DROP, Stat::RxDropReplay);
    rx.expect(&rx.frame(0, &plaintext), XDP_DROP, Stat::RxDropReplay);
}

#[test]
fn wrong_inner_source_is_dropped() {
    let rx = setup();
    let mut rng = Rng(5);
    let spoofed = frames::ip_packet(ip("10.9.0.77"), ip(INNER_GW4), 17, 64, 0, &rng.bytes(40));
    rx.expect(&rx.frame(1, &spoofed), XDP_DROP, Stat::RxDropSource);
    let spoofed6 = frames::ip_packet(ip("fd00::77"), ip(INNER_GW6), 17, 64, 0, &rng.bytes(40));
    rx.expect(&rx.frame(2, &spoofed6), XDP_DROP, Stat::RxDropSource);
}

#[test]
fn malformed_plaintexts_are_dropped() {
    let rx = setup();
    let mut rng = Rng(6);
    // Not IP at all (IP version 1, and 0).
    let mut not_ip = rng.bytes(64);
    not_ip[0] = 0x15;
    rx.expect(&rx.frame(1, &not_ip), XDP_DROP, Stat::RxDropMalformed);
    not_ip[0] = 0x05;
    rx.expect(&rx.frame(2, &not_ip), XDP_DROP, Stat::RxDropMalformed);
    // Shorter than an IPv4 header.
    rx.expect(&rx.frame(3, &[0x45; 12]), XDP_DROP, Stat::RxDropMalformed);
    // A total length larger than the plaintext.
    let mut long = inner4(100, &mut rng);
    long[2..4].copy_from_slice(&200u16.to_be_bytes());
    rx.expect(&rx.frame(4, &frames::padded(&long, MTU)), XDP_DROP, Stat::RxDropMalformed);
    let mut long6 = inner6(100, &mut rng);
    long6[4..6].copy_from_slice(&100u16.to_be_bytes());
    rx.expect(&rx.frame(5, &long6), XDP_DROP, Stat::RxDropMalformed);
}

#[test]
fn unknown_receivers_pass_unchanged() {
    let rx = setup();
    let message = frames::wg_data(&[9; 32], 0xdead_beef, 1, &[0x45; 40]);
    let frame = frames::outer_frame(ip(PEER4), ip(GW4), PEER_PORT, LISTEN_PORT, &message);
    let data = rx.expect(&frame, XDP_PASS, Stat::RxPassUnknownIndex);
    assert_eq!(data, frame);
}

#[test]
fn truncated_messages_are_dropped() {
    let rx = setup();
    let k = rx.peer.keys;
    let full = frames::wg_data(&k.gateway_recv, k.gateway_index, 1, &[]);
    for len in [16, 20, 31] {
        let frame = frames::outer_frame(ip(PEER4), ip(GW4), PEER_PORT, LISTEN_PORT, &full[..len]);
        rx.expect(&frame, XDP_DROP, Stat::RxDropTruncated);
    }
}

#[test]
fn expired_sessions_drop_and_unconfirmed_ones_pass() {
    let mut rx = setup();
    let mut rng = Rng(8);
    let old = Instant::now() - Duration::from_secs(181);
    let expired = add_peer(&mut rx.dp, Keys::new(2), &["10.9.1.0/24"], None, old);
    let inner = frames::ip_packet(ip("10.9.1.5"), ip(INNER_GW4), 17, 64, 0, &rng.bytes(40));
    let k = expired.keys;
    let message = frames::wg_data(&k.gateway_recv, k.gateway_index, 1, &inner);
    let frame = frames::outer_frame(ip(PEER4), ip(GW4), PEER_PORT, LISTEN_PORT, &message);
    rx.expect(&frame, XDP_DROP, Stat::RxDropExpired);
    // A session not valid for receiving (a responder's unconfirmed next keypair): the
    // daemon gets its packets.
    rx.dp.set_session_use(expired.session, SessionUse { receive: false, send: false }).unwrap();
    let data = rx.expect(&frame, XDP_PASS, Stat::RxPassToDaemon);
    assert_eq!(data, frame);
    // A retired session's index is unknown.
    rx.dp.retire_session(expired.session, expired.keys.gateway_index).unwrap();
    rx.expect(&frame, XDP_PASS, Stat::RxPassUnknownIndex);
}

#[test]
fn exhausted_counters_are_dropped() {
    let rx = setup();
    let inner = inner4(40, &mut Rng(10));
    rx.expect(&rx.frame(REJECT_AFTER_MESSAGES, &inner), XDP_DROP, Stat::RxDropExpired);
    rx.expect(&rx.frame(u64::MAX, &inner), XDP_DROP, Stat::RxDropExpired);
    expect_delivered(
        &rx,
        Program::RxXdp,
        &rx.frame(REJECT_AFTER_MESSAGES - 1, &inner),
        &inner,
        "last",
    );
}

#[test]
fn everything_else_passes_untouched() {
    let rx = setup();
    let k = rx.peer.keys;
    let cases: Vec<(Vec<u8>, Stat)> = vec![
        // Handshake initiation, response, cookie reply.
        (
            frames::outer_frame(
                ip(PEER4),
                ip(GW4),
                PEER_PORT,
                LISTEN_PORT,
                &[&1u32.to_le_bytes()[..], &[0; 144]].concat(),
            ),
            Stat::RxPassHandshake,
        ),
        (
            frames::outer_frame(
                ip(PEER4),
                ip(GW4),
                PEER_PORT,
                LISTEN_PORT,
                &[&2u32.to_le_bytes()[..], &[0; 88]].concat(),
            ),
            Stat::RxPassHandshake,
        ),
        (
            frames::outer_frame(
                ip(PEER6),
                ip(GW6),
                PEER_PORT,
                LISTEN_PORT,
                &[&3u32.to_le_bytes()[..], &[0; 60]].concat(),
            ),
            Stat::RxPassHandshake,
        ),
        // Another port.
        (
            frames::outer_frame(
                ip(PEER4),
                ip(GW4),
                PEER_PORT,
                53,
                &frames::wg_data(&k.gateway_recv, k.gateway_index, 1, &[]),
            ),
            Stat::RxPassOther,
        ),
        // Not UDP.
        (
            frames::ethernet(
                GATEWAY_MAC,
                PEER_MAC,
                0x0800,
                &frames::ip_packet(ip(PEER4), ip(GW4), 6, 64, 0, &[0; 40]),
            ),
            Stat::RxPassOther,
        ),
        // Not IP.
        (frames::ethernet(GATEWAY_MAC, PEER_MAC, 0x0806, &[0; 46]), Stat::RxPassOther),
        // A message type WireGuard does not have.
        (
            frames::outer_frame(
                ip(PEER4),
                ip(GW4),
                PEER_PORT,
                LISTEN_PORT,
                &[&9u32.to_le_bytes()[..], &[0; 60]].concat(),
            ),
            Stat::RxPassOther,
        ),
    ];
    for (frame, stat) in cases {
        let data = rx.expect(&frame, XDP_PASS, stat);
        assert_eq!(data, frame, "{stat:?} frame changed");
    }
    // IPv4 fragments (first fragment with MF, and a later one) pass for reassembly.
    let message = frames::wg_data(&k.gateway_recv, k.gateway_index, 1, &[0x45; 100]);
    let mut frag = frames::outer_frame(ip(PEER4), ip(GW4), PEER_PORT, LISTEN_PORT, &message);
    frag[14 + 6] = 0x20; // MF
    let data = rx.expect(&frag, XDP_PASS, Stat::RxPassFragment);
    assert_eq!(data, frag);
    frag[14 + 6] = 0x00;
    frag[14 + 7] = 0x10; // offset 16*8
    rx.expect(&frag, XDP_PASS, Stat::RxPassFragment);
    // IPv6 with an extension header (a hop-by-hop header before UDP).
    let datagram = frames::udp(ip(PEER6), ip(GW6), PEER_PORT, LISTEN_PORT, &message);
    let mut with_ext = vec![17u8, 0, 1, 4, 0, 0, 0, 0];
    with_ext.extend_from_slice(&datagram);
    let pkt = frames::ip_packet(ip(PEER6), ip(GW6), 0, 64, 0, &with_ext);
    let frame = frames::ethernet(GATEWAY_MAC, PEER_MAC, 0x86dd, &pkt);
    let data = rx.expect(&frame, XDP_PASS, Stat::RxPassFragment);
    assert_eq!(data, frame);
}

#[test]
fn roaming_updates_the_endpoint() {
    let rx = setup();
    let (before, gen0) = rx.dp.peer_endpoint(rx.peer.slot).unwrap();
    assert_eq!(before.unwrap().addr, (ip(PEER4), PEER_PORT).into());
    let inner = inner4(64, &mut Rng(12));
    expect_delivered(&rx, Program::RxXdp, &rx.frame_from(PEER6, GW6, 1, &inner), &inner, "roam");
    let (after, gen1) = rx.dp.peer_endpoint(rx.peer.slot).unwrap();
    let after = after.unwrap();
    assert_eq!(after.addr, (ip(PEER6), PEER_PORT).into());
    assert_eq!(after.local, Some(ip(GW6)));
    assert_eq!(after.ifindex, 1, "test runs arrive on loopback");
    assert!(gen1 > gen0);
    // The same source again: no change.
    expect_delivered(&rx, Program::RxXdp, &rx.frame_from(PEER6, GW6, 2, &inner), &inner, "same");
    assert_eq!(rx.dp.peer_endpoint(rx.peer.slot).unwrap().1, gen1);
    // A forgery from elsewhere does not roam.
    let mut forged = rx.frame_from(PEER4, GW4, 3, &inner);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    rx.expect(&forged, XDP_DROP, Stat::RxDropAuth);
    assert_eq!(rx.dp.peer_endpoint(rx.peer.slot).unwrap().1, gen1);
}

/// Every outer × inner ECN pair: the delivered packet is marked as RFC 6040 (and the kernel's
/// WireGuard) say, its header checksum kept valid.
#[test]
fn ecn_is_carried_inside_as_rfc_6040_says() {
    let rx = setup();
    let mut rng = Rng(13);
    let mut counter = 1;
    for outer in 0..4u8 {
        for inner_ecn in 0..4u8 {
            let inner = frames::ip_packet(
                ip(INNER_PEER4),
                ip(INNER_GW4),
                17,
                64,
                0xb8 | inner_ecn,
                &rng.bytes(30),
            );
            let mut frame = rx.frame(counter, &inner);
            counter += 1;
            frame[14 + 1] = 0x28 | outer;
            frame[24..26].copy_from_slice(&[0, 0]);
            let c = frames::checksum(0, &frame[14..34]);
            frame[24..26].copy_from_slice(&c.to_be_bytes());
            let mut expected = inner.clone();
            expected[1] = 0xb8 | ecn::decapsulate(outer, inner_ecn);
            expected[10..12].copy_from_slice(&[0, 0]);
            let c = frames::checksum(0, &expected[..20]);
            expected[10..12].copy_from_slice(&c.to_be_bytes());
            let what = format!("outer ECN {outer}, inner {inner_ecn}");
            expect_delivered(&rx, Program::RxXdp, &frame, &expected, &what);
        }
    }
}
