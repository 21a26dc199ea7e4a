//! The few atomic read-modify-write operations the shared counters need, on both targets.
//!
//! The `bpfel` target spec declares no compare-and-swap (`atomic-cas: false`), so
//! `AtomicU64::compare_exchange` and `fetch_*` do not exist there, although the BPF ISA has
//! them from v3 on (`BPF_ATOMIC` with `BPF_FETCH`/`BPF_CMPXCHG`) and LLVM emits them. On BPF these
//! functions go through the compiler intrinsics; elsewhere through `AtomicU64`.

use core::sync::atomic::AtomicU64;
#[cfg(not(target_arch = "bpf"))]
use core::sync::atomic::Ordering;

#[cfg(target_arch = "bpf")]
use core::intrinsics::{AtomicOrdering::SeqCst, atomic_cxchg, atomic_or, atomic_xadd};

/// Compare-and-swap: `Ok(previous)` if `current` was replaced by `new`, else `Err(actual)`.
#[inline(always)]
pub fn compare_exchange(a: &AtomicU64, current: u64, new: u64) -> Result<u64, u64> {
    #[cfg(target_arch = "bpf")]
    {
        // SAFETY: `as_ptr` points to a live, aligned u64 only ever accessed atomically.
        let (prev, ok) =
            unsafe { atomic_cxchg::<u64, { SeqCst }, { SeqCst }>(a.as_ptr(), current, new) };
        if ok { Ok(prev) } else { Err(prev) }
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        a.compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
    }
}

/// Adds and returns the previous value.
#[inline(always)]
pub fn fetch_add(a: &AtomicU64, v: u64) -> u64 {
    #[cfg(target_arch = "bpf")]
    {
        // SAFETY: as above.
        unsafe { atomic_xadd::<u64, u64, { SeqCst }>(a.as_ptr(), v) }
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        a.fetch_add(v, Ordering::AcqRel)
    }
}

/// Ors in bits and returns the previous value.
#[inline(always)]
pub fn fetch_or(a: &AtomicU64, v: u64) -> u64 {
    #[cfg(target_arch = "bpf")]
    {
        // SAFETY: as above.
        unsafe { atomic_or::<u64, u64, { SeqCst }>(a.as_ptr(), v) }
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        a.fetch_or(v, Ordering::AcqRel)
    }
}
