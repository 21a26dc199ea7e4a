//! The per-source handshake rate limit applied under load (kernel `ratelimiter.c`): a token
//! bucket per IPv4 address or IPv6 /64, refilled at 20 packets a second with a burst of 5,
//! forgotten after a second without packets, in a table of bounded size.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const PACKETS_PER_SECOND: u64 = 20;
pub const PACKETS_BURSTABLE: u64 = 5;
/// Tokens are nanoseconds of allowance: one packet costs 1/20 s of it.
const PACKET_COST_NS: u64 = 1_000_000_000 / PACKETS_PER_SECOND;
const TOKEN_MAX_NS: u64 = PACKET_COST_NS * PACKETS_BURSTABLE;
/// Entries idle for longer than this are removed.
pub const ENTRY_IDLE_LIMIT: Duration = Duration::from_secs(1);
/// How often stale entries are swept, as the kernel's garbage-collection work runs.
const GC_INTERVAL: Duration = Duration::from_secs(1);
/// The kernel's table bound on machines with more than 1 GiB of memory (8192 buckets, 8
/// entries each).
pub const DEFAULT_MAX_ENTRIES: usize = 8192 * 8;

/// Sources are limited per IPv4 address and per IPv6 /64, so one host cannot dodge the limit
/// by cycling through the addresses of its subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SourceKey {
    V4(u32),
    V6Prefix(u64),
}

impl SourceKey {
    fn of(source: IpAddr) -> SourceKey {
        // A dual-stack socket reports IPv4 senders as v4-mapped IPv6 addresses.
        match source.to_canonical() {
            IpAddr::V4(address) => SourceKey::V4(address.to_bits()),
            IpAddr::V6(address) => SourceKey::V6Prefix((address.to_bits() >> 64) as u64),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    last_time: Instant,
    tokens_ns: u64,
}

#[derive(Debug)]
pub struct RateLimiter {
    buckets: HashMap<SourceKey, Bucket>,
    max_entries: usize,
    last_gc: Instant,
}

impl RateLimiter {
    pub fn new(now: Instant) -> RateLimiter {
        RateLimiter::with_max_entries(DEFAULT_MAX_ENTRIES, now)
    }

    pub fn with_max_entries(max_entries: usize, now: Instant) -> RateLimiter {
        RateLimiter { buckets: HashMap::new(), max_entries, last_gc: now }
    }

    /// Whether a handshake message from `source` may be processed at `now`. A source not yet
    /// in a full table is refused, as the kernel refuses when it cannot allocate an entry.
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        if now.saturating_duration_since(self.last_gc) >= GC_INTERVAL {
            self.collect_garbage(now);
        }
        let key = SourceKey::of(source);
        if let Some(bucket) = self.buckets.get_mut(&key) {
            let elapsed_ns = now.saturating_duration_since(bucket.last_time).as_nanos();
            let elapsed_ns = u64::try_from(elapsed_ns).unwrap_or(u64::MAX);
            let tokens_ns = bucket.tokens_ns.saturating_add(elapsed_ns).min(TOKEN_MAX_NS);
            bucket.last_time = now;
            let allowed = tokens_ns >= PACKET_COST_NS;
            bucket.tokens_ns = if allowed { tokens_ns - PACKET_COST_NS } else { tokens_ns };
            return allowed;
        }
        if self.buckets.len() >= self.max_entries {
            return false;
        }
        self.buckets
            .insert(key, Bucket { last_time: now, tokens_ns: TOKEN_MAX_NS - PACKET_COST_NS });
        true
    }

    /// Removes the entries idle for more than [`ENTRY_IDLE_LIMIT`]. [`RateLimiter::allow`]
    /// does this by itself once a second; callers may also run it from a timer.
    pub fn collect_garbage(&mut self, now: Instant) {
        self.buckets.retain(|_, bucket| {
            now.saturating_duration_since(bucket.last_time) <= ENTRY_IDLE_LIMIT
        });
        self.last_gc = now;
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.buckets.clear();
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const COST: Duration = Duration::from_nanos(PACKET_COST_NS);

    /// The kernel selftest's expected sequence: (result, time to advance before the packet).
    const EXPECTED: [(bool, Duration); 11] = [
        (true, Duration::ZERO),
        (true, Duration::ZERO),
        (true, Duration::ZERO),
        (true, Duration::ZERO),
        (true, Duration::ZERO),
        (false, Duration::ZERO),
        (true, COST),
        (false, Duration::ZERO),
        (true, Duration::from_nanos(PACKET_COST_NS * 2)),
        (true, Duration::ZERO),
        (false, Duration::ZERO),
    ];

    fn v4(bits: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from_bits(bits))
    }

    fn v6(words: [u32; 4]) -> IpAddr {
        let bits = words.iter().fold(0u128, |acc, word| (acc << 32) | *word as u128);
        IpAddr::V6(Ipv6Addr::from_bits(bits))
    }

    /// Port of selftest/ratelimiter.c `timings_test`, on virtual time: one IPv4 source and one
    /// IPv6 /64 (whose low 64 bits change every packet) follow the expected sequence, while a
    /// different source tried between them is always allowed.
    #[test]
    fn kernel_selftest_timings() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(start);
        let mut now = start;
        let base_v4 = 8182u32;
        for (i, (expected, sleep)) in EXPECTED.into_iter().enumerate() {
            let i = i as u32;
            now += sleep;
            assert_eq!(limiter.allow(v4(base_v4), now), expected, "IPv4 packet {i}");
            assert!(limiter.allow(v4(base_v4 + i + 1), now), "other IPv4 source {i}");

            let same_prefix = v6([1212, 289188, i, i]);
            assert_eq!(limiter.allow(same_prefix, now), expected, "IPv6 packet {i}");
            let other_prefix = v6([1212 + i + 1, 289188, i, i]);
            assert!(limiter.allow(other_prefix, now), "other IPv6 prefix {i}");
        }
    }

    /// Port of `capacity_test`: the table takes exactly `max_entries` sources.
    #[test]
    fn kernel_selftest_capacity() {
        let now = Instant::now();
        let max_entries = 1024;
        let mut limiter = RateLimiter::with_max_entries(max_entries, now);
        for i in 0..=max_entries as u32 {
            assert_eq!(limiter.allow(v4(i), now), i != max_entries as u32, "source {i}");
        }
        assert_eq!(limiter.len(), max_entries);
        assert!(limiter.allow(v4(0), now), "known sources keep their buckets when full");
    }

    #[test]
    fn idle_entries_are_collected_and_make_room() {
        let start = Instant::now();
        let mut limiter = RateLimiter::with_max_entries(2, start);
        assert!(limiter.allow(v4(1), start));
        assert!(limiter.allow(v4(2), start + Duration::from_millis(500)));
        assert!(!limiter.allow(v4(3), start + Duration::from_millis(900)));
        // At 1.2 s the sweep removes source 1 (idle 1.2 s) but keeps source 2 (idle 0.7 s).
        assert!(limiter.allow(v4(3), start + Duration::from_millis(1200)));
        assert_eq!(limiter.len(), 2);
        limiter.collect_garbage(start + Duration::from_millis(1500));
        assert_eq!(limiter.len(), 2, "idle for exactly one second is kept, as in the kernel");
        limiter.collect_garbage(start + Duration::from_millis(2300));
        assert!(limiter.is_empty());
    }

    #[test]
    fn a_forgotten_source_starts_with_a_full_burst() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(start);
        let source = v4(0x0a00_0001);
        for _ in 0..PACKETS_BURSTABLE {
            assert!(limiter.allow(source, start));
        }
        assert!(!limiter.allow(source, start));
        let later = start + Duration::from_secs(3);
        for _ in 0..PACKETS_BURSTABLE {
            assert!(limiter.allow(source, later));
        }
        assert!(!limiter.allow(source, later));
    }

    #[test]
    fn steady_rate_is_twenty_per_second() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(start);
        let source = v6([0x2001_0db8, 1, 2, 3]);
        let step = Duration::from_millis(10);
        let allowed = (0..200).filter(|tick| limiter.allow(source, start + step * *tick)).count();
        // Two seconds at 100 attempts/s: the burst of 5 plus 20/s refill over 1.99 s.
        assert_eq!(allowed, 5 + 39);
    }

    #[test]
    fn v4_mapped_v6_counts_as_the_v4_source() {
        let now = Instant::now();
        let mut limiter = RateLimiter::new(now);
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        for _ in 0..PACKETS_BURSTABLE {
            assert!(limiter.allow(mapped, now));
        }
        assert!(!limiter.allow(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), now));
    }
}
