//! ChaCha20-Poly1305 over packet bytes, one `bpf_loop` iteration per 64-byte chunk (the
//! verifier then checks the callback once, whatever the packet size). Iteration 0 derives the
//! Poly1305 key from ChaCha20 block 0; iteration i ≥ 1 handles chunk i - 1 with block i.
//! WireGuard's nonce is 32 zero bits then the 64-bit little-endian counter, with no
//! associated data.

use core::ffi::c_void;

use aya_ebpf::helpers::generated::bpf_loop;
use gateway_common::aead::{chacha20_xor, mask_tail, poly_chunk};

use crate::packet::Packet;
use crate::scratch::{Crypt, SUM_CIPHER, SUM_PLAIN};
use crate::words::{at_most, copy, sum16, zero};

/// The largest plaintext the programs handle (jumbo frames); larger goes to the daemon.
pub const MAX_PLAINTEXT: u32 = 9216;

const OPEN: u32 = 0;
const SEAL: u32 = 1;
/// Keystream only: undoes a seal (the daemon then gets the packet back unchanged).
const UNSEAL: u32 = 2;

/// `bpf_loop` passes this (on the caller's stack) to every iteration.
#[repr(C)]
struct LoopCtx {
    ctx: *mut c_void,
    st: *mut Crypt,
}

/// One ChaCha20 block XORed into `st.buf`. A global subprogram: the verifier checks it once,
/// on its own, instead of at every call in every state that reaches one (its ~1,000
/// instructions would otherwise be walked again for each). Its contract with the verifier is
/// its signature: a nullable pointer to a `Crypt` and a scalar.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn wg_chacha_block(st: *mut Crypt, counter: u32) -> i32 {
    // SAFETY: the callers pass the per-CPU scratch's `Crypt`; null is refused.
    let Some(st) = (unsafe { st.as_mut() }) else {
        return 1;
    };
    chacha20_xor(&st.key, counter, &st.nonce, &mut st.buf);
    0
}

/// One Poly1305 block over `st.buf` (`len` bytes of it); global for the same reason.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn wg_poly_block(st: *mut Crypt, len: u32) -> i32 {
    // SAFETY: as for `wg_chacha_block`.
    let Some(st) = (unsafe { st.as_mut() }) else {
        return 1;
    };
    poly_chunk(&mut st.poly, &st.buf, len);
    0
}

/// The tag over what the loop authenticated: the lengths block, then the final reduction,
/// into `st.tag`. Global for the same reason, and for one more: inlined, its arithmetic's
/// spills set the size of the calling program's stack frame, which the AEAD loop's callbacks
/// stack on top of (512 bytes for the whole chain).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn wg_poly_tag(st: *mut Crypt) -> i32 {
    // SAFETY: as for `wg_chacha_block`.
    let Some(st) = (unsafe { st.as_mut() }) else {
        return 1;
    };
    st.poly.block(0, 0, st.len, 0);
    st.tag = st.poly.finish();
    0
}

#[inline(always)]
fn chunk<P: Packet, const MODE: u32>(index: u64, c: *mut c_void) -> i64 {
    // SAFETY: `run` passes a live LoopCtx whose `st` points into the per-CPU scratch map.
    let c = unsafe { &mut *(c as *mut LoopCtx) };
    let st = unsafe { &mut *c.st };
    let i = (index as u32) & 0x3ff;
    if i == 0 {
        if MODE != UNSEAL {
            zero(&mut st.buf);
            wg_chacha_block(st, 0);
            st.poly.init(&st.buf[..8]);
        }
        return 0;
    }
    let done = (i - 1) * 64;
    if done >= st.len {
        return 1;
    }
    let len = at_most::<64>(st.len - done);
    let off = st.off + done;
    // Sealing treats bytes past data_len as zeros (padding): they are not loaded.
    let avail = if MODE == SEAL { st.data_len.saturating_sub(done) } else { len };
    let load_len = if avail < len { avail } else { len };
    if load_len < 64 {
        zero(&mut st.buf);
    }
    if load_len > 0 {
        let n = at_most::<64>(load_len);
        // SAFETY: buf is 64 bytes and n ≤ 64.
        if !unsafe { P::load(c.ctx, off, st.buf.as_mut_ptr() as *mut u8, n) } {
            st.err = 1;
            return 1;
        }
    }
    if MODE == OPEN {
        wg_poly_block(st, len);
    }
    if MODE == SEAL && st.sums & SUM_PLAIN != 0 {
        st.sum_plain += sum16(&st.buf);
    }
    wg_chacha_block(st, i);
    if MODE == OPEN && i == 1 {
        copy(&mut st.head, &st.buf);
    }
    // SAFETY: as for the load.
    if !unsafe { P::store(c.ctx, off, st.buf.as_ptr() as *const u8, len) } {
        st.err = 1;
        return 1;
    }
    if MODE == SEAL {
        if len < 64 {
            mask_tail(&mut st.buf, len);
        }
        wg_poly_block(st, len);
        if st.sums & SUM_CIPHER != 0 {
            st.sum_cipher += sum16(&st.buf);
        }
    }
    0
}

extern "C" fn open_cb<P: Packet>(index: u64, c: *mut c_void) -> i64 {
    chunk::<P, OPEN>(index, c)
}
extern "C" fn seal_cb<P: Packet>(index: u64, c: *mut c_void) -> i64 {
    chunk::<P, SEAL>(index, c)
}
extern "C" fn unseal_cb<P: Packet>(index: u64, c: *mut c_void) -> i64 {
    chunk::<P, UNSEAL>(index, c)
}

/// Prepares `st` for one message: key, counter, where the bytes are.
#[inline(always)]
pub fn begin(st: &mut Crypt, key: &[u32; 8], counter: u64, off: u32, len: u32, data_len: u32) {
    copy(&mut st.key, key);
    st.nonce = [0, counter as u32, (counter >> 32) as u32];
    st.off = off;
    st.len = len;
    st.data_len = data_len;
    st.err = 0;
    st.sums = 0;
    // Volatile: two adjacent zero stores would be merged into a memset call.
    // SAFETY: fields of a live &mut.
    unsafe {
        core::ptr::write_volatile(&mut st.sum_plain, 0);
        core::ptr::write_volatile(&mut st.sum_cipher, 0);
    }
}

#[inline(always)]
unsafe fn run(ctx: *mut c_void, st: &mut Crypt, callback: *const ()) -> bool {
    let iterations = st.len.div_ceil(64) + 1;
    let mut c = LoopCtx { ctx, st: st as *mut Crypt };
    // SAFETY: the callback matches bpf_loop's contract; LoopCtx outlives the call.
    unsafe {
        bpf_loop(iterations, callback as *mut c_void, &mut c as *mut LoopCtx as *mut c_void, 0);
    }
    st.err == 0
}

/// Authenticates and decrypts `st.len` bytes in place; the tag follows them. Ok(false): the
/// tag did not match (the bytes are then garbage: the caller drops the packet).
#[inline(always)]
pub unsafe fn open<P: Packet>(ctx: *mut c_void, st: &mut Crypt) -> Result<bool, ()> {
    if st.len > MAX_PLAINTEXT || !unsafe { run(ctx, st, open_cb::<P> as *const ()) } {
        return Err(());
    }
    if wg_poly_tag(st) != 0 {
        return Err(());
    }
    // The received tag, into the (now free) chunk buffer.
    // SAFETY: buf is 64 bytes.
    if !unsafe { P::load(ctx, st.off + st.len, st.buf.as_mut_ptr() as *mut u8, 16) } {
        return Err(());
    }
    let diff = (st.tag[0] ^ st.buf[0])
        | (st.tag[1] ^ st.buf[1])
        | (st.tag[2] ^ st.buf[2])
        | (st.tag[3] ^ st.buf[3]);
    Ok(diff == 0)
}

/// Encrypts `st.len` bytes in place (`[data_len, len)` as zeros) and writes the tag after
/// them; the tag counts into `sum_cipher`.
#[inline(always)]
pub unsafe fn seal<P: Packet>(ctx: *mut c_void, st: &mut Crypt) -> bool {
    if st.len > MAX_PLAINTEXT || !unsafe { run(ctx, st, seal_cb::<P> as *const ()) } {
        return false;
    }
    if wg_poly_tag(st) != 0 {
        return false;
    }
    if st.sums & SUM_CIPHER != 0 {
        st.sum_cipher += st.tag[0] as u64 + st.tag[1] as u64 + st.tag[2] as u64 + st.tag[3] as u64;
    }
    // SAFETY: tag is 16 bytes.
    unsafe { P::store(ctx, st.off + st.len, st.tag.as_ptr() as *const u8, 16) }
}

/// Undoes `seal` on the first `data_len` bytes (same key and counter still in `st`).
#[inline(always)]
pub unsafe fn unseal<P: Packet>(ctx: *mut c_void, st: &mut Crypt) -> bool {
    st.len = st.data_len;
    st.len <= MAX_PLAINTEXT && unsafe { run(ctx, st, unseal_cb::<P> as *const ()) }
}
