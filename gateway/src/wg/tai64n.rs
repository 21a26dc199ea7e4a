//! TAI64N timestamps (whitepaper §5.4.2): the initiator's proof of freshness, compared
//! bytewise by the responder to refuse replayed initiations.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use gateway_common::wire::{INITIATIONS_PER_SECOND, NSEC_PER_SEC};

pub const TAI64N_LEN: usize = 12;

/// The TAI64 label of the Unix epoch, as the kernel writes it: 2^62 plus the 10 seconds TAI
/// was ahead of UTC in 1970.
const TAI64_EPOCH_LABEL: u64 = (1 << 62) + 10;

/// Nanoseconds are rounded down to a multiple of this (the largest power of two not above the
/// shortest interval between accepted initiations), so the timestamp does not leak a precise
/// clock reading yet still increases between any two initiations a responder would accept.
pub const NANOSECOND_GRANULARITY: u32 =
    largest_power_of_two_at_most(NSEC_PER_SEC / INITIATIONS_PER_SECOND);

const fn largest_power_of_two_at_most(value: u64) -> u32 {
    (1u64 << (63 - value.leading_zeros())) as u32
}

/// A 12-byte TAI64N timestamp: big-endian seconds label then big-endian nanoseconds. The byte
/// order makes bytewise comparison chronological, which is how receivers compare them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Tai64n(pub [u8; TAI64N_LEN]);

impl Tai64n {
    /// The timestamp for `seconds` and `nanoseconds` after (or, negative, before) the Unix
    /// epoch, with the nanoseconds rounded down to [`NANOSECOND_GRANULARITY`].
    pub fn from_unix(seconds: i64, nanoseconds: u32) -> Tai64n {
        let label = TAI64_EPOCH_LABEL.wrapping_add_signed(seconds);
        let nanoseconds = nanoseconds % (NSEC_PER_SEC as u32);
        let rounded = nanoseconds - nanoseconds % NANOSECOND_GRANULARITY;
        let mut bytes = [0u8; TAI64N_LEN];
        bytes[..8].copy_from_slice(&label.to_be_bytes());
        bytes[8..].copy_from_slice(&rounded.to_be_bytes());
        Tai64n(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; TAI64N_LEN] {
        &self.0
    }
}

/// Maps monotonic instants to wall-clock timestamps from one reading of both clocks, so the
/// protocol core never reads a clock itself and tests can run on virtual time.
#[derive(Debug, Clone, Copy)]
pub struct Tai64nClock {
    anchor_instant: Instant,
    /// Wall-clock time at `anchor_instant`, in nanoseconds since the Unix epoch (negative
    /// before it).
    anchor_unix_ns: i128,
}

impl Tai64nClock {
    pub fn new(anchor_instant: Instant, anchor_wall: SystemTime) -> Tai64nClock {
        let anchor_unix_ns = match anchor_wall.duration_since(UNIX_EPOCH) {
            Ok(after) => after.as_nanos() as i128,
            Err(before) => -(before.duration().as_nanos() as i128),
        };
        Tai64nClock { anchor_instant, anchor_unix_ns }
    }

    /// The timestamp for `now`. Instants before the anchor map to earlier wall-clock times.
    pub fn timestamp(&self, now: Instant) -> Tai64n {
        let offset_ns = match now.checked_duration_since(self.anchor_instant) {
            Some(after) => after.as_nanos() as i128,
            None => -(self.anchor_instant.duration_since(now).as_nanos() as i128),
        };
        let unix_ns = self.anchor_unix_ns + offset_ns;
        let nsec_per_sec = NSEC_PER_SEC as i128;
        let seconds = unix_ns.div_euclid(nsec_per_sec) as i64;
        let nanoseconds = unix_ns.rem_euclid(nsec_per_sec) as u32;
        Tai64n::from_unix(seconds, nanoseconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn granularity_is_the_kernels() {
        // rounddown_pow_of_two(1e9 / 50) = 2^24.
        assert_eq!(NANOSECOND_GRANULARITY, 16_777_216);
    }

    #[test]
    fn layout_is_big_endian_label_then_rounded_nanoseconds() {
        let stamp = Tai64n::from_unix(1_700_000_000, 123_456_789);
        let label = u64::from_be_bytes(stamp.0[..8].try_into().unwrap());
        let nanoseconds = u32::from_be_bytes(stamp.0[8..].try_into().unwrap());
        assert_eq!(label, 0x4000_0000_0000_000a + 1_700_000_000);
        assert_eq!(nanoseconds, 7 * 16_777_216, "123456789 rounded down to 2^24 steps");
        assert_eq!(Tai64n::from_unix(0, 0).0, [0x40, 0, 0, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0]);
    }

    #[test]
    fn clock_maps_instants_through_the_anchor() {
        let start = Instant::now();
        let wall = UNIX_EPOCH + Duration::new(1_000, 999_000_000);
        let clock = Tai64nClock::new(start, wall);
        assert_eq!(clock.timestamp(start), Tai64n::from_unix(1_000, 999_000_000));
        assert_eq!(
            clock.timestamp(start + Duration::from_millis(1)),
            Tai64n::from_unix(1_001, 0),
            "carries into the seconds"
        );
        assert_eq!(
            clock.timestamp(start + Duration::from_secs(3600)),
            Tai64n::from_unix(4_600, 999_000_000)
        );
    }

    #[test]
    fn timestamps_increase_exactly_when_time_moves_past_a_granule() {
        let start = Instant::now();
        let clock = Tai64nClock::new(start, UNIX_EPOCH + Duration::from_secs(1_000));
        let granule = Duration::from_nanos(NANOSECOND_GRANULARITY as u64);
        let first = clock.timestamp(start);
        assert_eq!(clock.timestamp(start + granule - Duration::from_nanos(1)), first);
        assert!(clock.timestamp(start + granule) > first);
        // The minimum interval between accepted initiations always crosses a granule.
        let interval = Duration::from_nanos(NSEC_PER_SEC / INITIATIONS_PER_SECOND);
        for step in 0..200u64 {
            let at = start + Duration::from_nanos(step * 7_919_993);
            assert!(clock.timestamp(at + interval) > clock.timestamp(at));
        }
    }

    #[test]
    fn wall_clock_before_the_epoch_is_still_ordered() {
        let start = Instant::now();
        let clock = Tai64nClock::new(start, UNIX_EPOCH - Duration::new(5, 500_000_000));
        let stamp = clock.timestamp(start);
        assert_eq!(stamp, Tai64n::from_unix(-6, 500_000_000));
        assert!(stamp < Tai64n::from_unix(0, 0));
        assert!(clock.timestamp(start + Duration::from_secs(10)) > Tai64n::from_unix(0, 0));
    }
}
