//! Behind an entry point: the flows an entry peer brings in are remembered (`REPLY_TO`, key:
//! the reply's flow) as their packets are decrypted, and LAN XDP sends those replies back to
//! that peer whatever the routes say, as pf's reply-to does. The home's default route stays
//! where it was, and two entry points in front of one home each get their own flows' replies.

use core::{ffi::c_void, ptr::read_volatile};

use crate::flow::{self, stale};
use crate::maps::{record_reply_to, reply_to};
use crate::nat::Transport;
use crate::packet::{L3, Packet};
use crate::parse::{self, IPPROTO_TCP, IPPROTO_UDP, Inner};
use crate::scratch::Scratch;
use crate::words::byte;

/// Remembers that replies to a TCP/UDP packet `peer_slot` sent (decrypted, in
/// `s.crypt.head`) go back to it. An entry already saying so is refreshed at most once a
/// second, in place; a flow that moved to another entry peer follows it. A subprogram of its
/// own, as `lookup` (see `translate::reply`); the packet is `len` bytes.
#[inline(never)]
pub fn remember(s: &mut Scratch, len: u32, peer_slot: u32, now: u64) {
    let Some(t) = parse::inner(&s.crypt.head, len).and_then(|i| Transport::of(&s.crypt.head, &i))
    else {
        return;
    };
    let head = &s.crypt.head;
    let (src, dst) = parse::inner_addrs(head, t.family);
    let ports = flow::reversed(t.ports(head));
    flow::set_key(&mut s.flow.key, t.family, t.proto, ports, &dst, &src);
    if let Some(known) = reply_to(&s.flow.key) {
        // SAFETY: a live map value; concurrent writers store the same kind of values.
        let (peer, last_seen) = unsafe { (read_volatile(&(*known).peer), (*known).last_seen_ns) };
        if peer == peer_slot {
            if stale(last_seen, now) {
                // SAFETY: as above.
                unsafe { (*known).last_seen_ns = now };
            }
            return;
        }
    }
    flow::set_reply_to(&mut s.flow.reply_to, peer_slot, now);
    // A full map evicts its least recently used flow; a failed insert only means this
    // flow's replies follow the routes.
    record_reply_to(&s.flow.key, &s.flow.reply_to);
}

/// The entry peer a LAN packet (at `off`, its first 40 bytes in `s.crypt.head`) goes back
/// to, if it is the reply of a flow one brought in and the flow has not timed out.
#[inline(always)]
pub unsafe fn lookup<P: Packet>(
    ctx: *mut c_void,
    s: &mut Scratch,
    inner: &Inner,
    off: u32,
    now: u64,
) -> Option<u32> {
    unsafe { lookup_slot::<P>(ctx, s, inner.len, off, now) }.checked_sub(1)
}

/// `lookup`'s work, in a subprogram of its own (its locals in its own stack frame, see
/// `translate::reply`): the peer's slot + 1, 0 for none (a plain scalar to return).
#[inline(never)]
unsafe fn lookup_slot<P: Packet>(
    ctx: *mut c_void,
    s: &mut Scratch,
    len: u32,
    off: u32,
    now: u64,
) -> u32 {
    let Some(inner) = parse::inner(&s.crypt.head, len) else {
        return 0;
    };
    unsafe { find::<P>(ctx, s, &inner, off, now) }.map_or(0, |peer| peer.wrapping_add(1))
}

#[inline(always)]
unsafe fn find<P: Packet>(
    ctx: *mut c_void,
    s: &mut Scratch,
    inner: &Inner,
    off: u32,
    now: u64,
) -> Option<u32> {
    if inner.fragment || (inner.proto != IPPROTO_TCP && inner.proto != IPPROTO_UDP) {
        return None;
    }
    let l4 = match inner.family {
        L3::V4 if byte(&s.crypt.head, 0) & 0x0f == 5 => 20,
        L3::V4 => return None,
        L3::V6 => 40,
    };
    if inner.len < l4 + 4 {
        return None;
    }
    // The ports: past the bytes `head` holds for IPv6.
    let mut ports = 0u32;
    // SAFETY: four bytes into a stack word.
    if !unsafe { P::load(ctx, off + l4, &mut ports as *mut u32 as *mut u8, 4) } {
        return None;
    }
    let (src, dst) = parse::inner_addrs(&s.crypt.head, inner.family);
    flow::set_key(&mut s.flow.key, inner.family, inner.proto, ports, &src, &dst);
    let known = reply_to(&s.flow.key)?;
    // SAFETY: a live map value.
    let (peer, last_seen) = unsafe { (read_volatile(&(*known).peer), (*known).last_seen_ns) };
    if flow::expired(last_seen, now, inner.proto) {
        return None;
    }
    if stale(last_seen, now) {
        // Replies keep the flow alive too, as conntrack's timeouts count both directions.
        // SAFETY: as above.
        unsafe { (*known).last_seen_ns = now };
    }
    Some(peer)
}
