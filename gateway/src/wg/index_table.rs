//! Our receiver indexes: random 32-bit values, unique across the device, each naming either
//! a handshake in progress or a keypair (the kernel's `index_hashtable`).

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use rand_core::RngCore;

use super::PeerId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexKind {
    Handshake,
    Keypair,
}

#[derive(Default, Debug)]
pub struct IndexTable {
    entries: HashMap<u32, (PeerId, IndexKind)>,
}

impl IndexTable {
    /// A fresh random index for a handshake of `peer`.
    pub fn insert_handshake(&mut self, peer: PeerId, rng: &mut dyn RngCore) -> u32 {
        loop {
            let index = rng.next_u32();
            if let Entry::Vacant(v) = self.entries.entry(index) {
                v.insert((peer, IndexKind::Handshake));
                return index;
            }
        }
    }

    /// A completed handshake's index now names its keypair (the kernel's
    /// `wg_index_hashtable_replace`).
    pub fn promote_to_keypair(&mut self, index: u32) {
        if let Some(entry) = self.entries.get_mut(&index) {
            entry.1 = IndexKind::Keypair;
        }
    }

    pub fn lookup(&self, index: u32, kind: IndexKind) -> Option<PeerId> {
        self.entries.get(&index).filter(|e| e.1 == kind).map(|e| e.0)
    }

    /// Either kind: what a cookie reply may refer to.
    pub fn lookup_any(&self, index: u32) -> Option<PeerId> {
        self.entries.get(&index).map(|e| e.0)
    }

    pub fn remove(&mut self, index: u32) {
        self.entries.remove(&index);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns the same value twice, then counts up: forces a collision.
    struct Repeating(u32, bool);
    impl RngCore for Repeating {
        fn next_u32(&mut self) -> u32 {
            if self.1 {
                self.0 += 1;
            }
            self.1 = true;
            self.0
        }
        fn next_u64(&mut self) -> u64 {
            u64::from(self.next_u32())
        }
        fn fill_bytes(&mut self, d: &mut [u8]) {
            d.fill(0)
        }
        fn try_fill_bytes(&mut self, d: &mut [u8]) -> Result<(), rand_core::Error> {
            d.fill(0);
            Ok(())
        }
    }

    #[test]
    fn indexes_are_unique_and_typed() {
        let mut t = IndexTable::default();
        let a = t.insert_handshake(PeerId(1), &mut Repeating(7, false));
        let b = t.insert_handshake(PeerId(2), &mut Repeating(7, false));
        assert_eq!(a, 7);
        assert_eq!(b, 8, "a collision draws again");
        assert_eq!(t.lookup(a, IndexKind::Handshake), Some(PeerId(1)));
        assert_eq!(t.lookup(a, IndexKind::Keypair), None);
        t.promote_to_keypair(a);
        assert_eq!(t.lookup(a, IndexKind::Keypair), Some(PeerId(1)));
        assert_eq!(t.lookup_any(b), Some(PeerId(2)));
        t.remove(a);
        assert_eq!(t.lookup_any(a), None);
        assert_eq!(t.len(), 1);
    }
}
