//! How fast the CPUs run right now, relative to the fastest this run has seen. On a virtual
//! machine the host's other tenants can slow the vCPUs down (here by up to 1.6× for minutes,
//! and more for tens of milliseconds, with no steal time reported and the guest idle), which no
//! load figure inside the guest shows: a fixed piece of arithmetic, timed on each CPU in turn,
//! does. Single probes are noisy at that timescale; the caller compares one before and one
//! after a repetition and only believes a slowdown both show.

use std::hint::black_box;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

/// Iterations of the probe's dependency chain: about 4 ms here (in a debug build).
const ITERATIONS: u64 = 600_000;
/// Probes per CPU; the fastest counts, so a momentary hiccup is not taken for a slow CPU.
const PROBES_PER_CPU: usize = 5;

/// The fastest probe of the run, in nanoseconds (as f64 bits; 0 before the first).
static FASTEST: AtomicU64 = AtomicU64::new(0);

/// The slowest CPU's time for the probe divided by the fastest time seen in this run (≥ 1.0).
pub fn slowdown() -> Result<f64> {
    let slowest = slowest_cpu()?.as_nanos() as f64;
    let mut fastest = f64::from_bits(FASTEST.load(Ordering::Relaxed));
    if fastest == 0.0 || slowest < fastest {
        FASTEST.store(slowest.to_bits(), Ordering::Relaxed);
        fastest = slowest;
    }
    Ok(slowest / fastest)
}

/// Times the probe pinned to each CPU this process may use (the best of a few runs on each);
/// returns the longest.
fn slowest_cpu() -> Result<Duration> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it (0: this thread).
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    if unsafe { libc::sched_getaffinity(0, size, &mut allowed) } != 0 {
        return Err(io::Error::last_os_error()).context("sched_getaffinity");
    }
    let mut slowest = Duration::ZERO;
    for cpu in 0..libc::CPU_SETSIZE as usize {
        // SAFETY: `cpu` is below CPU_SETSIZE.
        if !unsafe { libc::CPU_ISSET(cpu, &allowed) } {
            continue;
        }
        // SAFETY: as above; a set with one CPU.
        let mut only: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(cpu, &mut only) };
        if unsafe { libc::sched_setaffinity(0, size, &only) } != 0 {
            continue;
        }
        let fastest_here = (0..PROBES_PER_CPU).map(|_| time_probe()).min().unwrap_or_default();
        slowest = slowest.max(fastest_here);
    }
    // SAFETY: restores the mask read above.
    if unsafe { libc::sched_setaffinity(0, size, &allowed) } != 0 {
        return Err(io::Error::last_os_error()).context("restoring the CPU affinity");
    }
    Ok(slowest)
}

/// A serial chain of multiplications and shifts: nothing to overlap, nothing in memory.
fn time_probe() -> Duration {
    let started = Instant::now();
    let mut state = black_box(0x9e37_79b9_7f4a_7c15_u64);
    for _ in 0..black_box(ITERATIONS) {
        state ^= state << 13;
        state ^= state >> 7;
        state = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
    }
    black_box(state);
    started.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowdown_is_relative_to_the_fastest_probe() {
        let first = slowdown().unwrap();
        let second = slowdown().unwrap();
        assert!(first >= 1.0 && second >= 1.0, "{first} {second}");
    }
}
