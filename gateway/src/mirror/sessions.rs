//! Sessions as published: which session each `SESSIONS` slot holds and what it may do, and
//! the order of the writes that keep the programs from ever using a half-written one.
//!
//! Publishing: the keys (with the state cleared), then the state, then the receiver index.
//! Retiring: the peer's send pointer moves off it, then its state is cleared, then its
//! receiver index goes. Every retirement of a step comes before every publication, so a slot
//! one peer dropped and another's new handshake took is cleared before it is refilled.

use std::collections::HashMap;
use std::time::Duration;

use super::MapOps;
use crate::dataplane::{PeerSlot, Result, SessionEntry, SessionSlot, SessionState};
use crate::wg::PeerId;
use crate::wg::projection::{PeerView, SessionView};

/// One published session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Published {
    peer: PeerId,
    local_index: u32,
    state: SessionState,
}

/// A peer's published sessions and the one it sends with.
#[derive(Default)]
pub(super) struct PeerSessions {
    /// (slot, receiver index) of each session published for the peer.
    held: Vec<(SessionSlot, u32)>,
    tx: Option<SessionSlot>,
}

#[derive(Default)]
pub(super) struct Sessions {
    /// Every published slot, whichever peer's session it holds.
    slots: HashMap<SessionSlot, Published>,
    /// How much earlier than its birth a session is published (see `Mirror::with_birth_shift`).
    pub(super) birth_shift: Duration,
}

fn state(s: &SessionView) -> SessionState {
    SessionState { usable: s.usable, initiator: s.initiator }
}

impl Sessions {
    /// Retires the peer's sessions that are not in `view` (all of them without one).
    pub(super) fn retire_dropped(
        &mut self,
        ops: &mut impl MapOps,
        peer: PeerSlot,
        mine: &mut PeerSessions,
        view: Option<&PeerView>,
    ) -> Result<()> {
        let kept = |&(slot, local_index): &(SessionSlot, u32)| {
            view.and_then(|v| v.session(local_index)).is_some_and(|s| s.slot == slot.0)
        };
        let dropped: Vec<(SessionSlot, u32)> =
            mine.held.iter().copied().filter(|s| !kept(s)).collect();
        for (slot, local_index) in dropped {
            if mine.tx == Some(slot) {
                ops.set_peer_tx(peer, None)?;
                mine.tx = None;
            }
            if self.slots.get(&slot).is_some_and(|p| p.local_index == local_index) {
                ops.set_session_state(slot, SessionState::default())?;
                self.slots.remove(&slot);
            }
            ops.unindex_session(local_index, slot)?;
            mine.held.retain(|&held| held != (slot, local_index));
        }
        Ok(())
    }

    /// Publishes the view's new sessions, updates what the others may do, and points the
    /// peer's send pointer at the one that sends.
    pub(super) fn publish(
        &mut self,
        ops: &mut impl MapOps,
        peer: PeerSlot,
        mine: &mut PeerSessions,
        view: &PeerView,
    ) -> Result<()> {
        for s in &view.sessions {
            let slot = SessionSlot(s.slot);
            let wanted = Published { peer: view.id, local_index: s.local_index, state: state(s) };
            match self.slots.get(&slot) {
                Some(p) if *p == wanted => {}
                Some(p) if p.peer == view.id && p.local_index == s.local_index => {
                    ops.set_session_state(slot, wanted.state)?;
                }
                _ => {
                    ops.write_session(slot, &self.entry(peer, s))?;
                    ops.set_session_state(slot, wanted.state)?;
                    if let Err(e) = ops.index_session(s.local_index, slot) {
                        ops.set_session_state(slot, SessionState::default())?;
                        return Err(e);
                    }
                    mine.held.push((slot, s.local_index));
                }
            }
            self.slots.insert(slot, wanted);
        }
        let tx = view.tx.map(SessionSlot);
        if mine.tx != tx {
            ops.set_peer_tx(peer, tx)?;
            mine.tx = tx;
        }
        Ok(())
    }

    fn entry(&self, peer: PeerSlot, s: &SessionView) -> SessionEntry {
        SessionEntry {
            peer,
            local_index: s.local_index,
            remote_index: s.remote_index,
            // Within REJECT_AFTER_TIME of boot the monotonic clock cannot go back that far;
            // the programs then expire it late, and the daemon's own checks still apply.
            created: s.created.checked_sub(self.birth_shift).unwrap_or(s.created),
            send_key: s.send_key,
            recv_key: s.recv_key,
        }
    }
}
