//! What the device does when a peer's timer falls due (the kernel's `wg_expired_*`).

use std::cmp::Reverse;
use std::time::Instant;

use super::{Device, Event};
use crate::wg::PeerId;
use crate::wg::timers::Expired;

impl Device {
    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((due, id))) = self.deadlines.peek() {
            if due > now {
                break;
            }
            self.deadlines.pop();
            let Some(peer) = self.peers.get_mut(&id) else { continue };
            if peer.scheduled_deadline != Some(due) {
                continue;
            }
            peer.scheduled_deadline = None;
            while let Some(expired) = self.peers.get_mut(&id).and_then(|p| p.timers.expire(now)) {
                self.on_expired(id, expired, now);
            }
            self.schedule(id);
        }
    }

    fn on_expired(&mut self, id: PeerId, expired: Expired, now: Instant) {
        match expired {
            Expired::RetransmitHandshake { give_up: true } => {
                tracing::debug!(peer = id.0, "handshake did not complete, giving up");
                if let Some(peer) = self.peers.get_mut(&id) {
                    peer.staged.clear();
                }
            }
            Expired::RetransmitHandshake { give_up: false } => {
                tracing::debug!(peer = id.0, "handshake did not complete, retrying");
                self.clear_endpoint_source(id);
                self.queue_handshake_initiation(id, now, true);
            }
            Expired::SendKeepalive => self.send_keepalive(id, now),
            Expired::NewHandshake => {
                tracing::debug!(peer = id.0, "retrying handshake: we stopped hearing back");
                self.clear_endpoint_source(id);
                self.queue_handshake_initiation(id, now, false);
            }
            Expired::ZeroKeyMaterial => {
                tracing::debug!(peer = id.0, "zeroing key material after inactivity");
                self.clear_handshake(id);
                self.clear_keypairs(id);
            }
            Expired::PersistentKeepalive => {
                if self.peers.get(&id).is_some_and(|p| p.persistent_keepalive != 0) {
                    self.send_keepalive(id, now);
                }
            }
        }
    }

    /// The kernel's `wg_socket_clear_peer_endpoint_src`: forget which local address replies go
    /// from, in case it is the cause of trouble.
    pub fn clear_endpoint_source(&mut self, id: PeerId) {
        if let Some(endpoint) = self.peers.get_mut(&id).and_then(|p| p.endpoint.as_mut())
            && endpoint.local.take().is_some()
        {
            self.events.push_back(Event::EndpointChanged(id));
        }
    }

    pub(super) fn clear_handshake(&mut self, id: PeerId) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.handshake.clear();
        }
        self.forget_handshake_index(id);
    }

    pub(super) fn clear_keypairs(&mut self, id: PeerId) {
        if let Some(peer) = self.peers.get_mut(&id) {
            let gone = peer.keypairs.clear();
            if !gone.is_empty() {
                for k in &gone {
                    self.index_table.remove(k.local_index);
                }
                self.events.push_back(Event::KeypairsChanged(id));
            }
        }
    }
}
