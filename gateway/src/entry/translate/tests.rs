//! The translation against packets built and checked from scratch: every checksum is summed
//! over the whole packet again after a rewrite, never compared with the incremental result.

use std::net::SocketAddr;

use gateway_common::maps::{AF_INET, AF_INET6, FlowKey, FlowNat, NAT_DESTINATION, NAT_SOURCE};

use super::FlowTable;
use super::packet::Layout;
use crate::entry::forward::Transport;
use crate::mirror::proxy_flows::{ProxiedAddrs, ProxyFlowEntries};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

fn sum(bytes: &[u8]) -> u32 {
    bytes.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum()
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn octets(address: SocketAddr) -> Vec<u8> {
    match address {
        SocketAddr::V4(a) => a.ip().octets().to_vec(),
        SocketAddr::V6(a) => a.ip().octets().to_vec(),
    }
}

/// The pseudo-header's sum: addresses, protocol, transport length.
fn pseudo(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u32 {
    sum(src) + sum(dst) + u32::from(proto) + len as u32
}

/// The transport header (TCP: a SYN with a window; UDP: lengths) and payload, checksum 0.
fn segment(proto: u8, src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&src.port().to_be_bytes());
    l4.extend_from_slice(&dst.port().to_be_bytes());
    if proto == TCP {
        l4.extend_from_slice(&0x1234_5678u32.to_be_bytes()); // sequence
        l4.extend_from_slice(&0u32.to_be_bytes()); // acknowledgement
        l4.extend_from_slice(&[5 << 4, 0x02, 0xfa, 0xf0, 0, 0, 0, 0]); // offset, SYN, window
    } else {
        l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
    }
    l4.extend_from_slice(payload);
    l4
}

/// An IPv4 (with `options` words of options) or IPv6 packet with valid checksums; with
/// `udp_unchecked`, a UDP checksum of 0.
fn build(
    proto: u8,
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
    options: usize,
    udp_unchecked: bool,
) -> Vec<u8> {
    let mut l4 = segment(proto, src, dst, payload);
    let check_at = if proto == TCP { 16 } else { 6 };
    if proto == TCP || proto == UDP {
        let mut check = !fold(pseudo(&octets(src), &octets(dst), proto, l4.len()) + sum(&l4));
        if proto == UDP && check == 0 {
            check = 0xffff;
        }
        if udp_unchecked {
            check = 0;
        }
        l4[check_at..check_at + 2].copy_from_slice(&check.to_be_bytes());
    }
    let mut packet = Vec::new();
    if src.is_ipv4() {
        let header_len = 20 + 4 * options;
        packet.push(0x40 | (header_len / 4) as u8);
        packet.push(0);
        packet.extend_from_slice(&((header_len + l4.len()) as u16).to_be_bytes());
        packet.extend_from_slice(&[0xbe, 0xef, 0x40, 0x00, 64, proto, 0, 0]); // id, DF, TTL
        packet.extend_from_slice(&octets(src));
        packet.extend_from_slice(&octets(dst));
        packet.extend(std::iter::repeat_n(1u8, 4 * options)); // NOPs
        let check = !fold(sum(&packet));
        packet[10..12].copy_from_slice(&check.to_be_bytes());
    } else {
        packet.extend_from_slice(&[0x60, 0x0a, 0xbc, 0xde]);
        packet.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        packet.extend_from_slice(&[proto, 64]);
        packet.extend_from_slice(&octets(src));
        packet.extend_from_slice(&octets(dst));
    }
    packet.extend_from_slice(&l4);
    packet
}

fn packet(proto: u8, src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    build(proto, src, dst, payload, 0, false)
}

/// Whether every checksum of `packet` verifies, summed from scratch; its addresses and ports.
fn verified(packet: &[u8]) -> (bool, SocketAddr, SocketAddr) {
    let (header_len, proto, src, dst) = if packet[0] >> 4 == 4 {
        let header_len = usize::from(packet[0] & 0x0f) * 4;
        let src: [u8; 4] = packet[12..16].try_into().unwrap();
        let dst: [u8; 4] = packet[16..20].try_into().unwrap();
        (header_len, packet[9], std::net::IpAddr::from(src), std::net::IpAddr::from(dst))
    } else {
        let src: [u8; 16] = packet[8..24].try_into().unwrap();
        let dst: [u8; 16] = packet[24..40].try_into().unwrap();
        (40, packet[6], src.into(), dst.into())
    };
    let header_ok = packet[0] >> 4 == 6 || fold(sum(&packet[..header_len])) == 0xffff;
    let l4 = &packet[header_len..];
    let unchecked = proto == UDP && l4[6..8] == [0, 0] && packet[0] >> 4 == 4;
    let l4_ok = unchecked
        || fold(pseudo(&ip_bytes(src), &ip_bytes(dst), proto, l4.len()) + sum(l4)) == 0xffff;
    let port = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    (header_ok && l4_ok, SocketAddr::new(src, port(0)), SocketAddr::new(dst, port(2)))
}

fn ip_bytes(address: std::net::IpAddr) -> Vec<u8> {
    octets(SocketAddr::new(address, 0))
}

/// The families and transports, with a client, the proxy's tunnel side and a backend.
fn cases() -> Vec<(u8, ProxiedAddrs)> {
    let v4 = |client: &str, local: &str, backend: &str, transport| ProxiedAddrs {
        transport,
        client: client.parse().unwrap(),
        local: local.parse().unwrap(),
        backend: backend.parse().unwrap(),
    };
    let mut cases = Vec::new();
    for (proto, transport) in [(TCP, Transport::Tcp), (UDP, Transport::Udp)] {
        cases.push((proto, v4("203.0.113.7:50123", "10.8.0.1:39001", "10.8.0.2:443", transport)));
        cases.push((
            proto,
            v4("[2001:db8:77::9]:61000", "[fd00:8::1]:40404", "[fd00:8::2]:8443", transport),
        ));
    }
    cases
}

fn tables(entries: &ProxyFlowEntries) -> (FlowTable, FlowTable) {
    let (mut outbound, mut inbound) = (FlowTable::default(), FlowTable::default());
    assert!(outbound.insert(entries.outbound.0, entries.outbound.1));
    assert!(inbound.insert(entries.inbound.0, entries.inbound.1));
    (outbound, inbound)
}

#[test]
fn the_backend_sees_the_client_and_its_replies_reach_the_proxy() {
    for (proto, addrs) in cases() {
        let entries = ProxyFlowEntries::of(addrs).unwrap();
        let (outbound, inbound) = tables(&entries);
        let mut sent = packet(proto, addrs.local, addrs.backend, b"first bytes of the client");
        assert!(outbound.translate(&mut sent), "{addrs:?}");
        assert_eq!(verified(&sent), (true, addrs.client, addrs.backend), "{addrs:?}");
        assert!(!inbound.translate(&mut sent), "the other direction's table leaves it");

        let mut reply = packet(proto, addrs.backend, addrs.client, b"the backend answers");
        assert!(inbound.translate(&mut reply), "{addrs:?}");
        assert_eq!(verified(&reply), (true, addrs.backend, addrs.local), "{addrs:?}");
        assert!(!outbound.translate(&mut reply));
    }
}

/// xorshift64: reproducible variety without a dependency.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn address(&mut self, v4: bool) -> SocketAddr {
        let port = self.next() as u16;
        if v4 {
            let ip: [u8; 4] = self.bytes(4).try_into().unwrap();
            SocketAddr::from((ip, port))
        } else {
            let ip: [u8; 16] = self.bytes(16).try_into().unwrap();
            SocketAddr::from((ip, port))
        }
    }
}

fn nat(rewrite: u16, to: SocketAddr) -> FlowNat {
    let mut addr = [0; 16];
    let bytes = octets(to);
    addr[..bytes.len()].copy_from_slice(&bytes);
    FlowNat { rewrite, port: to.port().to_be(), forward: 0, addr, last_seen_ns: 0 }
}

fn key_of(packet: &[u8]) -> FlowKey {
    Layout::of(packet).expect("a packet with a flow").key(packet)
}

#[test]
fn translating_back_restores_every_byte() {
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    for round in 0..2000 {
        let v4 = round % 2 == 0;
        let proto = if round % 4 < 2 { TCP } else { UDP };
        let rewrite = if round % 8 < 4 { NAT_SOURCE } else { NAT_DESTINATION };
        let (src, dst, to) = (random.address(v4), random.address(v4), random.address(v4));
        let len = (random.next() % 64) as usize;
        let payload = random.bytes(len);
        let options = if v4 { (random.next() % 3) as usize } else { 0 };
        let original = build(proto, src, dst, &payload, options, false);

        let mut forth = FlowTable::default();
        forth.insert(key_of(&original), nat(rewrite, to));
        let mut packet = original.clone();
        assert!(forth.translate(&mut packet));
        let (valid, new_src, new_dst) = verified(&packet);
        assert!(valid, "round {round}: checksums after translating");
        if rewrite == NAT_SOURCE {
            assert_eq!((new_src, new_dst), (to, dst), "round {round}");
        } else {
            assert_eq!((new_src, new_dst), (src, to), "round {round}");
        }

        let mut back = FlowTable::default();
        back.insert(key_of(&packet), nat(rewrite, if rewrite == NAT_SOURCE { src } else { dst }));
        assert!(back.translate(&mut packet));
        assert_eq!(packet, original, "round {round}: the round trip");
    }
}

#[test]
fn an_ipv4_udp_packet_without_a_checksum_keeps_none() {
    let (src, dst, to): (SocketAddr, SocketAddr, SocketAddr) = (
        "10.8.0.1:4000".parse().unwrap(),
        "10.8.0.2:53".parse().unwrap(),
        "198.51.100.4:5353".parse().unwrap(),
    );
    let mut packet = build(UDP, src, dst, b"query", 0, true);
    let mut table = FlowTable::default();
    table.insert(key_of(&packet), nat(NAT_SOURCE, to));
    assert!(table.translate(&mut packet));
    assert_eq!(packet[26..28], [0, 0], "still no checksum");
    assert_eq!(verified(&packet), (true, to, dst), "the IPv4 header's is valid");
}

/// A UDP payload word that makes the packet's checksum, once translated by `nat`, come out
/// as zero: the word the translated packet's sum lacks to be all ones.
fn zero_making_word(dst: SocketAddr, to: SocketAddr) -> [u8; 2] {
    let translated = build(UDP, to, dst, &[0, 0], 0, false);
    let l4 = &translated[20..];
    let mut without_check = l4.to_vec();
    without_check[6..8].copy_from_slice(&[0, 0]);
    let partial = fold(pseudo(&octets(to), &octets(dst), UDP, l4.len()) + sum(&without_check));
    (0xffff - partial).to_be_bytes()
}

#[test]
fn a_udp_checksum_that_comes_out_zero_is_sent_as_all_ones() {
    let (src, dst, to): (SocketAddr, SocketAddr, SocketAddr) = (
        "10.8.0.1:4000".parse().unwrap(),
        "10.8.0.2:53".parse().unwrap(),
        "198.51.100.4:5353".parse().unwrap(),
    );
    let word = zero_making_word(dst, to);
    let mut packet = packet(UDP, src, dst, &word);
    let mut table = FlowTable::default();
    table.insert(key_of(&packet), nat(NAT_SOURCE, to));
    assert!(table.translate(&mut packet));
    assert_eq!(packet[26..28], [0xff, 0xff], "zero would mean no checksum");
    assert_eq!(verified(&packet), (true, to, dst));
}

fn one_entry_for(packet: &[u8]) -> FlowTable {
    let mut table = FlowTable::default();
    table.insert(key_of(packet), nat(NAT_SOURCE, "192.0.2.99:9999".parse().unwrap()));
    table
}

#[test]
fn fragments_are_left_alone() {
    let (src, dst): (SocketAddr, SocketAddr) =
        ("10.8.0.1:4000".parse().unwrap(), "10.8.0.2:80".parse().unwrap());
    let whole = packet(TCP, src, dst, b"0123456789abcdef");
    let table = one_entry_for(&whole);
    for (flags, what) in [([0x20, 0x00], "first fragment"), ([0x00, 0x10], "a later fragment")] {
        let mut fragment = whole.clone();
        fragment[6..8].copy_from_slice(&flags);
        let before = fragment.clone();
        assert!(!table.translate(&mut fragment), "{what}");
        assert_eq!(fragment, before, "{what}");
    }

    // IPv6: a fragment header between the IP and TCP headers.
    let (src, dst): (SocketAddr, SocketAddr) =
        ("[fd00::1]:4000".parse().unwrap(), "[fd00::2]:80".parse().unwrap());
    let whole = packet(TCP, src, dst, b"0123456789abcdef");
    let mut fragment = whole[..40].to_vec();
    fragment[6] = 44;
    fragment.extend_from_slice(&[TCP, 0, 0x00, 0x01, 0xca, 0xfe, 0xf0, 0x0d]);
    fragment.extend_from_slice(&whole[40..]);
    let payload_len = (fragment.len() - 40) as u16;
    fragment[4..6].copy_from_slice(&payload_len.to_be_bytes());
    let table = one_entry_for(&whole);
    let before = fragment.clone();
    assert!(!table.translate(&mut fragment));
    assert_eq!(fragment, before);
}

#[test]
fn packets_too_short_for_their_headers_are_left_alone() {
    for (proto, addrs) in cases() {
        let whole = packet(proto, addrs.local, addrs.backend, b"xy");
        let table = one_entry_for(&whole);
        for len in 0..whole.len() {
            let mut short = whole[..len].to_vec();
            assert!(!table.translate(&mut short), "{addrs:?}: {len} of {} bytes", whole.len());
            assert_eq!(short, whole[..len], "{addrs:?}: {len} bytes");
        }
        // The IP header claiming less than the transport header needs.
        let mut claims_less = whole.clone();
        if addrs.local.is_ipv4() {
            claims_less[2..4].copy_from_slice(&24u16.to_be_bytes());
        } else {
            claims_less[4..6].copy_from_slice(&4u16.to_be_bytes());
        }
        assert!(!table.translate(&mut claims_less), "{addrs:?}: header cut short");
    }
}

#[test]
fn bytes_after_the_packet_are_not_touched() {
    let (src, dst): (SocketAddr, SocketAddr) =
        ("10.8.0.1:4000".parse().unwrap(), "10.8.0.2:80".parse().unwrap());
    let whole = packet(UDP, src, dst, b"data");
    let table = one_entry_for(&whole);
    let mut padded = whole.clone();
    padded.extend_from_slice(&[0xaa; 6]);
    assert!(table.translate(&mut padded));
    assert_eq!(padded[whole.len()..], [0xaa; 6]);
    assert!(verified(&padded[..whole.len()]).0);
}

#[test]
fn other_flows_and_protocols_pass_unchanged() {
    let (src, dst): (SocketAddr, SocketAddr) =
        ("10.8.0.1:4000".parse().unwrap(), "10.8.0.2:80".parse().unwrap());
    let table = one_entry_for(&packet(TCP, src, dst, b""));
    for other in [
        packet(TCP, src, "10.8.0.2:81".parse().unwrap(), b""),
        packet(UDP, src, dst, b""),
        packet(TCP, "[fd00::1]:4000".parse().unwrap(), "[fd00::2]:80".parse().unwrap(), b""),
        build(ICMP, src, dst, &[8, 0, 0, 0, 0, 1, 0, 1], 0, false),
        vec![0x50; 60],
    ] {
        let mut copy = other.clone();
        assert!(!table.translate(&mut copy));
        assert_eq!(copy, other);
    }
    let mut empty = FlowTable::default();
    let mut same = packet(TCP, src, dst, b"");
    assert!(!empty.translate(&mut same));
    empty.insert(key_of(&same), FlowNat { rewrite: 7, ..nat(NAT_SOURCE, src) });
    let before = same.clone();
    assert!(!empty.translate(&mut same), "a rewrite it does not know");
    assert_eq!(same, before);
}

#[test]
fn a_flow_has_one_translation_and_only_its_own_is_removed() {
    let packet = packet(TCP, "10.8.0.1:4000".parse().unwrap(), "10.8.0.2:80".parse().unwrap(), b"");
    let key = key_of(&packet);
    let first = nat(NAT_SOURCE, "192.0.2.1:1".parse().unwrap());
    let second = nat(NAT_SOURCE, "192.0.2.2:2".parse().unwrap());
    let mut table = FlowTable::default();
    assert!(table.insert(key, first));
    assert!(!table.insert(key, second), "in use");
    assert_eq!(table.get(&key), Some(&first));
    assert!(!table.remove(&key, &second), "not its translation");
    assert_eq!(table.len(), 1);
    assert!(table.remove(&key, &first));
    assert!(table.is_empty());
}

#[test]
fn packets_are_keyed_as_the_mirror_keys_them() {
    for (proto, addrs) in cases() {
        let entries = ProxyFlowEntries::of(addrs).unwrap();
        assert_eq!(key_of(&packet(proto, addrs.local, addrs.backend, b"")), entries.outbound.0);
        assert_eq!(key_of(&packet(proto, addrs.backend, addrs.client, b"")), entries.inbound.0);
        let family = if addrs.client.is_ipv4() { AF_INET } else { AF_INET6 };
        assert_eq!(entries.outbound.0.family, family);
    }
}
