//! Reading headers: the outer Ethernet/IP/UDP/WireGuard headers of a received frame, and
//! the inner IP header of a plaintext (from the 64 bytes `Crypt::head` holds).

use core::ffi::c_void;

use gateway_common::{
    maps::Stat,
    wire::{
        DATA_MIN_LEN, ETH_HEADER_LEN, IPV4_HEADER_LEN, IPV6_HEADER_LEN, MESSAGE_DATA,
        MESSAGE_HANDSHAKE_COOKIE, MESSAGE_HANDSHAKE_INITIATION, UDP_HEADER_LEN,
    },
};

use crate::packet::{L3, Packet};
use crate::scratch::{HDR_ETH, HDR_IP, HDR_WORDS, Scratch};
use crate::words::{be16, byte};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Where the parts of a received transport-data frame are.
#[derive(Clone, Copy)]
pub struct Outer {
    pub family: L3,
    /// Offset of the UDP header.
    pub l4_off: u32,
    /// The WireGuard message length (UDP payload).
    pub msg_len: u32,
}

impl Outer {
    /// Offset of the first ciphertext byte.
    #[inline(always)]
    pub fn payload_off(&self) -> u32 {
        self.l4_off + (UDP_HEADER_LEN + 16) as u32
    }

    #[inline(always)]
    pub fn plaintext_len(&self) -> u32 {
        self.msg_len - DATA_MIN_LEN as u32
    }
}

pub enum Parsed {
    Data(Outer),
    Pass(Stat),
    Drop(Stat),
}

/// Whether an IPv6 next-header value names an extension header (which the programs do not
/// walk) rather than an upper-layer protocol.
#[inline(always)]
fn ipv6_extension(next: u8) -> bool {
    matches!(next, 0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140)
}

/// Classifies a frame from the underlay. On `Data`, `s.rx` holds the Ethernet and IP headers
/// and `s.l4` the UDP and WireGuard headers (receiver index in word 3, counter in 4..6).
#[inline(always)]
pub unsafe fn outer<P: Packet>(ctx: *mut c_void, s: &mut Scratch, listen_port: u16) -> Parsed {
    let len = unsafe { P::len(ctx) };
    let eth_ip4 = (ETH_HEADER_LEN + IPV4_HEADER_LEN) as u32;
    if len < eth_ip4 + UDP_HEADER_LEN as u32 {
        return Parsed::Pass(Stat::RxPassOther);
    }
    let rx = s.rx.as_mut_ptr() as *mut u8;
    // SAFETY: rx is HDR_WORDS * 4 = 96 bytes; HDR_ETH + 34 and HDR_IP + 20 + 20 fit.
    if !unsafe { P::load(ctx, 0, rx.add(HDR_ETH), eth_ip4) } {
        return Parsed::Pass(Stat::RxPassOther);
    }
    let (family, l4_off, ip_end) = match be16(&s.rx, HDR_ETH + 12) {
        ETH_P_IP => {
            let ver_ihl = byte(&s.rx, HDR_IP);
            let header_len = ((ver_ihl & 0x0f) as u32) * 4;
            if ver_ihl >> 4 != 4 || header_len < IPV4_HEADER_LEN as u32 {
                return Parsed::Pass(Stat::RxPassOther);
            }
            if byte(&s.rx, HDR_IP + 9) != IPPROTO_UDP {
                return Parsed::Pass(Stat::RxPassOther);
            }
            // More-fragments flag or a fragment offset: the stack reassembles.
            if be16(&s.rx, HDR_IP + 6) & 0x3fff != 0 {
                return Parsed::Pass(Stat::RxPassFragment);
            }
            let total = be16(&s.rx, HDR_IP + 2) as u32;
            (L3::V4, ETH_HEADER_LEN as u32 + header_len, ETH_HEADER_LEN as u32 + total)
        }
        ETH_P_IPV6 => {
            let eth_ip6 = (ETH_HEADER_LEN + IPV6_HEADER_LEN) as u32;
            if len < eth_ip6 + UDP_HEADER_LEN as u32
                || !unsafe {
                    P::load(ctx, eth_ip4, rx.add(HDR_ETH + eth_ip4 as usize), eth_ip6 - eth_ip4)
                }
            {
                return Parsed::Pass(Stat::RxPassOther);
            }
            if byte(&s.rx, HDR_IP) >> 4 != 6 {
                return Parsed::Pass(Stat::RxPassOther);
            }
            let next = byte(&s.rx, HDR_IP + 6);
            if next != IPPROTO_UDP {
                return Parsed::Pass(if ipv6_extension(next) {
                    Stat::RxPassFragment
                } else {
                    Stat::RxPassOther
                });
            }
            let payload = be16(&s.rx, HDR_IP + 4) as u32;
            (L3::V6, eth_ip6, eth_ip6 + payload)
        }
        _ => return Parsed::Pass(Stat::RxPassOther),
    };
    if ip_end > len || l4_off + (UDP_HEADER_LEN as u32) > ip_end {
        return Parsed::Pass(Stat::RxPassOther);
    }
    let l4 = s.l4.as_mut_ptr() as *mut u8;
    // SAFETY: l4 is 24 bytes.
    if !unsafe { P::load(ctx, l4_off, l4, UDP_HEADER_LEN as u32) } {
        return Parsed::Pass(Stat::RxPassOther);
    }
    if be16(&s.l4, 2) != u16::from_be(listen_port) {
        return Parsed::Pass(Stat::RxPassOther);
    }
    let udp_len = be16(&s.l4, 4) as u32;
    if udp_len < UDP_HEADER_LEN as u32 + 4 || l4_off + udp_len > ip_end {
        return Parsed::Pass(Stat::RxPassOther);
    }
    let msg_len = udp_len - UDP_HEADER_LEN as u32;
    let header_len = if msg_len >= 16 { 16 } else { 4 };
    // SAFETY: bytes 8..24 of the 24-byte l4 buffer.
    if !unsafe { P::load(ctx, l4_off + UDP_HEADER_LEN as u32, l4.add(8), header_len) } {
        return Parsed::Pass(Stat::RxPassOther);
    }
    match s.l4[2] {
        MESSAGE_DATA => {}
        MESSAGE_HANDSHAKE_INITIATION..=MESSAGE_HANDSHAKE_COOKIE => {
            return Parsed::Pass(Stat::RxPassHandshake);
        }
        _ => return Parsed::Pass(Stat::RxPassOther),
    }
    if msg_len < DATA_MIN_LEN as u32 {
        return Parsed::Drop(Stat::RxDropTruncated);
    }
    Parsed::Data(Outer { family, l4_off, msg_len })
}

/// The inner packet's IP header facts the programs need.
#[derive(Clone, Copy)]
pub struct Inner {
    pub family: L3,
    /// Total length from the IP header (the packet without padding).
    pub len: u32,
    /// Transport protocol (IPv6: the next header).
    pub proto: u8,
    /// Not a first-and-only fragment (IPv4), or IPv6 with extension headers: the transport
    /// header is not where a checksum could be verified.
    pub fragment: bool,
}

/// Validates an inner packet as the kernel's WireGuard receive path does (version, header
/// present, length field within the plaintext), from its first bytes in `head`.
#[inline(always)]
pub fn inner(head: &[u32; 16], available: u32) -> Option<Inner> {
    match byte(head, 0) >> 4 {
        4 => {
            if available < IPV4_HEADER_LEN as u32 {
                return None;
            }
            let len = be16(head, 2) as u32;
            if len < IPV4_HEADER_LEN as u32 || len > available {
                return None;
            }
            Some(Inner {
                family: L3::V4,
                len,
                proto: byte(head, 9),
                fragment: be16(head, 6) & 0x3fff != 0,
            })
        }
        6 => {
            if available < IPV6_HEADER_LEN as u32 {
                return None;
            }
            let len = be16(head, 4) as u32 + IPV6_HEADER_LEN as u32;
            if len > available {
                return None;
            }
            let next = byte(head, 6);
            Some(Inner { family: L3::V6, len, proto: next, fragment: ipv6_extension(next) })
        }
        _ => None,
    }
}

/// The inner source and destination addresses as words in memory order (network order
/// bytes); IPv4 in word 0.
#[inline(always)]
pub fn inner_addrs(head: &[u32; 16], family: L3) -> ([u32; 4], [u32; 4]) {
    match family {
        L3::V4 => ([head[3], 0, 0, 0], [head[4], 0, 0, 0]),
        L3::V6 => ([head[2], head[3], head[4], head[5]], [head[6], head[7], head[8], head[9]]),
    }
}

/// The DS field (TOS / traffic class) of an inner header.
#[inline(always)]
pub fn inner_dsfield(head: &[u32; 16], family: L3) -> u8 {
    match family {
        L3::V4 => byte(head, 1),
        L3::V6 => (byte(head, 0) << 4) | (byte(head, 1) >> 4),
    }
}

/// The outer DS field of a received frame.
#[inline(always)]
pub fn outer_dsfield(rx: &[u32; HDR_WORDS], family: L3) -> u8 {
    match family {
        L3::V4 => byte(rx, HDR_IP + 1),
        L3::V6 => (byte(rx, HDR_IP) << 4) | (byte(rx, HDR_IP + 1) >> 4),
    }
}
