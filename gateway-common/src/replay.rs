//! The receive anti-replay window, shared by the eBPF programs and the userspace path.
//!
//! One window per session lives in memory both sides map (the sessions array is
//! `BPF_F_MMAPABLE`), and several CPUs may receive for one session at once, so the window is
//! lock-free: every update is an atomic compare-and-swap, with a bounded number of retries
//! (the verifier accepts no unbounded loop).
//!
//! Semantics are the kernel's (`counter_validate` in `receive.c`): a counter is accepted at
//! most once, and only if it is less than [`REPLAY_WINDOW`] below the highest counter accepted
//! so far. The kernel keeps a bitmap of 8192 bits beside the highest counter and clears the
//! words it slides over; clearing cannot be done atomically with the sliding, so here each
//! 64-bit slot carries its own tag instead: the high 32 bits name which block of 32 counters the
//! slot describes, the low 32 bits are that block's bitmap. 256 slots × 32 bits = 8192 bits.
//!
//! Why a slot whose tag differs can be reclaimed: an accepting CPU raises the highest counter
//! *before* it writes a slot. So if, after raising it, the counter being accepted is still
//! inside the window, no newer block (one 256 blocks = 8192 counters ahead, outside any window
//! that contains this counter) can have been written to its slot or be about to be: the slot
//! holds an older block, whose counters have all left the window.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::atomic;
use crate::wire::{REJECT_AFTER_MESSAGES, REPLAY_WINDOW};

const SLOT_COUNT: usize = 256;
const COUNTERS_PER_SLOT: u64 = 32;
/// Compare-and-swap retries before giving up on a packet (it is then dropped, as a replay
/// would be). Each retry means another CPU changed the same word in between.
const CAS_RETRIES: u32 = 8;

#[repr(C)]
pub struct ReplayWindow {
    /// One more than the highest counter accepted so far; 0 when none was.
    next: AtomicU64,
    slots: [AtomicU64; SLOT_COUNT],
}

/// What [`ReplayWindow::accept`] decided, so that callers can count the reasons.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    Accepted,
    /// Seen before, or too far below the highest accepted counter.
    Replayed,
    /// At or beyond REJECT_AFTER_MESSAGES: the session must not be used any more.
    Exhausted,
    /// Lost too many races for one word; dropped rather than risk accepting twice.
    Contended,
}

#[inline(always)]
fn block_tag(counter: u64) -> u64 {
    (counter / COUNTERS_PER_SLOT) & 0xffff_ffff
}

#[inline(always)]
fn slot_index(counter: u64) -> usize {
    ((counter / COUNTERS_PER_SLOT) as usize) & (SLOT_COUNT - 1)
}

#[inline(always)]
fn bit(counter: u64) -> u64 {
    1u64 << (counter % COUNTERS_PER_SLOT)
}

/// Whether the counter's bit is set in a slot that describes the counter's block.
#[inline(always)]
fn seen(word: u64, counter: u64) -> bool {
    word >> 32 == block_tag(counter) && word & bit(counter) != 0
}

impl ReplayWindow {
    /// Resets the window in place: for a slot being handed to a new session.
    pub fn reset(&self) {
        self.next.store(0, Ordering::Relaxed);
        let mut i = 0;
        while i < SLOT_COUNT {
            self.slots[i].store(0, Ordering::Relaxed);
            i += 1;
        }
    }

    #[inline(always)]
    fn in_window(&self, counter: u64) -> Result<(), Verdict> {
        if counter >= REJECT_AFTER_MESSAGES {
            return Err(Verdict::Exhausted);
        }
        let next = self.next.load(Ordering::Acquire);
        if next > REJECT_AFTER_MESSAGES {
            return Err(Verdict::Exhausted);
        }
        if REPLAY_WINDOW + counter + 1 < next {
            return Err(Verdict::Replayed);
        }
        Ok(())
    }

    /// Read-only check, done before authenticating a packet to skip the work for replays.
    /// Only [`accept`](Self::accept), after authentication, changes the window.
    #[inline(always)]
    pub fn check(&self, counter: u64) -> Verdict {
        if let Err(v) = self.in_window(counter) {
            return v;
        }
        if seen(self.slots[slot_index(counter)].load(Ordering::Relaxed), counter) {
            return Verdict::Replayed;
        }
        Verdict::Accepted
    }

    /// Marks `counter` as received if it was not, and reports whether it was new. Call only
    /// for authenticated packets.
    #[inline(always)]
    pub fn accept(&self, counter: u64) -> Verdict {
        if let Err(v) = self.in_window(counter) {
            return v;
        }
        if !self.raise_next(counter + 1) {
            return Verdict::Contended;
        }
        let slot = &self.slots[slot_index(counter)];
        let mut word = slot.load(Ordering::Acquire);
        let mut tries = 0;
        while tries < CAS_RETRIES {
            // Re-checked each time round: another CPU may have slid the window since.
            if let Err(v) = self.in_window(counter) {
                return v;
            }
            let new = if word >> 32 == block_tag(counter) {
                if word & bit(counter) != 0 {
                    return Verdict::Replayed;
                }
                word | bit(counter)
            } else {
                (block_tag(counter) << 32) | bit(counter)
            };
            match atomic::compare_exchange(slot, word, new) {
                Ok(_) => return Verdict::Accepted,
                Err(current) => word = current,
            }
            tries += 1;
        }
        Verdict::Contended
    }

    /// Raises the highest-counter mark to at least `candidate`; false if it lost every race.
    #[inline(always)]
    fn raise_next(&self, candidate: u64) -> bool {
        let mut next = self.next.load(Ordering::Acquire);
        let mut tries = 0;
        while tries < CAS_RETRIES {
            if next >= candidate {
                return true;
            }
            match atomic::compare_exchange(&self.next, next, candidate) {
                Ok(_) => return true,
                Err(current) => next = current,
            }
            tries += 1;
        }
        next >= candidate
    }

    /// One more than the highest counter accepted so far.
    pub fn next_expected(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::boxed::Box;
    use std::sync::Arc;
    use std::vec::Vec;

    use super::*;

    fn window() -> Box<ReplayWindow> {
        // SAFETY: all-zero bytes are a valid ReplayWindow (atomics of 0): the empty window.
        unsafe { Box::new(core::mem::zeroed()) }
    }

    /// The kernel's `counter_validate` as a plain sequential reference model.
    struct KernelCounter {
        counter: u64,
        backtrack: [u64; 128],
    }

    impl KernelCounter {
        fn new() -> Self {
            KernelCounter { counter: 0, backtrack: [0; 128] }
        }
        fn validate(&mut self, their: u64) -> bool {
            if self.counter > REJECT_AFTER_MESSAGES || their >= REJECT_AFTER_MESSAGES {
                return false;
            }
            let their = their + 1;
            if REPLAY_WINDOW + their < self.counter {
                return false;
            }
            let index = their >> 6;
            if their > self.counter {
                let index_current = self.counter >> 6;
                let top = core::cmp::min(index - index_current, 128);
                for i in 1..=top {
                    self.backtrack[((i + index_current) & 127) as usize] = 0;
                }
                self.counter = their;
            }
            let word = &mut self.backtrack[(index & 127) as usize];
            let b = 1u64 << (their & 63);
            let seen = *word & b != 0;
            *word |= b;
            !seen
        }
    }

    /// The sequence of the kernel's own selftest (`selftest/counter.c`).
    #[test]
    fn kernel_selftest_sequence() {
        let w = window();
        let t = |n: u64, v: bool| assert_eq!(w.accept(n) == Verdict::Accepted, v, "counter {n}");
        // The selftest's T_LIM.
        const W: u64 = REPLAY_WINDOW + 1;
        t(0, true);
        t(1, true);
        t(1, false);
        t(9, true);
        t(8, true);
        t(7, true);
        t(7, false);
        t(W, true);
        t(W - 1, true);
        t(W - 1, false);
        t(W - 2, true);
        t(2, true);
        t(2, false);
        t(W + 16, true);
        t(3, false);
        t(W + 16, false);
        t(W * 4, true);
        t(W * 4 - (W - 1), true);
        t(10, false);
        t(W * 4 - W, false);
        t(W * 4 - (W + 1), false);
        t(W * 4 - (W - 2), true);
        t(W * 4 + 1 - W, false);
        t(0, false);
        t(REJECT_AFTER_MESSAGES, false);
        t(REJECT_AFTER_MESSAGES - 1, true);
        t(REJECT_AFTER_MESSAGES, false);
        t(REJECT_AFTER_MESSAGES - 1, false);
        t(REJECT_AFTER_MESSAGES - 2, true);
        t(REJECT_AFTER_MESSAGES + 1, false);
        t(REJECT_AFTER_MESSAGES + 2, false);
        t(REJECT_AFTER_MESSAGES - 2, false);
        t(REJECT_AFTER_MESSAGES - 3, true);
        t(0, false);
    }

    #[test]
    fn kernel_selftest_bulk() {
        const W: u64 = REPLAY_WINDOW;
        let ok = |w: &ReplayWindow, n: u64, v: bool| {
            assert_eq!(w.accept(n) == Verdict::Accepted, v, "counter {n}");
        };

        let w = window();
        (1..=W).for_each(|i| ok(&w, i, true));
        ok(&w, 0, true);
        ok(&w, 0, false);

        let w = window();
        (2..=W + 1).for_each(|i| ok(&w, i, true));
        ok(&w, 1, true);
        ok(&w, 0, false);

        let w = window();
        (0..=W).rev().for_each(|i| ok(&w, i, true));

        let w = window();
        (1..=W + 1).rev().for_each(|i| ok(&w, i, true));
        ok(&w, 0, false);

        let w = window();
        (1..=W).rev().for_each(|i| ok(&w, i, true));
        ok(&w, W + 1, true);
        ok(&w, 0, false);

        let w = window();
        (1..=W).rev().for_each(|i| ok(&w, i, true));
        ok(&w, 0, true);
        ok(&w, W + 1, true);
    }

    #[test]
    fn matches_kernel_on_random_walks() {
        let mut seed = 0x243f_6a88_85a3_08d3u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..200 {
            let w = window();
            let mut k = KernelCounter::new();
            let mut top = 0u64;
            for _ in 0..2000 {
                let r = rnd();
                let c = match r % 8 {
                    0 => top + (r >> 8) % 20_000,
                    1..=4 => top.saturating_sub((r >> 8) % 9000),
                    5 => top + (r >> 8) % 40,
                    6 => (r >> 8) % (top + 1),
                    _ => top,
                };
                top = top.max(c);
                let ours = w.accept(c) == Verdict::Accepted;
                assert_eq!(ours, k.validate(c), "round {round} counter {c} top {top}");
            }
        }
    }

    #[test]
    fn check_is_read_only_and_agrees() {
        let w = window();
        assert_eq!(w.check(5), Verdict::Accepted);
        assert_eq!(w.check(5), Verdict::Accepted);
        assert_eq!(w.accept(5), Verdict::Accepted);
        assert_eq!(w.check(5), Verdict::Replayed);
        assert_eq!(w.accept(20_000), Verdict::Accepted);
        assert_eq!(w.check(6), Verdict::Replayed);
        assert_eq!(w.check(20_000 - REPLAY_WINDOW), Verdict::Accepted);
        assert_eq!(w.check(REJECT_AFTER_MESSAGES), Verdict::Exhausted);
    }

    #[test]
    fn concurrent_receivers_accept_each_counter_once() {
        const THREADS: usize = 4;
        const COUNTERS: u64 = 200_000;
        let w: Arc<ReplayWindow> = Arc::from(window());
        let accepted: Vec<Vec<u64>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let w = &w;
                    s.spawn(move || {
                        // Every thread offers every counter, each in a slightly different
                        // order, as CPUs receiving duplicated or reordered traffic would.
                        let mut mine = Vec::new();
                        for c in 0..COUNTERS {
                            let c = c ^ (t as u64 & 3);
                            loop {
                                match w.accept(c) {
                                    Verdict::Accepted => {
                                        mine.push(c);
                                        break;
                                    }
                                    Verdict::Contended => continue,
                                    _ => break,
                                }
                            }
                        }
                        mine
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all: Vec<u64> = accepted.into_iter().flatten().collect();
        let total = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), total, "a counter was accepted twice");
        assert_eq!(w.next_expected(), COUNTERS);
        // In-order offers from every thread: nothing within the window may be lost.
        assert_eq!(total as u64, COUNTERS);
    }
}
