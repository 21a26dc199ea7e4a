//! One peer: its configuration, handshake, keypairs, timers and the packets waiting for a
//! session. The device drives it; this file holds its state and the small decisions that
//! concern it alone.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Instant, SystemTime};

use gateway_common::wire::MAX_STAGED_PACKETS;

use super::PeerId;
use super::cookie::CookieMaker;
use super::keypair::Keypairs;
use super::noise::{Handshake, StaticIdentity};
use super::timers::{TimerScale, Timers};

/// Where a peer is reached: its address, and the local address and interface its packets
/// arrived on, which replies are sent from (the kernel's `endpoint.src`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub local: Option<LocalAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalAddr {
    pub ip: IpAddr,
    pub ifindex: u32,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Self {
        Endpoint { addr, local: None }
    }
}

pub struct Peer {
    pub(super) id: PeerId,
    pub(super) public_key: [u8; 32],
    pub(super) handshake: Handshake,
    /// Our index for the handshake in flight, registered in the device's index table.
    pub(super) handshake_index: Option<u32>,
    pub(super) cookie: CookieMaker,
    pub(super) keypairs: Keypairs,
    pub(super) timers: Timers,
    pub(super) endpoint: Option<Endpoint>,
    /// The MTU of the underlay's route to the endpoint, as the daemon last learned it; None
    /// while unknown (the tunnel MTU alone applies).
    pub(super) underlay_mtu: Option<usize>,
    pub(super) persistent_keepalive: u16,
    /// Packets waiting for a usable session, oldest first (the kernel's staged queue).
    pub(super) staged: VecDeque<Vec<u8>>,
    /// When we last sent a handshake message: initiations are sent at most once per
    /// REKEY_TIMEOUT.
    pub(super) last_sent_handshake: Option<Instant>,
    pub(super) last_handshake: Option<SystemTime>,
    pub(super) rx_bytes: u64,
    pub(super) tx_bytes: u64,
    pub(super) rx_packets: u64,
    pub(super) tx_packets: u64,
    /// Drops counted against this peer (see `device::counters`).
    pub(super) drops: std::collections::BTreeMap<super::device::DropReason, u64>,
    /// The earliest deadline filed in the device's timer heap for this peer.
    pub(super) scheduled_deadline: Option<Instant>,
}

impl Peer {
    pub(super) fn new(
        id: PeerId,
        public_key: [u8; 32],
        identity: &StaticIdentity,
        preshared_key: Option<[u8; 32]>,
        scale: TimerScale,
    ) -> Self {
        Peer {
            id,
            public_key,
            handshake: Handshake::new(identity, public_key, preshared_key),
            handshake_index: None,
            cookie: CookieMaker::new(&public_key),
            keypairs: Keypairs::default(),
            timers: Timers::new(scale),
            endpoint: None,
            underlay_mtu: None,
            persistent_keepalive: 0,
            staged: VecDeque::new(),
            last_sent_handshake: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_packets: 0,
            tx_packets: 0,
            drops: std::collections::BTreeMap::new(),
            scheduled_deadline: None,
        }
    }

    pub fn id(&self) -> PeerId {
        self.id
    }

    /// Where the peer is reached, if we know.
    pub fn endpoint(&self) -> Option<Endpoint> {
        self.endpoint
    }

    pub(super) fn keypairs(&self) -> &Keypairs {
        &self.keypairs
    }

    /// Queues a packet for when a session exists, dropping the oldest beyond the limit (the
    /// kernel drops before adding). Returns how many were dropped.
    pub fn stage(&mut self, packet: Vec<u8>) -> usize {
        let mut dropped = 0;
        while self.staged.len() > MAX_STAGED_PACKETS {
            self.staged.pop_front();
            dropped += 1;
        }
        self.staged.push_back(packet);
        dropped
    }

    /// Whether a handshake initiation was sent less than REKEY_TIMEOUT ago.
    pub fn handshake_recently_sent(&self, now: Instant) -> bool {
        let rekey_timeout = self.timers.scale().apply(super::timers::REKEY_TIMEOUT);
        self.last_sent_handshake.is_some_and(|t| now < t + rekey_timeout)
    }

    /// The kernel's `wg_noise_reset_last_sent_handshake`: allow an initiation right away.
    pub fn reset_last_sent_handshake(&mut self) {
        self.last_sent_handshake = None;
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.id)
            .field("endpoint", &self.endpoint)
            .field("keypairs", &self.keypairs)
            .finish_non_exhaustive()
    }
}
