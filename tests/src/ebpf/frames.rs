//! Frames built and taken apart in plain Rust, independently of the programs: Ethernet,
//! IPv4/IPv6, UDP with checksums, WireGuard transport data sealed with `chacha20poly1305`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chacha20poly1305::{ChaCha20Poly1305, KeyInit, aead::AeadInPlace};

pub const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// RFC 1071 checksum of `data` plus an initial sum.
pub fn checksum(initial: u32, data: &[u8]) -> u16 {
    let mut sum = initial as u64;
    for pair in data.chunks(2) {
        let word = if pair.len() == 2 {
            u16::from_be_bytes([pair[0], pair[1]])
        } else {
            (pair[0] as u16) << 8
        };
        sum += word as u64;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub fn pseudo_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    let mut bytes = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            bytes.extend_from_slice(&s.octets());
            bytes.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            bytes.extend_from_slice(&s.octets());
            bytes.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed families"),
    }
    let mut sum = 0u32;
    for pair in bytes.chunks(2) {
        sum += u16::from_be_bytes([pair[0], pair[1]]) as u32;
    }
    sum + proto as u32 + len as u32
}

/// An IPv4 or IPv6 packet with `payload` after the header (checksum computed for IPv4).
pub fn ip_packet(src: IpAddr, dst: IpAddr, proto: u8, ttl: u8, tos: u8, payload: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = 20 + payload.len();
            let mut h = vec![0x45, tos];
            h.extend_from_slice(&(total as u16).to_be_bytes());
            h.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, ttl, proto, 0, 0]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let c = checksum(0, &h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            h.extend_from_slice(payload);
            h
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let vtf = (6u32 << 28) | (tos as u32) << 20;
            let mut h = vtf.to_be_bytes().to_vec();
            h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            h.extend_from_slice(&[proto, ttl]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            h.extend_from_slice(payload);
            h
        }
        _ => panic!("mixed families"),
    }
}

/// A UDP datagram (header + payload) with its checksum.
pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut d = sport.to_be_bytes().to_vec();
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&(len as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    let mut c = checksum(pseudo_sum(src, dst, 17, len), &d);
    if c == 0 {
        c = 0xffff;
    }
    d[6..8].copy_from_slice(&c.to_be_bytes());
    d
}

/// An ICMP (v4) echo request/reply, or ICMPv6 for IPv6, as a full IP packet.
pub fn ping(src: IpAddr, dst: IpAddr, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let v6 = src.is_ipv6();
    let mut m = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    let c = if v6 { checksum(pseudo_sum(src, dst, 58, m.len()), &m) } else { checksum(0, &m) };
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ip_packet(src, dst, if v6 { 58 } else { 1 }, 64, 0, &m)
}

pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

/// A WireGuard transport-data message: header, `plaintext` sealed, tag.
pub fn wg_data(key: &[u8; 32], receiver: u32, counter: u64, plaintext: &[u8]) -> Vec<u8> {
    let mut m = 4u32.to_le_bytes().to_vec();
    m.extend_from_slice(&receiver.to_le_bytes());
    m.extend_from_slice(&counter.to_le_bytes());
    let mut body = plaintext.to_vec();
    let tag = ChaCha20Poly1305::new(key.into())
        .encrypt_in_place_detached(&nonce(counter).into(), b"", &mut body)
        .unwrap();
    m.extend_from_slice(&body);
    m.extend_from_slice(&tag);
    m
}

/// Opens a transport-data message; Err names what is wrong.
pub fn open_wg_data(key: &[u8; 32], message: &[u8]) -> Result<(u32, u64, Vec<u8>), String> {
    if message.len() < 32 {
        return Err(format!("message of {} bytes", message.len()));
    }
    let ty = u32::from_le_bytes(message[0..4].try_into().unwrap());
    if ty != 4 {
        return Err(format!("message type {ty}"));
    }
    let receiver = u32::from_le_bytes(message[4..8].try_into().unwrap());
    let counter = u64::from_le_bytes(message[8..16].try_into().unwrap());
    let (body, tag) = message[16..].split_at(message.len() - 32);
    let mut plain = body.to_vec();
    ChaCha20Poly1305::new(key.into())
        .decrypt_in_place_detached(&nonce(counter).into(), b"", &mut plain, tag.into())
        .map_err(|_| "the tag does not verify".to_string())?;
    Ok((receiver, counter, plain))
}

/// `plaintext` padded as WireGuard pads: to a multiple of 16, not past `mtu`.
pub fn padded(plaintext: &[u8], mtu: usize) -> Vec<u8> {
    let len = plaintext.len();
    let last = if len > mtu { len % mtu } else { len };
    let padded_last = last.div_ceil(16) * 16;
    let padded_last = padded_last.min(mtu);
    let mut p = plaintext.to_vec();
    p.resize(len + padded_last - last, 0);
    p
}

/// A whole frame from a peer at `src`:`sport` to the gateway at `dst`:`dport`.
pub fn outer_frame(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, message: &[u8]) -> Vec<u8> {
    outer_frame_between(GATEWAY_MAC, PEER_MAC, src, dst, sport, dport, message)
}

/// `outer_frame` with the given MAC addresses.
pub fn outer_frame_between(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    message: &[u8],
) -> Vec<u8> {
    let datagram = udp(src, dst, sport, dport, message);
    let ip = ip_packet(src, dst, 17, 64, 0, &datagram);
    let ethertype = if src.is_ipv4() { 0x0800 } else { 0x86dd };
    ethernet(dst_mac, src_mac, ethertype, &ip)
}

/// An outer frame taken apart and checked: every length and checksum must be right.
#[derive(Debug)]
pub struct ParsedOuter {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub dsfield: u8,
    pub sport: u16,
    pub dport: u16,
    pub message: Vec<u8>,
}

pub fn parse_outer(frame: &[u8]) -> Result<ParsedOuter, String> {
    if frame.len() < 14 {
        return Err("shorter than Ethernet".into());
    }
    let dst_mac = frame[0..6].try_into().unwrap();
    let src_mac = frame[6..12].try_into().unwrap();
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let ip = &frame[14..];
    let (src, dst, ttl, dsfield, l4) = match ethertype {
        0x0800 => {
            if ip.len() < 20 || ip[0] != 0x45 {
                return Err(format!("not a plain IPv4 header: {:02x?}", &ip[..ip.len().min(20)]));
            }
            let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            if total != ip.len() {
                return Err(format!("IPv4 total length {total}, frame has {}", ip.len()));
            }
            if checksum(0, &ip[..20]) != 0 {
                return Err("IPv4 header checksum wrong".into());
            }
            if ip[9] != 17 {
                return Err(format!("IPv4 protocol {}", ip[9]));
            }
            let s = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let d = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            (IpAddr::V4(s), IpAddr::V4(d), ip[8], ip[1], &ip[20..])
        }
        0x86dd => {
            if ip.len() < 40 || ip[0] >> 4 != 6 {
                return Err("not an IPv6 header".into());
            }
            let payload = u16::from_be_bytes([ip[4], ip[5]]) as usize;
            if payload + 40 != ip.len() {
                return Err(format!("IPv6 payload length {payload}, frame has {}", ip.len() - 40));
            }
            if ip[6] != 17 {
                return Err(format!("IPv6 next header {}", ip[6]));
            }
            let s = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap());
            let d = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
            let ds = (ip[0] << 4) | (ip[1] >> 4);
            (IpAddr::V6(s), IpAddr::V6(d), ip[7], ds, &ip[40..])
        }
        other => return Err(format!("ethertype {other:#06x}")),
    };
    if l4.len() < 8 {
        return Err("no UDP header".into());
    }
    let udp_len = u16::from_be_bytes([l4[4], l4[5]]) as usize;
    if udp_len != l4.len() {
        return Err(format!("UDP length {udp_len}, datagram has {}", l4.len()));
    }
    let udp_check = u16::from_be_bytes([l4[6], l4[7]]);
    if udp_check == 0 {
        return Err("UDP checksum missing".into());
    }
    if checksum(pseudo_sum(src, dst, 17, l4.len()), l4) != 0 {
        return Err("UDP checksum wrong".into());
    }
    Ok(ParsedOuter {
        dst_mac,
        src_mac,
        src,
        dst,
        ttl,
        dsfield,
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
        message: l4[8..].to_vec(),
    })
}
