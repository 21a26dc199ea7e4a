//! On the entry point, decrypted packets of translated flows, before they are delivered:
//! replies of forwarded flows get the public address and port back as their source
//! (`ENTRY_FLOWS`, and a SYN-ACK's MSS clamped so the client's segments fit the tunnel),
//! replies of proxied connections get the proxy's tunnel address and port as their
//! destination (`PROXY_FLOWS`), and ICMP errors about a forwarded flow's packets are
//! translated as the flow is (the outer source and the embedded packet's destination).

use core::{ffi::c_void, ptr::read_volatile};

use gateway_common::maps::{NAT_DESTINATION, NAT_SOURCE};

use crate::flow::{self, nat_address, stale};
use crate::maps::{Towards, config, count_entry_traffic, entry_flow, proxy_flow};
use crate::nat::{self, End, Transport, apply, delta};
use crate::packet::{L3, Packet};
use crate::parse::{self, IPPROTO_TCP, IPPROTO_UDP, Inner};
use crate::scratch::Scratch;
use crate::words::{at_most, be16, byte, copy};

/// What `reply` did to a decrypted packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    /// Not a translated flow's: delivered as any packet.
    None,
    /// A forwarded flow's reply (or an ICMP error about it), now from the public address: it
    /// leaves through the public interface.
    Forwarded,
    /// A proxied connection's reply, now to the proxy's socket: delivered locally.
    Proxied,
}

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// Translates the decrypted `len`-byte packet at `payload` (its first 64 bytes in
/// `s.crypt.head`) if its flow is a forwarded or proxied one. Err(()) when storing the result
/// failed (the packet is then unusable).
///
/// A subprogram of its own (`inline(never)`): its locals get their own stack frame instead
/// of growing the receive program's, which the bpf_loop callbacks it calls stack on top of
/// (512 bytes for the whole chain). It takes plain scalars for the same reason: a struct
/// passed by reference would have to live in that frame.
#[inline(never)]
pub unsafe fn reply<P: Packet>(
    ctx: *mut c_void,
    s: &mut Scratch,
    len: u32,
    payload: u32,
    now: u64,
) -> Result<Translation, ()> {
    let (Some(cfg), Some(inner)) = (config(), parse::inner(&s.crypt.head, len)) else {
        return Ok(Translation::None);
    };
    let inner = &inner;
    let Some(t) = Transport::of(&s.crypt.head, inner) else {
        return unsafe { icmp_error::<P>(ctx, s, inner, payload, now) };
    };
    let head = &s.crypt.head;
    let (src, dst) = parse::inner_addrs(head, t.family);
    flow::set_key(&mut s.flow.key, t.family, t.proto, t.ports(head), &src, &dst);
    let mut translation = Translation::None;
    if let Some(nat) = entry_flow(&s.flow.key) {
        // SAFETY: a live map value; concurrent writers store the same kind of values.
        let (rewrite, port, last_seen, forward) = unsafe {
            (read_volatile(&(*nat).rewrite), (*nat).port, (*nat).last_seen_ns, (*nat).forward)
        };
        if rewrite == NAT_SOURCE && !flow::expired(last_seen, now, t.proto) {
            if forward != 0 {
                count_entry_traffic(forward - 1, Towards::Client, len);
            }
            if stale(last_seen, now) {
                // Replies keep the flow alive too, as conntrack's timeouts count both ways.
                // SAFETY: as above.
                unsafe { (*nat).last_seen_ns = now };
            }
            let public = nat_address(nat);
            let head = &mut s.crypt.head;
            nat::translate(head, &t, End::Source, &public, port);
            if cfg.tun_mtu != 0 {
                nat::clamp_mss(head, &t, nat::mss_for(t.family, cfg.tun_mtu));
            }
            translation = Translation::Forwarded;
        }
    }
    if translation == Translation::None
        && let Some(nat) = proxy_flow(&s.flow.key)
    {
        // SAFETY: a live map value the daemon writes whole.
        let (rewrite, port) = unsafe { (read_volatile(&(*nat).rewrite), (*nat).port) };
        if rewrite == NAT_DESTINATION {
            let proxy = nat_address(nat);
            nat::translate(&mut s.crypt.head, &t, End::Destination, &proxy, port);
            translation = Translation::Proxied;
        }
    }
    if translation == Translation::None {
        return Ok(translation);
    }
    let n = at_most::<64>(inner.len);
    // SAFETY: head is 64 bytes, n ≤ 64.
    if unsafe { P::store(ctx, payload, s.crypt.head.as_ptr() as *const u8, n) } {
        Ok(translation)
    } else {
        Err(())
    }
}

/// Bytes of an ICMP error `icmp_error` reads: IPv4 (20) + ICMP (8) + the embedded IPv4
/// header (20) and transport header (8), or the same with IPv6 headers (40 each).
const ICMP4_NEEDED: u32 = 56;
const ICMP6_NEEDED: u32 = 96;
/// What it loads of one: enough for an embedded TCP checksum too.
const ICMP_LOADED: u32 = 128;

/// An ICMP error (destination unreachable, time exceeded, parameter problem; ICMPv6 also
/// packet too big) about a forwarded flow's packet, on its way back to the client: the
/// embedded packet (client → backend) gets the public address and port as its destination,
/// the outer packet the public address as its source, as a NAT does for "related" ICMP, with
/// every checksum kept valid (outer IPv4, embedded IPv4, embedded TCP/UDP when present, ICMP).
#[inline(always)]
unsafe fn icmp_error<P: Packet>(
    ctx: *mut c_void,
    s: &mut Scratch,
    inner: &Inner,
    payload: u32,
    now: u64,
) -> Result<Translation, ()> {
    if inner.fragment {
        return Ok(Translation::None);
    }
    let (needed, is_error) = match inner.family {
        L3::V4 => (
            ICMP4_NEEDED,
            inner.proto == IPPROTO_ICMP
                && byte(&s.crypt.head, 0) == 0x45
                && matches!(byte(&s.crypt.head, 20), 3 | 11 | 12),
        ),
        L3::V6 => (
            ICMP6_NEEDED,
            inner.proto == IPPROTO_ICMPV6 && matches!(byte(&s.crypt.head, 40), 1..=4),
        ),
    };
    if !is_error || inner.len < needed {
        return Ok(Translation::None);
    }
    let n = at_most::<ICMP_LOADED>(inner.len);
    let b = &mut s.bulk;
    // SAFETY: bulk holds 512 bytes ≥ n.
    if !unsafe { P::load(ctx, payload, b.as_mut_ptr() as *mut u8, n) } {
        return Ok(Translation::None);
    }
    // Word indexes: the embedded addresses, ports, transport checksums; the outer source.
    let w = match inner.family {
        L3::V4 => IcmpWords {
            icmp_check: 5,
            inner_src: 10,
            inner_dst: 11,
            inner_ip_check: 9,
            inner_ports: 12,
            udp_check: 13,
            tcp_check: 16,
            outer_src: 3,
            addr_words: 1,
        },
        L3::V6 => IcmpWords {
            icmp_check: 10,
            inner_src: 14,
            inner_dst: 18,
            inner_ip_check: 0,
            inner_ports: 22,
            udp_check: 23,
            tcp_check: 26,
            outer_src: 2,
            addr_words: 4,
        },
    };
    // The embedded packet: a first fragment (or none) of TCP or UDP.
    let proto = match inner.family {
        L3::V4 => {
            if byte(b, 28) != 0x45 || be16(b, 34) & 0x1fff != 0 {
                return Ok(Translation::None);
            }
            byte(b, 37)
        }
        L3::V6 => {
            if byte(b, 48) >> 4 != 6 {
                return Ok(Translation::None);
            }
            byte(b, 54)
        }
    };
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Ok(Translation::None);
    }
    let mut client = [0u32; 4];
    let mut backend = [0u32; 4];
    let mut i = 0;
    while i < w.addr_words {
        client[i & 3] = b[(w.inner_src + i) & 31];
        backend[i & 3] = b[(w.inner_dst + i) & 31];
        i += 1;
    }
    let ports = b[w.inner_ports & 31];
    // The flow's reply: from the backend to the client.
    flow::set_key(&mut s.flow.key, inner.family, proto, flow::reversed(ports), &backend, &client);
    let Some(nat) = entry_flow(&s.flow.key) else {
        return Ok(Translation::None);
    };
    // SAFETY: a live map value.
    let (rewrite, port, last_seen) =
        unsafe { (read_volatile(&(*nat).rewrite), (*nat).port, (*nat).last_seen_ns) };
    if rewrite != NAT_SOURCE || flow::expired(last_seen, now, proto) {
        return Ok(Translation::None);
    }
    let public = nat_address(nat);
    let b = &mut s.bulk;
    // The embedded destination, its IPv4 header checksum, its port.
    let mut embedded = 0u64;
    let mut outer = 0u64;
    let mut i = 0;
    while i < w.addr_words {
        let d = (w.inner_dst + i) & 31;
        embedded += delta(b[d], public[i & 3]);
        b[d] = public[i & 3];
        let o = (w.outer_src + i) & 31;
        outer += delta(b[o], public[i & 3]);
        b[o] = public[i & 3];
        i += 1;
    }
    let new_ports = (ports & 0xffff) | (port as u32) << 16;
    b[w.inner_ports & 31] = new_ports;
    let transport = embedded + delta(ports, new_ports);
    // What the ICMP checksum covers changed by the embedded edits (and, for ICMPv6, by the
    // outer source in its pseudo-header).
    let mut icmp = transport;
    if inner.family == L3::V4 {
        let c = w.inner_ip_check & 31;
        let old = b[c];
        b[c] = (old & 0xffff) | (apply((old >> 16) as u16, embedded) as u32) << 16;
        icmp += delta(old, b[c]);
        // The outer IPv4 header checksum (word 2's high half).
        b[2] = (b[2] & 0xffff) | (apply((b[2] >> 16) as u16, outer) as u32) << 16;
    } else {
        icmp += outer;
    }
    // The embedded transport checksum, when the error carries it.
    if proto == IPPROTO_UDP {
        let c = w.udp_check & 31;
        let old = b[c];
        let check = (old >> 16) as u16;
        if check != 0 || inner.family == L3::V6 {
            let mut new = apply(check, transport);
            if new == 0 {
                new = 0xffff;
            }
            b[c] = (old & 0xffff) | (new as u32) << 16;
            icmp += delta(old, b[c]);
        }
    } else if inner.len >= 4 * w.tcp_check as u32 + 2 {
        let c = w.tcp_check & 31;
        let old = b[c];
        b[c] = (old & 0xffff_0000) | apply(old as u16, transport) as u32;
        icmp += delta(old, b[c]);
    }
    let c = w.icmp_check & 31;
    b[c] = (b[c] & 0xffff) | (apply((b[c] >> 16) as u16, icmp) as u32) << 16;
    // SAFETY: the n bytes loaded.
    if !unsafe { P::store(ctx, payload, b.as_ptr() as *const u8, n) } {
        return Err(());
    }
    // What comes next (the route, the TTL) reads the header from `head`.
    // SAFETY: bulk holds more than 16 words.
    copy(&mut s.crypt.head, unsafe { &*(s.bulk.as_ptr() as *const [u32; 16]) });
    Ok(Translation::Forwarded)
}

/// Where `icmp_error` finds what it edits, as word indexes into the loaded bytes.
struct IcmpWords {
    /// High half: the ICMP checksum.
    icmp_check: usize,
    inner_src: usize,
    inner_dst: usize,
    /// High half: the embedded IPv4 header checksum (IPv4 only).
    inner_ip_check: usize,
    inner_ports: usize,
    /// High half: the embedded UDP checksum.
    udp_check: usize,
    /// Low half: the embedded TCP checksum.
    tcp_check: usize,
    outer_src: usize,
    addr_words: usize,
}
