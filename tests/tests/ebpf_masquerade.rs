//! The masquerade programs (`masq_out` on OUTIF's egress, `masq_in` on its ingress) through
//! BPF_PROG_TEST_RUN, in the lab namespace: every packet they produce is taken apart by
//! `transport::parse`, which checks every length and checksum, and compared with what the
//! translation must give (addresses, ports or echo identifier, TTL).

mod ebpf_common;

use std::net::IpAddr;
use std::time::Instant;

use ebpf_common::frames::{self, PEER_MAC};
use ebpf_common::lab::Lab;
use ebpf_common::transport::{self, ACK, IPPROTO_ICMP, Packet, SYN, tcp_packet, udp_packet};
use ebpf_common::{Keys, add_peer, config, load};
use gateway::dataplane::{Dataplane, MasqueradeConfig, Program, Stats, TestRunInput};
use gateway_common::maps::{
    MASQ_DEFAULT_FIRST_PORT, MASQ_DEFAULT_PORT_COUNT, MASQ_STATE_CLOSING, MASQ_STATE_ESTABLISHED,
    MASQ_STATE_TRANSITORY, Stat,
};

const TC_ACT_REDIRECT: u32 = 7;
/// TC_ACT_UNSPEC (TCX's "next") as the test run returns it.
const TC_NEXT: u32 = u32::MAX;
const MTU: u32 = 1420;
const TCP_FIN: u8 = 0x01;

const PUBLIC: &str = "192.0.2.1";
const PHONE: &str = "10.9.0.2";
const LAPTOP: &str = "10.9.0.3";
const REMOTE: &str = "198.51.100.7";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Ran {
    verdict: u32,
    /// The packet after the program, without its Ethernet header.
    packet: Vec<u8>,
    stats: Stats,
}

/// A data plane with two peers (the phone and the laptop), masquerading out of the lab's
/// underlay as 192.0.2.1.
struct World {
    lab: Lab,
    dp: Dataplane,
}

fn world() -> World {
    let lab = Lab::new();
    let mut dp = load();
    dp.set_config(&config(lab.tun_ifindex, MTU)).unwrap();
    for (seed, addr) in [(1, PHONE), (2, LAPTOP)] {
        add_peer(&mut dp, Keys::new(seed), &[&format!("{addr}/32")], None, Instant::now());
    }
    dp.set_masquerade(Some(MasqueradeConfig {
        ifindex: lab.underlay_ifindex,
        addr: PUBLIC.parse().unwrap(),
        first_port: MASQ_DEFAULT_FIRST_PORT,
        port_count: MASQ_DEFAULT_PORT_COUNT,
    }))
    .unwrap();
    World { lab, dp }
}

impl World {
    fn run(&self, program: Program, packet: &[u8]) -> Ran {
        let frame = frames::ethernet(PEER_MAC, self.lab.underlay_mac, 0x0800, packet);
        let _in = self.lab.ns.enter();
        let before = self.dp.stats().unwrap();
        let input = TestRunInput { data: &frame, ifindex: self.lab.underlay_ifindex, repeat: 1 };
        let out = self.dp.test_run(program, &input).unwrap();
        let stats = self.dp.stats().unwrap().since(&before);
        Ran { verdict: out.verdict, packet: out.data[14..].to_vec(), stats }
    }

    /// A packet leaving OUTIF: translated, or (with `untouched`) left as it was.
    fn out(&self, packet: &[u8]) -> Packet {
        let ran = self.run(Program::MasqOut, packet);
        assert_eq!(ran.verdict, TC_NEXT, "masq_out always continues");
        assert_eq!(ran.stats.get(Stat::MasqueradeOut), 1, "counted: {:?}", ran.stats);
        transport::parse(&ran.packet).unwrap()
    }

    /// A reply arriving on OUTIF: translated and redirected to the tunnel.
    fn back(&self, packet: &[u8]) -> Packet {
        let ran = self.run(Program::MasqIn, packet);
        assert_eq!(ran.verdict, TC_ACT_REDIRECT, "a reply goes to the tunnel");
        assert_eq!(ran.stats.get(Stat::MasqueradeIn), 1, "counted: {:?}", ran.stats);
        transport::parse(&ran.packet).unwrap()
    }

    /// `program` leaves `packet` as it was and continues; returns what it counted.
    fn untouched(&self, program: Program, packet: &[u8]) -> Stats {
        let ran = self.run(program, packet);
        assert_eq!(ran.verdict, TC_NEXT, "{program:?} continues");
        assert_eq!(ran.packet, packet, "{program:?} left the packet as it was");
        ran.stats
    }

    /// The TCP state of the mapping of the flow from `inside`:`port`.
    fn state(&self, inside: &str, port: u16) -> u16 {
        let inside: std::net::Ipv4Addr = inside.parse().unwrap();
        let mappings = self.dp.masquerade_mappings();
        let (_, mapping) = mappings
            .iter()
            .find(|(key, _)| key.src[..4] == inside.octets() && u16::from_be(key.src_port) == port)
            .expect("a mapping of the flow");
        mapping.state
    }
}

fn in_range(port: u16) -> bool {
    (MASQ_DEFAULT_FIRST_PORT as u32
        ..MASQ_DEFAULT_FIRST_PORT as u32 + MASQ_DEFAULT_PORT_COUNT as u32)
        .contains(&(port as u32))
}

fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8, ttl: u8) -> Vec<u8> {
    tcp_packet(ip(src), ip(dst), sport, dport, flags, &[], b"", ttl)
}

/// An ICMP echo reply (type 0) as a whole IPv4 packet.
fn echo_reply(src: &str, dst: &str, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut m = vec![0, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    let c = frames::checksum(0, &m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    frames::ip_packet(ip(src), ip(dst), IPPROTO_ICMP, 64, 0, &m)
}

#[test]
fn a_tcp_connection_leaves_as_the_public_address_and_its_replies_come_back() {
    ebpf_common::require_root();
    let w = world();
    let syn = w.out(&tcp(PHONE, REMOTE, 40000, 443, SYN, 63));
    assert_eq!((syn.src, syn.dst, syn.dport, syn.ttl), (ip(PUBLIC), ip(REMOTE), 443, 63));
    assert!(in_range(syn.sport), "port {} out of the range", syn.sport);
    assert_eq!(w.state(PHONE, 40000), MASQ_STATE_TRANSITORY);

    let syn_ack = w.back(&tcp(REMOTE, PUBLIC, 443, syn.sport, SYN | ACK, 50));
    assert_eq!((syn_ack.src, syn_ack.sport), (ip(REMOTE), 443));
    assert_eq!((syn_ack.dst, syn_ack.dport), (ip(PHONE), 40000));
    assert_eq!(syn_ack.ttl, 49, "forwarded: TTL − 1");
    assert_eq!(w.state(PHONE, 40000), MASQ_STATE_ESTABLISHED);

    let ack = w.out(&tcp(PHONE, REMOTE, 40000, 443, ACK, 63));
    assert_eq!((ack.src, ack.sport), (ip(PUBLIC), syn.sport), "the flow keeps its port");
    w.out(&tcp(PHONE, REMOTE, 40000, 443, ACK | TCP_FIN, 63));
    assert_eq!(w.state(PHONE, 40000), MASQ_STATE_CLOSING);
}

#[test]
fn udp_and_ping_are_translated_both_ways() {
    ebpf_common::require_root();
    let w = world();
    let query = w.out(&udp_packet(ip(PHONE), ip(REMOTE), 5353, 53, b"query", 64));
    assert_eq!((query.src, query.dst, query.dport), (ip(PUBLIC), ip(REMOTE), 53));
    assert!(in_range(query.sport));
    let answer = w.back(&udp_packet(ip(REMOTE), ip(PUBLIC), 53, query.sport, b"answer", 64));
    assert_eq!((answer.dst, answer.dport, answer.payload()), (ip(PHONE), 5353, &b"answer"[..]));

    let id = |p: &Packet| u16::from_be_bytes([p.l4[4], p.l4[5]]);
    let request = w.out(&frames::ping(ip(PHONE), ip(REMOTE), 0x1234, 7, b"ping"));
    assert_eq!((request.src, request.proto), (ip(PUBLIC), IPPROTO_ICMP));
    let public_id = id(&request);
    assert!(in_range(public_id), "identifier {public_id:#x} out of the range");
    let reply = w.back(&echo_reply(REMOTE, PUBLIC, public_id, 7, b"ping"));
    assert_eq!((reply.dst, id(&reply), reply.l4[0]), (ip(PHONE), 0x1234, 0));
}

#[test]
fn two_peers_to_the_same_remote_end_get_their_own_ports_and_replies() {
    ebpf_common::require_root();
    let w = world();
    let phone = w.out(&udp_packet(ip(PHONE), ip(REMOTE), 5000, 53, b"a", 64));
    let laptop = w.out(&udp_packet(ip(LAPTOP), ip(REMOTE), 5000, 53, b"b", 64));
    assert_ne!(phone.sport, laptop.sport, "one public port per flow towards one remote end");
    for (public_port, inside) in [(phone.sport, PHONE), (laptop.sport, LAPTOP)] {
        let reply = w.back(&udp_packet(ip(REMOTE), ip(PUBLIC), 53, public_port, b"r", 64));
        assert_eq!((reply.dst, reply.dport), (ip(inside), 5000));
    }
}

#[test]
fn what_is_not_a_peers_or_not_a_mapped_reply_is_left_alone() {
    ebpf_common::require_root();
    let w = world();
    // Not from a peer: the host's own traffic, or a source no peer owns.
    let own =
        w.untouched(Program::MasqOut, &udp_packet(ip(PUBLIC), ip(REMOTE), 61500, 53, b"", 64));
    let stranger = udp_packet(ip("10.200.0.9"), ip(REMOTE), 5000, 53, b"", 64);
    let other = w.untouched(Program::MasqOut, &stranger);
    for stats in [own, other] {
        assert_eq!(stats.get(Stat::MasqueradeOut) + stats.get(Stat::MasqueradeUntranslated), 0);
    }
    // A peer's fragment: counted, left to the stack.
    let mut fragment = udp_packet(ip(PHONE), ip(REMOTE), 5000, 53, b"frag", 64);
    fragment[6] = 0x20; // more fragments
    let check = frames::checksum(0, &{
        let mut h = fragment[..20].to_vec();
        h[10..12].copy_from_slice(&[0, 0]);
        h
    });
    fragment[10..12].copy_from_slice(&check.to_be_bytes());
    assert_eq!(w.untouched(Program::MasqOut, &fragment).get(Stat::MasqueradeUntranslated), 1);
    // Replies: to a port of the range nobody holds, to a port outside it, from another remote
    // end than the mapping's.
    let mapped = w.out(&udp_packet(ip(PHONE), ip(REMOTE), 5000, 53, b"", 64)).sport;
    let free = if mapped == MASQ_DEFAULT_FIRST_PORT { mapped + 1 } else { mapped - 1 };
    for (from, sport, port) in [(REMOTE, 53, free), (REMOTE, 53, 22), ("198.51.100.8", 53, mapped)]
    {
        let reply = udp_packet(ip(from), ip(PUBLIC), sport, port, b"", 64);
        assert_eq!(w.untouched(Program::MasqIn, &reply).get(Stat::MasqueradeIn), 0);
    }
}
