//! Where a session's shared counters live: the send nonce and the receive replay window.
//!
//! With the eBPF data plane on, they live in a slot of the `SESSIONS` map, mapped into our
//! address space, so the programs and the userspace path allocate nonces from, and accept
//! counters into, the same words. Without it they live on the heap. The protocol core sees
//! only [`CounterCell`]s and does not know which; the slots are the data plane's to hand out
//! (`dataplane::SlotPool`), through [`SessionMemory`] and [`SharedSlots`].

use std::ptr::NonNull;
use std::sync::Arc;

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
    Slot { slot: u32, home: Arc<dyn SharedSlots> },
}

/// Where shared slots come from, and go back to when their session is dropped.
pub trait SharedSlots: Send + Sync {
    fn release(&self, slot: u32);
}

// SAFETY: SessionCounters is made of atomics and is only accessed through shared references;
// the pointee outlives the cell (heap: owned by it; slot: its home keeps the mapping alive).
unsafe impl Send for CounterCell {}
unsafe impl Sync for CounterCell {}

impl CounterCell {
    pub fn on_heap() -> Self {
        // SAFETY: an all-zero SessionCounters is valid (atomics of zero): nonce 0, empty window.
        let boxed: Box<SessionCounters> = unsafe { Box::new(std::mem::zeroed()) };
        CounterCell { counters: NonNull::from(Box::leak(boxed)), origin: Origin::Heap }
    }

    /// The counters of a shared slot, handed back to `home` when the cell drops.
    ///
    /// # Safety
    /// `counters` must stay valid while `home` lives, and be touched by nothing but atomics;
    /// the slot must be the caller's alone until `home.release(slot)`.
    pub unsafe fn in_slot(
        counters: NonNull<SessionCounters>,
        slot: u32,
        home: Arc<dyn SharedSlots>,
    ) -> Self {
        CounterCell { counters, origin: Origin::Slot { slot, home } }
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
            Origin::Slot { slot, home } => home.release(*slot),
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    #[test]
    fn heap_cells_are_independent() {
        let a = HeapMemory.allocate().unwrap();
        let b = HeapMemory.allocate().unwrap();
        a.send_nonce.fetch_add(3, Ordering::Relaxed);
        assert_eq!(b.send_nonce.load(Ordering::Relaxed), 0);
        assert_eq!(a.slot(), None);
    }
}
