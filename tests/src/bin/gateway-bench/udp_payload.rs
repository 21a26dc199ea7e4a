//! The generator's datagrams start with a header the receiver checks, so strays (and datagrams
//! of an earlier probe still draining out of a queue) are not counted.

/// "GWBU".
const MAGIC: u32 = 0x4757_4255;

/// Magic, run id, sequence number.
pub const HEADER_LEN: usize = 16;

/// Writes the header of datagram `sequence` of run `run_id` at the start of `payload`
/// (at least [`HEADER_LEN`] bytes).
pub fn write_header(payload: &mut [u8], run_id: u32, sequence: u64) {
    payload[..4].copy_from_slice(&MAGIC.to_be_bytes());
    payload[4..8].copy_from_slice(&run_id.to_be_bytes());
    payload[8..16].copy_from_slice(&sequence.to_be_bytes());
}

/// Whether `payload` belongs to run `run_id`.
pub fn belongs_to(payload: &[u8], run_id: u32) -> bool {
    payload.len() >= HEADER_LEN
        && payload[..4] == MAGIC.to_be_bytes()
        && payload[4..8] == run_id.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receiver_recognises_only_its_run() {
        let mut payload = [0u8; 64];
        write_header(&mut payload, 7, 42);
        assert!(belongs_to(&payload, 7));
        assert!(!belongs_to(&payload, 8));
        assert!(!belongs_to(&payload[..HEADER_LEN - 1], 7));
        assert!(!belongs_to(&[0u8; 64], 7));
    }
}
