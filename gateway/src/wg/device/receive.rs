//! Receiving datagrams: handshake messages, cookie replies and transport data (the kernel's
//! `receive.c`).

use std::time::{Duration, Instant};

use gateway_common::wire::{DATA_HEADER_LEN, DATA_MIN_LEN, MAX_QUEUED_INCOMING_HANDSHAKES};

use super::{Device, DropReason, Event, HandshakeMessage, Received};
use crate::wg::PeerId;
use crate::wg::cookie::MacState;
use crate::wg::index_table::IndexKind;
use crate::wg::ip;
use crate::wg::keypair::OpenError;
use crate::wg::messages::{self, Packet};
use crate::wg::noise;
use crate::wg::peer::Endpoint;
use crate::wg::timers::{KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_TIMEOUT};

/// How long "under load" lasts after the handshake backlog drops (the kernel: one second).
const UNDER_LOAD_LINGER: Duration = Duration::from_secs(1);

impl Device {
    /// A datagram from `from` (with the local address it arrived on), whose outer header had
    /// the DS field `outer_ds` (its ECN bits mark a decrypted packet). `handshake_backlog` is
    /// how many handshake messages are waiting to be processed: from an eighth of
    /// MAX_QUEUED_INCOMING_HANDSHAKES on, the device is under load and demands cookies.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: Endpoint,
        outer_ds: u8,
        datagram: &mut [u8],
        handshake_backlog: usize,
    ) -> Received {
        if !self.up {
            // The kernel closes its socket while the interface is down.
            self.count(DropReason::NotRunning);
            return Received::Nothing;
        }
        let kind = match messages::parse(datagram) {
            Ok(Packet::Data(_)) => None,
            Ok(_) => Some(()),
            Err(e) => {
                tracing::trace!(from = %from.addr, "dropping datagram: {e}");
                self.count(DropReason::Malformed);
                return Received::Nothing;
            }
        };
        match kind {
            None => self.receive_data(now, from, outer_ds, datagram),
            Some(()) => {
                self.receive_handshake(now, from, datagram, handshake_backlog);
                Received::Nothing
            }
        }
    }

    fn under_load(&mut self, now: Instant, backlog: usize) -> bool {
        if backlog >= MAX_QUEUED_INCOMING_HANDSHAKES / 8 {
            self.last_under_load = Some(now);
            return true;
        }
        match self.last_under_load {
            Some(t) if now < t + UNDER_LOAD_LINGER => true,
            Some(_) => {
                self.last_under_load = None;
                false
            }
            None => false,
        }
    }

    /// The kernel's `wg_receive_handshake_packet`.
    fn receive_handshake(&mut self, now: Instant, from: Endpoint, datagram: &[u8], backlog: usize) {
        let packet = match messages::parse(datagram) {
            Ok(p) => p,
            Err(_) => return,
        };
        if let Packet::CookieReply(reply) = packet {
            let Some(id) = self.index_table.lookup_any(reply.receiver_index()) else {
                self.count(DropReason::UnknownIndex);
                return;
            };
            let Some(peer) = self.peers.get_mut(&id) else { return };
            match peer.cookie.consume_reply(&reply, now) {
                Ok(()) => self.count_handshake(HandshakeMessage::CookieReplyReceived),
                Err(e) => tracing::debug!(peer = id.0, "ignoring cookie reply: {e}"),
            }
            return;
        }
        let under_load = self.under_load(now, backlog);
        let mac_state = match packet {
            Packet::Initiation(m) => {
                self.cookie_checker.validate(&m, from.addr, under_load, now, &mut &mut *self.rng)
            }
            Packet::Response(m) => {
                self.cookie_checker.validate(&m, from.addr, under_load, now, &mut &mut *self.rng)
            }
            _ => return,
        };
        let needs_cookie = match (under_load, mac_state) {
            (true, MacState::ValidMac1AndCookie) => {
                if !self.rate_limiter.allow(from.addr.ip(), now) {
                    self.count(DropReason::RateLimited);
                    return;
                }
                false
            }
            (false, MacState::ValidMac1 | MacState::ValidMac1AndCookie) => false,
            (true, MacState::ValidMac1) => true,
            _ => {
                tracing::debug!(from = %from.addr, "invalid MAC of handshake, dropping");
                self.count(DropReason::InvalidMac);
                return;
            }
        };
        if needs_cookie {
            let reply = match packet {
                Packet::Initiation(m) => {
                    self.cookie_checker.create_reply(&m, from.addr, now, &mut &mut *self.rng)
                }
                Packet::Response(m) => {
                    self.cookie_checker.create_reply(&m, from.addr, now, &mut &mut *self.rng)
                }
                _ => return,
            };
            self.transmits.push_back(super::Transmit { to: from, data: reply.to_vec(), ecn: 0 });
            self.count_handshake(HandshakeMessage::CookieReplySent);
            return;
        }
        let id = match packet {
            Packet::Initiation(m) => {
                let pending = match noise::decrypt_initiator(&self.identity, &m) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::debug!(from = %from.addr, "invalid handshake initiation: {e}");
                        self.count(DropReason::HandshakeFailed);
                        return;
                    }
                };
                let Some(id) = self.by_public_key.get(pending.initiator_static()).copied() else {
                    tracing::debug!(from = %from.addr, "handshake initiation from an unknown peer");
                    self.count(DropReason::HandshakeFailed);
                    return;
                };
                let Some(peer) = self.peers.get_mut(&id) else { return };
                if let Err(e) = peer.handshake.consume_initiation(pending, now) {
                    tracing::debug!(peer = id.0, "invalid handshake initiation: {e}");
                    self.count_for_peer(id, DropReason::HandshakeFailed);
                    return;
                }
                self.count_handshake(HandshakeMessage::InitiationReceived);
                // The handshake state moved on: the old in-flight index names nothing now.
                self.forget_handshake_index(id);
                self.set_endpoint_from_packet(id, from);
                tracing::debug!(peer = id.0, from = %from.addr, "received handshake initiation");
                self.send_handshake_response(id, now);
                id
            }
            Packet::Response(m) => {
                let Some(id) = self.index_table.lookup(m.receiver_index(), IndexKind::Handshake)
                else {
                    self.count(DropReason::UnknownIndex);
                    return;
                };
                let Some(peer) = self.peers.get_mut(&id) else { return };
                if let Err(e) = peer.handshake.consume_response(&self.identity, &m) {
                    tracing::debug!(peer = id.0, "invalid handshake response: {e}");
                    self.count_for_peer(id, DropReason::HandshakeFailed);
                    return;
                }
                self.count_handshake(HandshakeMessage::ResponseReceived);
                self.set_endpoint_from_packet(id, from);
                tracing::debug!(peer = id.0, from = %from.addr, "received handshake response");
                if self.begin_session(id, now) {
                    let wall = self.wall_time(now);
                    if let Some(peer) = self.peers.get_mut(&id) {
                        peer.timers.on_session_derived(now);
                        peer.timers.on_handshake_complete();
                        peer.last_handshake = Some(wall);
                    }
                    self.events.push_back(Event::HandshakeCompleted(id));
                    self.send_keepalive(id, now);
                }
                id
            }
            _ => return,
        };
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.rx_bytes += datagram.len() as u64;
            peer.rx_packets += 1;
            peer.timers.on_any_authenticated_packet_received();
            peer.timers.on_any_authenticated_packet_traversal(now);
        }
        self.schedule(id);
    }

    /// The kernel's `wg_socket_set_peer_endpoint`: roam to where the authenticated packet
    /// came from.
    pub(super) fn set_endpoint_from_packet(&mut self, id: PeerId, from: Endpoint) {
        if let Some(peer) = self.peers.get_mut(&id)
            && peer.endpoint != Some(from)
        {
            peer.endpoint = Some(from);
            self.events.push_back(Event::EndpointChanged(id));
        }
    }

    /// Transport data: decrypt, check, hand the inner packet to the TUN.
    fn receive_data(
        &mut self,
        now: Instant,
        from: Endpoint,
        outer_ds: u8,
        datagram: &mut [u8],
    ) -> Received {
        let receiver = u32::from_le_bytes(datagram[4..8].try_into().expect("length checked"));
        let counter = u64::from_le_bytes(datagram[8..16].try_into().expect("length checked"));
        let Some(id) = self.index_table.lookup(receiver, IndexKind::Keypair) else {
            self.count(DropReason::UnknownIndex);
            return Received::Nothing;
        };
        let reject_after = self.scaled(REJECT_AFTER_TIME);
        let Some(peer) = self.peers.get_mut(&id) else { return Received::Nothing };
        let Some(keypair) = peer.keypairs.get_mut(receiver) else {
            self.count(DropReason::UnknownIndex);
            return Received::Nothing;
        };
        let message_len = datagram.len();
        let plain_len =
            match keypair.open(now, reject_after, counter, &mut datagram[DATA_HEADER_LEN..]) {
                Ok(n) => n,
                Err(e) => {
                    self.count_for_peer(
                        id,
                        match e {
                            OpenError::Invalid => DropReason::KeypairInvalid,
                            OpenError::Forged => DropReason::Forged,
                            OpenError::Replayed => DropReason::Replayed,
                        },
                    );
                    if e == OpenError::Invalid {
                        self.events.push_back(Event::KeypairsChanged(id));
                    }
                    return Received::Nothing;
                }
            };
        self.authenticated_data_received(id, receiver, from, now);
        let peer = self.peers.get_mut(&id).expect("still present");
        let plain = &datagram[DATA_HEADER_LEN..DATA_HEADER_LEN + plain_len];
        if plain.is_empty() {
            peer.rx_bytes += DATA_MIN_LEN as u64;
            peer.rx_packets += 1;
            self.schedule(id);
            return Received::Nothing;
        }
        peer.timers.on_data_received(now);
        self.schedule(id);
        let Some(header) = ip::parse(plain) else {
            self.count_for_peer(id, DropReason::NotIp);
            return Received::Nothing;
        };
        if header.claimed_len > plain.len() || header.claimed_len < ip_min_len(plain) {
            self.count_for_peer(id, DropReason::BadLength);
            return Received::Nothing;
        }
        if !self.may_carry_source(id, header.src) {
            tracing::debug!(peer = id.0, src = %header.src, "packet has unallowed source IP");
            self.count_for_peer(id, DropReason::SourceNotAllowed);
            return Received::Nothing;
        }
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.rx_bytes += (DATA_MIN_LEN + plain_len) as u64;
            peer.rx_packets += 1;
        }
        debug_assert_eq!(message_len, DATA_MIN_LEN + plain_len);
        let inner = DATA_HEADER_LEN..DATA_HEADER_LEN + header.claimed_len;
        ip::decapsulate_ecn(&mut datagram[inner.clone()], outer_ds);
        self.clamp_mss(id, &mut datagram[inner.clone()]);
        Received::Tun(inner)
    }

    /// Bookkeeping shared by every authenticated transport message (the kernel's
    /// `wg_packet_consume_data_done` up to the keepalive check).
    fn authenticated_data_received(
        &mut self,
        id: PeerId,
        receiver: u32,
        from: Endpoint,
        now: Instant,
    ) {
        self.set_endpoint_from_packet(id, from);
        let wall = self.wall_time(now);
        let Some(peer) = self.peers.get_mut(&id) else { return };
        let (confirmed, displaced) = peer.keypairs.received_with(receiver);
        if confirmed {
            if let Some(gone) = displaced {
                self.index_table.remove(gone.local_index);
            }
            peer.timers.on_handshake_complete();
            peer.last_handshake = Some(wall);
            self.events.push_back(Event::KeypairsChanged(id));
            self.events.push_back(Event::HandshakeCompleted(id));
            self.send_staged(id, now);
        }
        self.keep_key_fresh_after_receiving(id, now);
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.timers.on_any_authenticated_packet_received();
            peer.timers.on_any_authenticated_packet_traversal(now);
        }
    }

    /// The kernel's `keep_key_fresh` in receive.c: as initiator, rekey before the current
    /// keypair expires if nothing else has triggered it.
    pub(super) fn keep_key_fresh_after_receiving(&mut self, id: PeerId, now: Instant) {
        let lastminute = self.scaled(REJECT_AFTER_TIME)
            - self.scaled(KEEPALIVE_TIMEOUT)
            - self.scaled(REKEY_TIMEOUT);
        let Some(peer) = self.peers.get_mut(&id) else { return };
        if peer.timers.sent_lastminute_handshake {
            return;
        }
        let due = peer
            .keypairs
            .current
            .as_ref()
            .is_some_and(|k| k.sending_valid() && k.initiator && k.age(now) >= lastminute);
        if due {
            peer.timers.sent_lastminute_handshake = true;
            self.queue_handshake_initiation(id, now, false);
        }
    }
}

/// The smallest length an inner packet's header may claim.
fn ip_min_len(plain: &[u8]) -> usize {
    if plain[0] >> 4 == 4 { 20 } else { 40 }
}
