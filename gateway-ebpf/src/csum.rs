//! The Internet checksum (RFC 1071), computed on little-endian words.
//!
//! Summing memory as little-endian words gives the byte-swapped ones' complement sum, and
//! storing the folded result back in little-endian order puts its bytes where network order
//! wants them (RFC 1071 §2(B)). So every sum here is over words loaded from memory as they
//! are, numbers that are not memory (lengths, protocol numbers) are byte-swapped before they
//! are added, and checksum fields are written with `to_le_bytes`.

/// Folds a 64-bit accumulator of 32-bit words to 16 bits (not complemented).
#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// A 16-bit number in network order as it sums in the little-endian domain.
#[inline(always)]
pub fn net16(value: u16) -> u64 {
    value.swap_bytes() as u64
}

/// The checksum field value for a sum that covers everything but the field itself.
#[inline(always)]
pub fn finish(sum: u64) -> u16 {
    !fold(sum)
}

/// Whether a sum that covers the checksum field too verifies.
#[inline(always)]
pub fn verifies(sum: u64) -> bool {
    fold(sum) == 0xffff
}

/// Sum of words `from..to` of a buffer.
#[inline(always)]
pub fn sum_range<const N: usize>(buf: &[u32; N], from: usize, to: usize) -> u64 {
    let mut s = 0u64;
    let mut i = from;
    while i < to && i < N {
        s += buf[i] as u64;
        i += 1;
    }
    s
}

/// Incremental update (RFC 1624) of a checksum field for one 16-bit word changing from `old`
/// to `new`, all three as stored in memory (little-endian domain).
#[inline(always)]
pub fn update(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check) as u64 + (!old) as u64 + new as u64;
    !fold(sum)
}
