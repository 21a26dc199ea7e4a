//! The device: peers, the index table, cryptokey routing, and the entry points the daemon
//! drives (datagrams in, TUN packets in, time passes; datagrams, TUN packets and events out).
//!
//! One concern per file: `receive` (datagrams from the network), `send` (packets from the
//! TUN, handshakes, keepalives), `config` (what the UAPI changes), `expiry` (timers),
//! `activity` (what the eBPF data plane reports), `counters` (handshakes and drops), `entry`
//! (peers that bring in traffic from public sources), `mtu` (each peer's path MTU, and what
//! does not fit it).

mod activity;
mod config;
mod counters;
mod entry;
mod expiry;
mod mtu;
mod receive;
mod send;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod virtual_net;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand_core::CryptoRngCore;

use super::PeerId;
use super::allowed_ips::AllowedIps;
use super::cookie::CookieChecker;
use super::index_table::IndexTable;
use super::noise::StaticIdentity;
use super::peer::{Endpoint, Peer};
use super::projection::PeerView;
use super::ratelimiter::RateLimiter;
use super::session_memory::{HeapMemory, SessionMemory};
use super::tai64n::Tai64nClock;
use super::timers::TimerScale;

pub use activity::ObservedActivity;
pub use config::{ConfigError, PeerSnapshot};
pub use counters::{HandshakeCounts, HandshakeMessage};

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: Endpoint,
    pub data: Vec<u8>,
    /// The outer header's ECN bits (`gateway_common::ecn::encapsulate` of the inner packet;
    /// 0 for handshakes and keepalives).
    pub ecn: u8,
}

/// What happened that someone outside the protocol (the eBPF data plane, the logs) must know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A peer's keypairs changed (added, rotated, invalidated or removed).
    KeypairsChanged(PeerId),
    /// A peer's endpoint changed (configured or roamed).
    EndpointChanged(PeerId),
    /// A peer's AllowedIPs changed.
    AllowedIpsChanged(PeerId),
    PeerAdded(PeerId),
    PeerRemoved(PeerId),
    /// The listen port changed: sockets must be rebound.
    ListenPortChanged(u16),
    FwmarkChanged(u32),
    /// The tunnel's path MTU changed: the TUN's MTU, lowered to what the narrowest peer's
    /// underlay carries (`Device::path_mtu`).
    MtuChanged(usize),
    HandshakeCompleted(PeerId),
}

/// What to do with a datagram after [`Device::handle_datagram`].
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// Write `datagram[range]` (a decrypted inner packet) to the TUN.
    Tun(std::ops::Range<usize>),
    /// Nothing to deliver (handshake, keepalive, or dropped).
    Nothing,
}

/// Why a datagram or packet was dropped: counted, and shown in debug logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    Malformed,
    UnknownIndex,
    InvalidMac,
    RateLimited,
    HandshakeFailed,
    KeypairInvalid,
    Forged,
    Replayed,
    NotIp,
    BadLength,
    SourceNotAllowed,
    NoPeer,
    NoEndpoint,
    StagedOverflow,
    NotRunning,
    /// Larger than the peer's path MTU and not to be fragmented: answered with ICMP.
    TooBig,
}

/// Settings fixed at creation.
#[derive(Clone)]
pub struct DeviceOptions {
    /// Shortens every protocol timer; for tests only.
    pub timer_scale: TimerScale,
    pub session_memory: Arc<dyn SessionMemory>,
    /// Public keys of peers the operator names as entry points (`gatewayd --entry-peer`), on
    /// top of those whose AllowedIPs hold a default route (see `entry`).
    pub entry_peers: HashSet<[u8; 32]>,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions {
            timer_scale: TimerScale::default(),
            session_memory: Arc::new(HeapMemory),
            entry_peers: HashSet::new(),
        }
    }
}

pub struct Device {
    identity: StaticIdentity,
    listen_port: u16,
    fwmark: u32,
    mtu: usize,
    up: bool,
    peers: HashMap<PeerId, Peer>,
    by_public_key: HashMap<[u8; 32], PeerId>,
    next_peer_id: u32,
    free_peer_ids: Vec<u32>,
    index_table: IndexTable,
    allowed_ips: AllowedIps<PeerId>,
    cookie_checker: CookieChecker,
    rate_limiter: RateLimiter,
    last_under_load: Option<Instant>,
    tai: Tai64nClock,
    wall_anchor: (Instant, SystemTime),
    rng: Box<dyn CryptoRngCore + Send>,
    options: DeviceOptions,
    /// Peers' timer deadlines, possibly stale: a popped entry is checked against the peer.
    deadlines: BinaryHeap<Reverse<(Instant, PeerId)>>,
    transmits: VecDeque<Transmit>,
    tun_packets: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    drops: HashMap<DropReason, u64>,
    handshakes: HandshakeCounts,
    icmp_source_v4: Option<Ipv4Addr>,
    icmp_source_v6: Option<Ipv6Addr>,
    /// The last `Event::MtuChanged` value (see `mtu.rs`).
    published_path_mtu: usize,
}

impl Device {
    /// A device with no key, no peers, interface down. `now` and `wall` anchor the wall clock
    /// (TAI64N timestamps, last-handshake times) to the monotonic time the caller feeds in.
    pub fn new(
        now: Instant,
        wall: SystemTime,
        mut rng: Box<dyn CryptoRngCore + Send>,
        options: DeviceOptions,
    ) -> Self {
        let cookie_checker = CookieChecker::new(None, now, &mut &mut *rng);
        Device {
            identity: StaticIdentity::none(),
            listen_port: 0,
            fwmark: 0,
            mtu: crate::tun::DEFAULT_MTU as usize,
            up: false,
            peers: HashMap::new(),
            by_public_key: HashMap::new(),
            next_peer_id: 0,
            free_peer_ids: Vec::new(),
            index_table: IndexTable::default(),
            allowed_ips: AllowedIps::new(),
            cookie_checker,
            rate_limiter: RateLimiter::new(now),
            last_under_load: None,
            tai: Tai64nClock::new(now, wall),
            wall_anchor: (now, wall),
            rng,
            options,
            deadlines: BinaryHeap::new(),
            transmits: VecDeque::new(),
            tun_packets: VecDeque::new(),
            events: VecDeque::new(),
            drops: HashMap::new(),
            handshakes: HandshakeCounts::default(),
            icmp_source_v4: None,
            icmp_source_v6: None,
            published_path_mtu: crate::tun::DEFAULT_MTU as usize,
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Decrypted packets produced other than by [`Device::handle_datagram`]'s return value.
    pub fn poll_tun(&mut self) -> Option<Vec<u8>> {
        self.tun_packets.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Device::handle_timeout`] should next be called.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((t, _))| *t)
    }

    pub fn drops(&self) -> &HashMap<DropReason, u64> {
        &self.drops
    }

    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// The tunnel MTU (the TUN's): plaintext is padded up to it, never beyond, nor beyond
    /// the peer's path MTU (see `mtu.rs`).
    pub fn set_mtu(&mut self, mtu: usize) {
        if mtu != self.mtu {
            self.mtu = mtu;
            self.publish_path_mtu();
        }
    }

    /// Our addresses on the tunnel interface, used as the source of ICMP errors.
    pub fn set_icmp_sources(&mut self, v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) {
        self.icmp_source_v4 = v4;
        self.icmp_source_v6 = v6;
    }

    pub fn peer(&self, id: PeerId) -> Option<&Peer> {
        self.peers.get(&id)
    }

    /// The peer as a data plane must mirror it: its sessions and what each may do, its
    /// endpoint, its AllowedIPs.
    pub fn dataplane_view(&self, id: PeerId) -> Option<PeerView> {
        let peer = self.peers.get(&id)?;
        let prefixes = self.allowed_ips.prefixes_of(&id).collect();
        Some(PeerView::of(peer, prefixes, self.is_entry_peer(id)))
    }

    pub fn peer_ids(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }

    pub fn peer_by_public_key(&self, key: &[u8; 32]) -> Option<PeerId> {
        self.by_public_key.get(key).copied()
    }

    pub fn allowed_ips(&self) -> &AllowedIps<PeerId> {
        &self.allowed_ips
    }

    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    pub fn fwmark(&self) -> u32 {
        self.fwmark
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    pub fn public_key(&self) -> Option<[u8; 32]> {
        self.identity.public_key()
    }

    fn count(&mut self, why: DropReason) {
        *self.drops.entry(why).or_default() += 1;
    }

    fn wall_time(&self, now: Instant) -> SystemTime {
        let (anchor, wall) = self.wall_anchor;
        match now.checked_duration_since(anchor) {
            Some(d) => wall + d,
            None => wall - anchor.duration_since(now),
        }
    }

    fn scaled(&self, d: Duration) -> Duration {
        self.options.timer_scale.apply(d)
    }

    /// Files a peer's next timer deadline after anything that may have changed it. The heap
    /// only ever needs an entry at or before the true deadline: a later deadline is re-filed
    /// when the earlier entry pops, so per-packet timer updates push nothing.
    fn schedule(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else { return };
        let Some(deadline) = peer.timers.next_deadline() else { return };
        if peer.scheduled_deadline.is_none_or(|s| deadline < s) {
            peer.scheduled_deadline = Some(deadline);
            self.deadlines.push(Reverse((deadline, id)));
        }
    }
}
