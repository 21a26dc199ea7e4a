//! The translation of proxied connections' packets, sans I/O: the userspace reference of what
//! the programs do with `PROXY_FLOWS` (`entry_proxy_tun` on the way into the tunnel, the
//! receive programs after decryption), for the packets the daemon handles itself.
//!
//! A [`FlowTable`] maps a packet's flow ([`FlowKey`]: family, transport, addresses and ports
//! as the packet carries them) to its rewrite ([`FlowNat`]: `NAT_SOURCE` or `NAT_DESTINATION`,
//! the new address and port), the same types and the same two entries per connection that
//! `mirror::proxy_flows` writes into the map. [`FlowTable::translate`] rewrites one packet in
//! place: IPv4 or IPv6, TCP or UDP; the IPv4 header checksum and the TCP/UDP checksum (whose
//! pseudo-header holds the addresses) are updated for the words that changed, an IPv4 UDP
//! packet sent without a checksum (0) keeps none. Fragments, IPv6 packets with extension
//! headers and packets too short for their headers have no flow and pass unchanged.
//!
//! - [`packet`]: where a packet's addresses, ports and checksum are.
//! - [`checksum`]: the incremental update (RFC 1624).
//!
//! Which plane translates which packet is the daemon's rule: see `daemon::proxy_nat`.

mod checksum;
mod packet;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use gateway_common::maps::{AF_INET, FlowKey, FlowNat, NAT_DESTINATION, NAT_SOURCE};

use self::packet::{IPV4_CHECKSUM, Layout};

/// Translated flows, by the flow as a packet of theirs carries it.
#[derive(Default, Debug)]
pub struct FlowTable {
    flows: HashMap<FlowKey, FlowNat>,
}

impl FlowTable {
    /// Adds the translation of `key`'s packets. False, and the table unchanged, when the key
    /// has one already: two connections cannot share a flow.
    pub fn insert(&mut self, key: FlowKey, nat: FlowNat) -> bool {
        match self.flows.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(vacant) => {
                vacant.insert(nat);
                true
            }
        }
    }

    /// Removes `key`'s translation if it is `nat` (and not a later connection's); whether it
    /// did.
    pub fn remove(&mut self, key: &FlowKey, nat: &FlowNat) -> bool {
        if self.flows.get(key) != Some(nat) {
            return false;
        }
        self.flows.remove(key);
        true
    }

    pub fn get(&self, key: &FlowKey) -> Option<&FlowNat> {
        self.flows.get(key)
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Rewrites `packet` in place if its flow is in the table; whether it did.
    pub fn translate(&self, packet: &mut [u8]) -> bool {
        if self.flows.is_empty() {
            return false;
        }
        let Some(layout) = Layout::of(packet) else { return false };
        match self.flows.get(&layout.key(packet)) {
            Some(nat) => rewrite(packet, &layout, nat),
            None => false,
        }
    }
}

fn be16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

/// Sets the address and port `nat` names (source or destination) and updates the checksums
/// by the words that changed. False, and nothing changed, for a rewrite it does not know.
fn rewrite(packet: &mut [u8], layout: &Layout, nat: &FlowNat) -> bool {
    let destination = match nat.rewrite {
        NAT_SOURCE => false,
        NAT_DESTINATION => true,
        _ => return false,
    };
    let (address, port) = (layout.address(destination), layout.port(destination));
    let new_address = &nat.addr[..layout.address_len];
    // Network byte order in memory: its bytes are the packet's.
    let new_port = nat.port.to_ne_bytes();
    let mut old_address = [0; 16];
    let old_address = &mut old_address[..layout.address_len];
    old_address.copy_from_slice(&packet[address.clone()]);
    let old_port = [packet[port.start], packet[port.start + 1]];

    if layout.family == AF_INET {
        let at = IPV4_CHECKSUM..IPV4_CHECKSUM + 2;
        let check = checksum::updated(be16(&packet[at.clone()]), old_address, new_address);
        packet[at].copy_from_slice(&check.to_be_bytes());
    }
    let at = layout.checksum();
    let check = be16(&packet[at.clone()]);
    // A UDP checksum of 0 says the sender computed none (IPv4; over IPv6 such a packet is
    // invalid and stays so): there is nothing to keep valid.
    if !(layout.is_udp() && check == 0) {
        let check = checksum::updated(check, old_address, new_address);
        let mut check = checksum::updated(check, &old_port, &new_port);
        // A UDP checksum that comes out as 0 is sent as all ones (RFC 768).
        if layout.is_udp() && check == 0 {
            check = 0xffff;
        }
        packet[at].copy_from_slice(&check.to_be_bytes());
    }
    packet[address].copy_from_slice(new_address);
    packet[port].copy_from_slice(&new_port);
    true
}
