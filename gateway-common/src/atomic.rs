//! A 64-bit atomic both planes can use on the same memory.
//!
//! The `bpfel-unknown-none` target declares no compare-and-swap support (`atomic-cas: false`),
//! so `core::sync::atomic::AtomicU64` offers only `load` and `store` there, even though the BPF
//! instruction set (with `-C target-cpu=v3`) has `BPF_ATOMIC | BPF_FETCH` add and `BPF_CMPXCHG`.
//! [`SharedU64`] has the same layout and method names as `AtomicU64`; on the host it is exactly
//! that type, on BPF its read-modify-write operations go through the compiler's atomic
//! intrinsics, which LLVM lowers to those instructions.

use core::sync::atomic::{AtomicU64, Ordering};

#[repr(transparent)]
#[derive(Default)]
pub struct SharedU64(AtomicU64);

impl SharedU64 {
    pub const fn new(value: u64) -> Self {
        SharedU64(AtomicU64::new(value))
    }

    /// The underlying word, for callers that need its address.
    #[inline(always)]
    pub fn as_ptr(&self) -> *mut u64 {
        self.0.as_ptr()
    }
}

#[cfg(not(target_arch = "bpf"))]
impl SharedU64 {
    #[inline(always)]
    pub fn load(&self, order: Ordering) -> u64 {
        self.0.load(order)
    }

    #[inline(always)]
    pub fn store(&self, value: u64, order: Ordering) {
        self.0.store(value, order)
    }

    #[inline(always)]
    pub fn fetch_add(&self, value: u64, order: Ordering) -> u64 {
        self.0.fetch_add(value, order)
    }

    #[inline(always)]
    pub fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        self.0.compare_exchange(current, new, success, failure)
    }
}

/// On BPF, loads and stores are plain 64-bit accesses whatever `order` says: the BPF backend
/// cannot select acquire loads or release stores before `-mcpu=v4`, and an aligned 64-bit
/// access is single-copy atomic. On x86 (TSO) the JIT's plain moves already have acquire and
/// release semantics; weaker architectures rely on the read-modify-write instructions, which
/// are full barriers.
#[cfg(target_arch = "bpf")]
impl SharedU64 {
    #[inline(always)]
    pub fn load(&self, _order: Ordering) -> u64 {
        // SAFETY: an aligned word of a live `&self`.
        unsafe { core::ptr::read_volatile(self.as_ptr()) }
    }

    #[inline(always)]
    pub fn store(&self, value: u64, _order: Ordering) {
        // SAFETY: as in `load`.
        unsafe { core::ptr::write_volatile(self.as_ptr(), value) }
    }

    /// Sequentially consistent whatever `order` says: BPF atomic instructions are full
    /// barriers on every JIT, and the intrinsic's ordering is a compile-time constant.
    #[inline(always)]
    pub fn fetch_add(&self, value: u64, _order: Ordering) -> u64 {
        use core::intrinsics::{AtomicOrdering, atomic_xadd};
        // SAFETY: the pointer comes from a live `&self`; the word is only ever accessed
        // atomically.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(self.as_ptr(), value) }
    }

    /// See [`fetch_add`](Self::fetch_add) about ordering.
    #[inline(always)]
    pub fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        _success: Ordering,
        _failure: Ordering,
    ) -> Result<u64, u64> {
        use core::intrinsics::{AtomicOrdering, atomic_cxchg};
        // SAFETY: as in `fetch_add`.
        let (previous, swapped) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                self.as_ptr(),
                current,
                new,
            )
        };
        if swapped { Ok(previous) } else { Err(previous) }
    }
}
