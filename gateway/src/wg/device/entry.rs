//! Entry points: peers that bring traffic from the internet into the tunnel (a VPS forwarding
//! its public ports to this host), with the clients' own addresses as sources.
//!
//! Cryptokey routing drops a decrypted packet whose source is not in its peer's AllowedIPs.
//! A peer whose AllowedIPs hold a default route admits every source no other peer owns more
//! specifically; but the host behind it must not route its own traffic into the tunnel for
//! that, and a second VPS in front of the same host cannot hold the same default route (a
//! prefix belongs to one peer). So a peer is an *entry point* when its AllowedIPs hold
//! `0.0.0.0/0` or `::/0`, or when the operator names it (`gatewayd --entry-peer`); its
//! packets may carry any source whose AllowedIPs owner is nobody or an entry point: never an
//! address an ordinary peer owns, which stays as spoof-proof as before.
//!
//! The eBPF receive programs apply the same rule (`PEER_ENTRY` on the peer's slot, written by
//! the mirror from [`PeerView::entry`](crate::wg::projection::PeerView)); this is its reference.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::Device;
use crate::wg::PeerId;

/// The two default routes, one per family.
fn default_routes() -> [IpNet; 2] {
    [
        IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).expect("a /0 is a prefix"),
        IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).expect("a /0 is a prefix"),
    ]
}

impl Device {
    /// Whether the peer is an entry point: named by the operator, or holding a default route.
    pub fn is_entry_peer(&self, id: PeerId) -> bool {
        let Some(peer) = self.peers.get(&id) else { return false };
        self.options.entry_peers.contains(&peer.public_key)
            || default_routes().iter().any(|net| self.allowed_ips.get(net) == Some(&id))
    }

    /// Whether a decrypted packet from `id` may carry `source`: the peer owns it, or the
    /// peer is an entry point and the source belongs to nobody else but entry points.
    pub(super) fn may_carry_source(&self, id: PeerId, source: IpAddr) -> bool {
        let owner = self.allowed_ips.lookup(source).copied();
        if owner == Some(id) {
            return true;
        }
        self.is_entry_peer(id) && owner.is_none_or(|owner| self.is_entry_peer(owner))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::virtual_net::*;
    use super::super::{DeviceOptions, DropReason};
    use super::*;

    const CLIENT: [u8; 4] = [203, 0, 113, 5];
    const LAPTOP_NET: &str = "198.51.100.0/24";
    const LAPTOP: [u8; 4] = [198, 51, 100, 7];

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    /// The virtual network with `b` naming `a` as an entry point when `named`.
    fn network(named: bool) -> Net {
        let mut b = DeviceOptions::default();
        if named {
            b.entry_peers = HashSet::from([public(key(1))]);
        }
        Net::with_each(DeviceOptions::default(), b, 0)
    }

    /// `a` sends a packet from `source` to b's tunnel address; whether b delivered it.
    fn delivered_from(n: &mut Net, source: [u8; 4]) -> bool {
        let before = n.b_tun.len();
        n.a.handle_tun_packet(n.now, &packet(source, B_INNER, 10));
        n.pump();
        n.b_tun.len() > before
    }

    fn refused(n: &Net) -> u64 {
        n.b.drops().get(&DropReason::SourceNotAllowed).copied().unwrap_or(0)
    }

    /// A third peer of `b` (an ordinary one: a laptop) owning `prefixes`.
    fn add_laptop(n: &mut Net, prefixes: &[&str]) -> PeerId {
        let laptop = n.b.upsert_peer(public(key(3)), false).unwrap().unwrap();
        for prefix in prefixes {
            n.b.add_allowed_ip(laptop, net(prefix));
        }
        laptop
    }

    #[test]
    fn an_ordinary_peer_carries_only_its_own_sources() {
        let mut n = network(false);
        assert!(!n.b.is_entry_peer(n.b_peer));
        assert!(delivered_from(&mut n, A_INNER));
        assert!(!delivered_from(&mut n, CLIENT));
        assert_eq!(refused(&n), 1);
    }

    #[test]
    fn a_named_entry_peer_carries_sources_nobody_owns_but_not_an_ordinary_peers() {
        let mut n = network(true);
        add_laptop(&mut n, &[LAPTOP_NET]);
        assert!(n.b.is_entry_peer(n.b_peer));
        assert!(delivered_from(&mut n, CLIENT), "a public client through the entry point");
        assert!(delivered_from(&mut n, A_INNER), "and its own address still");
        assert!(!delivered_from(&mut n, LAPTOP), "a laptop's address is not the VPS's to use");
        assert_eq!(refused(&n), 1);
        assert!(n.b.dataplane_view(n.b_peer).unwrap().entry, "the data plane is told");
    }

    #[test]
    fn a_default_route_makes_an_entry_peer_and_losing_it_undoes_that() {
        let mut n = network(false);
        let id = n.b_peer;
        n.b.add_allowed_ip(id, net("0.0.0.0/0"));
        assert!(n.b.is_entry_peer(id));
        assert!(n.b.dataplane_view(id).unwrap().entry);
        // Its default route covers the client; the laptop's more specific prefix wins.
        add_laptop(&mut n, &[LAPTOP_NET]);
        assert!(delivered_from(&mut n, CLIENT));
        assert!(!delivered_from(&mut n, LAPTOP));
        n.b.remove_allowed_ip(id, net("0.0.0.0/0"));
        assert!(!n.b.is_entry_peer(id));
        assert!(!n.b.dataplane_view(id).unwrap().entry);
        assert!(!delivered_from(&mut n, CLIENT));
        assert_eq!(refused(&n), 2);
        // The IPv6 default route counts the same.
        n.b.add_allowed_ip(id, net("::/0"));
        assert!(n.b.is_entry_peer(id));
    }

    #[test]
    fn two_entry_points_may_carry_each_others_unowned_space() {
        // Two VPSes in front of one home: one holds the default route, the other is named.
        let mut n = network(true);
        let other_vps = add_laptop(&mut n, &["10.0.0.3/32", "0.0.0.0/0"]);
        assert!(n.b.is_entry_peer(other_vps));
        assert!(n.b.allowed_ips().lookup(IpAddr::from(CLIENT)) == Some(&other_vps));
        assert!(delivered_from(&mut n, CLIENT), "owned by the other entry point: allowed");
        // What an entry point owns is, by the same rule, any entry point's to carry (the
        // programs cannot tell its tunnel address from the internet behind it).
        assert!(delivered_from(&mut n, [10, 0, 0, 3]));
        n.b.remove_allowed_ip(other_vps, net("0.0.0.0/0"));
        assert!(!n.b.is_entry_peer(other_vps));
        assert!(!delivered_from(&mut n, [10, 0, 0, 3]), "an ordinary peer's address again");
        assert!(delivered_from(&mut n, CLIENT), "nobody's now");
        assert_eq!(refused(&n), 1);
    }
}
