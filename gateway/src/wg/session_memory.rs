//! Where a session's shared counters live: the send nonce and the receive replay window.
//!
//! With the eBPF data plane on, they live in a slot of the `SESSIONS` map, mapped into our
//! address space, so the programs and the userspace path allocate nonces from, and accept
//! counters into, the same words. Without it they live on the heap. The protocol core sees
//! only [`CounterCell`]s and does not know which.

use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use gateway_common::maps::SessionCounters;

/// Memory for sessions' counters. `allocate` hands out zeroed counters.
pub trait SessionMemory: Send + Sync {
    fn allocate(&self) -> Option<CounterCell>;
}

/// One session's counters; returns its memory to where it came from when dropped.
pub struct CounterCell {
    counters: NonNull<SessionCounters>,
    origin: Origin,
}

enum Origin {
    Heap,
    Slot { slot: u32, pool: Arc<SlotPool> },
}

// SAFETY: SessionCounters is made of atomics and is only accessed through shared references;
// the pointee outlives the cell (heap: owned by it; slot: the pool keeps the mapping alive).
unsafe impl Send for CounterCell {}
unsafe impl Sync for CounterCell {}

impl CounterCell {
    pub fn on_heap() -> Self {
        // SAFETY: an all-zero SessionCounters is valid (atomics of zero): nonce 0, empty window.
        let boxed: Box<SessionCounters> = unsafe { Box::new(std::mem::zeroed()) };
        CounterCell { counters: NonNull::from(Box::leak(boxed)), origin: Origin::Heap }
    }

    /// The `SESSIONS` slot these counters occupy, when they live in the data plane's map.
    pub fn slot(&self) -> Option<u32> {
        match &self.origin {
            Origin::Heap => None,
            Origin::Slot { slot, .. } => Some(*slot),
        }
    }
}

impl std::ops::Deref for CounterCell {
    type Target = SessionCounters;
    fn deref(&self) -> &SessionCounters {
        // SAFETY: see the Send/Sync note above.
        unsafe { self.counters.as_ref() }
    }
}

impl Drop for CounterCell {
    fn drop(&mut self) {
        match &self.origin {
            // SAFETY: created by Box::leak in on_heap and never freed elsewhere.
            Origin::Heap => drop(unsafe { Box::from_raw(self.counters.as_ptr()) }),
            Origin::Slot { slot, pool } => pool.release(*slot),
        }
    }
}

impl std::fmt::Debug for CounterCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterCell").field("slot", &self.slot()).finish()
    }
}

/// Counters on the heap: the `--no-ebpf` configuration and the unit tests.
#[derive(Default)]
pub struct HeapMemory;

impl SessionMemory for HeapMemory {
    fn allocate(&self) -> Option<CounterCell> {
        Some(CounterCell::on_heap())
    }
}

/// Locates the counters of slot `i` inside some shared mapping, and keeps it alive.
pub trait SlotRegion: Send + Sync {
    fn capacity(&self) -> u32;
    /// # Safety contract for implementors
    /// The pointer must stay valid while the region lives and point to the counters of slot
    /// `slot` (< capacity), which nothing but atomics touches.
    fn counters(&self, slot: u32) -> NonNull<SessionCounters>;
}

/// Slots of a shared region, handed out first-freed-first-reused: a slot is reused as late
/// as possible, so an eBPF program still holding a retired slot's pointer meets a different
/// receiver index (and drops the packet) rather than a fresh session's keys.
pub struct SlotPool {
    region: Box<dyn SlotRegion>,
    free: Mutex<VecDeque<u32>>,
}

impl SlotPool {
    pub fn new(region: Box<dyn SlotRegion>) -> Arc<Self> {
        let free = (0..region.capacity()).collect();
        Arc::new(SlotPool { region, free: Mutex::new(free) })
    }

    fn release(&self, slot: u32) {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).push_back(slot);
    }

    pub fn available(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl SessionMemory for Arc<SlotPool> {
    fn allocate(&self) -> Option<CounterCell> {
        let slot = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop_front()?;
        let counters = self.region.counters(slot);
        // SAFETY: the region guarantees validity; the slot is ours until the cell drops.
        let shared = unsafe { counters.as_ref() };
        shared.send_nonce.store(0, std::sync::atomic::Ordering::Relaxed);
        shared.replay.reset();
        Some(CounterCell { counters, origin: Origin::Slot { slot, pool: Arc::clone(self) } })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    struct VecRegion(Box<[SessionCounters]>);
    impl SlotRegion for VecRegion {
        fn capacity(&self) -> u32 {
            self.0.len() as u32
        }
        fn counters(&self, slot: u32) -> NonNull<SessionCounters> {
            NonNull::from(&self.0[slot as usize])
        }
    }

    fn region(n: usize) -> Box<dyn SlotRegion> {
        let v: Vec<SessionCounters> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
        Box::new(VecRegion(v.into_boxed_slice()))
    }

    #[test]
    fn slots_are_reused_in_fifo_order_and_reset() {
        let pool = SlotPool::new(region(3));
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        assert_eq!((a.slot(), b.slot()), (Some(0), Some(1)));
        a.send_nonce.store(77, Ordering::Relaxed);
        assert_eq!(a.replay.accept(5), gateway_common::replay::Verdict::Accepted);
        drop(a);
        let c = pool.allocate().unwrap();
        assert_eq!(c.slot(), Some(2), "the freed slot waits behind the never-used one");
        let d = pool.allocate().unwrap();
        assert_eq!(d.slot(), Some(0));
        assert_eq!(d.send_nonce.load(Ordering::Relaxed), 0);
        assert_eq!(d.replay.check(5), gateway_common::replay::Verdict::Accepted);
        assert!(pool.allocate().is_none(), "full");
        drop((b, c, d));
        assert_eq!(pool.available(), 3);
    }

    #[test]
    fn heap_cells_are_independent() {
        let a = HeapMemory.allocate().unwrap();
        let b = HeapMemory.allocate().unwrap();
        a.send_nonce.fetch_add(3, Ordering::Relaxed);
        assert_eq!(b.send_nonce.load(Ordering::Relaxed), 0);
        assert_eq!(a.slot(), None);
    }
}
