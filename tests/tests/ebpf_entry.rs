//! The public entry point's data plane through BPF_PROG_TEST_RUN (and, where only the
//! kernel's real paths can tell, through attached programs), in a namespace with real routes:
//!
//! - on the VPS: tcp/udp forwards (`entry_forward`, tail-called by `wg_rx_xdp`), their
//!   replies and ICMP errors translated after decryption, proxied connections both ways
//!   (`entry_proxy_tun` on the TUN's egress, and the receive programs);
//! - behind it (the home): the source check for entry peers, `REPLY_TO` learned from them and
//!   used by `wg_tx_lan`.
//!
//! Every packet the programs produce is decrypted with the test's keys and compared byte for
//! byte with one built here independently (addresses, ports, TTL, every checksum).

mod ebpf_common;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use ebpf_common::capture::Capture;
use ebpf_common::entry::{flow_key, flow_nat, forward, nat_target};
use ebpf_common::frames::{self, PEER_MAC};
use ebpf_common::lab::{LAN_HOST_MAC, Lab};
use ebpf_common::transport::{
    self, ACK, IPPROTO_TCP, IPPROTO_UDP, PSH, SYN, forwarded, mss_option, tcp_packet, udp_packet,
};
use ebpf_common::{Keys, LISTEN_PORT, Rng, TestPeer, add_peer, config, load};
use gateway::dataplane::{
    AttachPreference, Dataplane, EntryTransport, ForwardSlot, PeerEndpoint, Program, Stats,
    TestRunInput, TunnelSends, TxChecksum,
};
use gateway_common::maps::{NAT_DESTINATION, NAT_SOURCE, Stat, XDP_HANDOFF_MAGIC};

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;
const TC_ACT_REDIRECT: u32 = 7;
/// TC_ACT_UNSPEC (TCX's "next") as the test run returns it.
const TC_NEXT: u32 = u32::MAX;
const MTU: u32 = 1420;

const PUBLIC4: &str = "192.0.2.1";
const PUBLIC6: &str = "2001:db8::1";
const CLIENT4: &str = "198.51.100.7";
const CLIENT6: &str = "2001:db8:c::7";
const BACKEND4: &str = "10.77.0.10";
const BACKEND6: &str = "fd00:77::10";
/// The peer's endpoint: through the underlay, to the lab's static neighbour.
const PEER_ADDR: &str = "192.0.2.2";
const PEER_PORT: u16 = 40000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(addr: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(addr), port)
}

/// What a test run did.
struct Ran {
    verdict: u32,
    data: Vec<u8>,
    meta: Vec<u8>,
    stats: Stats,
}

/// A data plane with one peer (`home`: the tunnel address 10.9.0.2 and the backends'
/// networks 10.77.0.0/16 and fd00:77::/64), in the lab namespace.
struct World {
    lab: Lab,
    dp: Dataplane,
    home: TestPeer,
    /// The next counter the home peer seals with.
    counter: u64,
}

fn endpoint(lab: &Lab, port: u16) -> PeerEndpoint {
    PeerEndpoint { addr: (ip(PEER_ADDR), port).into(), local: None, ifindex: lab.underlay_ifindex }
}

/// The entry point (the VPS): `entry` sets CONFIG_ENTRY. The clients' networks are routed
/// out of the underlay through the peer's router (the lab's static neighbour).
fn vps(entry: bool) -> World {
    let lab = Lab::new();
    lab.ns.ip(&["route", "add", "198.51.100.0/24", "via", PEER_ADDR]);
    lab.ns.ip(&["route", "add", "2001:db8:c::/64", "via", "2001:db8::2"]);
    let mut dp = load();
    let mut c = config(lab.tun_ifindex, MTU);
    c.entry = entry;
    dp.set_config(&c).unwrap();
    let home = add_peer(
        &mut dp,
        Keys::new(1),
        &["10.9.0.2/32", "10.77.0.0/16", "fd00::2/128", "fd00:77::/64"],
        Some(endpoint(&lab, PEER_PORT)),
        Instant::now(),
    );
    World { lab, dp, home, counter: 0 }
}

impl World {
    fn run(&self, program: Program, data: &[u8], ifindex: u32) -> Ran {
        let _in = self.lab.ns.enter();
        let before = self.dp.stats().unwrap();
        let out = self.dp.test_run(program, &TestRunInput { data, ifindex, repeat: 1 }).unwrap();
        let stats = self.dp.stats().unwrap().since(&before);
        Ran { verdict: out.verdict, data: out.data, meta: out.meta, stats }
    }

    /// A frame from the internet to the VPS's underlay.
    fn internet_frame(&self, packet: &[u8]) -> Vec<u8> {
        let ethertype = if packet[0] >> 4 == 4 { 0x0800 } else { 0x86dd };
        frames::ethernet(self.lab.underlay_mac, PEER_MAC, ethertype, packet)
    }

    /// Runs the underlay's XDP program on a packet from the internet.
    fn arrive(&self, packet: &[u8]) -> Ran {
        self.run(Program::RxXdp, &self.internet_frame(packet), self.lab.underlay_ifindex)
    }

    /// A frame from the peer with `keys` at `port` carrying `inner`.
    fn sealed_by(&mut self, k: Keys, port: u16, inner: &[u8]) -> Vec<u8> {
        let message = frames::wg_data(&k.gateway_recv, k.gateway_index, self.counter, inner);
        self.counter += 1;
        frames::outer_frame_between(
            self.lab.underlay_mac,
            PEER_MAC,
            ip(PEER_ADDR),
            ip(PUBLIC4),
            port,
            LISTEN_PORT,
            &message,
        )
    }

    /// Runs a receive program on `inner` sealed by the home peer.
    fn decrypt(&mut self, program: Program, inner: &[u8]) -> Ran {
        let frame = self.sealed_by(self.home.keys, PEER_PORT, inner);
        self.run(program, &frame, self.lab.underlay_ifindex)
    }
}

/// Opens what the gateway sealed to `peer` at `port` (outer headers checked: from the
/// underlay's address and MAC to the peer's) and returns the inner packet.
fn opened(lab: &Lab, k: Keys, port: u16, frame: &[u8], what: &str) -> Vec<u8> {
    let o = frames::parse_outer(frame).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!((o.dst_mac, o.src_mac), (PEER_MAC, lab.underlay_mac), "{what}: MACs");
    assert_eq!((o.src, o.dst), (ip(PUBLIC4), ip(PEER_ADDR)), "{what}: outer addresses");
    assert_eq!((o.sport, o.dport), (LISTEN_PORT, port), "{what}: outer ports");
    let (receiver, _, plain) =
        frames::open_wg_data(&k.gateway_send, &o.message).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(receiver, k.peer_index, "{what}: receiver index");
    transport::inner_packet(&plain).unwrap_or_else(|e| panic!("{what}: {e}")).to_vec()
}

/// Checks that a run sealed a packet to the home peer out of the underlay (XDP_TX), counted
/// as `stat` alone, and that it is `expected` byte for byte.
fn expect_sealed(w: &World, ran: &Ran, stat: Stat, expected: &[u8], what: &str) {
    assert_eq!(ran.stats.nonzero(), vec![(stat, 1)], "{what}: counters");
    assert_eq!(ran.verdict, XDP_TX, "{what}: verdict");
    let inner = opened(&w.lab, w.home.keys, PEER_PORT, &ran.data, what);
    transport::parse(&inner).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        inner == expected,
        "{what}: sealed packet differs\n got {inner:02x?}\nwant {expected:02x?}"
    );
}

fn set_forward(w: &mut World, slot: u32, transport: EntryTransport, ports: (u16, u16), to: &str) {
    let to: SocketAddr = to.parse().unwrap();
    w.dp.set_entry_forward(ForwardSlot(slot), Some(&forward(ports.0, to, None))).unwrap();
    w.dp.set_entry_ports(transport, ports.0, ports.1, Some(ForwardSlot(slot))).unwrap();
}

#[test]
fn tcp_and_udp_forwards_are_sealed_to_the_backend_with_valid_checksums() {
    let mut w = vps(true);
    set_forward(&mut w, 0, EntryTransport::Tcp, (8080, 8080), "10.77.0.10:80");
    set_forward(&mut w, 1, EntryTransport::Udp, (5353, 5353), "10.77.0.10:53");
    let (client, public, backend) = (ip(CLIENT4), ip(PUBLIC4), ip(BACKEND4));
    let mut rng = Rng(31);
    for (i, len) in [0usize, 1, 17, 100, 1000, MTU as usize - 40].into_iter().enumerate() {
        let payload = rng.bytes(len);
        let port = 40000 + i as u16;
        let packet = tcp_packet(client, public, port, 8080, ACK | PSH, &[], &payload, 57);
        let expected =
            forwarded(&tcp_packet(client, backend, port, 80, ACK | PSH, &[], &payload, 57));
        let ran = w.arrive(&packet);
        expect_sealed(&w, &ran, Stat::EntryForwarded, &expected, &format!("TCP payload {len}"));
        let packet = udp_packet(client, public, port, 5353, &payload, 57);
        let expected = forwarded(&udp_packet(client, backend, port, 53, &payload, 57));
        let ran = w.arrive(&packet);
        expect_sealed(&w, &ran, Stat::EntryForwarded, &expected, &format!("UDP payload {len}"));
    }
    // An IPv4 UDP checksum of zero (none) stays zero.
    let packet = transport::without_udp_checksum(udp_packet(client, public, 41000, 5353, b"x", 57));
    let expected = forwarded(&transport::without_udp_checksum(udp_packet(
        client, backend, 41000, 53, b"x", 57,
    )));
    let ran = w.arrive(&packet);
    expect_sealed(&w, &ran, Stat::EntryForwarded, &expected, "UDP without checksum");
    // A SYN's MSS is clamped to what fits the tunnel (1420 - 40).
    let packet = tcp_packet(client, public, 42000, 8080, SYN, &mss_option(1460), &[], 57);
    let expected =
        forwarded(&tcp_packet(client, backend, 42000, 80, SYN, &mss_option(1380), &[], 57));
    let ran = w.arrive(&packet);
    expect_sealed(&w, &ran, Stat::EntryForwarded, &expected, "SYN with MSS 1460");
    // A smaller MSS is left as it is.
    let packet = tcp_packet(client, public, 42001, 8080, SYN, &mss_option(1200), &[], 57);
    let expected =
        forwarded(&tcp_packet(client, backend, 42001, 80, SYN, &mss_option(1200), &[], 57));
    let ran = w.arrive(&packet);
    expect_sealed(&w, &ran, Stat::EntryForwarded, &expected, "SYN with MSS 1200");
    // Every flow is remembered for its replies: from the backend, to the client, to be
    // given the public address and port back.
    let flows = w.dp.entry_flows();
    for (proto, port, backend_port, public_port) in [
        (IPPROTO_TCP, 40003, 80, 8080),
        (IPPROTO_UDP, 40005, 53, 5353),
        (IPPROTO_TCP, 42000, 80, 8080),
    ] {
        let key =
            flow_key(proto, SocketAddr::new(backend, backend_port), SocketAddr::new(client, port));
        let (_, nat) = flows
            .iter()
            .find(|(k, _)| *k == key)
            .unwrap_or_else(|| panic!("no flow for {key:?} in {flows:?}"));
        assert_eq!(nat.rewrite, NAT_SOURCE);
        assert_eq!(nat_target(nat, true), SocketAddr::new(public, public_port));
        assert!(nat.last_seen_ns > 0, "{nat:?}");
    }
    let a = w.dp.peer_activity(w.home.slot).unwrap();
    assert_eq!(a.tx_packets, 15, "the programs' count of packets sealed to the peer");
}

#[test]
fn ipv6_forwards_are_sealed_too() {
    let mut w = vps(true);
    set_forward(&mut w, 0, EntryTransport::Tcp, (8443, 8443), "[fd00:77::10]:443");
    set_forward(&mut w, 1, EntryTransport::Udp, (8443, 8443), "[fd00:77::10]:4433");
    let (client, public, backend) = (ip(CLIENT6), ip(PUBLIC6), ip(BACKEND6));
    let mut rng = Rng(32);
    for len in [0usize, 3, 200, MTU as usize - 60] {
        let payload = rng.bytes(len);
        let packet = tcp_packet(client, public, 50000, 8443, ACK, &[], &payload, 60);
        let expected = forwarded(&tcp_packet(client, backend, 50000, 443, ACK, &[], &payload, 60));
        let ran = w.arrive(&packet);
        expect_sealed(&w, &ran, Stat::EntryForwarded, &expected, &format!("TCP/IPv6 {len}"));
        let packet = udp_packet(client, public, 50001, 8443, &payload, 60);
        let expected = forwarded(&udp_packet(client, backend, 50001, 4433, &payload, 60));
        let ran = w.arrive(&packet);
        expect_sealed(&w, &ran, Stat::EntryForwarded, &expected, &format!("UDP/IPv6 {len}"));
    }
    let packet = tcp_packet(client, public, 50002, 8443, SYN, &mss_option(1440), &[], 60);
    let expected =
        forwarded(&tcp_packet(client, backend, 50002, 443, SYN, &mss_option(1360), &[], 60));
    let ran = w.arrive(&packet);
    expect_sealed(&w, &ran, Stat::EntryForwarded, &expected, "IPv6 SYN, MSS clamped");
    let key = flow_key(IPPROTO_UDP, sa(BACKEND6, 4433), sa(CLIENT6, 50001));
    let flows = w.dp.entry_flows();
    let nat = flows.iter().find(|(k, _)| *k == key).map(|(_, n)| *n).expect("IPv6 flow");
    assert_eq!(nat_target(&nat, false), sa(PUBLIC6, 8443));
}

#[test]
fn a_port_range_maps_onto_its_target_shifted_or_not() {
    let mut w = vps(true);
    // 6000-6099 onto 7000-7099; 7000-7010 onto the same ports of another backend.
    set_forward(&mut w, 0, EntryTransport::Udp, (6000, 6099), "10.77.0.20:7000");
    set_forward(&mut w, 1, EntryTransport::Tcp, (7000, 7010), "10.77.0.21:7000");
    let (client, public) = (ip(CLIENT4), ip(PUBLIC4));
    for (port, to) in [(6000u16, 7000u16), (6042, 7042), (6099, 7099)] {
        let packet = udp_packet(client, public, 33000, port, b"range", 50);
        let expected = forwarded(&udp_packet(client, ip("10.77.0.20"), 33000, to, b"range", 50));
        let ran = w.arrive(&packet);
        expect_sealed(&w, &ran, Stat::EntryForwarded, &expected, &format!("UDP port {port}"));
    }
    for port in [7000u16, 7005, 7010] {
        let packet = tcp_packet(client, public, 33001, port, ACK, &[], b"same", 50);
        let expected =
            forwarded(&tcp_packet(client, ip("10.77.0.21"), 33001, port, ACK, &[], b"same", 50));
        let ran = w.arrive(&packet);
        expect_sealed(&w, &ran, Stat::EntryForwarded, &expected, &format!("TCP port {port}"));
    }
    // Just past either range: not forwarded.
    for packet in [
        udp_packet(client, public, 33000, 6100, b"past", 50),
        udp_packet(client, public, 33000, 5999, b"before", 50),
        tcp_packet(client, public, 33001, 7011, ACK, &[], b"past", 50),
    ] {
        let ran = w.arrive(&packet);
        assert_eq!(ran.stats.nonzero(), vec![(Stat::EntryPassNoForward, 1)]);
        assert_eq!((ran.verdict, ran.data), (XDP_PASS, w.internet_frame(&packet)));
    }
}

#[test]
fn the_listen_address_picks_the_forward_along_the_chain() {
    let mut w = vps(true);
    // Port 9000: on 192.0.2.1 to one backend, on 192.0.2.50 to another, on any IPv6 address
    // to a third: one chain from ENTRY_PORTS.
    let chain = [
        forward(9000, sa("10.77.0.30", 9000), Some(ip(PUBLIC4))),
        forward(9000, sa("10.77.0.31", 9001), Some(ip("192.0.2.50"))),
        forward(9000, sa("fd00:77::30", 9000), None),
    ];
    for (slot, f) in chain.iter().enumerate() {
        let mut f = *f;
        f.next = if slot + 1 < chain.len() { slot as u32 + 2 } else { 0 };
        w.dp.set_entry_forward(ForwardSlot(slot as u32), Some(&f)).unwrap();
    }
    w.dp.set_entry_ports(EntryTransport::Tcp, 9000, 9000, Some(ForwardSlot(0))).unwrap();
    let client = ip(CLIENT4);
    for (public, backend, port) in
        [(PUBLIC4, "10.77.0.30", 9000u16), ("192.0.2.50", "10.77.0.31", 9001)]
    {
        let packet = tcp_packet(client, ip(public), 34000, 9000, ACK, &[], b"chain", 50);
        let expected =
            forwarded(&tcp_packet(client, ip(backend), 34000, port, ACK, &[], b"chain", 50));
        let ran = w.arrive(&packet);
        expect_sealed(&w, &ran, Stat::EntryForwarded, &expected, &format!("to {public}"));
    }
    let packet = tcp_packet(ip(CLIENT6), ip(PUBLIC6), 34000, 9000, ACK, &[], b"chain", 50);
    let expected =
        forwarded(&tcp_packet(ip(CLIENT6), ip("fd00:77::30"), 34000, 9000, ACK, &[], b"chain", 50));
    let ran = w.arrive(&packet);
    expect_sealed(&w, &ran, Stat::EntryForwarded, &expected, "IPv6, any address");
    // Another local address takes no IPv4 forward of that port.
    let packet = tcp_packet(client, ip("192.0.2.99"), 34000, 9000, ACK, &[], b"chain", 50);
    let ran = w.arrive(&packet);
    assert_eq!(ran.stats.nonzero(), vec![(Stat::EntryPassNoForward, 1)]);
    assert_eq!((ran.verdict, ran.data), (XDP_PASS, w.internet_frame(&packet)));
}

#[test]
fn what_no_forward_takes_passes_unchanged_and_wireguard_still_works() {
    let mut w = vps(true);
    set_forward(&mut w, 0, EntryTransport::Tcp, (8080, 8080), "10.77.0.10:80");
    let (client, public) = (ip(CLIENT4), ip(PUBLIC4));
    let arp = frames::ethernet(w.lab.underlay_mac, PEER_MAC, 0x0806, &[0; 28]);
    for frame in [
        w.internet_frame(&tcp_packet(client, public, 40000, 22, SYN, &[], &[], 50)),
        // The forwarded port over the other transport.
        w.internet_frame(&udp_packet(client, public, 40000, 8080, b"udp", 50)),
        w.internet_frame(&frames::ping(client, public, 1, 1, b"ping")),
        arp,
    ] {
        let ran = w.run(Program::RxXdp, &frame, w.lab.underlay_ifindex);
        assert_eq!(ran.stats.nonzero(), vec![(Stat::EntryPassNoForward, 1)], "{frame:02x?}");
        assert_eq!((ran.verdict, &ran.data), (XDP_PASS, &frame));
    }
    assert!(w.dp.entry_flows().is_empty());
    // Transport data for the gateway itself is received as before.
    let inner = udp_packet(ip("10.9.0.2"), ip("10.9.0.1"), 1000, 2000, b"tunnel", 64);
    let ran = w.decrypt(Program::RxXdp, &inner);
    assert_eq!(ran.stats.nonzero(), vec![(Stat::RxDeliveredLocal, 1)]);
    assert_eq!(ran.verdict, XDP_PASS);
}

#[test]
fn without_config_entry_nothing_is_translated() {
    let mut w = vps(false);
    set_forward(&mut w, 0, EntryTransport::Tcp, (8080, 8080), "10.77.0.10:80");
    let packet = tcp_packet(ip(CLIENT4), ip(PUBLIC4), 40000, 8080, SYN, &[], &[], 50);
    let ran = w.arrive(&packet);
    assert_eq!(ran.stats.nonzero(), vec![(Stat::RxPassOther, 1)]);
    assert_eq!((ran.verdict, ran.data), (XDP_PASS, w.internet_frame(&packet)));
    assert!(w.dp.entry_flows().is_empty());
    // A reply-shaped packet from the peer is delivered untouched.
    let reply = tcp_packet(ip(BACKEND4), ip(CLIENT4), 80, 40000, SYN | ACK, &[], &[], 64);
    let ran = w.decrypt(Program::RxXdp, &reply);
    assert_eq!(ran.stats.nonzero(), vec![(Stat::RxDeliveredLocal, 1)]);
    assert_eq!(&ran.data[14..], &reply[..]);
}

/// Checks that a run handed a translated packet over for the tunnel's egress: passed with
/// the tunnel mark (4 bytes of metadata), the frame the client's with `expected` in it.
fn expect_to_tunnel(w: &World, ran: &Ran, expected: &[u8], what: &str) {
    assert_eq!(ran.stats.nonzero(), vec![(Stat::EntryToTunnel, 1)], "{what}");
    assert_eq!((ran.verdict, ran.meta.len()), (XDP_PASS, 4), "{what}: verdict, mark");
    let frame = w.internet_frame(expected);
    assert!(ran.data == frame, "{what}:\n got {:02x?}\nwant {frame:02x?}", ran.data);
}

#[test]
fn what_cannot_be_sealed_goes_translated_into_the_tunnel() {
    let mut w = vps(true);
    set_forward(&mut w, 0, EntryTransport::Tcp, (8080, 8080), "10.77.0.10:80");
    let (client, public, backend) = (ip(CLIENT4), ip(PUBLIC4), ip(BACKEND4));
    // Larger than the tunnel: the daemon seals it (and the underlay fragments it).
    let big = rng_payload(1500 - 40);
    let packet = tcp_packet(client, public, 40000, 8080, ACK, &[], &big, 50);
    let expected = tcp_packet(client, backend, 40000, 80, ACK, &[], &big, 50);
    expect_to_tunnel(&w, &w.arrive(&packet), &expected, "too big");
    // TTL 1: not decremented here.
    let packet = tcp_packet(client, public, 40001, 8080, ACK, &[], b"ttl", 1);
    let expected = tcp_packet(client, backend, 40001, 80, ACK, &[], b"ttl", 1);
    expect_to_tunnel(&w, &w.arrive(&packet), &expected, "TTL 1");
    // No session to send with (the daemon queues it and starts a handshake).
    w.dp.set_peer_tx_session(w.home.slot, None).unwrap();
    let packet = tcp_packet(client, public, 40002, 8080, SYN, &mss_option(1460), &[], 50);
    let expected = tcp_packet(client, backend, 40002, 80, SYN, &mss_option(1380), &[], 50);
    expect_to_tunnel(&w, &w.arrive(&packet), &expected, "no session");
    // Short frames carry Ethernet padding: cut, since the IP layer will not see them.
    let packet = tcp_packet(client, public, 40003, 8080, ACK, &[], &[], 50);
    let mut frame = w.internet_frame(&packet);
    frame.resize(60, 0);
    let ran = w.run(Program::RxXdp, &frame, w.lab.underlay_ifindex);
    let expected = tcp_packet(client, backend, 40003, 80, ACK, &[], &[], 50);
    expect_to_tunnel(&w, &ran, &expected, "padded");
    // The TC handoff program sends marked frames to the TUN's egress, unchanged.
    let ran = w.run(Program::RxHandoff, &frame, w.lab.underlay_ifindex);
    assert_eq!(ran.verdict, 0, "without metadata (a test run has none): passed untouched");
}

fn rng_payload(len: usize) -> Vec<u8> {
    Rng(77).bytes(len)
}

/// The packets the TUN fd yields within `timeout` that `accept` takes.
fn tun_packets(w: &World, timeout: Duration, accept: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut found = Vec::new();
    while Instant::now() < deadline && found.is_empty() {
        found.extend(w.lab.tun.drain().into_iter().filter(|p| accept(p)));
        std::thread::sleep(Duration::from_millis(5));
    }
    found
}

/// The real path, not a test run: a forwarded packet without a session goes from the
/// underlay's XDP program (native and generic) through the TC handoff program to the TUN's
/// egress, and the daemon reads it from the TUN fd.
#[test]
fn without_a_session_the_daemon_reads_the_translated_packet_from_the_tun() {
    for prefer in [AttachPreference::Native, AttachPreference::Generic] {
        let mut w = vps(true);
        set_forward(&mut w, 0, EntryTransport::Udp, (5353, 5353), "10.77.0.10:53");
        w.dp.set_peer_tx_session(w.home.slot, None).unwrap();
        let _in = w.lab.ns.enter();
        let mode = w.dp.attach_underlay(w.lab.underlay_ifindex, prefer).expect("attach_underlay");
        let far = Capture::open(w.lab.ns.ifindex("u1"));
        w.lab.tun.drain();
        let before = w.dp.stats().unwrap();
        let (client, public, backend) = (ip(CLIENT4), ip(PUBLIC4), ip(BACKEND4));
        let packet = udp_packet(client, public, 45000, 5353, b"to the daemon", 50);
        far.send(&w.internet_frame(&packet));
        let expected = udp_packet(client, backend, 45000, 53, b"to the daemon", 50);
        let got = tun_packets(&w, Duration::from_secs(2), |p| p == expected.as_slice());
        let delta = w.dp.stats().unwrap().since(&before);
        assert_eq!(got.len(), 1, "{mode}: the TUN fd did not yield the packet; {delta:?}");
        assert_eq!(delta.entry_to_tunnel, 1, "{mode}: {delta:?}");
        assert_eq!(delta.rx_pass_other + delta.error, 0, "{mode}: {delta:?}");
    }
}

/// The reply of a forwarded flow, decrypted: from the public address and port, out of the
/// underlay back to the client's router.
fn expect_reply_out(w: &World, ran: &Ran, expected: &[u8], program: Program, what: &str) {
    assert_eq!(ran.stats.nonzero(), vec![(Stat::EntryReplyTranslated, 1)], "{what}");
    let verdict = if program == Program::RxXdp { XDP_TX } else { TC_ACT_REDIRECT };
    assert_eq!(ran.verdict, verdict, "{what}");
    let ethertype = if expected[0] >> 4 == 4 { 0x0800 } else { 0x86dd };
    let frame = frames::ethernet(PEER_MAC, w.lab.underlay_mac, ethertype, expected);
    transport::parse(&ran.data[14..]).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(ran.data == frame, "{what}:\n got {:02x?}\nwant {frame:02x?}", ran.data);
}

#[test]
fn replies_get_the_public_address_back_and_leave_through_the_underlay() {
    let mut w = vps(true);
    set_forward(&mut w, 0, EntryTransport::Tcp, (8080, 8080), "10.77.0.10:80");
    set_forward(&mut w, 1, EntryTransport::Udp, (8443, 8443), "[fd00:77::10]:443");
    let (client, public, backend) = (ip(CLIENT4), ip(PUBLIC4), ip(BACKEND4));
    for program in [Program::RxXdp, Program::RxTc] {
        let port = if program == Program::RxXdp { 40000 } else { 40001 };
        // The flow: the client's SYN, forwarded.
        let syn = tcp_packet(client, public, port, 8080, SYN, &mss_option(1460), &[], 50);
        assert_eq!(w.arrive(&syn).stats.entry_forwarded, 1);
        // The backend's SYN-ACK, its MSS clamped for the client's segments.
        let reply = tcp_packet(backend, client, 80, port, SYN | ACK, &mss_option(1460), &[], 63);
        let ran = w.decrypt(program, &reply);
        let expected = forwarded(&tcp_packet(
            public,
            client,
            8080,
            port,
            SYN | ACK,
            &mss_option(1380),
            &[],
            63,
        ));
        expect_reply_out(&w, &ran, &expected, program, &format!("{program:?} SYN-ACK"));
        for len in [0usize, 1, 500, MTU as usize - 40] {
            let payload = rng_payload(len);
            let reply = tcp_packet(backend, client, 80, port, ACK | PSH, &[], &payload, 63);
            let ran = w.decrypt(program, &reply);
            let expected =
                forwarded(&tcp_packet(public, client, 8080, port, ACK | PSH, &[], &payload, 63));
            expect_reply_out(&w, &ran, &expected, program, &format!("{program:?} data {len}"));
        }
    }
    // IPv6, UDP.
    let (client6, public6, backend6) = (ip(CLIENT6), ip(PUBLIC6), ip(BACKEND6));
    let query = udp_packet(client6, public6, 50000, 8443, b"query", 50);
    assert_eq!(w.arrive(&query).stats.entry_forwarded, 1);
    let answer = udp_packet(backend6, client6, 443, 50000, b"answer", 63);
    let ran = w.decrypt(Program::RxXdp, &answer);
    let expected = forwarded(&udp_packet(public6, client6, 8443, 50000, b"answer", 63));
    expect_reply_out(&w, &ran, &expected, Program::RxXdp, "IPv6 UDP");
    // Another flow of the backend's (no forwarded packet came in for it) is not translated.
    let other = tcp_packet(backend, client, 80, 49999, ACK, &[], b"other", 63);
    let ran = w.decrypt(Program::RxXdp, &other);
    assert_eq!(ran.stats.nonzero(), vec![(Stat::RxDeliveredLocal, 1)]);
    assert_eq!(&ran.data[14..], &other[..]);
}

#[test]
fn a_reply_the_fib_cannot_route_goes_to_the_stack_translated() {
    let mut w = vps(true);
    set_forward(&mut w, 0, EntryTransport::Udp, (5353, 5353), "10.77.0.10:53");
    // 203.0.113.0/24 has no route here: the lookup fails, the stack gets the packet.
    let client = ip("203.0.113.5");
    let query = udp_packet(client, ip(PUBLIC4), 40000, 5353, b"q", 50);
    assert_eq!(w.arrive(&query).stats.entry_forwarded, 1);
    let answer = udp_packet(ip(BACKEND4), client, 53, 40000, b"a", 63);
    let ran = w.decrypt(Program::RxXdp, &answer);
    assert_eq!(ran.stats.nonzero(), vec![(Stat::EntryReplyTranslated, 1)]);
    assert_eq!(ran.verdict, XDP_PASS);
    assert_eq!(&ran.data[14..], &udp_packet(ip(PUBLIC4), client, 5353, 40000, b"a", 63)[..]);
    assert_eq!(u32::from_ne_bytes(ran.meta[0..4].try_into().unwrap()), XDP_HANDOFF_MAGIC);
}

#[test]
fn icmp_errors_about_forwarded_flows_are_translated() {
    let mut w = vps(true);
    set_forward(&mut w, 0, EntryTransport::Udp, (5353, 5353), "10.77.0.10:53");
    set_forward(&mut w, 1, EntryTransport::Tcp, (8080, 8080), "10.77.0.10:80");
    set_forward(&mut w, 2, EntryTransport::Udp, (8443, 8443), "[fd00:77::10]:443");
    let (client, public, backend) = (ip(CLIENT4), ip(PUBLIC4), ip(BACKEND4));
    let cases: Vec<(Vec<u8>, Vec<u8>, &str)> = vec![
        // (what the client sent, what the backend got), with payloads of several sizes.
        (
            udp_packet(client, public, 40000, 5353, b"q", 50),
            udp_packet(client, backend, 40000, 53, b"q", 49),
            "UDP",
        ),
        (
            udp_packet(client, public, 40001, 5353, &rng_payload(300), 50),
            udp_packet(client, backend, 40001, 53, &rng_payload(300), 49),
            "UDP, long",
        ),
        (
            tcp_packet(client, public, 40002, 8080, ACK | PSH, &[], &rng_payload(100), 50),
            tcp_packet(client, backend, 40002, 80, ACK | PSH, &[], &rng_payload(100), 49),
            "TCP",
        ),
        (
            udp_packet(ip(CLIENT6), ip(PUBLIC6), 40003, 8443, &rng_payload(64), 50),
            udp_packet(ip(CLIENT6), ip(BACKEND6), 40003, 443, &rng_payload(64), 49),
            "IPv6 UDP",
        ),
    ];
    for (sent, received, what) in cases {
        assert_eq!(w.arrive(&sent).stats.entry_forwarded, 1, "{what}");
        let (from, to) =
            (transport::parse(&received).unwrap().dst, transport::parse(&sent).unwrap().src);
        // The backend's host answers "port unreachable" (IPv4 code 3, IPv6 code 4) with the
        // packet it got; the client must see it about the packet it sent (TTL as received).
        let code = if from.is_ipv4() { 3 } else { 4 };
        let error = transport::icmp_unreachable(from, to, code, &received, 63);
        let mut about = sent.clone();
        about = with_ttl(&about, 49);
        let public = transport::parse(&sent).unwrap().dst;
        let expected = forwarded(&transport::icmp_unreachable(public, to, code, &about, 63));
        let ran = w.decrypt(Program::RxXdp, &error);
        expect_reply_out(&w, &ran, &expected, Program::RxXdp, what);
    }
    // An error about a packet of no forwarded flow is delivered as it is.
    let stray = udp_packet(client, backend, 49999, 53, b"stray", 49);
    let error = transport::icmp_unreachable(backend, client, 3, &stray, 63);
    let ran = w.decrypt(Program::RxXdp, &error);
    assert_eq!(ran.stats.nonzero(), vec![(Stat::RxDeliveredLocal, 1)]);
    assert_eq!(&ran.data[14..], &error[..]);
}

/// `packet` with another TTL / hop limit (IPv4 header checksum recomputed).
fn with_ttl(packet: &[u8], ttl: u8) -> Vec<u8> {
    let mut p = packet.to_vec();
    if p[0] >> 4 == 4 {
        p[8] = ttl;
        p[10..12].copy_from_slice(&[0, 0]);
        let c = frames::checksum(0, &p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        p[7] = ttl;
    }
    p
}

/// The proxy's connection: its socket on the tunnel address, the backend, the client it
/// stands for.
const PROXY_PORT: u16 = 45123;
fn proxy_socket() -> SocketAddr {
    sa("10.9.0.1", PROXY_PORT)
}
fn proxy_backend() -> SocketAddr {
    sa(BACKEND4, 443)
}
fn proxy_client() -> SocketAddr {
    sa(CLIENT4, 51000)
}

fn register_proxy(w: &mut World) {
    let out = flow_key(IPPROTO_TCP, proxy_socket(), proxy_backend());
    w.dp.add_proxy_flow(&out, &flow_nat(NAT_SOURCE, proxy_client())).unwrap();
    let back = flow_key(IPPROTO_TCP, proxy_backend(), proxy_client());
    w.dp.add_proxy_flow(&back, &flow_nat(NAT_DESTINATION, proxy_socket())).unwrap();
}

/// Runs the TUN's egress proxy program on an IP packet. A TC test run takes the first 14
/// bytes for an Ethernet header (eth_type_trans) and gives the program the data from
/// offset 0 again: the bare packet is what the program sees, as on the TUN.
fn on_tun_egress(w: &World, packet: &[u8]) -> Ran {
    w.run(Program::EntryProxy, packet, w.lab.tun_ifindex)
}

#[test]
fn proxied_connections_carry_the_clients_address_both_ways() {
    let mut w = vps(true);
    register_proxy(&mut w);
    let (sock, backend, client) = (proxy_socket(), proxy_backend(), proxy_client());
    let tun = w.lab.tun_ifindex;
    for len in [0usize, 10, 1000] {
        let payload = rng_payload(len);
        // Into the tunnel: the proxy's source becomes the client's.
        let packet =
            tcp_packet(sock.ip(), backend.ip(), sock.port(), 443, ACK | PSH, &[], &payload, 64);
        let ran = on_tun_egress(&w, &packet);
        assert_eq!(ran.stats.nonzero(), vec![(Stat::ProxyTranslated, 1)], "out {len}");
        assert_eq!(ran.verdict, TC_NEXT, "the next program runs after it");
        let expected =
            tcp_packet(client.ip(), backend.ip(), client.port(), 443, ACK | PSH, &[], &payload, 64);
        assert_eq!(ran.data, expected, "out {len}");
        // The backend's reply, decrypted: to the proxy's socket, delivered locally.
        let reply =
            tcp_packet(backend.ip(), client.ip(), 443, client.port(), ACK | PSH, &[], &payload, 63);
        let ran = w.decrypt(Program::RxXdp, &reply);
        assert_eq!(ran.stats.nonzero(), vec![(Stat::ProxyTranslated, 1)], "back {len}");
        assert_eq!(ran.verdict, XDP_PASS);
        let expected =
            tcp_packet(backend.ip(), sock.ip(), 443, sock.port(), ACK | PSH, &[], &payload, 63);
        assert!(ran.data[14..] == expected[..], "back {len}");
    }
    // Other traffic into the tunnel is left alone, counted by nobody here.
    let other = tcp_packet(sock.ip(), backend.ip(), sock.port() + 1, 443, ACK, &[], b"x", 64);
    let ran = on_tun_egress(&w, &other);
    assert_eq!((ran.verdict, ran.stats.nonzero()), (TC_NEXT, vec![]));
    assert_eq!(ran.data, other);
    // Without CONFIG_ENTRY, nothing is translated.
    let mut c = config(tun, MTU);
    c.entry = false;
    w.dp.set_config(&c).unwrap();
    let packet = tcp_packet(sock.ip(), backend.ip(), sock.port(), 443, ACK, &[], b"y", 64);
    let ran = on_tun_egress(&w, &packet);
    assert_eq!((ran.verdict, ran.stats.nonzero()), (TC_NEXT, vec![]));
    assert_eq!(ran.data, packet);
}

/// A TCP connect from `local` to `remote` (non-blocking: only its SYNs matter); the socket
/// closes on drop.
fn connect_from(local: SocketAddr, remote: SocketAddr) -> OwnedFd {
    let to_sockaddr = |a: SocketAddr| -> libc::sockaddr_in {
        let IpAddr::V4(v4) = a.ip() else { panic!("IPv4 only") };
        libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(v4.octets()) },
            sin_zero: [0; 8],
        }
    };
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let len = size_of::<libc::sockaddr_in>() as u32;
        let l = to_sockaddr(local);
        let rc = libc::bind(fd.as_raw_fd(), &l as *const _ as *const libc::sockaddr, len);
        assert_eq!(rc, 0, "bind {local}: {}", std::io::Error::last_os_error());
        let r = to_sockaddr(remote);
        libc::connect(fd.as_raw_fd(), &r as *const _ as *const libc::sockaddr, len);
        fd
    }
}

/// The real TUN egress: the proxy's SYN (CHECKSUM_PARTIAL, from a local TCP socket) leaves
/// with the client's source, sealed by `wg_tx_tun` running after the proxy program (attached
/// after it, it goes first), its TCP checksum valid.
#[test]
fn the_proxy_program_runs_before_the_send_program() {
    let mut w = vps(true);
    register_proxy(&mut w);
    w.lab.ns.exec(&["ethtool", "-K", "u0", "tx", "off"]);
    let underlay = w.lab.underlay_ifindex;
    w.dp.set_underlay_checksum(underlay, TxChecksum::Software).unwrap();
    let _in = w.lab.ns.enter();
    w.dp.attach_tunnel(w.lab.tun_ifindex, TunnelSends::PerSegment).expect("attach_tunnel");
    w.dp.attach_proxy_steering(w.lab.tun_ifindex).expect("attach_proxy_steering");
    let capture = Capture::open(w.lab.ns.ifindex("u1"));
    let before = w.dp.stats().unwrap();
    let _socket = connect_from(proxy_socket(), proxy_backend());
    let frame = capture
        .next(Duration::from_secs(2), |f| {
            frames::parse_outer(f).is_ok_and(|o| o.dport == PEER_PORT)
        })
        .unwrap_or_else(|| panic!("nothing sealed; {:?}", w.dp.stats().unwrap().since(&before)));
    let inner = opened(&w.lab, w.home.keys, PEER_PORT, &frame, "proxy SYN");
    let syn = transport::parse(&inner).unwrap_or_else(|e| panic!("proxy SYN: {e}"));
    assert_eq!((syn.src, syn.sport), (proxy_client().ip(), proxy_client().port()));
    assert_eq!((syn.dst, syn.dport), (proxy_backend().ip(), 443));
    assert_eq!(syn.l4[13] & SYN, SYN);
    let delta = w.dp.stats().unwrap().since(&before);
    assert!(delta.proxy_translated >= 1 && delta.tx_encrypted >= 1, "{delta:?}");
    assert_eq!(delta.error + delta.tx_pass_offload, 0, "{delta:?}");
}

/// Without the send program, the proxy program alone: the daemon reads the proxy's SYN
/// from the TUN fd with the client's source, its checksum completed by the kernel.
#[test]
fn the_proxy_program_works_without_the_send_program() {
    let mut w = vps(true);
    register_proxy(&mut w);
    let _in = w.lab.ns.enter();
    w.dp.attach_proxy_steering(w.lab.tun_ifindex).expect("attach_proxy_steering");
    w.lab.tun.drain();
    let _socket = connect_from(proxy_socket(), proxy_backend());
    let got = tun_packets(&w, Duration::from_secs(2), |p| {
        transport::parse(p).is_ok_and(|s| s.proto == IPPROTO_TCP && s.dport == 443)
    });
    let syn = transport::parse(got.first().expect("the SYN on the TUN fd")).unwrap();
    assert_eq!((syn.src, syn.sport), (proxy_client().ip(), proxy_client().port()));
    assert_eq!(w.dp.stats().unwrap().error, 0);
}

/// Behind an entry point (the home): peers `vps1` (an entry peer whose AllowedIPs hold the
/// default route; `w.home`), `vps2` (an entry peer the operator named: its tunnel address
/// only) and `phone` (an ordinary peer), all through the underlay; the NAS on the LAN at
/// 10.8.0.5.
struct Home {
    w: World,
    vps2: TestPeer,
    phone: TestPeer,
}

const NAS: &str = "10.8.0.5";

fn home(reply_to: bool) -> Home {
    let lab = Lab::new();
    let mut dp = load();
    let mut c = config(lab.tun_ifindex, MTU);
    c.reply_to = reply_to;
    dp.set_config(&c).unwrap();
    let now = Instant::now();
    let vps1 = add_peer(
        &mut dp,
        Keys::new(1),
        &["10.9.0.2/32", "0.0.0.0/0", "::/0"],
        Some(endpoint(&lab, 40001)),
        now,
    );
    let vps2 = add_peer(&mut dp, Keys::new(2), &["10.9.0.3/32"], Some(endpoint(&lab, 40002)), now);
    let phone = add_peer(&mut dp, Keys::new(3), &["10.9.0.4/32"], Some(endpoint(&lab, 40003)), now);
    dp.set_peer_entry(vps1.slot, true).unwrap();
    dp.set_peer_entry(vps2.slot, true).unwrap();
    Home { w: World { lab, dp, home: vps1, counter: 0 }, vps2, phone }
}

impl Home {
    fn received(&mut self, peer: Peer, inner: &[u8]) -> Ran {
        self.received_by(Program::RxXdp, peer, inner)
    }

    fn peer(&self, peer: Peer) -> (&TestPeer, u16) {
        match peer {
            Peer::Vps1 => (&self.w.home, 40001),
            Peer::Vps2 => (&self.vps2, 40002),
            Peer::Phone => (&self.phone, 40003),
        }
    }

    fn received_by(&mut self, program: Program, peer: Peer, inner: &[u8]) -> Ran {
        let (p, port) = self.peer(peer);
        let keys = p.keys;
        let frame = self.w.sealed_by(keys, port, inner);
        self.w.run(program, &frame, self.w.lab.underlay_ifindex)
    }

    /// A LAN frame from the NAS through `wg_tx_lan`.
    fn sent_by_nas(&self, packet: &[u8]) -> Ran {
        let ethertype = if packet[0] >> 4 == 4 { 0x0800 } else { 0x86dd };
        let frame = frames::ethernet(self.w.lab.lan_mac, LAN_HOST_MAC, ethertype, packet);
        self.w.run(Program::TxLan, &frame, self.w.lab.lan_ifindex)
    }

    fn expect_reply_to(&self, peer: Peer, proto: u8, from: SocketAddr, to: SocketAddr) {
        let slot = self.peer(peer).0.slot;
        let key = flow_key(proto, from, to);
        let flows = self.w.dp.reply_to_flows();
        let (_, value) = flows
            .iter()
            .find(|(k, _)| *k == key)
            .unwrap_or_else(|| panic!("no REPLY_TO for {from} → {to} in {flows:?}"));
        assert_eq!(value.peer, slot.0, "{from} → {to}");
        assert!(value.last_seen_ns > 0);
    }
}

#[derive(Clone, Copy, Debug)]
enum Peer {
    Vps1,
    Vps2,
    Phone,
}

#[test]
fn an_entry_peer_may_send_any_source_no_ordinary_peer_owns() {
    let mut h = home(false);
    let nas = ip(NAS);
    let to_nas = |src: &str| tcp_packet(ip(src), nas, 40000, 80, SYN, &[], &[], 60);
    // From the entry peers: a public source (vps2's owner by AllowedIPs is vps1, an entry
    // peer too), and their own addresses.
    for (peer, src) in [
        (Peer::Vps1, CLIENT4),
        (Peer::Vps2, CLIENT4),
        (Peer::Vps2, "203.0.113.9"),
        (Peer::Vps2, "10.9.0.3"),
        (Peer::Phone, "10.9.0.4"),
    ] {
        let ran = h.received(peer, &to_nas(src));
        assert_eq!(ran.stats.nonzero(), vec![(Stat::RxDeliveredLocal, 1)], "{peer:?} from {src}");
    }
    // An ordinary peer cannot send a public source; an entry peer cannot claim an ordinary
    // peer's address.
    for (peer, src) in [(Peer::Phone, CLIENT4), (Peer::Vps2, "10.9.0.4"), (Peer::Vps1, "10.9.0.4")]
    {
        let ran = h.received(peer, &to_nas(src));
        assert_eq!(ran.stats.nonzero(), vec![(Stat::RxDropSource, 1)], "{peer:?} from {src}");
    }
    // With nobody's AllowedIPs holding the source, an entry peer still may.
    h.w.dp.set_allowed_ips(h.w.home.slot, &["10.9.0.2/32".parse().unwrap()]).unwrap();
    let ran = h.received(Peer::Vps2, &to_nas(CLIENT4));
    assert_eq!(ran.stats.nonzero(), vec![(Stat::RxDeliveredLocal, 1)]);
    // No longer an entry peer: no longer.
    h.w.dp.set_peer_entry(h.vps2.slot, false).unwrap();
    let ran = h.received(Peer::Vps2, &to_nas(CLIENT4));
    assert_eq!(ran.stats.nonzero(), vec![(Stat::RxDropSource, 1)]);
    // The TC receive program checks the same.
    let ran = h.received_by(Program::RxTc, Peer::Phone, &to_nas(CLIENT4));
    assert_eq!(ran.stats.nonzero(), vec![(Stat::RxDropSource, 1)]);
    h.w.dp.set_peer_entry(h.vps2.slot, true).unwrap();
    let ran = h.received_by(Program::RxTc, Peer::Vps2, &to_nas(CLIENT4));
    assert_eq!(ran.stats.nonzero(), vec![(Stat::RxDeliveredLocal, 1)]);
}

#[test]
fn replies_go_back_to_the_entry_peer_their_flow_came_from() {
    let mut h = home(true);
    let nas = ip(NAS);
    let (client1, client2) = (sa(CLIENT4, 40000), sa("203.0.113.9", 5555));
    // A client through each VPS (TCP through vps1 over XDP, UDP through vps2 over TC).
    let syn = tcp_packet(client1.ip(), nas, client1.port(), 80, SYN, &[], &[], 60);
    assert_eq!(h.received(Peer::Vps1, &syn).stats.nonzero(), vec![(Stat::RxDeliveredLocal, 1)]);
    let query = udp_packet(client2.ip(), nas, client2.port(), 53, b"query", 60);
    let ran = h.received_by(Program::RxTc, Peer::Vps2, &query);
    assert_eq!(ran.stats.nonzero(), vec![(Stat::RxDeliveredLocal, 1)]);
    // And over IPv6, to the NAS's IPv6 address.
    let (client6, nas6) = (sa(CLIENT6, 40006), ip("fd08::5"));
    let syn6 = tcp_packet(client6.ip(), nas6, client6.port(), 443, SYN, &[], &[], 60);
    assert_eq!(h.received(Peer::Vps1, &syn6).stats.nonzero(), vec![(Stat::RxDeliveredLocal, 1)]);
    h.expect_reply_to(Peer::Vps1, IPPROTO_TCP, sa(NAS, 80), client1);
    h.expect_reply_to(Peer::Vps2, IPPROTO_UDP, sa(NAS, 53), client2);
    h.expect_reply_to(Peer::Vps1, IPPROTO_TCP, SocketAddr::new(nas6, 443), client6);
    // The NAS's replies go back to the VPS each came through, whatever the routes say (the
    // lab has no default route at all).
    let cases = [
        (tcp_packet(nas, client1.ip(), 80, client1.port(), SYN | ACK, &[], &[], 64), Peer::Vps1),
        (udp_packet(nas, client2.ip(), 53, client2.port(), b"answer", 64), Peer::Vps2),
        (
            tcp_packet(nas, client1.ip(), 80, client1.port(), ACK, &[], &rng_payload(1380), 64),
            Peer::Vps1,
        ),
        (tcp_packet(nas6, client6.ip(), 443, client6.port(), SYN | ACK, &[], &[], 64), Peer::Vps1),
        (
            tcp_packet(nas6, client6.ip(), 443, client6.port(), ACK, &[], &rng_payload(700), 64),
            Peer::Vps1,
        ),
    ];
    for (reply, peer) in cases {
        let ran = h.sent_by_nas(&reply);
        assert_eq!(ran.stats.nonzero(), vec![(Stat::ReplyToSent, 1)], "{peer:?}");
        assert_eq!(ran.verdict, XDP_REDIRECT, "out of the underlay");
        let (p, port) = h.peer(peer);
        let inner = opened(&h.w.lab, p.keys, port, &ran.data, &format!("{peer:?}"));
        assert!(inner == forwarded(&reply), "{peer:?}: sealed reply differs");
    }
    // A flow that moves to the other entry peer follows it.
    assert_eq!(h.received(Peer::Vps2, &syn).stats.nonzero(), vec![(Stat::RxDeliveredLocal, 1)]);
    h.expect_reply_to(Peer::Vps2, IPPROTO_TCP, sa(NAS, 80), client1);
    // What no entry peer brought in follows the routes (none here: to the stack).
    let unknown = tcp_packet(nas, client1.ip(), 80, 1, ACK, &[], &[], 64);
    assert_eq!(h.sent_by_nas(&unknown).stats.nonzero(), vec![(Stat::TxPassToStack, 1)]);
    // Flows from ordinary peers are not remembered.
    let from_phone = udp_packet(ip("10.9.0.4"), nas, 7000, 53, b"phone", 60);
    assert_eq!(
        h.received(Peer::Phone, &from_phone).stats.nonzero(),
        vec![(Stat::RxDeliveredLocal, 1)]
    );
    let key = flow_key(IPPROTO_UDP, sa(NAS, 53), sa("10.9.0.4", 7000));
    assert!(h.w.dp.reply_to_flows().iter().all(|(k, _)| *k != key));
}

#[test]
fn a_reply_lan_xdp_cannot_seal_goes_to_the_tunnel_not_the_routes() {
    let mut h = home(true);
    let nas = ip(NAS);
    let client = sa(CLIENT4, 40000);
    let syn = tcp_packet(client.ip(), nas, client.port(), 80, SYN, &[], &[], 60);
    assert_eq!(h.received(Peer::Vps1, &syn).stats.nonzero(), vec![(Stat::RxDeliveredLocal, 1)]);
    // Larger than the tunnel's MTU: the stack would send it out of the default route; marked
    // for the TC handoff to the tunnel's egress instead, unchanged.
    let big = tcp_packet(nas, client.ip(), 80, client.port(), ACK, &[], &rng_payload(1500), 64);
    let ran = h.sent_by_nas(&big);
    assert_eq!((ran.verdict, ran.stats.nonzero()), (XDP_PASS, vec![(Stat::ReplyToTunnel, 1)]));
    assert!(ran.data.ends_with(&big), "handed over unchanged");
    // The entry peer without a session to send with at that moment (a rekey, say).
    let slot = h.w.home.slot;
    h.w.dp.set_peer_tx_session(slot, None).unwrap();
    let reply = tcp_packet(nas, client.ip(), 80, client.port(), SYN | ACK, &[], &[], 64);
    let ran = h.sent_by_nas(&reply);
    assert_eq!((ran.verdict, ran.stats.nonzero()), (XDP_PASS, vec![(Stat::ReplyToTunnel, 1)]));
    // Once it has one again, the reply goes back to it.
    h.w.dp.set_peer_tx_session(slot, Some(h.w.home.session)).unwrap();
    assert_eq!(h.sent_by_nas(&reply).stats.nonzero(), vec![(Stat::ReplyToSent, 1)]);
}

#[test]
fn without_config_reply_to_replies_follow_the_routes() {
    let mut h = home(false);
    let nas = ip(NAS);
    let syn = tcp_packet(ip(CLIENT4), nas, 40000, 80, SYN, &[], &[], 60);
    assert_eq!(h.received(Peer::Vps1, &syn).stats.nonzero(), vec![(Stat::RxDeliveredLocal, 1)]);
    // Learned (the flag only tells LAN XDP to look), but not used.
    h.expect_reply_to(Peer::Vps1, IPPROTO_TCP, sa(NAS, 80), sa(CLIENT4, 40000));
    let reply = tcp_packet(nas, ip(CLIENT4), 80, 40000, SYN | ACK, &[], &[], 64);
    let ran = h.sent_by_nas(&reply);
    assert_eq!((ran.verdict, ran.stats.nonzero()), (XDP_PASS, vec![(Stat::TxPassToStack, 1)]));
}
