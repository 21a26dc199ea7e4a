//! TCP, UDP and ICMP packets for the entry point's tests, built in plain Rust with their
//! checksums (independently of the programs), and taken apart with every length and
//! checksum checked.

use std::net::IpAddr;

use super::frames::{checksum, ip_packet, pseudo_sum, udp};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// TCP flags.
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;

/// The MSS option (kind 2, length 4).
pub fn mss_option(mss: u16) -> Vec<u8> {
    let mut o = vec![2, 4];
    o.extend_from_slice(&mss.to_be_bytes());
    o
}

/// A TCP segment (header, `options` padded to whole words, payload) with its checksum.
pub fn tcp(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    flags: u8,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut options = options.to_vec();
    options.resize(options.len().div_ceil(4) * 4, 1); // NOP padding
    let header = 20 + options.len();
    let mut s = sport.to_be_bytes().to_vec();
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&0x1000_0001u32.to_be_bytes()); // sequence
    s.extend_from_slice(&(if flags & ACK != 0 { 0x2000_0001u32 } else { 0 }).to_be_bytes());
    s.push(((header / 4) as u8) << 4);
    s.push(flags);
    s.extend_from_slice(&64240u16.to_be_bytes()); // window
    s.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    s.extend_from_slice(&options);
    s.extend_from_slice(payload);
    let c = checksum(pseudo_sum(src, dst, IPPROTO_TCP, s.len()), &s);
    s[16..18].copy_from_slice(&c.to_be_bytes());
    s
}

/// A whole TCP packet (IPv4 or IPv6 by the addresses).
#[allow(clippy::too_many_arguments)]
pub fn tcp_packet(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    flags: u8,
    options: &[u8],
    payload: &[u8],
    ttl: u8,
) -> Vec<u8> {
    let segment = tcp(src, dst, sport, dport, flags, options, payload);
    ip_packet(src, dst, IPPROTO_TCP, ttl, 0, &segment)
}

/// A whole UDP packet (checksum computed; see `without_udp_checksum`).
pub fn udp_packet(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    payload: &[u8],
    ttl: u8,
) -> Vec<u8> {
    ip_packet(src, dst, IPPROTO_UDP, ttl, 0, &udp(src, dst, sport, dport, payload))
}

/// An IPv4 UDP packet with its checksum field zero (no checksum, RFC 768).
pub fn without_udp_checksum(mut packet: Vec<u8>) -> Vec<u8> {
    assert_eq!(packet[0], 0x45, "an IPv4 packet without options");
    packet[26..28].copy_from_slice(&[0, 0]);
    packet
}

/// An ICMP error (IPv4: destination unreachable, code `code`; IPv6: destination unreachable
/// too) from `src` to `dst` carrying `embedded` (the packet it is about, possibly cut).
pub fn icmp_unreachable(src: IpAddr, dst: IpAddr, code: u8, embedded: &[u8], ttl: u8) -> Vec<u8> {
    let v6 = src.is_ipv6();
    let mut m = vec![if v6 { 1 } else { 3 }, code, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(embedded);
    let c = if v6 {
        checksum(pseudo_sum(src, dst, IPPROTO_ICMPV6, m.len()), &m)
    } else {
        checksum(0, &m)
    };
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ip_packet(src, dst, if v6 { IPPROTO_ICMPV6 } else { IPPROTO_ICMP }, ttl, 0, &m)
}

/// An IP packet taken apart: every length and checksum verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub ttl: u8,
    /// TCP/UDP ports (0 for other protocols).
    pub sport: u16,
    pub dport: u16,
    /// The transport header and payload.
    pub l4: Vec<u8>,
}

impl Packet {
    /// The payload after the TCP or UDP header.
    pub fn payload(&self) -> &[u8] {
        match self.proto {
            IPPROTO_TCP => &self.l4[((self.l4[12] >> 4) as usize * 4).min(self.l4.len())..],
            IPPROTO_UDP => &self.l4[8..],
            _ => &self.l4,
        }
    }

    /// The MSS option of a TCP segment, if it is the first option.
    pub fn mss(&self) -> Option<u16> {
        (self.proto == IPPROTO_TCP && self.l4[12] >> 4 >= 6 && self.l4[20] == 2)
            .then(|| u16::from_be_bytes([self.l4[22], self.l4[23]]))
    }

    pub fn udp_checksum(&self) -> u16 {
        u16::from_be_bytes([self.l4[6], self.l4[7]])
    }
}

/// Parses an IP packet (exactly its own length: no padding) and checks the IPv4 header
/// checksum, the TCP/UDP checksum (an IPv4 UDP checksum of zero means none) or the ICMP one.
pub fn parse(packet: &[u8]) -> Result<Packet, String> {
    let (src, dst, proto, ttl, l4): (IpAddr, IpAddr, u8, u8, &[u8]) = match packet.first() {
        Some(b) if b >> 4 == 4 => {
            if packet.len() < 20 || packet[0] != 0x45 {
                return Err(format!(
                    "not a plain IPv4 header: {:02x?}",
                    &packet[..20.min(packet.len())]
                ));
            }
            let total = u16::from_be_bytes([packet[2], packet[3]]) as usize;
            if total != packet.len() {
                return Err(format!("IPv4 total length {total}, packet has {}", packet.len()));
            }
            if checksum(0, &packet[..20]) != 0 {
                return Err("IPv4 header checksum wrong".into());
            }
            let s: [u8; 4] = packet[12..16].try_into().unwrap();
            let d: [u8; 4] = packet[16..20].try_into().unwrap();
            (s.into(), d.into(), packet[9], packet[8], &packet[20..])
        }
        Some(b) if b >> 4 == 6 => {
            if packet.len() < 40 {
                return Err("shorter than an IPv6 header".into());
            }
            let payload = u16::from_be_bytes([packet[4], packet[5]]) as usize;
            if payload + 40 != packet.len() {
                return Err(format!(
                    "IPv6 payload length {payload}, packet has {}",
                    packet.len() - 40
                ));
            }
            let s: [u8; 16] = packet[8..24].try_into().unwrap();
            let d: [u8; 16] = packet[24..40].try_into().unwrap();
            (s.into(), d.into(), packet[6], packet[7], &packet[40..])
        }
        _ => return Err("not IP".into()),
    };
    let pseudo = |p| pseudo_sum(src, dst, p, l4.len());
    let (sport, dport) = match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            if l4.len() < if proto == IPPROTO_TCP { 20 } else { 8 } {
                return Err("transport header cut".into());
            }
            let unchecked = proto == IPPROTO_UDP && src.is_ipv4() && l4[6..8] == [0, 0];
            if proto == IPPROTO_UDP && u16::from_be_bytes([l4[4], l4[5]]) as usize != l4.len() {
                return Err("UDP length wrong".into());
            }
            if !unchecked && checksum(pseudo(proto), l4) != 0 {
                return Err(format!(
                    "{} checksum wrong",
                    if proto == IPPROTO_TCP { "TCP" } else { "UDP" }
                ));
            }
            (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]))
        }
        IPPROTO_ICMP => {
            if checksum(0, l4) != 0 {
                return Err("ICMP checksum wrong".into());
            }
            (0, 0)
        }
        IPPROTO_ICMPV6 => {
            if checksum(pseudo(IPPROTO_ICMPV6), l4) != 0 {
                return Err("ICMPv6 checksum wrong".into());
            }
            (0, 0)
        }
        _ => (0, 0),
    };
    Ok(Packet { src, dst, proto, ttl, sport, dport, l4: l4.to_vec() })
}

/// The IP packet at the start of a decrypted plaintext (the rest must be zero padding).
pub fn inner_packet(plain: &[u8]) -> Result<&[u8], String> {
    let len = match plain.first().map(|b| b >> 4) {
        Some(4) if plain.len() >= 20 => u16::from_be_bytes([plain[2], plain[3]]) as usize,
        Some(6) if plain.len() >= 40 => u16::from_be_bytes([plain[4], plain[5]]) as usize + 40,
        _ => return Err("not IP".into()),
    };
    if len > plain.len() || plain[len..].iter().any(|&b| b != 0) {
        return Err(format!("IP length {len} in {} bytes of plaintext", plain.len()));
    }
    Ok(&plain[..len])
}

/// `packet` with its TTL / hop limit one lower, as a router forwards it (IPv4 header
/// checksum recomputed).
pub fn forwarded(packet: &[u8]) -> Vec<u8> {
    let mut p = packet.to_vec();
    if p[0] >> 4 == 4 {
        p[8] -= 1;
        p[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(0, &p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        p[7] -= 1;
    }
    p
}
