//! Edits to the inner IP header on the way through: TTL / hop limit when the programs
//! forward (hub, LAN), and ECN as the outer header says (RFC 6040, as the kernel's
//! `INET_ECN_decapsulate` does). `head` holds the header's first bytes; the edited
//! words are written back to the packet at `off`.

use core::ffi::c_void;

use gateway_common::ecn;

use crate::csum;
use crate::packet::{L3, Packet};
use crate::words::byte;

/// Whether forwarding may decrement the TTL / hop limit (it is above 1); otherwise the stack
/// must see the packet to answer with ICMP time exceeded.
#[inline(always)]
pub fn ttl_allows_forwarding(head: &[u32; 16], family: L3) -> bool {
    match family {
        L3::V4 => byte(head, 8) > 1,
        L3::V6 => byte(head, 7) > 1,
    }
}

/// The header word `decrement_ttl` changes, to put back with `restore_word`.
#[derive(Clone, Copy)]
pub struct SavedWord {
    index: u32,
    value: u32,
}

/// Decrements the TTL (IPv4, with the checksum) or hop limit (IPv6); call only when
/// `ttl_allows_forwarding`. Err(()) when the store failed.
#[inline(always)]
pub unsafe fn decrement_ttl<P: Packet>(
    ctx: *mut c_void,
    head: &mut [u32; 16],
    family: L3,
    off: u32,
) -> Result<SavedWord, ()> {
    let word: u32 = match family {
        L3::V4 => 2,
        L3::V6 => 1,
    };
    let saved = SavedWord { index: word, value: head[word as usize] };
    match family {
        L3::V4 => {
            // Word 2: [ttl, protocol, checksum (2 bytes)].
            let w = head[2];
            let old = (w & 0xffff) as u16;
            let new = old.wrapping_sub(1);
            let check = csum::update((w >> 16) as u16, old, new);
            head[2] = new as u32 | (check as u32) << 16;
        }
        L3::V6 => {
            // Word 1: [payload length (2 bytes), next header, hop limit].
            head[1] = head[1].wrapping_sub(1 << 24);
        }
    }
    // SAFETY: one word of the head buffer (index 1 or 2).
    let ok = unsafe { P::store(ctx, off + 4 * word, head.as_ptr().add(word as usize) as _, 4) };
    if ok { Ok(saved) } else { Err(()) }
}

/// Puts back the word `decrement_ttl` changed.
#[inline(always)]
pub unsafe fn restore_word<P: Packet>(
    ctx: *mut c_void,
    head: &mut [u32; 16],
    saved: SavedWord,
    off: u32,
) -> bool {
    let i = (saved.index & 3) as usize;
    head[i] = saved.value;
    // SAFETY: one word of the head buffer.
    unsafe { P::store(ctx, off + 4 * i as u32, head.as_ptr().add(i) as _, 4) }
}

/// Marks the inner packet as the outer header says (`gateway_common::ecn::decapsulate`:
/// Congestion Experienced, or ECT(1)). Err(()) only when the store failed.
#[inline(always)]
pub unsafe fn decapsulate_ecn<P: Packet>(
    ctx: *mut c_void,
    head: &mut [u32; 16],
    family: L3,
    outer_dsfield: u8,
    off: u32,
) -> Result<(), ()> {
    // Only a CE or ECT(1) outer header changes anything.
    if outer_dsfield & ecn::MASK == ecn::NOT_ECT || outer_dsfield & ecn::MASK == ecn::ECT_0 {
        return Ok(());
    }
    let ok = match family {
        L3::V4 => {
            let tos = byte(head, 1);
            let marked = ecn::decapsulate(outer_dsfield, tos);
            if marked == tos & ecn::MASK {
                return Ok(());
            }
            let old = (head[0] & 0xffff) as u16;
            let new = (old & !((ecn::MASK as u16) << 8)) | ((marked as u16) << 8);
            let check = csum::update((head[2] >> 16) as u16, old, new);
            head[0] = (head[0] & 0xffff_0000) | new as u32;
            head[2] = (head[2] & 0xffff) | (check as u32) << 16;
            // SAFETY: words 0..3 of the head buffer.
            unsafe { P::store(ctx, off, head.as_ptr() as _, 12) }
        }
        L3::V6 => {
            // The traffic class's ECN bits are bits 4..5 of byte 1.
            let ecn_bits = (byte(head, 1) >> 4) & ecn::MASK;
            let marked = ecn::decapsulate(outer_dsfield, ecn_bits);
            if marked == ecn_bits {
                return Ok(());
            }
            head[0] = (head[0] & !((ecn::MASK as u32) << 12)) | (marked as u32) << 12;
            // SAFETY: word 0 of the head buffer.
            unsafe { P::store(ctx, off, head.as_ptr() as _, 4) }
        }
    };
    if ok { Ok(()) } else { Err(()) }
}
