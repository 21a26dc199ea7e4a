//! What a data plane needs to know of one peer, as plain data: the projection of the
//! protocol's state that the eBPF maps mirror.
//!
//! It is derived here, beside the rotation rules, so that nothing outside the core has to
//! know which keypair is `current`, which one waits in `next`, or when a keypair may still
//! send: the view says what each session may be used for, and which one sends.

use std::time::Instant;

use ipnet::IpNet;

use super::PeerId;
use super::keypair::{Keypair, Keypairs};
use super::peer::{Endpoint, Peer};

/// Where a session stands in its peer's rotation (the kernel's `keypairs` slots).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionRole {
    /// Sends, and receives.
    Current,
    /// Receives packets still in flight from before the last rotation.
    Previous,
    /// A responder's keypair the initiator has not sent with yet: its first packet confirms
    /// it, and only the core may see that packet (it rotates the keypairs).
    Next,
}

/// What a data plane may do with a session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionUse {
    pub receive: bool,
    pub send: bool,
}

/// One keypair whose counters live in a shared slot (see `session_memory`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionView {
    /// The slot its counters occupy: where it must be published.
    pub slot: u32,
    pub role: SessionRole,
    pub usable: SessionUse,
    /// Our receiver index, as `u32::from_le_bytes` of its wire bytes.
    pub local_index: u32,
    /// The peer's receiver index, likewise.
    pub remote_index: u32,
    pub initiator: bool,
    /// When its handshake completed (REJECT_AFTER_TIME counts from it).
    pub created: Instant,
    pub send_key: [u8; 32],
    pub recv_key: [u8; 32],
}

/// One peer, as a data plane sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub id: PeerId,
    pub endpoint: Option<Endpoint>,
    /// Its AllowedIPs, sorted.
    pub prefixes: Vec<IpNet>,
    /// Its sessions in shared slots, in the order current, previous, next. Sessions whose
    /// counters live on the heap (no data plane) are not here: nothing could publish them.
    pub sessions: Vec<SessionView>,
    /// The slot of the session the data plane sends with, if any may send.
    pub tx: Option<u32>,
    /// An entry point: its packets may carry sources no ordinary peer owns, and replies to
    /// the flows it brings in go back to it (see `device::entry`).
    pub entry: bool,
}

impl PeerView {
    pub(super) fn of(peer: &Peer, mut prefixes: Vec<IpNet>, entry: bool) -> PeerView {
        prefixes.sort();
        let sessions = sessions(peer.keypairs());
        let tx = sessions.iter().find(|s| s.usable.send).map(|s| s.slot);
        PeerView { id: peer.id(), endpoint: peer.endpoint(), prefixes, sessions, tx, entry }
    }

    /// The session published under `local_index`, if any.
    pub fn session(&self, local_index: u32) -> Option<&SessionView> {
        self.sessions.iter().find(|s| s.local_index == local_index)
    }
}

/// Every keypair receives, except an unconfirmed `next`; only `current` sends, and only while
/// the protocol lets it (not expired, not exhausted, not invalidated by a key change).
fn sessions(keypairs: &Keypairs) -> Vec<SessionView> {
    [
        (keypairs.current.as_ref(), SessionRole::Current),
        (keypairs.previous.as_ref(), SessionRole::Previous),
        (keypairs.next.as_ref(), SessionRole::Next),
    ]
    .into_iter()
    .filter_map(|(keypair, role)| session(keypair?, role))
    .collect()
}

fn session(k: &Keypair, role: SessionRole) -> Option<SessionView> {
    let usable = SessionUse {
        receive: role != SessionRole::Next && k.receiving_valid(),
        send: role == SessionRole::Current && k.sending_valid(),
    };
    Some(SessionView {
        slot: k.counters.slot()?,
        role,
        usable,
        local_index: k.local_index,
        remote_index: k.remote_index,
        initiator: k.initiator,
        created: k.birth,
        send_key: *k.send_key(),
        recv_key: *k.recv_key(),
    })
}
