//! `std::time::Instant` ⇄ CLOCK_MONOTONIC nanoseconds (what `bpf_ktime_get_ns` returns and
//! the maps store). On Linux, `Instant` reads CLOCK_MONOTONIC, so one reference pair taken
//! once converts every later instant exactly.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

struct Reference {
    instant: Instant,
    monotonic_ns: u64,
}

fn reference() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let instant = Instant::now();
        Reference { instant, monotonic_ns: monotonic_now_ns() }
    })
}

/// CLOCK_MONOTONIC now, in nanoseconds.
pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The CLOCK_MONOTONIC time of `t`, in nanoseconds.
pub fn instant_to_monotonic_ns(t: Instant) -> u64 {
    let r = reference();
    if t >= r.instant {
        r.monotonic_ns.saturating_add((t - r.instant).as_nanos() as u64)
    } else {
        r.monotonic_ns.saturating_sub((r.instant - t).as_nanos() as u64)
    }
}

/// The `Instant` of a CLOCK_MONOTONIC time in nanoseconds (0 means never: None).
pub fn monotonic_ns_to_instant(ns: u64) -> Option<Instant> {
    if ns == 0 {
        return None;
    }
    let r = reference();
    if ns >= r.monotonic_ns {
        r.instant.checked_add(Duration::from_nanos(ns - r.monotonic_ns))
    } else {
        r.instant.checked_sub(Duration::from_nanos(r.monotonic_ns - ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_round_trip_and_track_the_monotonic_clock() {
        let now = Instant::now();
        let ns = instant_to_monotonic_ns(now);
        let direct = monotonic_now_ns();
        // Both read the same clock within this test's runtime.
        assert!(direct >= ns && direct - ns < 1_000_000_000, "{direct} vs {ns}");
        let back = monotonic_ns_to_instant(ns).unwrap();
        let diff = if back > now { back - now } else { now - back };
        assert!(diff < Duration::from_micros(1), "{diff:?}");
        let earlier = now - Duration::from_secs(3);
        assert_eq!(instant_to_monotonic_ns(earlier), ns - 3_000_000_000);
        assert_eq!(monotonic_ns_to_instant(0), None);
    }
}
