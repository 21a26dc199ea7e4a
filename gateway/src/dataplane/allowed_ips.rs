//! AllowedIPs (cryptokey routing) in `ALLOWED_V4`/`ALLOWED_V6`: prefix → peer slot. As in
//! the kernel, a prefix belongs to one peer at a time: adding it to another peer moves it.
//! The prefixes of each peer are also kept here, so a peer's can be listed, replaced and
//! removed without walking the tries.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use aya::maps::{LpmTrie, MapData, MapError, lpm_trie::Key};
use ipnet::IpNet;

use super::error::{DataplaneError, Result};
use super::peers::PeerSlot;

/// Which peer each prefix in the tries belongs to, and each peer's prefixes.
#[derive(Default)]
struct AllowedIps {
    owner: HashMap<IpNet, u32>,
    by_peer: HashMap<u32, BTreeSet<IpNet>>,
}

impl AllowedIps {
    fn of(&self, peer: u32) -> Vec<IpNet> {
        self.by_peer.get(&peer).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    fn owner(&self, net: &IpNet) -> Option<u32> {
        self.owner.get(&net.trunc()).copied()
    }

    fn set(&mut self, net: IpNet, peer: u32) {
        if let Some(old) = self.owner.insert(net, peer)
            && let Some(set) = self.by_peer.get_mut(&old)
        {
            set.remove(&net);
        }
        self.by_peer.entry(peer).or_default().insert(net);
    }

    fn unset(&mut self, net: &IpNet) {
        if let Some(old) = self.owner.remove(net)
            && let Some(set) = self.by_peer.get_mut(&old)
        {
            set.remove(net);
            if set.is_empty() {
                self.by_peer.remove(&old);
            }
        }
    }
}

/// The `ALLOWED_V4`/`ALLOWED_V6` tries, and what they hold.
pub(super) struct AllowedIpMaps {
    v4: LpmTrie<MapData, [u8; 4], u32>,
    v6: LpmTrie<MapData, [u8; 16], u32>,
    held: AllowedIps,
}

impl AllowedIpMaps {
    pub(super) fn new(
        v4: LpmTrie<MapData, [u8; 4], u32>,
        v6: LpmTrie<MapData, [u8; 16], u32>,
    ) -> Self {
        AllowedIpMaps { v4, v6, held: AllowedIps::default() }
    }

    fn trie_insert(&mut self, net: IpNet, peer: u32) -> Result<()> {
        let r = match net {
            IpNet::V4(n) => {
                self.v4.insert(&Key::new(n.prefix_len() as u32, n.addr().octets()), peer, 0)
            }
            IpNet::V6(n) => {
                self.v6.insert(&Key::new(n.prefix_len() as u32, n.addr().octets()), peer, 0)
            }
        };
        r.map_err(|e| DataplaneError::kernel_chain(format!("adding allowed IP {net}"), &e))
    }

    fn trie_remove(&mut self, net: IpNet) -> Result<()> {
        let r = match net {
            IpNet::V4(n) => self.v4.remove(&Key::new(n.prefix_len() as u32, n.addr().octets())),
            IpNet::V6(n) => self.v6.remove(&Key::new(n.prefix_len() as u32, n.addr().octets())),
        };
        r.map_err(|e| DataplaneError::kernel_chain(format!("removing allowed IP {net}"), &e))
    }

    /// Adds prefixes to a peer's (host bits are ignored); returns how many were added.
    pub(super) fn add(
        &mut self,
        peer: PeerSlot,
        nets: impl IntoIterator<Item = IpNet>,
    ) -> Result<usize> {
        let mut added = 0;
        for net in nets {
            let net = net.trunc();
            self.trie_insert(net, peer.0)?;
            self.held.set(net, peer.0);
            added += 1;
        }
        Ok(added)
    }

    /// Removes one prefix if it belongs to `peer`; returns whether it did.
    pub(super) fn remove(&mut self, peer: PeerSlot, net: IpNet) -> Result<bool> {
        let net = net.trunc();
        if self.held.owner(&net) != Some(peer.0) {
            return Ok(false);
        }
        self.trie_remove(net)?;
        self.held.unset(&net);
        Ok(true)
    }

    /// Replaces a peer's prefixes with `nets`, touching only what changes.
    pub(super) fn set(&mut self, peer: PeerSlot, nets: &[IpNet]) -> Result<()> {
        let wanted: BTreeSet<IpNet> = nets.iter().map(IpNet::trunc).collect();
        for net in self.held.of(peer.0) {
            if !wanted.contains(&net) {
                self.trie_remove(net)?;
                self.held.unset(&net);
            }
        }
        let missing: Vec<IpNet> =
            wanted.into_iter().filter(|n| self.held.owner(n) != Some(peer.0)).collect();
        self.add(peer, missing)?;
        Ok(())
    }

    /// Removes every prefix of a peer.
    pub(super) fn clear(&mut self, peer: PeerSlot) -> Result<()> {
        for net in self.held.of(peer.0) {
            self.trie_remove(net)?;
            self.held.unset(&net);
        }
        Ok(())
    }

    /// A peer's prefixes, sorted.
    pub(super) fn of(&self, peer: PeerSlot) -> Vec<IpNet> {
        self.held.of(peer.0)
    }

    /// The peer the programs map `addr` to (longest-prefix match in the kernel's trie).
    pub(super) fn owner(&self, addr: IpAddr) -> Result<Option<PeerSlot>> {
        let r = match addr {
            IpAddr::V4(a) => self.v4.get(&Key::new(32, a.octets()), 0),
            IpAddr::V6(a) => self.v6.get(&Key::new(128, a.octets()), 0),
        };
        match r {
            Ok(slot) => Ok(Some(PeerSlot(slot))),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(DataplaneError::kernel_chain("looking up an allowed IP", &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_move_between_peers_and_are_tracked() {
        let mut a = AllowedIps::default();
        let n: IpNet = "10.0.0.0/24".parse().unwrap();
        a.set(n, 1);
        assert_eq!(a.owner(&n), Some(1));
        a.set(n, 2);
        assert_eq!(a.owner(&n), Some(2));
        assert!(a.of(1).is_empty());
        assert_eq!(a.of(2), vec![n]);
        a.unset(&n);
        assert_eq!(a.owner(&n), None);
        assert!(a.of(2).is_empty());
    }
}
