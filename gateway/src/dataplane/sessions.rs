//! Sessions (keypairs) in the shared `SESSIONS` array and their `RX_INDEX` entries.
//!
//! Publication protocol (the programs read `state` first): a slot is filled with every field
//! and its counters reset while `state` is 0, then `state` is stored (release), then the
//! receiver index is entered in `RX_INDEX`. Retiring clears `state` first, then removes the
//! index, and the slot goes to the back of the free list.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use gateway_common::maps::{
    SESSION_INITIATOR, SESSION_RECV_VALID, SESSION_SEND_VALID, Session, SessionCounters,
};

use super::clock::instant_to_monotonic_ns;
use super::error::{DataplaneError, Result};
use super::loader::Dataplane;
use super::peers::PeerSlot;

/// A slot of `SESSIONS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionSlot(pub u32);

/// What the programs may do with a session. A responder's unconfirmed `next` keypair is
/// published with neither: its first packet goes to the daemon, which then confirms it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionUse {
    pub receive: bool,
    pub send: bool,
}

/// One keypair, as the daemon's handshake derived it.
#[derive(Clone, Copy, Debug)]
pub struct SessionParams {
    pub peer: PeerSlot,
    /// Our receiver index, as `u32::from_le_bytes` of its wire bytes.
    pub local_index: u32,
    /// The peer's receiver index, likewise.
    pub remote_index: u32,
    /// When the handshake that derived the keys completed (REJECT_AFTER_TIME counts from it).
    pub created: Instant,
    pub send_key: [u8; 32],
    pub recv_key: [u8; 32],
    pub usable: SessionUse,
    /// This side sent the initiation.
    pub initiator: bool,
}

fn key_words(key: &[u8; 32]) -> [u32; 8] {
    let mut w = [0u32; 8];
    for (i, chunk) in key.chunks_exact(4).enumerate() {
        w[i] = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    w
}

fn state_bits(usable: SessionUse, initiator: bool) -> u32 {
    let mut s = 0;
    if usable.receive {
        s |= SESSION_RECV_VALID;
    }
    if usable.send {
        s |= SESSION_SEND_VALID;
    }
    if initiator {
        s |= SESSION_INITIATOR;
    }
    s
}

/// `Session::state` as an atomic: the word both planes read to know whether a slot is live.
fn state_of(p: *mut Session) -> &'static AtomicU32 {
    // SAFETY: `state` is an aligned u32 in mapped memory that outlives every use here (the
    // reference does not escape the calling method).
    unsafe { AtomicU32::from_ptr(std::ptr::addr_of_mut!((*p).state)) }
}

impl Dataplane {
    fn session_ptr(&self, slot: SessionSlot) -> Result<*mut Session> {
        if !self.session_slots.is_used(slot.0) {
            return Err(DataplaneError::Invalid(format!("session slot {} is not in use", slot.0)));
        }
        self.sessions
            .slot(slot.0)
            .ok_or_else(|| DataplaneError::Invalid(format!("session slot {} out of range", slot.0)))
    }

    /// Publishes a keypair in a free slot (its send nonce and replay window start fresh) and
    /// makes its receiver index known to the programs.
    pub fn publish_session(&mut self, p: &SessionParams) -> Result<SessionSlot> {
        if !self.peer_slots.is_used(p.peer.0) {
            return Err(DataplaneError::Invalid(format!("peer slot {} is not in use", p.peer.0)));
        }
        let slot = SessionSlot(self.session_slots.allocate("session")?);
        let ptr = self.session_ptr(slot)?;
        let state = state_of(ptr);
        state.store(0, Ordering::Release);
        // SAFETY: the slot is ours (allocated, state 0); programs ignore it until `state`.
        unsafe {
            std::ptr::addr_of_mut!((*ptr).peer).write_volatile(p.peer.0);
            std::ptr::addr_of_mut!((*ptr).local_index).write_volatile(p.local_index);
            std::ptr::addr_of_mut!((*ptr).remote_index).write_volatile(p.remote_index);
            std::ptr::addr_of_mut!((*ptr).created_ns)
                .write_volatile(instant_to_monotonic_ns(p.created));
            std::ptr::addr_of_mut!((*ptr).send_key).write_volatile(key_words(&p.send_key));
            std::ptr::addr_of_mut!((*ptr).recv_key).write_volatile(key_words(&p.recv_key));
            let counters = &(*ptr).counters;
            counters.send_nonce.store(0, Ordering::Relaxed);
            counters.replay.reset();
        }
        state.store(state_bits(p.usable, p.initiator), Ordering::Release);
        if let Err(e) = self.rx_index.insert(p.local_index, slot.0, 0) {
            state.store(0, Ordering::Release);
            self.session_slots.release(slot.0, "session")?;
            return Err(DataplaneError::kernel_chain("inserting into RX_INDEX", &e));
        }
        Ok(slot)
    }

    /// Changes what the programs may do with a published session (e.g. confirming a
    /// responder's `next` keypair once its first packet arrived).
    pub fn set_session_use(&mut self, slot: SessionSlot, usable: SessionUse) -> Result<()> {
        let state = state_of(self.session_ptr(slot)?);
        let initiator = state.load(Ordering::Acquire) & SESSION_INITIATOR != 0;
        state.store(state_bits(usable, initiator), Ordering::Release);
        Ok(())
    }

    /// Retires a session: programs stop using it at once, its receiver index is forgotten,
    /// and a peer still sending with it sends with none (its packets go to the daemon).
    pub fn retire_session(&mut self, slot: SessionSlot) -> Result<()> {
        let ptr = self.session_ptr(slot)?;
        state_of(ptr).store(0, Ordering::Release);
        // SAFETY: reads of fields only the daemon writes.
        let (local_index, peer) = unsafe {
            (
                std::ptr::addr_of!((*ptr).local_index).read_volatile(),
                std::ptr::addr_of!((*ptr).peer).read_volatile(),
            )
        };
        if self.peer_slots.is_used(peer) {
            self.clear_tx_session_if(PeerSlot(peer), slot);
        }
        if self.rx_index.get(&local_index, 0).ok() == Some(slot.0) {
            self.rx_index
                .remove(&local_index)
                .map_err(|e| DataplaneError::kernel_chain("removing from RX_INDEX", &e))?;
        }
        self.session_slots.release(slot.0, "session")
    }

    /// The session's send nonce counter and replay window, shared with the programs: the
    /// daemon's own path takes nonces (`send_nonce.fetch_add`) and accepts counters
    /// (`replay.accept`) on the same words, so each is used once whichever path carries the
    /// packet.
    pub fn session_counters(&self, slot: SessionSlot) -> Result<&SessionCounters> {
        let ptr = self.session_ptr(slot)?;
        // SAFETY: the counters are atomics in mapped memory that lives as long as `self`.
        Ok(unsafe { &(*ptr).counters })
    }
}
