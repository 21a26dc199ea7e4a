//! The send programs through BPF_PROG_TEST_RUN inside a namespace with real routes: TC
//! egress on the TUN (`wg_tx_tun`) and XDP on a LAN interface (`wg_tx_lan`). Outer headers
//! are parsed and checked field by field (addresses, ports, lengths, both checksums) and the
//! payload is compared byte for byte with what the `chacha20poly1305` crate seals.

mod ebpf_common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use std::net::UdpSocket;
use std::sync::atomic::Ordering;

use ebpf_common::capture::Capture;
use ebpf_common::frames::{self, PEER_MAC};
use ebpf_common::lab::Lab;
use ebpf_common::{Keys, LISTEN_PORT, Rng, TestPeer, add_peer, config, load};
use gateway::dataplane::{
    Dataplane, PeerEndpoint, Program, Stats, TestRunInput, TunnelSends, TxChecksum,
};
use gateway_common::maps::Stat;
use gateway_common::wire::REJECT_AFTER_MESSAGES;

const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;
const PEER_PORT: u16 = 40000;
const MTU: usize = 1420;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Tx {
    lab: Lab,
    dp: Dataplane,
    peer: TestPeer,
    next_counter: u64,
}

fn setup(endpoint: &str) -> Tx {
    let lab = Lab::new();
    let mut dp = load();
    dp.set_config(&config(lab.tun_ifindex, MTU as u32)).unwrap();
    let endpoint = PeerEndpoint {
        addr: (ip(endpoint), PEER_PORT).into(),
        local: None,
        ifindex: lab.underlay_ifindex,
    };
    let peer = add_peer(
        &mut dp,
        Keys::new(1),
        &["10.9.0.2/32", "fd00::2/128", "10.77.0.0/16"],
        Some(endpoint),
        Instant::now(),
    );
    Tx { lab, dp, peer, next_counter: 0 }
}

/// What a test run did.
struct Ran {
    verdict: u32,
    data: Vec<u8>,
    stats: Stats,
}

impl Tx {
    fn run(&self, program: Program, data: &[u8], ifindex: u32) -> Ran {
        let _in = self.lab.ns.enter();
        let before = self.dp.stats().unwrap();
        let out = self.dp.test_run(program, &TestRunInput { data, ifindex, repeat: 1 }).unwrap();
        let stats = self.dp.stats().unwrap().since(&before);
        Ran { verdict: out.verdict, data: out.data, stats }
    }

    /// Checks a frame the gateway sent to the test peer carries `inner`, sealed byte for
    /// byte as the crate seals it, with the next counter.
    fn check_sent(&mut self, frame: &[u8], inner: &[u8], outer_dst: &str, what: &str) {
        let o = frames::parse_outer(frame).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(o.dst_mac, PEER_MAC, "{what}: destination MAC");
        assert_eq!(o.src_mac, self.lab.underlay_mac, "{what}: source MAC");
        let outer_src = if outer_dst.contains(':') { "2001:db8::1" } else { "192.0.2.1" };
        assert_eq!((o.src, o.dst), (ip(outer_src), ip(outer_dst)), "{what}: addresses");
        assert_eq!((o.sport, o.dport), (LISTEN_PORT, PEER_PORT), "{what}: ports");
        assert_eq!(o.ttl, 64, "{what}: outer TTL");
        let k = self.peer.keys;
        let (receiver, counter, plain) = frames::open_wg_data(&k.gateway_send, &o.message)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(receiver, k.peer_index, "{what}: receiver index");
        assert_eq!(counter, self.next_counter, "{what}: counter");
        let padded = frames::padded(inner, MTU);
        assert!(plain == padded, "{what}: plaintext differs");
        let reference = frames::wg_data(&k.gateway_send, k.peer_index, counter, &padded);
        assert!(o.message == reference, "{what}: not byte-exact with chacha20poly1305");
        self.next_counter += 1;
    }
}

/// What the TUN egress program does with what the stack sends into the tunnel: sockets in
/// the namespace send, frames are caught leaving the underlay's far end (`u1`).
struct TunPath<'a> {
    tx: &'a mut Tx,
    capture: Capture,
}

impl<'a> TunPath<'a> {
    /// Attaches the program; the caller stays in the lab namespace.
    fn new(tx: &'a mut Tx) -> TunPath<'a> {
        tx.dp.attach_tunnel(tx.lab.tun_ifindex, TunnelSends::PerSegment).expect("attach_tunnel");
        let capture = Capture::open(tx.lab.ns.ifindex("u1"));
        tx.lab.tun.drain();
        TunPath { tx, capture }
    }

    /// The next WireGuard frame out of the underlay.
    fn sent_frame(&self) -> Vec<u8> {
        let mut seen = Vec::new();
        let frame = self.capture.next(Duration::from_secs(2), |f| {
            let parsed = frames::parse_outer(f);
            let ok = parsed.as_ref().is_ok_and(|o| o.dport == PEER_PORT);
            if !ok {
                seen.push(format!("{parsed:?}"));
            }
            ok
        });
        frame.unwrap_or_else(|| {
            let stats = self.tx.dp.stats().map(|s| s.nonzero());
            panic!("no encrypted frame left the underlay; saw {seen:?}; stats {stats:?}")
        })
    }

    /// Sends `payload` over UDP to the tunnel address `dst` and checks what comes out.
    fn send_and_check(
        &mut self,
        socket: &UdpSocket,
        dst: &str,
        payload: &[u8],
        outer_dst: &str,
        what: &str,
    ) {
        let before = self.tx.dp.stats().unwrap();
        socket.send_to(payload, (ip(dst), 6000)).unwrap();
        let frame = self.sent_frame();
        let delta = self.tx.dp.stats().unwrap().since(&before);
        assert_eq!(delta.tx_encrypted, 1, "{what}: {delta:?}");
        assert_eq!(delta.error, 0, "{what}");
        let k = self.tx.keys();
        let o = frames::parse_outer(&frame).unwrap();
        let (_, _, plain) = frames::open_wg_data(&k.gateway_send, &o.message).unwrap();
        let inner = inner_packet(&plain).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(udp_payload(inner) == payload, "{what}: inner UDP payload differs");
        self.tx.check_sent(&frame, inner, outer_dst, what);
    }
}

impl Tx {
    fn keys(&self) -> Keys {
        self.peer.keys
    }
}

/// The IP packet at the start of a decrypted plaintext (the rest must be zero padding).
fn inner_packet(plain: &[u8]) -> Result<&[u8], String> {
    let len = match plain.first().map(|b| b >> 4) {
        Some(4) => u16::from_be_bytes([plain[2], plain[3]]) as usize,
        Some(6) => u16::from_be_bytes([plain[4], plain[5]]) as usize + 40,
        _ => return Err("not IP".into()),
    };
    if len > plain.len() || plain[len..].iter().any(|&b| b != 0) {
        return Err(format!("IP length {len} in {} bytes of plaintext", plain.len()));
    }
    Ok(&plain[..len])
}

/// The payload of a UDP packet (its checksum checked).
fn udp_payload(packet: &[u8]) -> &[u8] {
    let (src, dst, l4): (IpAddr, IpAddr, &[u8]) = if packet[0] >> 4 == 4 {
        let s: [u8; 4] = packet[12..16].try_into().unwrap();
        let d: [u8; 4] = packet[16..20].try_into().unwrap();
        (s.into(), d.into(), &packet[20..])
    } else {
        let s: [u8; 16] = packet[8..24].try_into().unwrap();
        let d: [u8; 16] = packet[24..40].try_into().unwrap();
        (s.into(), d.into(), &packet[40..])
    };
    let rebuilt = frames::udp(
        src,
        dst,
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
        &l4[8..],
    );
    assert_eq!(rebuilt, l4, "inner UDP checksum");
    &l4[8..]
}

#[test]
fn tun_egress_encrypts_what_the_stack_sends() {
    let mut tx = setup("192.0.2.2");
    let _in = tx.lab.ns.enter();
    let mut path = TunPath::new(&mut tx);
    let mut rng = Rng(21);
    let v4 = UdpSocket::bind("10.9.0.1:0").unwrap();
    for len in (0..=MTU - 28).step_by(23).chain([MTU - 28]) {
        path.send_and_check(
            &v4,
            "10.9.0.2",
            &rng.bytes(len),
            "192.0.2.2",
            &format!("UDP/IPv4 payload {len}"),
        );
    }
    let v6 = UdpSocket::bind("[fd00::1]:0").unwrap();
    for len in (0..=MTU - 48).step_by(37).chain([MTU - 48]) {
        path.send_and_check(
            &v6,
            "fd00::2",
            &rng.bytes(len),
            "192.0.2.2",
            &format!("UDP/IPv6 payload {len}"),
        );
    }
    let a = path.tx.dp.peer_activity(path.tx.peer.slot).unwrap();
    assert_eq!(a.tx_packets, path.tx.next_counter);
    assert!(a.last_tx.is_some() && a.last_data_tx.is_some());
    let leaked: Vec<_> =
        path.tx.lab.tun.drain().into_iter().filter(|p| p.len() > 20 && p[0] >> 4 == 4).collect();
    assert!(leaked.is_empty(), "packets reached the TUN fd: {leaked:02x?}");
}

#[test]
fn tun_egress_to_an_ipv6_endpoint_with_fwmark() {
    let mut tx = setup("2001:db8::2");
    let mut c = config(tx.lab.tun_ifindex, MTU as u32);
    c.fwmark = 0x51;
    tx.dp.set_config(&c).unwrap();
    let _in = tx.lab.ns.enter();
    // Count frames leaving with the mark where they arrive (same namespace: the mark stays).
    ebpf_common::netns::sh(&["nft", "add table netdev ebtx"]);
    ebpf_common::netns::sh(&[
        "nft",
        "add chain netdev ebtx c { type filter hook ingress device u1 priority 0 ; }",
    ]);
    ebpf_common::netns::sh(&["nft", "add rule netdev ebtx c meta mark 0x51 counter"]);
    let mut path = TunPath::new(&mut tx);
    let mut rng = Rng(22);
    let v4 = UdpSocket::bind("10.9.0.1:0").unwrap();
    for len in [0usize, 100, 1000, MTU - 28] {
        path.send_and_check(
            &v4,
            "10.9.0.2",
            &rng.bytes(len),
            "2001:db8::2",
            &format!("IPv6 outer {len}"),
        );
    }
    let rules = ebpf_common::netns::sh(&["nft", "list table netdev ebtx"]);
    assert!(rules.contains("counter packets 4 "), "marked frames: {rules}");
}

#[test]
fn tun_egress_routes_without_a_known_interface() {
    let mut tx = setup("192.0.2.2");
    // No interface known for the endpoint: routed as forwarded from the TUN.
    let endpoint =
        PeerEndpoint { addr: (ip("192.0.2.2"), PEER_PORT).into(), local: None, ifindex: 0 };
    tx.dp.set_peer_endpoint(tx.peer.slot, Some(&endpoint)).unwrap();
    let _in = tx.lab.ns.enter();
    let mut path = TunPath::new(&mut tx);
    let v4 = UdpSocket::bind("10.9.0.1:0").unwrap();
    path.send_and_check(&v4, "10.9.0.2", b"no interface", "192.0.2.2", "input-mode route");
}

#[test]
fn tun_egress_leaves_what_it_cannot_send_to_the_daemon() {
    let mut tx = setup("192.0.2.2");
    let there = PeerEndpoint {
        addr: (ip("192.0.2.2"), PEER_PORT).into(),
        local: None,
        ifindex: tx.lab.underlay_ifindex,
    };
    let old = add_peer(
        &mut tx.dp,
        Keys::new(5),
        &["10.9.0.128/25"],
        Some(there),
        Instant::now() - Duration::from_secs(181),
    );
    let _in = tx.lab.ns.enter();
    let socket = UdpSocket::bind("10.9.0.1:0").unwrap();
    let path = TunPath::new(&mut tx);
    // Each refusal: the packet reaches the TUN fd unchanged and one counter moves.
    let refused = |path: &TunPath, dst: &str, stat: Stat| {
        let before = path.tx.dp.stats().unwrap();
        let marker = format!("to the daemon: {stat:?}");
        socket.send_to(marker.as_bytes(), (ip(dst), 6000)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        let packet = loop {
            let found = path
                .tx
                .lab
                .tun
                .drain()
                .into_iter()
                .find(|p| p[0] >> 4 == 4 && p.ends_with(marker.as_bytes()));
            if let Some(p) = found {
                break p;
            }
            assert!(Instant::now() < deadline, "{stat:?}: the packet did not reach the TUN fd");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(udp_payload(&packet), marker.as_bytes());
        let delta = path.tx.dp.stats().unwrap().since(&before);
        assert_eq!(delta.get(stat), 1, "{stat:?}: {delta:?}");
        assert_eq!(delta.tx_encrypted + delta.error, 0, "{stat:?}");
    };
    refused(&path, "10.9.0.99", Stat::TxPassNoPeer);
    refused(&path, "10.9.0.200", Stat::TxPassToDaemon); // expired session
    let mut c = config(path.tx.lab.tun_ifindex, 40);
    path.tx.dp.set_config(&c).unwrap();
    refused(&path, "10.9.0.2", Stat::TxPassTooBig);
    c.tun_mtu = MTU as u32;
    path.tx.dp.set_config(&c).unwrap();
    let slot = path.tx.peer.slot;
    path.tx.dp.set_peer_endpoint(slot, None).unwrap();
    refused(&path, "10.9.0.2", Stat::TxPassToDaemon);
    let unroutable = PeerEndpoint {
        addr: (ip("198.51.100.7"), PEER_PORT).into(),
        local: None,
        ifindex: path.tx.lab.underlay_ifindex,
    };
    path.tx.dp.set_peer_endpoint(slot, Some(&unroutable)).unwrap();
    refused(&path, "10.9.0.2", Stat::TxPassNoRoute);
    path.tx.dp.set_peer_endpoint(slot, Some(&there)).unwrap();
    let counters = path.tx.dp.session_counters(path.tx.peer.session).unwrap();
    counters.send_nonce.store(REJECT_AFTER_MESSAGES, Ordering::Relaxed);
    refused(&path, "10.9.0.2", Stat::TxPassToDaemon);
    counters.send_nonce.store(0, Ordering::Relaxed);
    path.tx.dp.set_peer_tx_session(slot, None).unwrap();
    refused(&path, "10.9.0.2", Stat::TxPassToDaemon);
    path.tx.dp.set_peer_tx_session(slot, Some(path.tx.peer.session)).unwrap();
    path.tx.dp.retire_session(old.session, old.keys.gateway_index).unwrap();
    refused(&path, "10.9.0.200", Stat::TxPassToDaemon);
    // Local TCP leaves its checksum to the device; through an underlay that checksums by
    // protocol the program cannot have it complete the outer one: the daemon gets it.
    let underlay = path.tx.lab.underlay_ifindex;
    path.tx.dp.set_underlay_checksum(underlay, TxChecksum::ByProtocol).unwrap();
    let before = path.tx.dp.stats().unwrap();
    let _ = std::net::TcpStream::connect_timeout(
        &(ip("10.9.0.2"), 80).into(),
        Duration::from_millis(100),
    );
    assert!(path.tx.dp.stats().unwrap().since(&before).tx_pass_offload >= 1);
    // After all that, sending works, with counter 0: no refusal consumed a nonce.
    let mut path = path;
    path.send_and_check(&socket, "10.9.0.2", b"finally", "192.0.2.2", "after the refusals");
}

#[test]
fn tun_egress_has_the_kernel_resolve_a_missing_neighbour() {
    let mut tx = setup("192.0.2.3");
    let _in = tx.lab.ns.enter();
    let path = TunPath::new(&mut tx);
    let socket = UdpSocket::bind("10.9.0.1:0").unwrap();
    let before = path.tx.dp.stats().unwrap();
    socket.send_to(b"who has 192.0.2.3", (ip("10.9.0.2"), 6000)).unwrap();
    // bpf_redirect_neigh queues the frame and asks (nothing answers here).
    let asked = path.capture.next(Duration::from_secs(2), |f| {
        f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[38..42] == [192, 0, 2, 3]
    });
    assert!(asked.is_some(), "no ARP request for the endpoint left the underlay");
    let delta = path.tx.dp.stats().unwrap().since(&before);
    assert_eq!((delta.tx_encrypted, delta.tx_pass_no_route), (1, 0), "{delta:?}");
}

#[test]
fn tun_egress_sends_where_the_host_does_not_forward() {
    let mut tx = setup("192.0.2.2");
    tx.lab.ns.sysctl("net.ipv4.conf.all.forwarding", "0");
    tx.lab.ns.sysctl("net.ipv6.conf.all.forwarding", "0");
    let _in = tx.lab.ns.enter();
    let mut path = TunPath::new(&mut tx);
    let socket = UdpSocket::bind("10.9.0.1:0").unwrap();
    // Not heard from yet: no source address to send from.
    let before = path.tx.dp.stats().unwrap();
    socket.send_to(b"who am I", (ip("10.9.0.2"), 6000)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while path.tx.dp.stats().unwrap().since(&before).tx_pass_no_route == 0 {
        assert!(Instant::now() < deadline, "the first packet was not left to the daemon");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Heard from, on u0, at 192.0.2.1: the kernel routes and resolves.
    let heard = PeerEndpoint {
        addr: (ip("192.0.2.2"), PEER_PORT).into(),
        local: Some(ip("192.0.2.1")),
        ifindex: path.tx.lab.underlay_ifindex,
    };
    path.tx.dp.set_peer_endpoint(path.tx.peer.slot, Some(&heard)).unwrap();
    path.send_and_check(&socket, "10.9.0.2", b"no forwarding", "192.0.2.2", "forwarding off");
}

/// TCP from a local socket: its checksum is left to the device (CHECKSUM_PARTIAL). With an
/// underlay that checksums in software, the program sends it: the inner checksum complete,
/// the outer one completed by the kernel where the program laid it out.
fn local_tcp_leaves_complete(endpoint: &str, to: &str) {
    let mut tx = setup(endpoint);
    tx.lab.ns.exec(&["ethtool", "-K", "u0", "tx", "off"]);
    let underlay = tx.lab.underlay_ifindex;
    tx.dp.set_underlay_checksum(underlay, TxChecksum::Software).unwrap();
    let _in = tx.lab.ns.enter();
    let path = TunPath::new(&mut tx);
    let before = path.tx.dp.stats().unwrap();
    // A SYN nobody answers, resent on its own: every copy must leave the same way.
    let target = std::net::SocketAddr::new(ip(to), 80);
    let _ = std::net::TcpStream::connect_timeout(&target, Duration::from_millis(1200));
    let k = path.tx.keys();
    let mut syns = 0;
    // parse_outer checks the outer IP and UDP checksums.
    while let Some(frame) = path.capture.next(Duration::from_millis(300), |f| {
        frames::parse_outer(f).is_ok_and(|o| o.dport == PEER_PORT)
    }) {
        let o = frames::parse_outer(&frame).unwrap();
        let (_, _, plain) = frames::open_wg_data(&k.gateway_send, &o.message).unwrap();
        let inner = inner_packet(&plain).unwrap();
        let (src, dst, header) = if inner[0] >> 4 == 4 {
            let s: [u8; 4] = inner[12..16].try_into().unwrap();
            let d: [u8; 4] = inner[16..20].try_into().unwrap();
            (IpAddr::from(s), IpAddr::from(d), 20)
        } else {
            let s: [u8; 16] = inner[8..24].try_into().unwrap();
            let d: [u8; 16] = inner[24..40].try_into().unwrap();
            (IpAddr::from(s), IpAddr::from(d), 40)
        };
        let segment = &inner[header..];
        assert_eq!(segment[13] & 0x02, 0x02, "not the SYN: {inner:02x?}");
        let sum = frames::checksum(frames::pseudo_sum(src, dst, 6, segment.len()), segment);
        assert_eq!(sum, 0, "inner TCP checksum wrong: {inner:02x?}");
        syns += 1;
    }
    let delta = path.tx.dp.stats().unwrap().since(&before);
    assert!(syns >= 2, "{syns} SYNs left the underlay; {delta:?}");
    assert_eq!(delta.tx_encrypted, syns, "{delta:?}");
    assert_eq!(delta.tx_pass_offload + delta.error, 0, "{delta:?}");
}

#[test]
fn tun_egress_sends_local_tcp_over_ipv4() {
    local_tcp_leaves_complete("192.0.2.2", "10.9.0.2");
    local_tcp_leaves_complete("192.0.2.2", "fd00::2");
}

#[test]
fn tun_egress_sends_local_tcp_over_ipv6() {
    local_tcp_leaves_complete("2001:db8::2", "10.9.0.2");
    local_tcp_leaves_complete("2001:db8::2", "fd00::2");
}

/// A frame from a LAN host (10.8.0.5) for a destination behind the tunnel.
fn lan_frame(tx: &Tx, inner: &[u8]) -> Vec<u8> {
    frames::ethernet(tx.lab.lan_mac, ebpf_common::lab::LAN_HOST_MAC, 0x0800, inner)
}

#[test]
fn lan_xdp_encrypts_forwarded_traffic() {
    let mut tx = setup("192.0.2.2");
    {
        let _in = tx.lab.ns.enter();
        tx.dp.attach_lan(tx.lab.lan_ifindex).expect("attach_lan");
    }
    let mut rng = Rng(26);
    for len in [28usize, 64, 65, 700, MTU] {
        let (s, d) = (ip("10.8.0.5"), ip("10.77.1.2"));
        let inner =
            frames::ip_packet(s, d, 17, 64, 0, &frames::udp(s, d, 1, 2, &rng.bytes(len - 28)));
        let ran = tx.run(Program::TxLan, &lan_frame(&tx, &inner), tx.lab.lan_ifindex);
        assert_eq!(ran.stats.nonzero(), vec![(Stat::TxEncrypted, 1)], "{len}");
        assert_eq!(ran.verdict, XDP_REDIRECT, "out of the underlay, not the LAN port");
        // Forwarded: the TTL went down by one (and the header checksum with it).
        let mut forwarded = inner.clone();
        forwarded[8] -= 1;
        forwarded[10..12].copy_from_slice(&[0, 0]);
        let c = frames::checksum(0, &forwarded[..20]);
        forwarded[10..12].copy_from_slice(&c.to_be_bytes());
        tx.check_sent(&ran.data, &forwarded, "192.0.2.2", &format!("LAN {len}"));
    }
}

#[test]
fn lan_xdp_passes_what_is_not_for_the_tunnel() {
    let tx = setup("192.0.2.2");
    let mut rng = Rng(27);
    let pass = |frame: &[u8], stat: Stat| {
        let ran = tx.run(Program::TxLan, frame, tx.lab.lan_ifindex);
        assert_eq!(ran.stats.nonzero(), vec![(stat, 1)]);
        assert_eq!(ran.verdict, XDP_PASS, "{stat:?}");
        assert!(ran.data == frame, "{stat:?}: frame changed");
    };
    let (s, d) = (ip("10.8.0.5"), ip("192.0.2.77"));
    // Routed elsewhere (the underlay), and to this host.
    pass(&lan_frame(&tx, &frames::ip_packet(s, d, 17, 64, 0, &rng.bytes(30))), Stat::TxPassToStack);
    pass(
        &lan_frame(&tx, &frames::ip_packet(s, ip("10.8.0.1"), 17, 64, 0, &rng.bytes(30))),
        Stat::TxPassToStack,
    );
    // For the tunnel, but the TTL runs out here.
    let d = ip("10.77.1.2");
    pass(&lan_frame(&tx, &frames::ip_packet(s, d, 17, 1, 0, &rng.bytes(30))), Stat::TxPassToStack);
    // For the tunnel, but no peer has it.
    let nobody = ip("10.9.0.99");
    pass(
        &lan_frame(&tx, &frames::ip_packet(s, nobody, 17, 64, 0, &rng.bytes(30))),
        Stat::TxPassNoPeer,
    );
    // Too big for the tunnel: the stack answers (ICMP fragmentation needed).
    pass(
        &lan_frame(&tx, &frames::ip_packet(s, d, 17, 64, 0, &rng.bytes(1450))),
        Stat::TxPassTooBig,
    );
    // Not IP.
    pass(
        &frames::ethernet(tx.lab.lan_mac, [2, 0, 0, 0, 0, 9], 0x0806, &[0; 28]),
        Stat::TxPassToStack,
    );
}

#[test]
fn lan_xdp_leaves_unfinished_checksums_to_the_stack_untouched() {
    let tx = setup("192.0.2.2");
    let mut rng = Rng(25);
    // A UDP packet whose checksum field holds only the pseudo-header sum, as a sender that
    // offloads checksums (CHECKSUM_PARTIAL, e.g. a container behind a veth) leaves it: it
    // must not be encrypted (the checksum would be completed over the ciphertext).
    for len in [60usize, 500, 1400] {
        let (s, d) = (ip("10.8.0.5"), ip("10.77.1.2"));
        let mut inner =
            frames::ip_packet(s, d, 17, 64, 0, &frames::udp(s, d, 1, 2, &rng.bytes(len - 28)));
        let mut sum = 0u32;
        for pair in inner[12..20].chunks(2) {
            sum += u16::from_be_bytes([pair[0], pair[1]]) as u32;
        }
        sum += 17 + (len as u32 - 20);
        let partial = !frames::checksum(sum, &[]);
        inner[26..28].copy_from_slice(&partial.to_be_bytes());
        let frame = lan_frame(&tx, &inner);
        let ran = tx.run(Program::TxLan, &frame, tx.lab.lan_ifindex);
        assert_eq!(ran.stats.nonzero(), vec![(Stat::TxPassOffload, 1)], "{len}");
        assert_eq!(ran.verdict, XDP_PASS);
        assert!(ran.data == frame, "{len}: the frame must come back unchanged (TTL too)");
    }
    // A corrupted checksum is not ours to fix either: left to the stack as well.
    let (s, d) = (ip("10.8.0.5"), ip("10.77.1.2"));
    let mut inner = frames::ip_packet(s, d, 17, 64, 0, &frames::udp(s, d, 1, 2, &rng.bytes(100)));
    inner[30] ^= 0xff;
    let frame = lan_frame(&tx, &inner);
    let ran = tx.run(Program::TxLan, &frame, tx.lab.lan_ifindex);
    assert_eq!(ran.stats.nonzero(), vec![(Stat::TxPassOffload, 1)]);
    assert!(ran.data == frame);
}
