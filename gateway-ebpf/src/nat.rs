//! Address and port translation on a packet's first bytes (`head`: 16 words as loaded from
//! the packet), keeping the IPv4 header checksum and the TCP/UDP checksum valid by
//! incremental updates (RFC 1624, in the little-endian domain of `csum`); and the clamp of a
//! SYN's MSS to what fits the tunnel. The caller stores `head` back.

use crate::csum;
use crate::packet::L3;
use crate::parse::{IPPROTO_TCP, IPPROTO_UDP, Inner};
use crate::words::byte;

/// Which end of a packet a translation replaces.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    Source,
    Destination,
}

/// Where a TCP or UDP packet's headers are in `head`.
#[derive(Clone, Copy)]
pub struct Transport {
    pub family: L3,
    pub proto: u8,
    /// Word index of the transport header (its ports) in `head`.
    pub l4: usize,
    /// The IP packet's length.
    pub len: u32,
}

impl Transport {
    /// A TCP or UDP packet whose transport header, up to its checksum, is in `head`: not a
    /// fragment, no IPv4 options or IPv6 extension headers.
    #[inline(always)]
    pub fn of(head: &[u32; 16], inner: &Inner) -> Option<Transport> {
        if inner.fragment {
            return None;
        }
        let l4 = match inner.family {
            L3::V4 if byte(head, 0) & 0x0f == 5 => 5,
            L3::V4 => return None,
            L3::V6 => 10,
        };
        let header = match inner.proto {
            IPPROTO_TCP => 20,
            IPPROTO_UDP => 8,
            _ => return None,
        };
        if inner.len < 4 * l4 as u32 + header {
            return None;
        }
        Some(Transport { family: inner.family, proto: inner.proto, l4, len: inner.len })
    }

    /// The ports word (source port in the low half, destination in the high half).
    #[inline(always)]
    pub fn ports(&self, head: &[u32; 16]) -> u32 {
        head[self.l4 & 15]
    }
}

/// What replacing the 32-bit word `old` with `new` adds to a ones' complement sum.
#[inline(always)]
pub fn delta(old: u32, new: u32) -> u64 {
    (!old) as u64 + new as u64
}

/// A checksum field after the words it covers changed by `diff` (a sum of `delta`s).
#[inline(always)]
pub fn apply(check: u16, diff: u64) -> u16 {
    !csum::fold((!check) as u64 + diff)
}

/// The words of one end's address in `head`: (first, count).
#[inline(always)]
fn address_words(family: L3, end: End) -> (usize, usize) {
    match (family, end) {
        (L3::V4, End::Source) => (3, 1),
        (L3::V4, End::Destination) => (4, 1),
        (L3::V6, End::Source) => (2, 4),
        (L3::V6, End::Destination) => (6, 4),
    }
}

/// Replaces one end's address with `addr` and its port with `port` (memory order), and
/// updates both checksums.
#[inline(always)]
pub fn translate(head: &mut [u32; 16], t: &Transport, end: End, addr: &[u32; 4], port: u16) {
    let (first, count) = address_words(t.family, end);
    let mut pseudo = 0u64;
    let mut i = 0;
    while i < count {
        let j = (first + i) & 15;
        pseudo += delta(head[j], addr[i & 3]);
        head[j] = addr[i & 3];
        i += 1;
    }
    let w = t.l4 & 15;
    let old = head[w];
    head[w] = match end {
        End::Source => (old & 0xffff_0000) | port as u32,
        End::Destination => (old & 0xffff) | (port as u32) << 16,
    };
    if t.family == L3::V4 {
        // Word 2: [ttl, protocol, checksum].
        let check = apply((head[2] >> 16) as u16, pseudo);
        head[2] = (head[2] & 0xffff) | (check as u32) << 16;
    }
    update_transport_checksum(head, t, pseudo + delta(old, head[w]));
}

/// Applies `diff` to the TCP or UDP checksum. An IPv4 UDP checksum of zero means none and
/// stays zero; a computed zero is sent as 0xffff (RFC 768).
#[inline(always)]
pub fn update_transport_checksum(head: &mut [u32; 16], t: &Transport, diff: u64) {
    if t.proto == IPPROTO_TCP {
        // Bytes 16..18 of the TCP header: the low half of its fifth word.
        let w = (t.l4 + 4) & 15;
        let check = apply(head[w] as u16, diff);
        head[w] = (head[w] & 0xffff_0000) | check as u32;
    } else {
        // Bytes 6..8 of the UDP header: the high half of its second word.
        let w = (t.l4 + 1) & 15;
        let old = (head[w] >> 16) as u16;
        if old == 0 && t.family == L3::V4 {
            return;
        }
        let mut check = apply(old, diff);
        if check == 0 {
            check = 0xffff;
        }
        head[w] = (head[w] & 0xffff) | (check as u32) << 16;
    }
}

/// TCP flags: SYN.
const TCP_SYN: u32 = 0x02;
/// TCP option kind and length of the maximum segment size.
const TCPOPT_MSS: u32 = 2;
const TCPOLEN_MSS: u32 = 4;

/// The largest TCP segment a packet of `mtu` bytes carries (headers without options).
#[inline(always)]
pub fn mss_for(family: L3, mtu: u32) -> u16 {
    let headers = match family {
        L3::V4 => 40,
        L3::V6 => 60,
    };
    mtu.saturating_sub(headers) as u16
}

/// Lowers the MSS a SYN (or SYN-ACK) announces to `mss`, what makes the other end's
/// segments fit the tunnel (as `iptables -j TCPMSS --clamp-mss-to-pmtu` does for routers in
/// front of one). Only an MSS that is the first option is seen: every common stack puts it
/// there. Returns whether the packet changed.
#[inline(always)]
pub fn clamp_mss(head: &mut [u32; 16], t: &Transport, mss: u16) -> bool {
    if t.proto != IPPROTO_TCP || mss == 0 || t.len < 4 * t.l4 as u32 + 24 {
        return false;
    }
    // Word 3: [data offset, flags, window]; word 5: the first option.
    let control = head[(t.l4 + 3) & 15];
    if (control >> 8) & TCP_SYN == 0 || (control & 0xff) >> 4 < 6 {
        return false;
    }
    let w = (t.l4 + 5) & 15;
    let option = head[w];
    if option & 0xff != TCPOPT_MSS || (option >> 8) & 0xff != TCPOLEN_MSS {
        return false;
    }
    let announced = ((option >> 16) as u16).swap_bytes();
    if announced <= mss {
        return false;
    }
    head[w] = (option & 0xffff) | (mss.swap_bytes() as u32) << 16;
    update_transport_checksum(head, t, delta(option, head[w]));
    true
}
