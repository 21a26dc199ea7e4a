//! Word-wise buffer helpers. Array initialisers and struct copies become byte-at-a-time
//! `memset`/`memmove` loops in BPF (a measurable share of the per-packet cost), so buffers are
//! cleared and copied one `u32` at a time with volatile accesses the compiler keeps as is.

use core::ptr::{read_volatile, write_volatile};

#[inline(always)]
pub fn zero<const N: usize>(buf: &mut [u32; N]) {
    let mut i = 0;
    while i < N {
        // SAFETY: i < N.
        unsafe { write_volatile(buf.as_mut_ptr().add(i), 0) };
        i += 1;
    }
}

#[inline(always)]
pub fn copy<const N: usize>(dst: &mut [u32; N], src: &[u32; N]) {
    let mut i = 0;
    while i < N {
        // SAFETY: i < N for both arrays.
        unsafe { write_volatile(dst.as_mut_ptr().add(i), read_volatile(src.as_ptr().add(i))) };
        i += 1;
    }
}

/// Byte `I` of a word buffer, in memory order.
#[inline(always)]
pub fn byte<const N: usize>(buf: &[u32; N], i: usize) -> u8 {
    (buf[i / 4] >> (8 * (i % 4))) as u8
}

/// A big-endian 16-bit field at byte offset `i` (network order on the wire).
#[inline(always)]
pub fn be16<const N: usize>(buf: &[u32; N], i: usize) -> u16 {
    ((byte(buf, i) as u16) << 8) | byte(buf, i + 1) as u16
}

/// Sets byte `i` of a word buffer.
#[inline(always)]
pub fn set_byte<const N: usize>(buf: &mut [u32; N], i: usize, value: u8) {
    let shift = 8 * (i % 4);
    buf[i / 4] = (buf[i / 4] & !(0xff << shift)) | ((value as u32) << shift);
}

#[inline(always)]
pub fn set_be16<const N: usize>(buf: &mut [u32; N], i: usize, value: u16) {
    set_byte(buf, i, (value >> 8) as u8);
    set_byte(buf, i + 1, value as u8);
}

/// Sum of 16 words into a 64-bit accumulator, for the ones' complement checksum.
#[inline(always)]
pub fn sum16(buf: &[u32; 16]) -> u64 {
    let mut s = 0u64;
    let mut i = 0;
    while i < 16 {
        s += buf[i] as u64;
        i += 1;
    }
    s
}

/// `min(len, N)` for `len` ≥ 1 (`N` a power of two), in a form the verifier can see is in
/// [1, N]: helper lengths must be provably non-zero and within their buffer.
#[inline(always)]
pub fn at_most<const N: u32>(len: u32) -> u32 {
    let len = if len > N { N } else { len };
    (len.wrapping_sub(1) & (N - 1)) + 1
}
