//! Free-slot bookkeeping for the shared arrays. Freed slots are reused in FIFO order, so a
//! slot that was just retired is the last to be handed out again: a program still holding
//! its old contents sees a different receiver index by the time it is reused.

use std::collections::VecDeque;

use super::error::{DataplaneError, Result};

pub struct SlotAllocator {
    free: VecDeque<u32>,
    used: Vec<bool>,
}

impl SlotAllocator {
    pub fn new(entries: u32) -> Self {
        SlotAllocator { free: (0..entries).collect(), used: vec![false; entries as usize] }
    }

    pub fn allocate(&mut self, what: &'static str) -> Result<u32> {
        let slot = self.free.pop_front().ok_or(DataplaneError::Full(what))?;
        self.used[slot as usize] = true;
        Ok(slot)
    }

    pub fn is_used(&self, slot: u32) -> bool {
        self.used.get(slot as usize).copied().unwrap_or(false)
    }

    pub fn release(&mut self, slot: u32, what: &str) -> Result<()> {
        match self.used.get_mut(slot as usize) {
            Some(used) if *used => {
                *used = false;
                self.free.push_back(slot);
                Ok(())
            }
            _ => Err(DataplaneError::Invalid(format!("{what} slot {slot} is not in use"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_freed_slots_last() {
        let mut a = SlotAllocator::new(3);
        let s0 = a.allocate("x").unwrap();
        let s1 = a.allocate("x").unwrap();
        a.release(s0, "x").unwrap();
        assert_eq!(a.allocate("x").unwrap(), 2);
        assert_eq!(a.allocate("x").unwrap(), s0);
        assert!(matches!(a.allocate("x"), Err(DataplaneError::Full("x"))));
        assert!(a.is_used(s1));
        assert!(a.release(7, "x").is_err());
        a.release(s1, "x").unwrap();
        assert!(a.release(s1, "x").is_err(), "double release");
    }
}
