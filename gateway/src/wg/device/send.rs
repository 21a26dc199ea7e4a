//! Sending: packets from the TUN, the staged queue, keepalives and handshake messages
//! (the kernel's `device.c: wg_xmit` and `send.c`).

use std::time::Instant;

use gateway_common::ecn;
use gateway_common::wire::{DATA_HEADER_LEN, DATA_MIN_LEN, MESSAGE_PADDING_MULTIPLE};

use super::{Device, DropReason, Event, HandshakeMessage, Transmit};
use crate::wg::PeerId;
use crate::wg::ip;
use crate::wg::keypair::Keypair;
use crate::wg::timers::{REJECT_AFTER_TIME, REKEY_AFTER_TIME};

/// Bytes of zero padding after `len` bytes of plaintext (the kernel's `calculate_skb_padding`).
pub(crate) fn padding(len: usize, mtu: usize) -> usize {
    len.next_multiple_of(MESSAGE_PADDING_MULTIPLE).min(mtu.max(len)) - len
}

impl Device {
    /// A packet the stack routed into the tunnel (read from the TUN).
    pub fn handle_tun_packet(&mut self, now: Instant, packet: &[u8]) {
        if !self.up {
            self.count(DropReason::NotRunning);
            return;
        }
        let Some(header) = ip::parse(packet) else {
            self.count(DropReason::NotIp);
            return;
        };
        let Some(&id) = self.allowed_ips.lookup(header.dst) else {
            tracing::debug!(dst = %header.dst, "no peer has allowed IPs matching");
            self.count(DropReason::NoPeer);
            self.answer_unreachable(packet);
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else { return };
        if peer.endpoint.is_none() {
            tracing::debug!(peer = id.0, "no valid endpoint has been configured or discovered");
            self.count_for_peer(id, DropReason::NoEndpoint);
            self.answer_unreachable(packet);
            return;
        }
        if !self.fits_path(id, packet) {
            self.count(DropReason::TooBig);
            return;
        }
        let mut packet = packet.to_vec();
        self.clamp_mss(id, &mut packet);
        let Some(peer) = self.peers.get_mut(&id) else { return };
        let dropped = peer.stage(packet);
        for _ in 0..dropped {
            self.count_for_peer(id, DropReason::StagedOverflow);
        }
        self.send_staged(id, now);
    }

    fn answer_unreachable(&mut self, packet: &[u8]) {
        if let Some(icmp) =
            ip::destination_unreachable(packet, self.icmp_source_v4, self.icmp_source_v6)
        {
            self.tun_packets.push_back(icmp);
        }
    }

    /// The kernel's `wg_packet_send_staged_packets`: encrypt and send everything staged with
    /// the current keypair, or put it back and ask for a handshake.
    pub(super) fn send_staged(&mut self, id: PeerId, now: Instant) {
        let reject_after = self.scaled(REJECT_AFTER_TIME);
        let mtu = self.peer_mtu(id);
        let Some(peer) = self.peers.get_mut(&id) else { return };
        if peer.staged.is_empty() {
            return;
        }
        let Some(endpoint) = peer.endpoint else { return };
        let usable = match peer.keypairs.current.as_mut() {
            Some(k) if k.sending_valid() && k.age(now) >= reject_after => {
                k.invalidate_sending();
                false
            }
            Some(k) => k.sending_valid(),
            None => false,
        };
        if !usable {
            self.queue_handshake_initiation(id, now, false);
            return;
        }
        let Some(peer) = self.peers.get_mut(&id) else { return };
        let keypair = peer.keypairs.current.as_mut().expect("checked above");
        let mut sealed = Vec::with_capacity(peer.staged.len());
        let mut data_sent = false;
        let mut exhausted = false;
        while let Some(plain) = peer.staged.pop_front() {
            match seal(keypair, now, reject_after, &plain, mtu) {
                Some(message) => {
                    data_sent |= !plain.is_empty();
                    sealed.push((message, ecn::encapsulate(ip::dsfield(&plain))));
                }
                None => {
                    peer.staged.push_front(plain);
                    exhausted = true;
                    break;
                }
            }
        }
        if !sealed.is_empty() {
            peer.timers.on_any_authenticated_packet_traversal(now);
            peer.timers.on_any_authenticated_packet_sent();
            for (data, ecn) in sealed {
                peer.tx_bytes += data.len() as u64;
                peer.tx_packets += 1;
                self.transmits.push_back(Transmit { to: endpoint, data, ecn });
            }
            if data_sent {
                peer.timers.on_data_sent(now, &mut *self.rng);
            }
        }
        if exhausted {
            self.events.push_back(Event::KeypairsChanged(id));
            self.queue_handshake_initiation(id, now, false);
        } else {
            self.keep_key_fresh_after_sending(id, now);
        }
        self.schedule(id);
    }

    /// The kernel's `keep_key_fresh` in send.c.
    pub(super) fn keep_key_fresh_after_sending(&mut self, id: PeerId, now: Instant) {
        let rekey_after = self.scaled(REKEY_AFTER_TIME);
        let wants = self
            .peers
            .get(&id)
            .and_then(|p| p.keypairs.current.as_ref())
            .is_some_and(|k| k.wants_rekey_for_sending(now, rekey_after));
        if wants {
            self.queue_handshake_initiation(id, now, false);
        }
    }

    /// The kernel's `wg_packet_send_keepalive`: an empty data packet unless something else is
    /// about to be sent anyway.
    pub(super) fn send_keepalive(&mut self, id: PeerId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else { return };
        if peer.staged.is_empty() {
            peer.staged.push_back(Vec::new());
        }
        self.send_staged(id, now);
    }

    /// The kernel's `wg_packet_send_queued_handshake_initiation`.
    pub(super) fn queue_handshake_initiation(&mut self, id: PeerId, now: Instant, is_retry: bool) {
        let Some(peer) = self.peers.get_mut(&id) else { return };
        if !is_retry {
            peer.timers.handshake_attempts = 0;
        }
        if peer.handshake_recently_sent(now) {
            return;
        }
        self.send_handshake_initiation(id, now);
    }

    fn send_handshake_initiation(&mut self, id: PeerId, now: Instant) {
        let timestamp = self.tai.timestamp(now);
        let Some(peer) = self.peers.get_mut(&id) else { return };
        if peer.handshake_recently_sent(now) {
            return;
        }
        peer.last_sent_handshake = Some(now);
        let Some((index, endpoint)) = self.fresh_handshake_index(id) else { return };
        let Some(peer) = self.peers.get_mut(&id) else { return };
        let Some(mut message) =
            peer.handshake.create_initiation(&self.identity, index, timestamp, &mut &mut *self.rng)
        else {
            self.forget_handshake_index(id);
            return;
        };
        peer.cookie.add_macs(&mut message, now);
        tracing::debug!(peer = id.0, to = %endpoint.addr, "sending handshake initiation");
        self.send_handshake_message(id, endpoint, &message, now);
        self.count_handshake(HandshakeMessage::InitiationSent);
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.timers.on_handshake_initiated(now, &mut *self.rng);
        }
        self.schedule(id);
    }

    /// The kernel's `wg_packet_send_handshake_response`, right after consuming an initiation.
    pub(super) fn send_handshake_response(&mut self, id: PeerId, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else { return };
        peer.last_sent_handshake = Some(now);
        let Some((index, endpoint)) = self.fresh_handshake_index(id) else { return };
        let Some(peer) = self.peers.get_mut(&id) else { return };
        let mut message = match peer.handshake.create_response(index, &mut &mut *self.rng) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(peer = id.0, "cannot create handshake response: {e}");
                self.forget_handshake_index(id);
                return;
            }
        };
        peer.cookie.add_macs(&mut message, now);
        if !self.begin_session(id, now) {
            return;
        }
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.timers.on_session_derived(now);
        }
        tracing::debug!(peer = id.0, to = %endpoint.addr, "sending handshake response");
        self.send_handshake_message(id, endpoint, &message, now);
        self.count_handshake(HandshakeMessage::ResponseSent);
        self.schedule(id);
    }

    /// Registers a new random index for the peer's next handshake message (the kernel's
    /// `wg_index_hashtable_insert`, which drops the previous one), if it has an endpoint.
    fn fresh_handshake_index(&mut self, id: PeerId) -> Option<(u32, super::Endpoint)> {
        let endpoint = self.peers.get(&id)?.endpoint?;
        self.forget_handshake_index(id);
        let index = self.index_table.insert_handshake(id, &mut *self.rng);
        self.peers.get_mut(&id)?.handshake_index = Some(index);
        Some((index, endpoint))
    }

    pub(super) fn forget_handshake_index(&mut self, id: PeerId) {
        if let Some(index) = self.peers.get_mut(&id).and_then(|p| p.handshake_index.take()) {
            self.index_table.remove(index);
        }
    }

    /// What the kernel does around `wg_socket_send_buffer_to_peer` for handshake messages.
    fn send_handshake_message(
        &mut self,
        id: PeerId,
        endpoint: super::Endpoint,
        message: &[u8],
        now: Instant,
    ) {
        let Some(peer) = self.peers.get_mut(&id) else { return };
        peer.timers.on_any_authenticated_packet_traversal(now);
        peer.timers.on_any_authenticated_packet_sent();
        peer.last_sent_handshake = Some(now);
        peer.tx_bytes += message.len() as u64;
        peer.tx_packets += 1;
        self.transmits.push_back(Transmit { to: endpoint, data: message.to_vec(), ecn: 0 });
    }

    /// The kernel's `wg_noise_handshake_begin_session`: turn the completed handshake into a
    /// keypair, rotate, and let the handshake's index name the keypair from now on.
    pub(super) fn begin_session(&mut self, id: PeerId, now: Instant) -> bool {
        let Some(peer) = self.peers.get_mut(&id) else { return false };
        let keys = match peer.handshake.begin_session() {
            Ok(keys) => keys,
            Err(e) => {
                tracing::debug!(peer = id.0, "cannot begin session: {e}");
                return false;
            }
        };
        let Some(counters) = self.options.session_memory.allocate() else {
            tracing::warn!(peer = id.0, "no free session slot: dropping the new session");
            if let Some(index) = peer.handshake_index.take() {
                self.index_table.remove(index);
            }
            return false;
        };
        peer.handshake_index = None;
        self.index_table.promote_to_keypair(keys.local_index);
        let keypair = Keypair::new(keys, now, counters);
        for gone in peer.keypairs.add(keypair) {
            self.index_table.remove(gone.local_index);
        }
        self.events.push_back(Event::KeypairsChanged(id));
        self.count_handshake(HandshakeMessage::SessionDerived);
        true
    }
}

/// A transport-data message carrying `plain`, padded and sealed with `keypair`.
fn seal(
    keypair: &mut Keypair,
    now: Instant,
    reject_after: std::time::Duration,
    plain: &[u8],
    mtu: usize,
) -> Option<Vec<u8>> {
    let pad = padding(plain.len(), mtu);
    let mut buf = Vec::with_capacity(DATA_MIN_LEN + plain.len() + pad);
    buf.resize(DATA_HEADER_LEN, 0);
    buf.extend_from_slice(plain);
    buf.resize(DATA_HEADER_LEN + plain.len() + pad, 0);
    keypair.seal(now, reject_after, &mut buf)?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::padding;

    #[test]
    fn padding_rounds_up_to_sixteen_but_not_past_the_mtu() {
        assert_eq!(padding(0, 1420), 0);
        assert_eq!(padding(1, 1420), 15);
        assert_eq!(padding(16, 1420), 0);
        assert_eq!(padding(1415, 1420), 5);
        assert_eq!(padding(1420, 1420), 0);
        assert_eq!(padding(1500, 1420), 0, "oversized packets are not padded further");
        assert_eq!(padding(1419, 1420), 1);
    }
}
