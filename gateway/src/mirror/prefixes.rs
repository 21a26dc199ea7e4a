//! AllowedIPs as published: which peer each prefix leads to in the LPM tries. As in the
//! kernel, a prefix belongs to one peer at a time: giving it to another moves it.

use std::collections::{BTreeSet, HashMap};

use ipnet::IpNet;

use super::MapOps;
use crate::dataplane::{PeerSlot, Result};
use crate::wg::PeerId;

#[derive(Default)]
pub(super) struct Prefixes {
    owner: HashMap<IpNet, PeerId>,
    by_peer: HashMap<PeerId, BTreeSet<IpNet>>,
}

impl Prefixes {
    /// Maps to the peer each prefix of `wanted` (sorted, host bits clear) it does not have
    /// yet, from nobody or from another peer: the trie entry is overwritten, so a prefix that
    /// moves is never unmapped on the way.
    pub(super) fn gain(
        &mut self,
        ops: &mut impl MapOps,
        id: PeerId,
        slot: PeerSlot,
        wanted: &[IpNet],
    ) -> Result<()> {
        for &net in wanted {
            if self.owner.get(&net) != Some(&id) {
                ops.insert_allowed_ip(slot, net)?;
                self.set(net, id);
            }
        }
        Ok(())
    }

    /// Unmaps the peer's prefixes that are not in `wanted` (sorted) and no other peer took.
    pub(super) fn lose(
        &mut self,
        ops: &mut impl MapOps,
        id: PeerId,
        slot: PeerSlot,
        wanted: &[IpNet],
    ) -> Result<()> {
        let lost: Vec<IpNet> = self
            .by_peer
            .get(&id)
            .into_iter()
            .flatten()
            .filter(|net| wanted.binary_search(net).is_err())
            .copied()
            .collect();
        for net in lost {
            ops.remove_allowed_ip(slot, net)?;
            self.unset(&net);
        }
        Ok(())
    }

    /// Unmaps every prefix of the peer.
    pub(super) fn clear(
        &mut self,
        ops: &mut impl MapOps,
        id: PeerId,
        slot: PeerSlot,
    ) -> Result<()> {
        self.lose(ops, id, slot, &[])
    }

    /// The peer's prefixes as published, sorted.
    pub(super) fn of(&self, id: PeerId) -> Vec<IpNet> {
        self.by_peer.get(&id).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    fn set(&mut self, net: IpNet, id: PeerId) {
        if let Some(old) = self.owner.insert(net, id) {
            self.forget(old, &net);
        }
        self.by_peer.entry(id).or_default().insert(net);
    }

    fn unset(&mut self, net: &IpNet) {
        if let Some(old) = self.owner.remove(net) {
            self.forget(old, net);
        }
    }

    fn forget(&mut self, id: PeerId, net: &IpNet) {
        if let Some(set) = self.by_peer.get_mut(&id) {
            set.remove(net);
            if set.is_empty() {
                self.by_peer.remove(&id);
            }
        }
    }
}
