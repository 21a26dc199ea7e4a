//! Keeping an interface's peers in step with what the network says it should have, as one
//! `wg set`-style update ([`DeviceUpdate`]) applied through the path the UAPI uses.
//!
//! Only peers the network manages are touched: a peer the operator configured by hand (its
//! file, `wg set`) is neither changed nor removed, and a peer the network wants whose key the
//! operator already configured is left to the operator. A peer whose allowed IPs and endpoint
//! are already right is not in the update at all, so its sessions go on undisturbed.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use ipnet::IpNet;

use crate::uapi::{AllowedIpChange, DeviceUpdate, Key, PeerSnapshot, PeerUpdate};

/// A peer as the network wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantedPeer {
    pub public_key: [u8; 32],
    pub allowed_ips: Vec<IpNet>,
    /// Where to send to first (a controller's); None: learnt from its handshakes.
    pub endpoint: Option<SocketAddr>,
    /// Seconds; members behind NAT keep their controller's mapping open.
    pub persistent_keepalive: u16,
}

/// The update that makes the interface's network-managed peers (`managed`) what `wanted`
/// says, and the managed set after it.
pub fn plan(
    current: &[PeerSnapshot],
    managed: &BTreeSet<[u8; 32]>,
    wanted: &[WantedPeer],
) -> (DeviceUpdate, BTreeSet<[u8; 32]>) {
    let current: HashMap<[u8; 32], &PeerSnapshot> =
        current.iter().map(|peer| (peer.public_key.0, peer)).collect();
    let mut update = DeviceUpdate::default();
    let mut now_managed = BTreeSet::new();
    for peer in wanted {
        let existing = current.get(&peer.public_key);
        if existing.is_some() && !managed.contains(&peer.public_key) {
            continue; // the operator's peer
        }
        now_managed.insert(peer.public_key);
        let wanted_ips: BTreeSet<IpNet> = peer.allowed_ips.iter().map(IpNet::trunc).collect();
        let mut change = PeerUpdate::new(Key(peer.public_key));
        let mut changed = existing.is_none();
        let ips_now: BTreeSet<IpNet> =
            existing.map(|p| p.allowed_ips.iter().copied().collect()).unwrap_or_default();
        if ips_now != wanted_ips {
            change.allowed_ips.push(AllowedIpChange::RemoveAll);
            change.allowed_ips.extend(wanted_ips.iter().copied().map(AllowedIpChange::Add));
            changed = true;
        }
        // An endpoint is set when the peer is new or has none: a roamed one stays.
        if let Some(endpoint) = peer.endpoint
            && existing.is_none_or(|p| p.endpoint.is_none())
        {
            change.endpoint = Some(endpoint);
            changed = true;
        }
        if existing.is_none_or(|p| p.persistent_keepalive_interval != peer.persistent_keepalive) {
            change.persistent_keepalive_interval = Some(peer.persistent_keepalive);
            changed = true;
        }
        if changed {
            update.peers.push(change);
        }
    }
    let wanted_keys: BTreeSet<[u8; 32]> = wanted.iter().map(|peer| peer.public_key).collect();
    for key in managed.difference(&wanted_keys) {
        if current.contains_key(key) {
            let mut removal = PeerUpdate::new(Key(*key));
            removal.remove = true;
            update.peers.push(removal);
        }
    }
    (update, now_managed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(texts: &[&str]) -> Vec<IpNet> {
        texts.iter().map(|t| t.parse().unwrap()).collect()
    }

    fn snapshot(key: u8, ips: &[&str], endpoint: Option<&str>) -> PeerSnapshot {
        PeerSnapshot {
            allowed_ips: nets(ips),
            endpoint: endpoint.map(|e| e.parse().unwrap()),
            persistent_keepalive_interval: 25,
            ..PeerSnapshot::new(Key([key; 32]))
        }
    }

    fn wanted(key: u8, ips: &[&str], endpoint: Option<&str>) -> WantedPeer {
        WantedPeer {
            public_key: [key; 32],
            allowed_ips: nets(ips),
            endpoint: endpoint.map(|e| e.parse().unwrap()),
            persistent_keepalive: 25,
        }
    }

    #[test]
    fn new_peers_are_added_changed_ones_updated_and_unchanged_ones_left_alone() {
        let current = [
            snapshot(1, &["fd00::1/128"], Some("192.0.2.1:51820")),
            snapshot(2, &["fd00::2/128"], Some("198.51.100.9:40000")),
        ];
        let managed = BTreeSet::from([[1; 32], [2; 32]]);
        let wanted = [
            wanted(1, &["fd00::1/128"], Some("192.0.2.1:51820")),
            wanted(2, &["fd00::2/128", "192.168.50.0/24"], Some("192.0.2.2:51820")),
            wanted(3, &["fd00::3/128"], None),
        ];
        let (update, managed) = plan(&current, &managed, &wanted);
        assert_eq!(managed.len(), 3);
        let keys: Vec<u8> = update.peers.iter().map(|p| p.public_key.0[0]).collect();
        assert_eq!(keys, [2, 3], "peer 1 is as wanted: its sessions are not touched");
        let two = &update.peers[0];
        assert!(two.replaces_allowed_ips());
        assert_eq!(two.endpoint, None, "a roamed endpoint is kept");
        assert_eq!(update.peers[1].persistent_keepalive_interval, Some(25));
        assert!(!update.replace_peers);
    }

    #[test]
    fn only_managed_peers_are_removed_and_the_operators_are_never_touched() {
        let current = [snapshot(1, &["fd00::1/128"], None), snapshot(9, &["10.0.0.0/8"], None)];
        let managed = BTreeSet::from([[1; 32]]);
        // The network now wants peer 9 too (the operator's) and no longer peer 1.
        let (update, managed) = plan(&current, &managed, &[wanted(9, &["fd00::9/128"], None)]);
        assert_eq!(update.peers.len(), 1);
        assert!(update.peers[0].remove && update.peers[0].public_key.0 == [1; 32]);
        assert!(managed.is_empty(), "peer 9 stays the operator's");
    }
}
