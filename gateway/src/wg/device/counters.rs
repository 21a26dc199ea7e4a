//! What the device counts besides each peer's bytes and packets: handshake messages by kind and
//! direction, and drops by reason, device-wide and for the peer a drop is about. The metrics
//! endpoint exports them (`gateway_handshake_messages_total`, `gateway_handshakes_completed_total`,
//! `gateway_userspace_dropped_packets_total`, `gateway_peer_dropped_packets_total`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Device, DropReason};
use crate::wg::PeerId;

/// Handshake messages the userspace path handled, device-wide. A received message is counted
/// once it is accepted (its MACs, and for initiations and responses the Noise step, hold);
/// those refused are counted as drops instead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeCounts {
    pub initiations_sent: u64,
    pub initiations_received: u64,
    pub responses_sent: u64,
    pub responses_received: u64,
    /// Sent under load instead of a response: the sender must retry with the cookie.
    pub cookie_replies_sent: u64,
    pub cookie_replies_received: u64,
    /// Sessions derived from a completed handshake, as initiator or responder.
    pub completed: u64,
}

/// One kind of handshake message, for [`Device::count_handshake`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeMessage {
    InitiationSent,
    InitiationReceived,
    ResponseSent,
    ResponseReceived,
    CookieReplySent,
    CookieReplyReceived,
    SessionDerived,
}

impl HandshakeCounts {
    fn count(&mut self, message: HandshakeMessage) {
        let counter = match message {
            HandshakeMessage::InitiationSent => &mut self.initiations_sent,
            HandshakeMessage::InitiationReceived => &mut self.initiations_received,
            HandshakeMessage::ResponseSent => &mut self.responses_sent,
            HandshakeMessage::ResponseReceived => &mut self.responses_received,
            HandshakeMessage::CookieReplySent => &mut self.cookie_replies_sent,
            HandshakeMessage::CookieReplyReceived => &mut self.cookie_replies_received,
            HandshakeMessage::SessionDerived => &mut self.completed,
        };
        *counter += 1;
    }
}

impl Device {
    pub fn handshake_counts(&self) -> HandshakeCounts {
        self.handshakes
    }

    /// The drops counted against one peer (those whose packet named it: a bad or replayed
    /// message on its session, a source it may not use, nowhere to send to...).
    pub fn peer_drops(&self, id: PeerId) -> Option<&BTreeMap<DropReason, u64>> {
        self.peers.get(&id).map(|peer| &peer.drops)
    }

    pub(super) fn count_handshake(&mut self, message: HandshakeMessage) {
        self.handshakes.count(message);
    }

    /// A drop about a known peer: counted device-wide and for the peer.
    pub(super) fn count_for_peer(&mut self, id: PeerId, why: DropReason) {
        self.count(why);
        if let Some(peer) = self.peers.get_mut(&id) {
            *peer.drops.entry(why).or_default() += 1;
        }
    }
}
