//! AllowedIPs (cryptokey routing) in `ALLOWED_V4`/`ALLOWED_V6`: prefix → peer slot. As in
//! the kernel, a prefix belongs to one peer at a time: adding it to another peer moves it.
//!
//! Nothing is kept here besides the tries: what they should hold is the mirror's to know
//! (`crate::mirror`), and what they do hold is read back from the kernel when asked.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{LpmTrie, MapData, MapError, lpm_trie::Key};
use ipnet::IpNet;

use super::error::{DataplaneError, Result};
use super::peers::PeerSlot;

/// The `ALLOWED_V4`/`ALLOWED_V6` tries.
pub(super) struct AllowedIpMaps {
    v4: LpmTrie<MapData, [u8; 4], u32>,
    v6: LpmTrie<MapData, [u8; 16], u32>,
}

impl AllowedIpMaps {
    pub(super) fn new(
        v4: LpmTrie<MapData, [u8; 4], u32>,
        v6: LpmTrie<MapData, [u8; 16], u32>,
    ) -> Self {
        AllowedIpMaps { v4, v6 }
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

    /// Removes the exact prefix; false if the trie does not hold it.
    fn trie_remove(&mut self, net: IpNet) -> Result<bool> {
        let r = match net {
            IpNet::V4(n) => self.v4.remove(&Key::new(n.prefix_len() as u32, n.addr().octets())),
            IpNet::V6(n) => self.v6.remove(&Key::new(n.prefix_len() as u32, n.addr().octets())),
        };
        match r {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(DataplaneError::kernel_chain(format!("removing allowed IP {net}"), &e)),
        }
    }

    /// The value of the longest prefix of the trie that covers `net` (the exact prefix, when
    /// the trie holds it).
    fn covering(&self, net: IpNet) -> Result<Option<u32>> {
        let r = match net {
            IpNet::V4(n) => self.v4.get(&Key::new(n.prefix_len() as u32, n.addr().octets()), 0),
            IpNet::V6(n) => self.v6.get(&Key::new(n.prefix_len() as u32, n.addr().octets()), 0),
        };
        match r {
            Ok(peer) => Ok(Some(peer)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(DataplaneError::kernel_chain("looking up an allowed IP", &e)),
        }
    }

    /// Adds prefixes to a peer's (host bits are ignored); returns how many were added.
    pub(super) fn add(
        &mut self,
        peer: PeerSlot,
        nets: impl IntoIterator<Item = IpNet>,
    ) -> Result<usize> {
        let mut added = 0;
        for net in nets {
            self.trie_insert(net.trunc(), peer.0)?;
            added += 1;
        }
        Ok(added)
    }

    /// Removes one prefix if it belongs to `peer`; returns whether it did. If the trie holds
    /// the prefix, a lookup of it finds it (nothing longer can match): owned by `peer`, it
    /// goes; otherwise the lookup names another peer, or a shorter prefix of `peer` answers
    /// and there is nothing to remove.
    pub(super) fn remove(&mut self, peer: PeerSlot, net: IpNet) -> Result<bool> {
        let net = net.trunc();
        if self.covering(net)? != Some(peer.0) {
            return Ok(false);
        }
        self.trie_remove(net)
    }

    /// Replaces a peer's prefixes with `nets`, touching only what changes.
    pub(super) fn set(&mut self, peer: PeerSlot, nets: &[IpNet]) -> Result<()> {
        let wanted: BTreeSet<IpNet> = nets.iter().map(IpNet::trunc).collect();
        let held: BTreeSet<IpNet> = self.of(peer)?.into_iter().collect();
        for &net in held.difference(&wanted) {
            self.trie_remove(net)?;
        }
        self.add(peer, wanted.difference(&held).copied())?;
        Ok(())
    }

    /// Removes every prefix of a peer (one walk of both tries).
    pub(super) fn clear(&mut self, peer: PeerSlot) -> Result<()> {
        for net in self.of(peer)? {
            self.trie_remove(net)?;
        }
        Ok(())
    }

    /// A peer's prefixes, sorted, as the tries hold them (one walk of both).
    pub(super) fn of(&self, peer: PeerSlot) -> Result<Vec<IpNet>> {
        let mut nets = Vec::new();
        for entry in self.v4.iter() {
            let (key, owner) = entry.map_err(walk_error)?;
            if owner == peer.0 {
                nets.push(prefix(IpAddr::V4(Ipv4Addr::from(key.data())), key.prefix_len())?);
            }
        }
        for entry in self.v6.iter() {
            let (key, owner) = entry.map_err(walk_error)?;
            if owner == peer.0 {
                nets.push(prefix(IpAddr::V6(Ipv6Addr::from(key.data())), key.prefix_len())?);
            }
        }
        nets.sort();
        Ok(nets)
    }

    /// The peer the programs map `addr` to (longest-prefix match in the kernel's trie).
    pub(super) fn owner(&self, addr: IpAddr) -> Result<Option<PeerSlot>> {
        let host = IpNet::from(addr);
        Ok(self.covering(host)?.map(PeerSlot))
    }
}

fn walk_error(e: MapError) -> DataplaneError {
    DataplaneError::kernel_chain("listing allowed IPs", &e)
}

fn prefix(addr: IpAddr, len: u32) -> Result<IpNet> {
    IpNet::new(addr, len as u8)
        .map_err(|_| DataplaneError::Object(format!("a trie key of {len} bits for {addr}")))
}
