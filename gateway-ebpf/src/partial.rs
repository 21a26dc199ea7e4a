//! Locally generated TCP on the TUN's egress: its checksum is still to be completed.
//!
//! The stack hands every TCP segment it originates to the device as CHECKSUM_PARTIAL: the
//! checksum field holds the pseudo-header sum, and `csum_start`/`csum_offset` tell whoever
//! transmits the skb (the device, or `skb_checksum_help` in software) to sum from the TCP
//! header to the end and store the result 16 bytes further on. TC egress runs before that,
//! no helper can clear the state, and the skb keeps pointing at the same bytes (`csum_start`
//! counts from the buffer's head, which header resizes leave in place).
//!
//! So the program completes the inner checksum itself (before sealing), then moves the
//! packet so that the bytes the kernel will later complete are the *outer* UDP checksum:
//! the outer headers are laid out to end just where `csum_start + csum_offset` points, with
//! the ciphertext after them. The kernel's sum starts `csum_offset - 6` bytes before the UDP
//! header (inside the outer IP header), which the value left in the UDP checksum field
//! compensates for: the device writes exactly the outer UDP checksum. This needs a device
//! that follows `csum_start`/`csum_offset` generically (NETIF_F_HW_CSUM, or none, so the
//! kernel does it in software); the daemon says which underlays do (`UNDERLAYS`).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::generated::{bpf_csum_diff, bpf_loop, bpf_sk_fullsock},
};
use gateway_common::wire::{DATA_HEADER_LEN, IPV4_HEADER_LEN, IPV6_HEADER_LEN};

use crate::crypto::MAX_PLAINTEXT;
use crate::csum;
use crate::packet::{L3, Packet};
use crate::parse::{IPPROTO_TCP, Inner};
use crate::scratch::{BULK_BYTES, Scratch};
use crate::words::{at_most, byte};

/// Where TCP keeps its checksum, from the start of its header.
const TCP_CHECK_OFFSET: u32 = 16;
/// Chunks of `BULK_BYTES` the largest packet takes.
const MAX_CHUNKS: u32 = MAX_PLAINTEXT / BULK_BYTES as u32 + 1;
/// Bounds a loop index for the verifier (a power of two minus one, at least `MAX_CHUNKS`).
const CHUNK_INDEX_MASK: u32 = 31;
const _: () = assert!(CHUNK_INDEX_MASK >= MAX_CHUNKS && (CHUNK_INDEX_MASK + 1).is_power_of_two());

/// Which socket sent a locally generated TCP packet: raw sockets (the stack's own control
/// socket for resets among them) never leave the checksum to the device; TCP sockets mostly
/// do, but not always (replies the stack builds on its control socket may carry the TCP
/// socket they answer for). The skb's `ip_summed` itself is out of a program's reach.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A TCP socket: full, request or time-wait.
    Tcp,
    Raw,
}

/// The socket an skb on its way out comes from; None for forwarded packets.
#[inline(always)]
pub unsafe fn origin(skb: *mut __sk_buff) -> Option<Origin> {
    // SAFETY: fields of the program's own context, and a helper taking the socket pointer
    // the verifier gave.
    unsafe {
        let socket = (*skb).__bindgen_anon_2.sk;
        if socket.is_null() {
            return None;
        }
        let full = bpf_sk_fullsock(socket);
        // Request and time-wait sockets are not full sockets.
        Some(if full.is_null() || (*full).type_ == SOCK_STREAM { Origin::Tcp } else { Origin::Raw })
    }
}

const SOCK_STREAM: u32 = 1;

/// What the inner TCP checksum field says about the packet.
pub enum InnerChecksum {
    /// Complete already (a segment the stack checksummed itself, e.g. a reset).
    Complete,
    /// The pseudo-header sum the stack leaves for the device; `value` is the checksum the
    /// device would have written.
    Partial { value: u16 },
    /// Neither: not something the program can reason about.
    Unknown,
}

/// A locally generated TCP segment the partial-checksum path applies to: no IPv4 options or
/// IPv6 extension headers (the transport header where `csum_start` will be), not a
/// fragment. Returns the transport header's offset.
#[inline(always)]
pub fn transport_offset(head: &[u32; 16], inner: &Inner) -> Option<u32> {
    if inner.proto != IPPROTO_TCP || inner.fragment {
        return None;
    }
    let offset = match inner.family {
        L3::V4 if byte(head, 0) & 0x0f == 5 => IPV4_HEADER_LEN as u32,
        L3::V4 => return None,
        L3::V6 => IPV6_HEADER_LEN as u32,
    };
    (inner.len >= offset + 20).then_some(offset)
}

/// Sums the segment from `l4` to `len` (what `skb_checksum_help` sums) and classifies it.
/// A complete checksum that happens to equal the pseudo-header sum looks like one left to
/// the device (one packet in 65536 looks like both): such a packet is `Unknown`, and the
/// daemon gets it, complete either way, through the TUN.
#[inline(always)]
pub unsafe fn inspect<P: Packet>(
    ctx: *mut c_void,
    s: &mut Scratch,
    inner: &Inner,
    l4: u32,
    origin: Origin,
) -> InnerChecksum {
    let Some((segment, field)) = (unsafe { sum_segment::<P>(ctx, s, l4, inner.len) }) else {
        return InnerChecksum::Unknown;
    };
    let head = &s.crypt.head;
    let addresses = match inner.family {
        L3::V4 => head[3] as u64 + head[4] as u64,
        L3::V6 => csum::sum_range(head, 2, 10),
    };
    let pseudo = addresses + csum::net16(IPPROTO_TCP as u16) + csum::net16((inner.len - l4) as u16);
    let complete = csum::verifies(pseudo + segment);
    // The field holds the pseudo-header sum (in ones' complement) when the stack left the
    // rest to the device.
    let seeded = csum::verifies(field as u64 + !csum::fold(pseudo) as u64);
    if origin == Origin::Tcp && seeded && !complete {
        let mut value = csum::finish(segment);
        if value == 0 {
            // As skb_checksum_help writes it.
            value = 0xffff;
        }
        return InnerChecksum::Partial { value };
    }
    if complete && !seeded { InnerChecksum::Complete } else { InnerChecksum::Unknown }
}

/// `bpf_loop`'s state for `sum_segment` (on the caller's stack).
#[repr(C)]
struct SumLoop {
    ctx: *mut c_void,
    s: *mut Scratch,
    from: u32,
    to: u32,
    sum: u64,
    field: u32,
    failed: u32,
}

/// The ones' complement sum of bytes `from..to` (`from` even) and the 16-bit word at
/// `from + TCP_CHECK_OFFSET` (as stored), loaded `BULK_BYTES` at a time and summed by
/// `bpf_csum_diff`: one `bpf_loop` iteration per chunk, so the verifier checks one chunk's
/// code rather than every chunk of the largest packet.
#[inline(always)]
unsafe fn sum_segment<P: Packet>(
    ctx: *mut c_void,
    s: &mut Scratch,
    from: u32,
    to: u32,
) -> Option<(u64, u16)> {
    // Longer than the chunks cover: not summed whole.
    if to < from || to - from > MAX_CHUNKS * BULK_BYTES as u32 {
        return None;
    }
    let chunks = (to - from).div_ceil(BULK_BYTES as u32);
    let mut state = SumLoop { ctx, s, from, to, sum: 0, field: 0, failed: 0 };
    // SAFETY: the callback matches bpf_loop's contract; `state` outlives the call.
    let done = unsafe {
        bpf_loop(chunks, sum_chunk::<P> as *mut c_void, &mut state as *mut _ as *mut c_void, 0)
    };
    (done == chunks as i64 && state.failed == 0).then_some((state.sum, state.field as u16))
}

extern "C" fn sum_chunk<P: Packet>(index: u64, state: *mut c_void) -> i64 {
    // SAFETY: `sum_segment` passes a live SumLoop whose `s` is the per-CPU scratch.
    let state = unsafe { &mut *(state as *mut SumLoop) };
    let s = unsafe { &mut *state.s };
    let off = state.from + ((index as u32) & CHUNK_INDEX_MASK) * BULK_BYTES as u32;
    if off >= state.to {
        return 1;
    }
    let n = at_most::<{ BULK_BYTES as u32 }>(state.to - off);
    let buf = s.bulk.as_mut_ptr();
    // A tail that is not a whole word sums as if padded with zeros.
    let tail_word = ((n / 4) as usize) & (s.bulk.len() - 1);
    s.bulk[tail_word] = 0;
    // SAFETY: bulk holds BULK_BYTES ≥ n bytes.
    if !unsafe { P::load(state.ctx, off, buf as *mut u8, n) } {
        state.failed = 1;
        return 1;
    }
    if index == 0 {
        state.field = s.bulk[(TCP_CHECK_OFFSET / 4) as usize] & 0xffff;
    }
    // Whole words through the helper; a last partial word (zero-padded above) by hand.
    let whole = n & !3;
    // SAFETY: bulk holds BULK_BYTES bytes and `whole` ≤ BULK_BYTES.
    let partial = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, buf, whole, 0) };
    if partial < 0 {
        state.failed = 1;
        return 1;
    }
    state.sum += partial as u32 as u64;
    if n & 3 != 0 {
        state.sum += s.bulk[tail_word] as u64;
    }
    0
}

/// Where the plaintext goes: after the outer UDP checksum, which sits where the kernel will
/// complete (`csum_start + csum_offset`), come the WireGuard header and then the plaintext.
#[inline(always)]
pub fn payload_offset(l4: u32) -> u32 {
    l4 + TCP_CHECK_OFFSET + 2 + DATA_HEADER_LEN as u32
}

/// `bpf_loop`'s state for `relocate` (on the caller's stack).
#[repr(C)]
struct MoveLoop {
    ctx: *mut c_void,
    s: *mut Scratch,
    len: u32,
    shift: u32,
    chunks: u32,
    failed: u32,
}

/// Grows the packet to `new_len`, moves its first `len` bytes `shift` bytes towards the
/// tail (last chunk first, so no byte is overwritten before it is read; one `bpf_loop`
/// iteration per chunk), and stores the completed inner checksum (`value`) in the moved copy
/// of the TCP header at `l4`.
#[inline(always)]
pub unsafe fn relocate<P: Packet>(
    ctx: *mut c_void,
    s: &mut Scratch,
    len: u32,
    shift: u32,
    new_len: u32,
    l4: u32,
    value: u16,
) -> bool {
    let chunks = len.div_ceil(BULK_BYTES as u32);
    if chunks > MAX_CHUNKS || !unsafe { P::set_len(ctx, new_len) } {
        return false;
    }
    let mut state = MoveLoop { ctx, s, len, shift, chunks, failed: 0 };
    // SAFETY: the callback matches bpf_loop's contract; `state` outlives the call.
    let done = unsafe {
        bpf_loop(chunks, move_chunk::<P> as *mut c_void, &mut state as *mut _ as *mut c_void, 0)
    };
    if done != chunks as i64 || state.failed != 0 {
        return false;
    }
    let bytes = value.to_le_bytes();
    // SAFETY: two bytes on the stack.
    unsafe { P::store(ctx, shift + l4 + TCP_CHECK_OFFSET, bytes.as_ptr(), 2) }
}

extern "C" fn move_chunk<P: Packet>(index: u64, state: *mut c_void) -> i64 {
    // SAFETY: `relocate` passes a live MoveLoop whose `s` is the per-CPU scratch.
    let state = unsafe { &mut *(state as *mut MoveLoop) };
    let s = unsafe { &mut *state.s };
    let j = (index as u32) & CHUNK_INDEX_MASK;
    if j >= state.chunks {
        return 1;
    }
    let off = (state.chunks - 1 - j) * BULK_BYTES as u32;
    if off >= state.len {
        return 1;
    }
    let n = at_most::<{ BULK_BYTES as u32 }>(state.len - off);
    let buf = s.bulk.as_mut_ptr() as *mut u8;
    // SAFETY: bulk holds BULK_BYTES ≥ n bytes.
    if !unsafe { P::load(state.ctx, off, buf, n) && P::store(state.ctx, off + state.shift, buf, n) }
    {
        state.failed = 1;
        return 1;
    }
    0
}
