//! Flows as the entry point's maps key them (`FlowKey`: family, protocol, ports, addresses)
//! and what those maps remember of them (`FlowNat`, `ReplyTo`), written a word at a time
//! into `Scratch::flow` for the map helpers. Addresses are network-order words as loaded
//! from a packet (IPv4 in the first); ports are the 32-bit word at the start of a TCP/UDP
//! header (source port in the low half, destination port in the high half, memory order).

use core::ptr::write_volatile;

use gateway_common::maps::{
    AF_INET, AF_INET6, FLOW_TIMEOUT_OTHER_NS, FLOW_TIMEOUT_TCP_NS, FLOW_TIMEOUT_UDP_NS, FlowKey,
    FlowNat, ReplyTo,
};

use crate::packet::L3;
use crate::parse::{IPPROTO_TCP, IPPROTO_UDP};

/// How often a flow's `last_seen_ns` is rewritten: a timestamp a second old is as good for
/// timeouts counted in minutes, and every write dirties a cache line other CPUs read.
pub const REFRESH_NS: u64 = 1_000_000_000;

const _: () = assert!(size_of::<FlowKey>() == 40 && size_of::<FlowNat>() == 32);
const _: () = assert!(size_of::<ReplyTo>() == 16);

/// The same flow seen from the other end: source and destination ports swapped.
#[inline(always)]
pub fn reversed(ports: u32) -> u32 {
    ports.rotate_left(16)
}

#[inline(always)]
fn family_code(family: L3) -> u32 {
    match family {
        L3::V4 => AF_INET as u32,
        L3::V6 => AF_INET6 as u32,
    }
}

/// Writes four words at `p` (a 4-byte aligned field of a `Flow`); volatile, so adjacent zero
/// stores stay stores rather than becoming a byte-wise `memset`.
#[inline(always)]
unsafe fn put_address(p: *mut u32, addr: &[u32; 4]) {
    // SAFETY: the caller's field holds 16 bytes.
    unsafe {
        write_volatile(p, addr[0]);
        write_volatile(p.add(1), addr[1]);
        write_volatile(p.add(2), addr[2]);
        write_volatile(p.add(3), addr[3]);
    }
}

/// Fills `key` with one direction of a flow.
#[inline(always)]
pub fn set_key(
    key: &mut FlowKey,
    family: L3,
    proto: u8,
    ports: u32,
    src: &[u32; 4],
    dst: &[u32; 4],
) {
    let w = key as *mut FlowKey as *mut u32;
    // SAFETY: FlowKey is 40 bytes: [family, proto, pad] [ports] [src × 4] [dst × 4]; `Flow`
    // aligns it to 8.
    unsafe {
        write_volatile(w, family_code(family) | (proto as u32) << 16);
        write_volatile(w.add(1), ports);
        put_address(w.add(2), src);
        put_address(w.add(6), dst);
    }
}

/// Fills `nat`: replace the `rewrite` end (`NAT_SOURCE`/`NAT_DESTINATION`) with `addr` and
/// `port` (memory order).
#[inline(always)]
pub fn set_nat(nat: &mut FlowNat, rewrite: u16, addr: &[u32; 4], port: u16, now: u64) {
    let w = nat as *mut FlowNat as *mut u32;
    // SAFETY: FlowNat is 32 bytes: [rewrite, port] [pad] [addr × 4] [last_seen (8 bytes)].
    unsafe {
        write_volatile(w, rewrite as u32 | (port as u32) << 16);
        write_volatile(w.add(1), 0);
        put_address(w.add(2), addr);
        write_volatile(&mut nat.last_seen_ns, now);
    }
}

#[inline(always)]
pub fn set_reply_to(value: &mut ReplyTo, peer: u32, now: u64) {
    // SAFETY: fields of a live &mut, written one by one (see `put_address`).
    unsafe {
        write_volatile(&mut value.peer, peer);
        write_volatile(&mut value._pad, 0);
        write_volatile(&mut value.last_seen_ns, now);
    }
}

/// The address a `FlowNat` holds, as words.
#[inline(always)]
pub fn nat_address(nat: *const FlowNat) -> [u32; 4] {
    // SAFETY: FlowNat is repr(C) with `addr` 4-byte aligned at offset 8; the caller passes a
    // live map value.
    let a = unsafe { &*((nat as *const u8).add(8) as *const [u32; 4]) };
    [a[0], a[1], a[2], a[3]]
}

/// Whether a flow not seen since `last_seen` is forgotten, as conntrack forgets an
/// established flow.
#[inline(always)]
pub fn expired(last_seen: u64, now: u64, proto: u8) -> bool {
    let timeout = match proto {
        IPPROTO_TCP => FLOW_TIMEOUT_TCP_NS,
        IPPROTO_UDP => FLOW_TIMEOUT_UDP_NS,
        _ => FLOW_TIMEOUT_OTHER_NS,
    };
    now > last_seen && now - last_seen >= timeout
}

/// Whether `last_seen` is old enough to be rewritten (see `REFRESH_NS`).
#[inline(always)]
pub fn stale(last_seen: u64, now: u64) -> bool {
    now > last_seen && now - last_seen >= REFRESH_NS
}
