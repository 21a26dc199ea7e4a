//! Path MTU: how large an inner packet each peer's path carries, and what the device does
//! with one that is larger. A peer's path MTU is the tunnel MTU (the TUN's), lowered to what
//! the underlay's route to its endpoint carries once the WireGuard overhead is added (IPv4
//! 60 bytes, IPv6 80). The daemon learns the underlay's MTU (`daemon/path_mtu.rs`) and tells
//! the device; the device never asks the network itself.
//!
//! A packet too large for its peer's path is refused with ICMP "fragmentation needed" /
//! "packet too big" carrying the path MTU, so the sender lowers its own (kernel WireGuard
//! relies on fragmenting the outer datagram instead, which a path that drops fragments turns
//! into a black hole); an IPv4 packet that allows fragmenting is sent anyway and its outer
//! datagram fragmented by the kernel. SYNs in both directions have their MSS clamped to the
//! path MTU so that TCP never needs either.

use gateway_common::wire::{DATA_OVERHEAD_V4, DATA_OVERHEAD_V6};

use super::{Device, Event};
use crate::wg::PeerId;
use crate::wg::ip;
use crate::wg::mss;

impl Device {
    /// Tells the device the MTU of the underlay's route to `id`'s endpoint (None: unknown).
    pub fn set_underlay_mtu(&mut self, id: PeerId, mtu: Option<usize>) {
        let Some(peer) = self.peers.get_mut(&id) else { return };
        if peer.underlay_mtu != mtu {
            peer.underlay_mtu = mtu;
            self.publish_path_mtu();
        }
    }

    /// The largest inner packet `id`'s path carries whole.
    pub fn peer_mtu(&self, id: PeerId) -> usize {
        let Some(peer) = self.peers.get(&id) else { return self.mtu };
        let (Some(underlay), Some(endpoint)) = (peer.underlay_mtu, peer.endpoint) else {
            return self.mtu;
        };
        let overhead = if endpoint.addr.is_ipv4() { DATA_OVERHEAD_V4 } else { DATA_OVERHEAD_V6 };
        self.mtu.min(underlay.saturating_sub(overhead))
    }

    /// The tunnel's path MTU: the narrowest peer's (the tunnel MTU without peers). The eBPF
    /// programs work with this one value (`CONFIG.tun_mtu`): what exceeds it goes to the
    /// daemon, which knows each peer's.
    pub fn path_mtu(&self) -> usize {
        self.peers.keys().map(|&id| self.peer_mtu(id)).min().unwrap_or(self.mtu).min(self.mtu)
    }

    /// Emits `MtuChanged` if the path MTU moved since it was last emitted.
    pub(super) fn publish_path_mtu(&mut self) {
        let mtu = self.path_mtu();
        if mtu != self.published_path_mtu {
            self.published_path_mtu = mtu;
            self.events.push_back(Event::MtuChanged(mtu));
        }
    }

    /// Whether `packet`, for `id`, fits its path. If not, answers the sender with ICMP when
    /// the packet may not be fragmented, and returns false: the packet is dropped. An IPv4
    /// packet that may be fragmented fits (its outer datagram will be fragmented).
    pub(super) fn fits_path(&mut self, id: PeerId, packet: &[u8]) -> bool {
        let mtu = self.peer_mtu(id);
        if packet.len() <= mtu || !ip::dont_fragment(packet) {
            return true;
        }
        tracing::debug!(peer = id.0, len = packet.len(), mtu, "packet too big for the path");
        if let Some(icmp) = ip::too_big(packet, mtu) {
            self.tun_packets.push_back(icmp);
        }
        false
    }

    /// Lowers a SYN's MSS to what `id`'s path carries.
    pub(super) fn clamp_mss(&self, id: PeerId, packet: &mut [u8]) {
        let mtu = self.peer_mtu(id);
        mss::clamp(packet, mss::mss_for(packet, mtu));
    }
}

#[cfg(test)]
mod tests {
    use super::super::virtual_net::*;
    use super::super::{DropReason, Event};

    /// An IPv4 TCP SYN (`ack`: SYN-ACK) from `src` to `dst` announcing `mss`, checksum valid.
    fn syn(src: [u8; 4], dst: [u8; 4], mss: u16, ack: bool) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 44, 0, 0, 0x40, 0, 64, 6, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        let flags = if ack { 0x12 } else { 0x02 };
        p.extend_from_slice(&[0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, flags, 0xff, 0xff]);
        p.extend_from_slice(&[0, 0, 0, 0, 2, 4]);
        p.extend_from_slice(&mss.to_be_bytes());
        let mut sum = 6u32 + 24;
        for c in p[12..20].chunks(2).chain(p[20..].chunks(2)) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        p[36..38].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        p
    }

    fn announced_mss(p: &[u8]) -> u16 {
        u16::from_be_bytes([p[42], p[43]])
    }

    /// The test network with a's underlay toward b carrying 1280 bytes (b's toward a: the
    /// tunnel MTU, 1420), after a first exchange (sessions up).
    fn narrow() -> Net {
        let mut n = Net::new();
        n.a_sends(10);
        n.b_sends(10);
        n.a_tun.clear();
        n.b_tun.clear();
        n.a.set_underlay_mtu(n.a_peer, Some(1280));
        n
    }

    #[test]
    fn the_path_mtu_leaves_room_for_the_overhead_and_is_announced() {
        let mut n = narrow();
        assert_eq!(n.a.peer_mtu(n.a_peer), 1220);
        assert_eq!(n.a.path_mtu(), 1220);
        let events: Vec<_> = std::iter::from_fn(|| n.a.poll_event()).collect();
        assert!(events.contains(&Event::MtuChanged(1220)), "{events:?}");
        n.a.set_underlay_mtu(n.a_peer, Some(9000));
        assert_eq!(n.a.path_mtu(), 1420, "never above the tunnel MTU");
        n.a.set_underlay_mtu(n.a_peer, Some(1280));
        n.a.remove_peer(n.a_peer);
        assert_eq!(n.a.path_mtu(), 1420, "without peers: the tunnel MTU");
    }

    #[test]
    fn a_packet_too_big_for_the_path_is_refused_with_the_path_mtu() {
        let mut n = narrow();
        let wire = n.wire.len();
        // 28 + 1200 bytes, "don't fragment" set.
        n.a.handle_tun_packet(n.now, &packet(A_INNER, B_INNER, 1200));
        n.pump();
        assert_eq!(n.wire.len(), wire, "nothing sent");
        assert_eq!(n.a.drops()[&DropReason::TooBig], 1);
        let icmp = &n.a_tun[0];
        assert_eq!(&icmp[20..22], &[3, 4], "fragmentation needed");
        assert_eq!(&icmp[26..28], &1220u16.to_be_bytes());
        assert_eq!(&icmp[12..16], &B_INNER, "from the packet's destination");
        // What fits goes, padded no further than the path MTU.
        let fits = packet(A_INNER, B_INNER, 1220 - 28);
        n.a.handle_tun_packet(n.now, &fits);
        n.pump();
        assert_eq!(n.b_tun, vec![fits]);
        assert!(n.wire.last().unwrap().1.len() <= 1220 + 32);
    }

    #[test]
    fn an_ipv4_packet_that_may_be_fragmented_is_sent() {
        let mut n = narrow();
        let mut p = packet(A_INNER, B_INNER, 1300);
        p[6] = 0;
        n.a.handle_tun_packet(n.now, &p);
        n.pump();
        assert_eq!(n.b_tun.len(), 1, "the kernel fragments the outer datagram");
        assert!(n.a_tun.is_empty());
    }

    #[test]
    fn syns_are_clamped_both_ways() {
        let mut n = narrow();
        // Sent by a: clamped to a's path before sealing.
        n.a.handle_tun_packet(n.now, &syn(A_INNER, B_INNER, 1460, false));
        n.pump();
        assert_eq!(announced_mss(&n.b_tun[0]), 1180);
        // Sent by b, whose side knows nothing narrow: clamped as a decrypts it.
        n.b.handle_tun_packet(n.now, &syn(B_INNER, A_INNER, 1460, true));
        n.pump();
        assert_eq!(announced_mss(&n.a_tun[0]), 1180);
        // Lower already: untouched.
        n.b.handle_tun_packet(n.now, &syn(B_INNER, A_INNER, 1000, true));
        n.pump();
        assert_eq!(n.a_tun[1], syn(B_INNER, A_INNER, 1000, true));
    }
}
