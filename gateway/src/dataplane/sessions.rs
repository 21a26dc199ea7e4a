//! Sessions (keypairs) in the shared `SESSIONS` array and their `RX_INDEX` entries.
//!
//! Slots are handed to the protocol core from `SlotPool` (over the mapped array): a keypair
//! takes its slot, with fresh counters, when the handshake completes, and
//! may already have sent with it before it is published here. So publishing never touches
//! the counters.
//!
//! Publication protocol (the programs read `state` first): the fields are written while
//! `state` is 0, then `state` is stored (release), then the receiver index is entered in
//! `RX_INDEX`. Retiring clears `state` first, then removes the index.

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use aya::maps::{HashMap, MapData};
use gateway_common::maps::{
    SESSION_INITIATOR, SESSION_RECV_VALID, SESSION_SEND_VALID, Session, SessionCounters,
};

use super::clock::instant_to_monotonic_ns;
use super::error::{DataplaneError, Result};
use super::mmap::MappedArray;
use super::peers::PeerSlot;
use super::session_pool::{SlotPool, SlotRegion};

/// A slot of `SESSIONS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionSlot(pub u32);

/// What the programs may do with a session, as the core's view decides it. A responder's
/// unconfirmed `next` keypair is published with neither: its first packet goes to the daemon,
/// which then confirms it.
pub use crate::wg::projection::SessionUse;

/// One keypair as the daemon's handshake derived it: a session's fields other than its state,
/// what `write_session` stores while the programs ignore the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionEntry {
    pub peer: PeerSlot,
    /// Our receiver index, as `u32::from_le_bytes` of its wire bytes.
    pub local_index: u32,
    /// The peer's receiver index, likewise.
    pub remote_index: u32,
    /// When the handshake that derived the keys completed (REJECT_AFTER_TIME counts from it).
    pub created: Instant,
    pub send_key: [u8; 32],
    pub recv_key: [u8; 32],
}

/// A session's `state` word: zero (the default) until it is published, and again once it is
/// retired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionState {
    pub usable: SessionUse,
    /// This side sent the initiation.
    pub initiator: bool,
}

impl SessionState {
    fn bits(self) -> u32 {
        state_bits(self.usable, self.initiator)
    }
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

/// The counters of every slot of the mapped `SESSIONS`, for the core's slot pool.
struct SessionRegion(Arc<MappedArray<Session>>);

impl SlotRegion for SessionRegion {
    fn capacity(&self) -> u32 {
        self.0.entries()
    }

    fn counters(&self, slot: u32) -> NonNull<SessionCounters> {
        let session = self.0.slot(slot).expect("the pool hands out slots below capacity");
        // SAFETY: a valid slot pointer into the mapping, which `self` keeps alive.
        unsafe { NonNull::new_unchecked(std::ptr::addr_of_mut!((*session).counters)) }
    }
}

/// The mapped `SESSIONS` array, the `RX_INDEX` hash that leads receiver indexes to its
/// slots, and the pool that hands its slots' counters to the protocol core.
pub(super) struct SessionMaps {
    array: Arc<MappedArray<Session>>,
    rx_index: HashMap<MapData, u32, u32>,
    pool: Arc<SlotPool>,
}

impl SessionMaps {
    pub(super) fn new(array: MappedArray<Session>, rx_index: HashMap<MapData, u32, u32>) -> Self {
        let array = Arc::new(array);
        let pool = SlotPool::new(Box::new(SessionRegion(Arc::clone(&array))));
        SessionMaps { array, rx_index, pool }
    }

    pub(super) fn pool(&self) -> Arc<SlotPool> {
        Arc::clone(&self.pool)
    }

    pub(super) fn entries(&self) -> u32 {
        self.array.entries()
    }

    fn ptr(&self, slot: SessionSlot) -> Result<*mut Session> {
        self.array
            .slot(slot.0)
            .ok_or_else(|| DataplaneError::Invalid(format!("session slot {} out of range", slot.0)))
    }

    /// Writes a session's fields with its state cleared first, so the programs ignore the
    /// slot until `set_state`.
    pub(super) fn write(&mut self, slot: SessionSlot, e: &SessionEntry) -> Result<()> {
        let ptr = self.ptr(slot)?;
        state_of(ptr).store(0, Ordering::Release);
        // SAFETY: the slot is ours (allocated, state 0); programs ignore it until `state`.
        unsafe {
            std::ptr::addr_of_mut!((*ptr).peer).write_volatile(e.peer.0);
            std::ptr::addr_of_mut!((*ptr).local_index).write_volatile(e.local_index);
            std::ptr::addr_of_mut!((*ptr).remote_index).write_volatile(e.remote_index);
            std::ptr::addr_of_mut!((*ptr).created_ns)
                .write_volatile(instant_to_monotonic_ns(e.created));
            std::ptr::addr_of_mut!((*ptr).send_key).write_volatile(key_words(&e.send_key));
            std::ptr::addr_of_mut!((*ptr).recv_key).write_volatile(key_words(&e.recv_key));
        }
        Ok(())
    }

    /// Stores a session's `state` (release: its fields are visible to a program that sees
    /// it). The default state retires it: programs stop using the slot at once.
    pub(super) fn set_state(&mut self, slot: SessionSlot, state: SessionState) -> Result<()> {
        state_of(self.ptr(slot)?).store(state.bits(), Ordering::Release);
        Ok(())
    }

    /// Changes what the programs may do with a published session, keeping who initiated it.
    pub(super) fn set_use(&mut self, slot: SessionSlot, usable: SessionUse) -> Result<()> {
        let state = state_of(self.ptr(slot)?);
        let initiator = state.load(Ordering::Acquire) & SESSION_INITIATOR != 0;
        state.store(state_bits(usable, initiator), Ordering::Release);
        Ok(())
    }

    /// Makes `local_index` lead the programs to `slot` (`RX_INDEX`).
    pub(super) fn index(&mut self, local_index: u32, slot: SessionSlot) -> Result<()> {
        self.ptr(slot)?;
        self.rx_index
            .insert(local_index, slot.0, 0)
            .map_err(|e| DataplaneError::kernel_chain("inserting into RX_INDEX", &e))
    }

    /// Forgets `local_index`, if it still leads to `slot` (the index may have been reused).
    pub(super) fn unindex(&mut self, local_index: u32, slot: SessionSlot) -> Result<()> {
        if self.rx_index.get(&local_index, 0).ok() == Some(slot.0) {
            self.rx_index
                .remove(&local_index)
                .map_err(|e| DataplaneError::kernel_chain("removing from RX_INDEX", &e))?;
        }
        Ok(())
    }

    /// The receiver index and peer the slot was last written with.
    pub(super) fn written(&self, slot: SessionSlot) -> Result<(u32, PeerSlot)> {
        let ptr = self.ptr(slot)?;
        // SAFETY: reads of fields only the daemon writes.
        Ok(unsafe {
            (
                std::ptr::addr_of!((*ptr).local_index).read_volatile(),
                PeerSlot(std::ptr::addr_of!((*ptr).peer).read_volatile()),
            )
        })
    }

    /// The `state` word of a slot (0: not published).
    pub(super) fn state(&self, slot: SessionSlot) -> Result<u32> {
        Ok(state_of(self.ptr(slot)?).load(Ordering::Acquire))
    }

    /// The session's send nonce counter and replay window, shared with the programs.
    pub(super) fn counters(&self, slot: SessionSlot) -> Result<&SessionCounters> {
        let ptr = self.ptr(slot)?;
        // SAFETY: the counters are atomics in mapped memory that lives as long as `self`.
        Ok(unsafe { &(*ptr).counters })
    }
}
