//! The little the protocol needs to know about the IP packets it carries: version, source,
//! destination, the length the header claims and the ECN bits; and the ICMP errors the
//! kernel sends for packets it cannot route into the tunnel or that do not fit it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use gateway_common::ecn;

const IPV4_MIN_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
/// RFC 1812 / Linux `icmp_send`: quote at most this much of an IPv4 packet in total.
const ICMPV4_MAX_TOTAL: usize = 576;
/// RFC 4443: an ICMPv6 error must not exceed the minimum IPv6 MTU.
const ICMPV6_MAX_TOTAL: usize = 1280;
const DEFAULT_TTL: u8 = 64;

/// An inner packet's addressing, as read from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Total length the header claims (IPv6: payload length + 40).
    pub claimed_len: usize,
}

/// Parses the IP header at the start of `packet`. `None` unless it is IPv4 or IPv6 with a
/// complete fixed header: the kernel calls anything else a "dishonest packet type".
pub fn parse(packet: &[u8]) -> Option<Header> {
    match packet.first()? >> 4 {
        4 if packet.len() >= IPV4_MIN_HEADER => {
            let src = Ipv4Addr::from(<[u8; 4]>::try_from(&packet[12..16]).ok()?);
            let dst = Ipv4Addr::from(<[u8; 4]>::try_from(&packet[16..20]).ok()?);
            let claimed_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
            Some(Header { src: src.into(), dst: dst.into(), claimed_len })
        }
        6 if packet.len() >= IPV6_HEADER => {
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[8..24]).ok()?);
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&packet[24..40]).ok()?);
            let claimed_len = usize::from(u16::from_be_bytes([packet[4], packet[5]])) + IPV6_HEADER;
            Some(Header { src: src.into(), dst: dst.into(), claimed_len })
        }
        _ => None,
    }
}

/// The DS field (IPv4 TOS, IPv6 traffic class) of the packet, 0 if it is not IP.
pub fn dsfield(packet: &[u8]) -> u8 {
    match packet {
        [first, second, ..] if first >> 4 == 4 => *second,
        [first, second, ..] if first >> 4 == 6 => (first << 4) | (second >> 4),
        _ => 0,
    }
}

/// Marks a decrypted packet as its outer header's DS field says (`ecn::decapsulate`), as the
/// kernel's WireGuard does before handing it to the stack; an IPv4 header checksum follows.
pub fn decapsulate_ecn(packet: &mut [u8], outer_ds: u8) {
    let inner = dsfield(packet);
    let marked = ecn::decapsulate(outer_ds, inner);
    if marked == inner & ecn::MASK {
        return;
    }
    match packet[0] >> 4 {
        4 if packet.len() >= IPV4_MIN_HEADER => {
            let old = u16::from_be_bytes([packet[0], packet[1]]);
            packet[1] = (packet[1] & !ecn::MASK) | marked;
            let new = u16::from_be_bytes([packet[0], packet[1]]);
            // RFC 1624: HC' = ~(~HC + ~m + m').
            let check = u16::from_be_bytes([packet[10], packet[11]]);
            let sum = u32::from(!check) + u32::from(!old) + u32::from(new);
            packet[10..12].copy_from_slice(&checksum_fold(sum).to_be_bytes());
        }
        6 => packet[1] = (packet[1] & !(ecn::MASK << 4)) | (marked << 4),
        _ => {}
    }
}

fn checksum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn checksum_add(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// Whether an ICMP error may be sent about `packet` at all (RFC 1122 / RFC 4443 rules the
/// kernel's `icmp_send` applies): never about an ICMP error, a fragment other than the first,
/// or a packet to or from a multicast, broadcast or unspecified address.
fn may_answer(packet: &[u8], header: &Header) -> bool {
    let bad_addr = |a: IpAddr| match a {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast() || a.is_unspecified(),
        IpAddr::V6(a) => a.is_multicast() || a.is_unspecified(),
    };
    if bad_addr(header.src) || bad_addr(header.dst) {
        return false;
    }
    match header.src {
        IpAddr::V4(_) => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let fragment_offset = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
            if fragment_offset != 0 || packet.len() < ihl {
                return false;
            }
            // ICMP errors (anything but echo/timestamp/info/address-mask requests and replies).
            !(packet[9] == 1
                && packet
                    .get(ihl)
                    .is_some_and(|&t| !matches!(t, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18)))
        }
        IpAddr::V6(_) => {
            // ICMPv6 errors have types below 128.
            !(packet[6] == 58 && packet.get(IPV6_HEADER).is_some_and(|&t| t < 128))
        }
    }
}

/// The "destination unreachable" the kernel answers with when no peer has the destination in
/// its AllowedIPs or the peer has no endpoint: ICMP host unreachable (IPv4) or ICMPv6 address
/// unreachable, from `source`, quoting the offending packet. `None` when no error may be sent
/// or there is no source address of the right family.
pub fn destination_unreachable(
    packet: &[u8],
    source_v4: Option<Ipv4Addr>,
    source_v6: Option<Ipv6Addr>,
) -> Option<Vec<u8>> {
    let header = parse(packet)?;
    if !may_answer(packet, &header) {
        return None;
    }
    match header.src {
        // type 3 (destination unreachable), code 1 (host unreachable)
        IpAddr::V4(to) => Some(icmpv4_error(packet, source_v4?, to, [3, 1], 0)),
        // type 1 (destination unreachable), code 3 (address unreachable)
        IpAddr::V6(to) => Some(icmpv6_error(packet, source_v6?, to, [1, 3], 0)),
    }
}

/// Whether an IPv4 packet says "don't fragment" (IPv6 packets are never fragmented on the
/// way, so every one does).
pub fn dont_fragment(packet: &[u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) => packet.get(6).is_some_and(|b| b & 0x40 != 0),
        Some(6) => true,
        _ => false,
    }
}

/// The error a router sends when a packet does not fit the next hop (`mtu` bytes): ICMP
/// "fragmentation needed" with the next-hop MTU (RFC 1191) for an IPv4 packet that says
/// "don't fragment", ICMPv6 "packet too big" (RFC 4443) for an IPv6 one. `None` for an IPv4
/// packet that may be fragmented, or when no error may be sent about the packet.
///
/// It comes from the packet's destination: written to the TUN it arrives at the stack on
/// the tunnel, from an address routed through the tunnel, which the stack's source checks
/// accept (an address of this host would be dropped as martian), and which is where the
/// packet was going. The sender's stack matches the error to its flow by the quoted
/// header, whatever its source.
pub fn too_big(packet: &[u8], mtu: usize) -> Option<Vec<u8>> {
    let header = parse(packet)?;
    if !dont_fragment(packet) || !may_answer(packet, &header) {
        return None;
    }
    match (header.src, header.dst) {
        // type 3 (destination unreachable), code 4 (fragmentation needed and DF set); the
        // next-hop MTU in the low 16 bits of the rest of the header.
        (IpAddr::V4(to), IpAddr::V4(from)) => {
            Some(icmpv4_error(packet, from, to, [3, 4], mtu.min(0xffff) as u32))
        }
        // type 2 (packet too big), code 0; the MTU in the rest of the header.
        (IpAddr::V6(to), IpAddr::V6(from)) => {
            Some(icmpv6_error(packet, from, to, [2, 0], mtu.min(u32::MAX as usize) as u32))
        }
        _ => None,
    }
}

/// An ICMP error (`kind`: type and code; `rest`: the header's last four bytes) from `from` to
/// `to` quoting as much of `packet` as RFC 1812 allows.
fn icmpv4_error(packet: &[u8], from: Ipv4Addr, to: Ipv4Addr, kind: [u8; 2], rest: u32) -> Vec<u8> {
    let quoted = &packet[..packet.len().min(ICMPV4_MAX_TOTAL - IPV4_MIN_HEADER - 8)];
    let total = IPV4_MIN_HEADER + 8 + quoted.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&[0x45, 0xc0]);
    out.extend_from_slice(&(total as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, DEFAULT_TTL, 1, 0, 0]);
    out.extend_from_slice(&from.octets());
    out.extend_from_slice(&to.octets());
    let ip_sum = checksum_fold(checksum_add(0, &out[..IPV4_MIN_HEADER]));
    out[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    out.extend_from_slice(&[kind[0], kind[1], 0, 0]);
    out.extend_from_slice(&rest.to_be_bytes());
    out.extend_from_slice(quoted);
    let icmp_sum = checksum_fold(checksum_add(0, &out[IPV4_MIN_HEADER..]));
    out[IPV4_MIN_HEADER + 2..IPV4_MIN_HEADER + 4].copy_from_slice(&icmp_sum.to_be_bytes());
    out
}

/// An ICMPv6 error, as `icmpv4_error`, at most the minimum IPv6 MTU long (RFC 4443).
fn icmpv6_error(packet: &[u8], from: Ipv6Addr, to: Ipv6Addr, kind: [u8; 2], rest: u32) -> Vec<u8> {
    let quoted = &packet[..packet.len().min(ICMPV6_MAX_TOTAL - IPV6_HEADER - 8)];
    let payload_len = 8 + quoted.len();
    let mut out = Vec::with_capacity(IPV6_HEADER + payload_len);
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&(payload_len as u16).to_be_bytes());
    out.extend_from_slice(&[58, DEFAULT_TTL]);
    out.extend_from_slice(&from.octets());
    out.extend_from_slice(&to.octets());
    out.extend_from_slice(&[kind[0], kind[1], 0, 0]);
    out.extend_from_slice(&rest.to_be_bytes());
    out.extend_from_slice(quoted);
    let mut sum = checksum_add(0, &out[8..40]);
    sum += payload_len as u32;
    sum += 58;
    let sum = checksum_fold(checksum_add(sum, &out[IPV6_HEADER..]));
    out[IPV6_HEADER + 2..IPV6_HEADER + 4].copy_from_slice(&sum.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_packet(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
        let total = 20 + payload.len();
        let mut p = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, proto, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(payload);
        p
    }

    fn v6_packet(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn decapsulation_marks_ecn_and_keeps_the_ipv4_checksum_valid() {
        for (tos, outer, marked) in [
            (0xb8 | ecn::ECT_0, ecn::CE, 0xb8 | ecn::CE),
            (0xb8 | ecn::ECT_0, ecn::ECT_1, 0xb8 | ecn::ECT_1),
            (0xb8 | ecn::NOT_ECT, ecn::CE, 0xb8 | ecn::NOT_ECT),
            (0xb8 | ecn::ECT_1, ecn::ECT_0, 0xb8 | ecn::ECT_1),
        ] {
            let mut p = v4_packet([10, 0, 0, 1], [10, 0, 0, 2], 17, &[0; 8]);
            p[1] = tos;
            let check = checksum_fold(checksum_add(0, &p[..20]));
            p[10..12].copy_from_slice(&check.to_be_bytes());
            decapsulate_ecn(&mut p, 0x28 | outer);
            assert_eq!(p[1], marked, "TOS {tos:#04x} under outer ECN {outer}");
            assert_eq!(checksum_fold(checksum_add(0, &p[..20])), 0, "header checksum");
        }
        let (a, b): (Ipv6Addr, Ipv6Addr) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let mut p = v6_packet(a, b, 17, &[0; 8]);
        // Traffic class 0xb8 | ECT(0), flow label 0x12345.
        p[..4].copy_from_slice(&[0x6b, 0xa1, 0x23, 0x45]);
        decapsulate_ecn(&mut p, ecn::CE);
        assert_eq!(dsfield(&p), 0xb8 | ecn::CE);
        assert_eq!(&p[..4], &[0x6b, 0xb1, 0x23, 0x45], "version and flow label untouched");
    }

    #[test]
    fn parses_both_families_and_refuses_the_rest() {
        let p = v4_packet([10, 0, 0, 1], [10, 0, 0, 2], 17, &[0; 8]);
        let h = parse(&p).unwrap();
        assert_eq!(h.src, IpAddr::from([10, 0, 0, 1]));
        assert_eq!(h.dst, IpAddr::from([10, 0, 0, 2]));
        assert_eq!(h.claimed_len, 28);
        let a: Ipv6Addr = "fd00::1".parse().unwrap();
        let b: Ipv6Addr = "fd00::2".parse().unwrap();
        let h = parse(&v6_packet(a, b, 17, &[0; 12])).unwrap();
        assert_eq!((h.src, h.dst, h.claimed_len), (a.into(), b.into(), 52));
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0x45; 19]), None);
        assert_eq!(parse(&[0x60; 39]), None);
        assert_eq!(parse(&[0x55; 60]), None);
    }

    fn verify_sum(bytes: &[u8], initial: u32) -> bool {
        checksum_fold(checksum_add(initial, bytes)) == 0
    }

    #[test]
    fn icmpv4_host_unreachable_is_well_formed() {
        let orig = v4_packet([10, 0, 0, 1], [10, 9, 9, 9], 17, &[7; 1000]);
        let icmp =
            destination_unreachable(&orig, Some(Ipv4Addr::new(10, 0, 0, 254)), None).unwrap();
        assert_eq!(icmp.len(), 576);
        let h = parse(&icmp).unwrap();
        assert_eq!(h.src, IpAddr::from([10, 0, 0, 254]));
        assert_eq!(h.dst, IpAddr::from([10, 0, 0, 1]));
        assert_eq!(h.claimed_len, 576);
        assert!(verify_sum(&icmp[..20], 0), "IP header checksum");
        assert!(verify_sum(&icmp[20..], 0), "ICMP checksum");
        assert_eq!(&icmp[20..22], &[3, 1]);
        assert_eq!(&icmp[28..48], &orig[..20]);
    }

    #[test]
    fn icmpv6_address_unreachable_is_well_formed() {
        let a: Ipv6Addr = "fd00::1".parse().unwrap();
        let b: Ipv6Addr = "fd00:9::9".parse().unwrap();
        let me: Ipv6Addr = "fd00::fe".parse().unwrap();
        let orig = v6_packet(a, b, 17, &[1; 2000]);
        let icmp = destination_unreachable(&orig, None, Some(me)).unwrap();
        assert_eq!(icmp.len(), 1280);
        let h = parse(&icmp).unwrap();
        assert_eq!((h.src, h.dst, h.claimed_len), (me.into(), a.into(), 1280));
        let mut pseudo = checksum_add(0, &icmp[8..40]);
        pseudo += (icmp.len() - 40) as u32 + 58;
        assert!(verify_sum(&icmp[40..], pseudo));
        assert_eq!(&icmp[40..42], &[1, 3]);
    }

    #[test]
    fn no_error_about_errors_multicast_fragments_or_without_a_source() {
        let me = Some(Ipv4Addr::new(10, 0, 0, 254));
        let err = v4_packet([10, 0, 0, 1], [10, 9, 9, 9], 1, &[3, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(destination_unreachable(&err, me, None), None);
        let echo = v4_packet([10, 0, 0, 1], [10, 9, 9, 9], 1, &[8, 0, 0, 0, 0, 0, 0, 0]);
        assert!(destination_unreachable(&echo, me, None).is_some());
        let mcast = v4_packet([10, 0, 0, 1], [224, 0, 0, 1], 17, &[0; 8]);
        assert_eq!(destination_unreachable(&mcast, me, None), None);
        let mut frag = v4_packet([10, 0, 0, 1], [10, 9, 9, 9], 17, &[0; 8]);
        frag[7] = 10;
        assert_eq!(destination_unreachable(&frag, me, None), None);
        assert_eq!(destination_unreachable(&echo, None, None), None);
        let a: Ipv6Addr = "fd00::1".parse().unwrap();
        let b: Ipv6Addr = "fd00:9::9".parse().unwrap();
        let e6 = v6_packet(a, b, 58, &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(destination_unreachable(&e6, None, Some(a)), None);
    }

    #[test]
    fn fragmentation_needed_carries_the_mtu_and_comes_from_the_destination() {
        let orig = v4_packet([10, 0, 0, 1], [10, 9, 9, 9], 17, &[7; 1400]);
        let icmp = too_big(&orig, 1220).unwrap();
        let h = parse(&icmp).unwrap();
        assert_eq!(h.src, IpAddr::from([10, 9, 9, 9]));
        assert_eq!(h.dst, IpAddr::from([10, 0, 0, 1]));
        assert!(verify_sum(&icmp[..20], 0), "IP header checksum");
        assert!(verify_sum(&icmp[20..], 0), "ICMP checksum");
        assert_eq!(&icmp[20..22], &[3, 4]);
        assert_eq!(&icmp[24..28], &[0, 0, 1220u16.to_be_bytes()[0], 1220u16.to_be_bytes()[1]]);
        assert_eq!(&icmp[28..48], &orig[..20]);
        let mut may_fragment = orig.clone();
        may_fragment[6] = 0;
        assert_eq!(too_big(&may_fragment, 1220), None, "no DF: fragmented, not refused");
        let err = v4_packet([10, 0, 0, 1], [10, 9, 9, 9], 1, &[3, 4, 0, 0, 0, 0, 0, 0]);
        assert_eq!(too_big(&err, 1220), None, "never about an ICMP error");
    }

    #[test]
    fn packet_too_big_carries_the_mtu() {
        let a: Ipv6Addr = "fd00::1".parse().unwrap();
        let b: Ipv6Addr = "fd00:9::9".parse().unwrap();
        let orig = v6_packet(a, b, 17, &[1; 1400]);
        let icmp = too_big(&orig, 1200).unwrap();
        assert_eq!(icmp.len(), 1280);
        let h = parse(&icmp).unwrap();
        assert_eq!((h.src, h.dst), (b.into(), a.into()));
        let mut pseudo = checksum_add(0, &icmp[8..40]);
        pseudo += (icmp.len() - 40) as u32 + 58;
        assert!(verify_sum(&icmp[40..], pseudo));
        assert_eq!(&icmp[40..42], &[2, 0]);
        assert_eq!(&icmp[44..48], &1200u32.to_be_bytes());
    }
}
