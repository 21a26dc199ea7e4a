//! The slots of `SESSIONS`, handed to the protocol core as memory for its sessions'
//! counters. The pool lives on the data plane's side of the seam: the core only asks for
//! counters (`SessionMemory`) and gives them back by dropping them (`SharedSlots`); which
//! slot a session got, it reports in its view, and the mirror publishes it there.

use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use gateway_common::maps::SessionCounters;

use crate::wg::session_memory::{CounterCell, SessionMemory, SharedSlots};

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

    pub fn available(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl SharedSlots for SlotPool {
    fn release(&self, slot: u32) {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).push_back(slot);
    }
}

impl SessionMemory for Arc<SlotPool> {
    fn allocate(&self) -> Option<CounterCell> {
        let slot = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop_front()?;
        let counters = self.region.counters(slot);
        // SAFETY: the region guarantees validity; the slot is ours until the cell drops.
        let shared = unsafe { counters.as_ref() };
        shared.send_nonce.store(0, Ordering::Relaxed);
        shared.replay.reset();
        let home: Arc<dyn SharedSlots> = Arc::clone(self) as Arc<dyn SharedSlots>;
        // SAFETY: as above; the pool (the cell's home) keeps the region alive.
        Some(unsafe { CounterCell::in_slot(counters, slot, home) })
    }
}

/// Slots on the heap: a pool to drive the core and the mirror in unit tests.
#[cfg(test)]
pub(crate) struct HeapRegion(Box<[SessionCounters]>);

#[cfg(test)]
impl HeapRegion {
    pub(crate) fn pool(slots: usize) -> Arc<SlotPool> {
        // SAFETY: all-zero SessionCounters are valid: nonce 0, an empty window.
        let v: Vec<SessionCounters> = (0..slots).map(|_| unsafe { std::mem::zeroed() }).collect();
        SlotPool::new(Box::new(HeapRegion(v.into_boxed_slice())))
    }
}

#[cfg(test)]
impl SlotRegion for HeapRegion {
    fn capacity(&self) -> u32 {
        self.0.len() as u32
    }
    fn counters(&self, slot: u32) -> NonNull<SessionCounters> {
        NonNull::from(&self.0[slot as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_in_fifo_order_and_reset() {
        let pool = HeapRegion::pool(3);
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
}
