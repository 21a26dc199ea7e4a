//! Internet checksums kept valid across a rewrite without summing the packet again (RFC 1624):
//! only the words that changed are taken out of the checksum and their new values put in.
//! A checksum that was wrong stays wrong by as much, so a damaged packet is not made to look
//! whole by the translation.

/// `check` after the bytes `old` became `new` (equal, even lengths, each word at an even
/// offset of what the checksum covers): RFC 1624's HC' = ~(~HC + ~m + m') for every word.
pub(super) fn updated(check: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    let mut sum = u32::from(!check);
    for (old, new) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        sum += u32::from(!u16::from_be_bytes([old[0], old[1]]));
        sum += u32::from(u16::from_be_bytes([new[0], new[1]]));
    }
    !fold(sum)
}

/// The one's-complement sum folded into 16 bits (carries added back in).
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checksum of `bytes` summed from scratch.
    fn checksum(bytes: &[u8]) -> u16 {
        let sum =
            bytes.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])));
        !fold(sum.sum())
    }

    #[test]
    fn an_update_equals_summing_again() {
        let mut data: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
        let check = checksum(&data);
        let old = data[12..20].to_vec();
        let new = [0xc6, 0x33, 0x64, 0x07, 0xff, 0xff, 0x00, 0x01];
        data[12..20].copy_from_slice(&new);
        assert_eq!(updated(check, &old, &new), checksum(&data));
    }

    #[test]
    fn changing_nothing_changes_nothing() {
        let bytes = [0x12, 0x34, 0xab, 0xcd];
        for check in [0x0001, 0x1234, 0xfffe, 0x8000] {
            assert_eq!(updated(check, &bytes, &bytes), check);
        }
    }
}
