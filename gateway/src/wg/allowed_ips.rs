//! Cryptokey routing: the longest-prefix-match table from allowed IPs to peers, with the
//! semantics of the kernel's `allowedips.c`.
//!
//! - Inserting a prefix masks its host bits and takes the prefix over from whichever value
//!   owned it (a prefix has one owner).
//! - Lookups are per family: an IPv4-mapped IPv6 address is looked up as IPv6, never as IPv4.
//! - Each value's prefixes are kept in the order they were (last) inserted, which is the order
//!   `wg show` lists a peer's allowed IPs in.
//!
//! Choice of structure: one path-compressed binary trie per family (see `trie.rs`) rather than
//! per-prefix-length hash maps. A trie lookup visits one node per branching point on the path,
//! where the hash-map scheme probes every populated prefix length (up to 129 probes for IPv6);
//! both insert 130 000 prefixes in a few tens of milliseconds. A per-value index (insertion
//! sequence → prefix) makes removing all of one peer's prefixes proportional to that peer's
//! prefixes, not to the table.

mod trie;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use trie::Trie;

struct Entry<T> {
    value: T,
    /// When this prefix was last inserted: its position in its owner's list.
    sequence: u64,
}

/// Prefixes (IPv4 and IPv6) mapped to values, typically peer identifiers.
pub struct AllowedIps<T> {
    v4: Trie<Entry<T>>,
    v6: Trie<Entry<T>>,
    by_value: HashMap<T, BTreeMap<u64, IpNet>>,
    next_sequence: u64,
}

impl<T> Default for AllowedIps<T>
where
    T: Clone + Eq + Hash,
{
    fn default() -> Self {
        Self::new()
    }
}

/// A prefix as (family trie selector, left-aligned key, length).
enum Family {
    V4,
    V6,
}

fn split(prefix: &IpNet) -> (Family, u128, u8) {
    match prefix {
        IpNet::V4(net) => (Family::V4, v4_key(net.addr()), net.prefix_len()),
        IpNet::V6(net) => (Family::V6, u128::from(net.addr()), net.prefix_len()),
    }
}

fn v4_key(addr: Ipv4Addr) -> u128 {
    u128::from(u32::from(addr)) << 96
}

fn v4_prefix(key: u128, prefix_len: u8) -> IpNet {
    // The trie only ever holds IPv4 keys of at most 32 bits: the prefix length is valid.
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from((key >> 96) as u32), prefix_len))
}

fn v6_prefix(key: u128, prefix_len: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::from(key), prefix_len))
}

impl<T> AllowedIps<T>
where
    T: Clone + Eq + Hash,
{
    pub fn new() -> Self {
        AllowedIps { v4: Trie::new(), v6: Trie::new(), by_value: HashMap::new(), next_sequence: 0 }
    }

    /// How many prefixes are stored (both families).
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn trie_mut(&mut self, family: Family) -> &mut Trie<Entry<T>> {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    fn trie(&self, family: Family) -> &Trie<Entry<T>> {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    fn unindex(&mut self, entry: &Entry<T>) {
        if let Some(prefixes) = self.by_value.get_mut(&entry.value) {
            prefixes.remove(&entry.sequence);
            if prefixes.is_empty() {
                self.by_value.remove(&entry.value);
            }
        }
    }

    /// Maps `prefix` (host bits cleared) to `value`, taking it over from its previous owner,
    /// which is returned. The prefix moves to the end of `value`'s list even if `value`
    /// already owned it, as in the kernel.
    pub fn insert(&mut self, prefix: IpNet, value: T) -> Option<T> {
        let prefix = prefix.trunc();
        let (family, key, prefix_len) = split(&prefix);
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let previous =
            self.trie_mut(family).insert(key, prefix_len, Entry { value: value.clone(), sequence });
        if let Some(previous) = &previous {
            self.unindex(previous);
        }
        self.by_value.entry(value).or_default().insert(sequence, prefix);
        previous.map(|entry| entry.value)
    }

    /// The owner of exactly `prefix` (host bits ignored), if any.
    pub fn get(&self, prefix: &IpNet) -> Option<&T> {
        let (family, key, prefix_len) = split(&prefix.trunc());
        self.trie(family).get(key, prefix_len).map(|entry| &entry.value)
    }

    /// Removes exactly `prefix` (host bits ignored), whoever owns it; returns the owner.
    pub fn remove(&mut self, prefix: &IpNet) -> Option<T> {
        let (family, key, prefix_len) = split(&prefix.trunc());
        let removed = self.trie_mut(family).remove(key, prefix_len)?;
        self.unindex(&removed);
        Some(removed.value)
    }

    /// Removes exactly `prefix` only if `owner` owns it (the kernel's per-peer removal: asking
    /// to remove another peer's prefix changes nothing). Returns whether it was removed.
    pub fn remove_if_owned_by(&mut self, prefix: &IpNet, owner: &T) -> bool {
        if self.get(prefix) != Some(owner) {
            return false;
        }
        self.remove(prefix).is_some()
    }

    /// Removes every prefix `value` owns; returns how many.
    pub fn remove_by_value(&mut self, value: &T) -> usize {
        let Some(prefixes) = self.by_value.remove(value) else { return 0 };
        for prefix in prefixes.values() {
            let (family, key, prefix_len) = split(prefix);
            self.trie_mut(family).remove(key, prefix_len);
        }
        prefixes.len()
    }

    /// The owner of the longest prefix containing `address`.
    pub fn lookup(&self, address: IpAddr) -> Option<&T> {
        let entry = match address {
            IpAddr::V4(v4) => self.v4.longest_match(v4_key(v4)),
            IpAddr::V6(v6) => self.v6.longest_match(u128::from(v6)),
        };
        entry.map(|entry| &entry.value)
    }

    /// Every prefix with its owner: IPv4 first, each family in address order.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &T)> {
        let v4 = self.v4.iter().map(|(key, len, entry)| (v4_prefix(key, len), &entry.value));
        let v6 = self.v6.iter().map(|(key, len, entry)| (v6_prefix(key, len), &entry.value));
        v4.chain(v6)
    }

    /// The prefixes `value` owns, in the order they were inserted.
    pub fn prefixes_of(&self, value: &T) -> impl Iterator<Item = IpNet> + '_ {
        self.by_value.get(value).into_iter().flat_map(|prefixes| prefixes.values().copied())
    }

    pub fn clear(&mut self) {
        self.v4.clear();
        self.v6.clear();
        self.by_value.clear();
    }
}
