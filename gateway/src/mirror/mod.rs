//! The one seam between the protocol core and the eBPF maps.
//!
//! The core projects each peer into plain data (`wg::projection::PeerView`: its sessions
//! with their slots, keys and use, the one that sends, its endpoint, its prefixes). The
//! mirror remembers what it last published and turns the difference between that and a new
//! view into [`MapOps`] calls, in the order the programs need; the daemon calls it after
//! every protocol step, and nothing else writes the maps.
//!
//! ```text
//!  wg::Device ──dataplane_view(id)──▶ PeerView ──▶ Mirror (shadow: what was published)
//!                                                     │ the difference, in order
//!                                                     ▼
//!                                              MapOps (Dataplane: SESSIONS, RX_INDEX,
//!                                                      PEERS, ALLOWED_V4/V6, CONFIG)
//!  entry::ForwardTable ──ForwardPlan──▶ Mirror ── ForwardOps (ENTRY_FORWARDS, ENTRY_PORTS)
//!  the proxy's connections ───────────▶ Mirror ── ProxyFlowOps (PROXY_FLOWS)
//! ```
//!
//! The entry point's part: `forwards` (tcp and udp forwards, per packet in the programs)
//! and `proxy_flows` (connections the proxy makes for tls and http forwards).

pub mod forwards;
mod map_ops;
mod prefixes;
pub mod proxy_flows;
mod sessions;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_entry;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use gateway_common::maps::EntryTraffic;
use ipnet::IpNet;

pub use map_ops::{ForwardOps, MapOps, ProxyFlowOps};

use self::forwards::{ForwardPlan, Forwards, PlanError};
use self::prefixes::Prefixes;
use self::proxy_flows::{ProxiedAddrs, ProxyFlows, SteerError};
use self::sessions::{PeerSessions, Sessions};
use crate::dataplane::{DataplaneError, ForwardSlot, PeerSlot, Result, TunnelConfig};
use crate::entry::forward::Selector;
use crate::entry::table::ForwardTable;
use crate::wg::PeerId;
use crate::wg::device::{Device, Event};
use crate::wg::peer::Endpoint;
use crate::wg::projection::PeerView;

/// What was published for one peer.
struct PeerShadow {
    slot: PeerSlot,
    /// None until written (a fresh slot has none).
    endpoint: Option<Endpoint>,
    /// The slot's roaming generation as last seen: a different one means the programs moved
    /// the endpoint.
    endpoint_generation: u64,
    sessions: PeerSessions,
    /// `PEER_ENTRY` as written (a fresh slot has it clear).
    entry: bool,
}

pub struct Mirror {
    config: TunnelConfig,
    peers: HashMap<PeerId, PeerShadow>,
    sessions: Sessions,
    prefixes: Prefixes,
    forwards: Forwards,
    proxied: ProxyFlows,
}

/// Why forwards were not (all) published: one line.
#[derive(Debug)]
pub enum ForwardsError {
    /// The data plane cannot hold them; nothing was written.
    Plan(PlanError),
    /// A write failed; what was written is recorded, the next publication goes on from it.
    Dataplane(DataplaneError),
}

impl std::fmt::Display for ForwardsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForwardsError::Plan(e) => e.fmt(f),
            ForwardsError::Dataplane(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ForwardsError {}

impl Mirror {
    /// Starts mirroring into maps that hold nothing yet, writing the tunnel's configuration.
    pub fn new(ops: &mut impl MapOps, config: TunnelConfig) -> Result<Mirror> {
        ops.set_config(&config)?;
        Ok(Mirror {
            config,
            peers: HashMap::new(),
            sessions: Sessions::default(),
            prefixes: Prefixes::default(),
            forwards: Forwards::default(),
            proxied: ProxyFlows::default(),
        })
    }

    /// Publishes every session as born `shift` earlier: under a shortened test timer scale,
    /// the programs (which compare a session's age with the real REJECT_AFTER_TIME) then
    /// expire it when the daemon does.
    pub fn with_birth_shift(mut self, shift: Duration) -> Mirror {
        self.sessions.birth_shift = shift;
        self
    }

    pub fn config(&self) -> &TunnelConfig {
        &self.config
    }

    /// Changes the tunnel's configuration; `CONFIG` is written if it changed.
    pub fn configure(&mut self, ops: &mut impl MapOps, change: impl FnOnce(&mut TunnelConfig)) {
        let mut config = self.config;
        change(&mut config);
        if config == self.config {
            return;
        }
        match ops.set_config(&config) {
            Ok(()) => self.config = config,
            Err(e) => tracing::warn!("data plane: cannot update CONFIG: {e}"),
        }
    }

    /// Follows one protocol step: peers added and removed, the configuration, and one sync
    /// of every peer whose sessions, endpoint or AllowedIPs the step changed (a `wg setconf`
    /// of 130 000 prefixes is one diff). Returns the views it synced.
    pub fn follow(
        &mut self,
        ops: &mut impl MapOps,
        device: &Device,
        events: &[Event],
    ) -> Vec<PeerView> {
        let mut touched = BTreeSet::new();
        let mut removed = HashSet::new();
        for event in events {
            match *event {
                Event::PeerAdded(id) => {
                    removed.remove(&id);
                    touched.insert(id);
                }
                Event::PeerRemoved(id) => {
                    removed.insert(id);
                    self.remove(ops, id);
                }
                Event::KeypairsChanged(id)
                | Event::EndpointChanged(id)
                | Event::AllowedIpsChanged(id) => {
                    touched.insert(id);
                }
                Event::ListenPortChanged(port) => self.configure(ops, |c| c.listen_port = port),
                Event::FwmarkChanged(mark) => self.configure(ops, |c| c.fwmark = mark),
                Event::MtuChanged(mtu) => self.configure(ops, |c| c.tun_mtu = mtu as u32),
                Event::HandshakeCompleted(_) => {}
            }
        }
        let views: Vec<PeerView> = touched
            .into_iter()
            .filter(|id| !removed.contains(id))
            .filter_map(|id| device.dataplane_view(id))
            .collect();
        self.sync(ops, &views);
        views
    }

    /// Makes the maps hold what `views` say of their peers, in four passes over them:
    /// 1. every session a view dropped is retired, so that a slot reused across peers is
    ///    cleared before it is refilled;
    /// 2. each peer gets its slot, its endpoint, and the prefixes it gained;
    /// 3. each loses the prefixes it no longer has (after 2: a prefix that moved between
    ///    peers is taken over, never unmapped);
    /// 4. new sessions are published, others' use updated, and the sending one pointed at.
    ///
    /// A write that fails is reported and left unrecorded: the next sync of the peer tries
    /// again.
    pub fn sync(&mut self, ops: &mut impl MapOps, views: &[PeerView]) {
        for view in views {
            let Some(shadow) = self.peers.get_mut(&view.id) else { continue };
            if let Err(e) =
                self.sessions.retire_dropped(ops, shadow.slot, &mut shadow.sessions, Some(view))
            {
                tracing::warn!(peer = view.id.0, "data plane: retiring a session: {e}");
            }
        }
        let prefixes: Vec<Vec<IpNet>> = views.iter().map(|v| normalized(&v.prefixes)).collect();
        for (view, prefixes) in views.iter().zip(&prefixes) {
            let Some(slot) = self.peer_slot_or_add(ops, view.id) else { continue };
            self.sync_endpoint(ops, view);
            if let Err(e) = self.prefixes.gain(ops, view.id, slot, prefixes) {
                tracing::warn!(peer = view.id.0, "data plane: adding AllowedIPs: {e}");
            }
            self.sync_entry(ops, view);
        }
        for (view, prefixes) in views.iter().zip(&prefixes) {
            let Some(slot) = self.peer_slot(view.id) else { continue };
            if let Err(e) = self.prefixes.lose(ops, view.id, slot, prefixes) {
                tracing::warn!(peer = view.id.0, "data plane: removing AllowedIPs: {e}");
            }
        }
        for view in views {
            let Some(shadow) = self.peers.get_mut(&view.id) else { continue };
            if let Err(e) = self.sessions.publish(ops, shadow.slot, &mut shadow.sessions, view) {
                tracing::warn!(peer = view.id.0, "data plane: publishing a session: {e}");
            }
        }
        self.sync_reply_to(ops);
    }

    /// Takes a peer out of the maps: its prefixes first (no new packet maps to it), then its
    /// sessions, then its slot.
    pub fn remove(&mut self, ops: &mut impl MapOps, id: PeerId) {
        let Some(mut shadow) = self.peers.remove(&id) else { return };
        if let Err(e) = self.prefixes.clear(ops, id, shadow.slot) {
            tracing::warn!(peer = id.0, "data plane: removing AllowedIPs: {e}");
        }
        if let Err(e) = self.sessions.retire_dropped(ops, shadow.slot, &mut shadow.sessions, None) {
            tracing::warn!(peer = id.0, "data plane: retiring a session: {e}");
        }
        if let Err(e) = ops.remove_peer(shadow.slot) {
            tracing::warn!(peer = id.0, "data plane: removing peer: {e}");
        }
        self.sync_reply_to(ops);
    }

    /// Makes the programs carry `table`'s tcp and udp forwards, and sets `CONFIG_ENTRY` while
    /// the table has any forward (tls and http ones included: their replies are translated
    /// too). The flag goes on after the forwards are written and off before they are cleared.
    pub fn publish_forwards(
        &mut self,
        ops: &mut (impl MapOps + ForwardOps),
        table: &ForwardTable,
    ) -> std::result::Result<(), ForwardsError> {
        let plan = ForwardPlan::of(table).map_err(ForwardsError::Plan)?;
        let entry = !table.is_empty();
        if !entry {
            self.configure(ops, |config| config.entry = false);
        }
        self.forwards.publish(ops, &plan).map_err(ForwardsError::Dataplane)?;
        if entry {
            self.configure(ops, |config| config.entry = true);
        }
        Ok(())
    }

    /// How many `ENTRY_FORWARDS` slots the published forwards take.
    pub fn forward_slots(&self) -> usize {
        self.forwards.len()
    }

    /// What each tcp and udp forward of `table` carried in the programs: the sum over its
    /// published pieces of what `read` says their slots carried. Forwards not published yet
    /// have none; a slot `read` fails on counts nothing.
    pub fn forward_traffic(
        &self,
        table: &ForwardTable,
        mut read: impl FnMut(ForwardSlot) -> Result<EntryTraffic>,
    ) -> Vec<(Selector, EntryTraffic)> {
        let mut by_slot: Vec<(&forwards::Piece, ForwardSlot)> = self.forwards.slots().collect();
        by_slot.sort_by_key(|(_, slot)| *slot);
        let counted: Vec<(&forwards::Piece, EntryTraffic)> = by_slot
            .into_iter()
            .filter_map(|(piece, slot)| read(slot).ok().map(|traffic| (piece, traffic)))
            .collect();
        let mut traffic = Vec::new();
        for forward in table.forwards() {
            let mut pieces = counted.iter().filter(|(piece, _)| piece.is_of(forward)).peekable();
            if pieces.peek().is_none() {
                continue;
            }
            let sum = pieces.fold(EntryTraffic::default(), |sum, (_, piece)| sum + *piece);
            traffic.push((forward.selector().clone(), sum));
        }
        traffic
    }

    /// Registers a connection the proxy made, so that the backend sees the client's address.
    pub fn steer_proxied(
        &mut self,
        ops: &mut impl ProxyFlowOps,
        addrs: ProxiedAddrs,
    ) -> std::result::Result<(), SteerError> {
        self.proxied.steer(ops, addrs)
    }

    /// Forgets a connection the proxy closed.
    pub fn release_proxied(&mut self, ops: &mut impl ProxyFlowOps, addrs: ProxiedAddrs) {
        self.proxied.release(ops, addrs);
    }

    /// How many proxied connections are steered now.
    pub fn proxied_connections(&self) -> usize {
        self.proxied.len()
    }

    /// The peer's `PEERS` slot, if it has one.
    pub fn peer_slot(&self, id: PeerId) -> Option<PeerSlot> {
        self.peers.get(&id).map(|p| p.slot)
    }

    /// Every mirrored peer and its slot.
    pub fn peer_slots(&self) -> impl Iterator<Item = (PeerId, PeerSlot)> + '_ {
        self.peers.iter().map(|(id, p)| (*id, p.slot))
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The peer's prefixes as published, sorted.
    pub fn prefixes(&self, id: PeerId) -> Vec<IpNet> {
        self.prefixes.of(id)
    }

    /// Whether the programs moved the peer's endpoint since it was last written or seen
    /// (`generation` is the slot's, as just read); remembers it either way.
    pub fn roamed(&mut self, id: PeerId, generation: u64) -> bool {
        let Some(shadow) = self.peers.get_mut(&id) else { return false };
        let roamed = shadow.endpoint_generation != generation;
        shadow.endpoint_generation = generation;
        roamed
    }

    fn peer_slot_or_add(&mut self, ops: &mut impl MapOps, id: PeerId) -> Option<PeerSlot> {
        if let Some(shadow) = self.peers.get(&id) {
            return Some(shadow.slot);
        }
        match ops.add_peer() {
            Ok(slot) => {
                let shadow = PeerShadow {
                    slot,
                    endpoint: None,
                    endpoint_generation: 0,
                    sessions: PeerSessions::default(),
                    entry: false,
                };
                self.peers.insert(id, shadow);
                Some(slot)
            }
            Err(e) => {
                tracing::warn!(peer = id.0, "data plane: no peer slot ({e}): userspace");
                None
            }
        }
    }

    /// The peer's entry mark, after its prefixes: the programs let an entry point's packets
    /// carry sources only entry points own.
    fn sync_entry(&mut self, ops: &mut impl MapOps, view: &PeerView) {
        let Some(shadow) = self.peers.get_mut(&view.id) else { return };
        if shadow.entry == view.entry {
            return;
        }
        match ops.set_peer_entry(shadow.slot, view.entry) {
            Ok(()) => shadow.entry = view.entry,
            Err(e) => tracing::warn!(peer = view.id.0, "data plane: marking an entry point: {e}"),
        }
    }

    /// `CONFIG_REPLY_TO` while some peer is marked an entry point: the LAN's program then
    /// sends the replies of their flows back to them. Set after the first mark, cleared after
    /// the last one went.
    fn sync_reply_to(&mut self, ops: &mut impl MapOps) {
        let any = self.has_entry_peers();
        self.configure(ops, |config| config.reply_to = any);
    }

    /// Whether some peer is published as an entry point.
    pub fn has_entry_peers(&self) -> bool {
        self.peers.values().any(|peer| peer.entry)
    }

    fn sync_endpoint(&mut self, ops: &mut impl MapOps, view: &PeerView) {
        let Some(shadow) = self.peers.get_mut(&view.id) else { return };
        if shadow.endpoint == view.endpoint {
            return;
        }
        match ops.set_peer_endpoint(shadow.slot, view.endpoint.as_ref()) {
            Ok(generation) => {
                shadow.endpoint = view.endpoint;
                shadow.endpoint_generation = generation;
            }
            Err(e) => tracing::warn!(peer = view.id.0, "data plane: setting the endpoint: {e}"),
        }
    }
}

/// Prefixes as the tries key them: host bits clear, sorted, once each.
fn normalized(prefixes: &[IpNet]) -> Vec<IpNet> {
    let mut nets: Vec<IpNet> = prefixes.iter().map(IpNet::trunc).collect();
    nets.sort();
    nets.dedup();
    nets
}
