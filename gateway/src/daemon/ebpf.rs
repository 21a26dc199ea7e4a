//! Mirrors the protocol device into the eBPF maps, and folds what the programs did back into
//! the device: the glue between `wg::device` and `dataplane`.
//!
//! - keypairs → `SESSIONS`/`RX_INDEX` (reconciled per peer after each step: publish new
//!   ones, retire dropped ones, update what each may be used for, point the peer's
//!   `tx_session` at its current keypair);
//! - endpoints → `PEERS` (and the underlay they route through gets the receive programs);
//! - AllowedIPs → the LPM tries (coalesced: one diff per peer per step);
//! - on a short tick: per-peer activity and roaming → `Device::absorb_activity`, so timers,
//!   rekeying and `wg show` see traffic the programs carried.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::core::EventSink;
use super::status::PathCounters;
use crate::dataplane::{
    AttachPreference, Dataplane, PeerActivitySnapshot, PeerEndpoint, PeerSlot, Program,
    SessionParams, SessionSlot, SessionUse, TunnelConfig, TunnelSends, route_interface,
};
use crate::wg::PeerId;
use crate::wg::device::{Device, Event, ObservedActivity};
use crate::wg::keypair::Keypair;
use crate::wg::timers::{REJECT_AFTER_TIME, TimerScale};

/// How often the programs' activity is folded into the timers. The kernel's own timers for
/// these events fire with up to ~12% slack (its timer wheel), far more than this.
const ACTIVITY_TICK: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct EbpfOptions {
    pub prefer: AttachPreference,
    /// Underlays named by the operator; others are found from peers' endpoints.
    pub underlays: Vec<String>,
    pub lan: Vec<String>,
    pub fast_forward: bool,
    pub tunnel_sends: TunnelSends,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Published {
    slot: SessionSlot,
    local_index: u32,
    usable: SessionUse,
}

#[derive(Default)]
struct PeerMirror {
    slot: Option<PeerSlot>,
    sessions: Vec<Published>,
    tx: Option<SessionSlot>,
    /// The programs' activity already folded in.
    seen: PeerActivitySnapshot,
    endpoint_generation: u64,
}

pub struct EbpfSink {
    dp: Dataplane,
    config: TunnelConfig,
    prefer: AttachPreference,
    /// Interfaces with the receive programs (or where attaching failed: not retried).
    underlays: HashMap<u32, String>,
    peers: HashMap<PeerId, PeerMirror>,
    /// How much earlier than its birth a session is published (see `with_timer_scale`).
    birth_shift: Duration,
}

impl EbpfSink {
    /// Attaches to the tunnel, the LAN interfaces and the named underlays. Any failure here
    /// is returned so the daemon can say so and run on the userspace path instead.
    pub fn new(
        mut dp: Dataplane,
        tun_ifindex: u32,
        mtu: u32,
        options: &EbpfOptions,
    ) -> crate::dataplane::Result<EbpfSink> {
        let config = TunnelConfig {
            tun_ifindex,
            tun_mtu: mtu,
            listen_port: 0,
            hub_forward: options.fast_forward,
            lan_redirect: options.fast_forward && !options.lan.is_empty(),
            fwmark: 0,
        };
        dp.set_config(&config)?;
        // A program the kernel refused was reported with its fallback when it was loaded;
        // its interfaces are left to that fallback here.
        if dp.is_loaded(Program::TxTun) {
            dp.attach_tunnel(tun_ifindex, options.tunnel_sends)?;
        }
        if dp.is_loaded(Program::TxLan) {
            for lan in &options.lan {
                dp.attach_lan(lan.as_str())?;
            }
        }
        let mut underlays = HashMap::new();
        for name in &options.underlays {
            if dp.receives() {
                dp.attach_underlay(name.as_str(), options.prefer)?;
            }
            let (index, name) = crate::dataplane::Interface::from(name.as_str()).resolve()?;
            underlays.insert(index, name);
        }
        Ok(EbpfSink {
            dp,
            config,
            prefer: options.prefer,
            underlays,
            peers: HashMap::new(),
            birth_shift: Duration::ZERO,
        })
    }

    /// The programs expire sessions after the protocol's REJECT_AFTER_TIME, a constant they
    /// compare each session's age with. Under a shortened test timer scale the daemon expires
    /// them sooner; publishing each session as born earlier by the difference makes the
    /// programs expire it at the same moment, so the eBPF path hands expired sessions' traffic
    /// to the daemon (which rekeys) exactly as it would at the real scale.
    pub fn with_timer_scale(mut self, scale: TimerScale) -> EbpfSink {
        self.birth_shift = REJECT_AFTER_TIME - scale.apply(REJECT_AFTER_TIME);
        self
    }

    /// Where sessions' counters live: the device must allocate from it.
    pub fn session_pool(&self) -> std::sync::Arc<crate::wg::session_memory::SlotPool> {
        self.dp.session_pool()
    }

    fn set_config(&mut self, change: impl FnOnce(&mut TunnelConfig)) {
        change(&mut self.config);
        if let Err(e) = self.dp.set_config(&self.config) {
            tracing::warn!("data plane: cannot update CONFIG: {e}");
        }
    }

    fn peer_slot(&mut self, id: PeerId) -> Option<PeerSlot> {
        let mirror = self.peers.entry(id).or_default();
        if mirror.slot.is_none() {
            match self.dp.add_peer() {
                Ok(slot) => mirror.slot = Some(slot),
                Err(e) => tracing::warn!(peer = id.0, "data plane: no peer slot ({e}): userspace"),
            }
        }
        mirror.slot
    }

    fn remove_peer(&mut self, id: PeerId) {
        let Some(mirror) = self.peers.remove(&id) else { return };
        for s in &mirror.sessions {
            let _ = self.dp.retire_session(s.slot, s.local_index);
        }
        if let Some(slot) = mirror.slot
            && let Err(e) = self.dp.remove_peer(slot)
        {
            tracing::warn!(peer = id.0, "data plane: removing peer: {e}");
        }
    }

    fn session_params(&self, peer: PeerSlot, k: &Keypair, usable: SessionUse) -> SessionParams {
        SessionParams {
            peer,
            local_index: k.local_index,
            remote_index: k.remote_index,
            // Within REJECT_AFTER_TIME of boot the monotonic clock cannot go back that far;
            // the programs then expire it late, and the daemon's own checks still apply.
            created: k.birth.checked_sub(self.birth_shift).unwrap_or(k.birth),
            send_key: *k.send_key(),
            recv_key: *k.recv_key(),
            usable,
            initiator: k.initiator,
        }
    }

    /// Makes the maps hold exactly the peer's keypairs, with what each may be used for: all
    /// receive except an unconfirmed `next` (its first packet confirms it, in the daemon);
    /// only `current` sends, and only while the protocol allows it.
    fn reconcile_sessions(&mut self, device: &Device, id: PeerId) {
        let Some(peer) = device.peer(id) else { return };
        let Some(peer_slot) = self.peer_slot(id) else { return };
        let keypairs = &peer.keypairs;
        let mut wanted: Vec<(SessionSlot, &Keypair, SessionUse)> = Vec::new();
        for (k, is_next) in [
            (keypairs.current.as_ref(), false),
            (keypairs.previous.as_ref(), false),
            (keypairs.next.as_ref(), true),
        ] {
            let Some(k) = k else { continue };
            let Some(slot) = k.counters.slot() else { continue };
            let is_current =
                !is_next && keypairs.current.as_ref().is_some_and(|c| std::ptr::eq(c, k));
            let usable = SessionUse {
                receive: k.receiving_valid() && !is_next,
                send: is_current && k.sending_valid(),
            };
            wanted.push((SessionSlot(slot), k, usable));
        }
        let mirror = self.peers.entry(id).or_default();
        let old = std::mem::take(&mut mirror.sessions);
        for p in &old {
            let kept =
                wanted.iter().any(|(s, k, _)| *s == p.slot && k.local_index == p.local_index);
            if !kept && let Err(e) = self.dp.retire_session(p.slot, p.local_index) {
                tracing::warn!(peer = id.0, "data plane: retiring a session: {e}");
            }
        }
        let mut now_published = Vec::new();
        for (slot, k, usable) in &wanted {
            let before = old.iter().find(|p| p.slot == *slot && p.local_index == k.local_index);
            let result = match before {
                None => self.dp.publish_session(*slot, &self.session_params(peer_slot, k, *usable)),
                Some(p) if p.usable != *usable => self.dp.set_session_use(*slot, *usable),
                Some(_) => Ok(()),
            };
            match result {
                Ok(()) => now_published.push(Published {
                    slot: *slot,
                    local_index: k.local_index,
                    usable: *usable,
                }),
                Err(e) => tracing::warn!(peer = id.0, "data plane: publishing a session: {e}"),
            }
        }
        let tx = wanted.iter().find(|(_, _, u)| u.send).map(|(s, _, _)| *s);
        let mirror = self.peers.entry(id).or_default();
        mirror.sessions = now_published;
        if mirror.tx != tx {
            mirror.tx = tx;
            if let Err(e) = self.dp.set_peer_tx_session(peer_slot, tx) {
                tracing::warn!(peer = id.0, "data plane: setting the tx session: {e}");
            }
        }
    }

    fn sync_endpoint(&mut self, device: &Device, id: PeerId) {
        let Some(endpoint) = device.peer(id).and_then(|p| p.endpoint) else {
            if let Some(slot) = self.peer_slot(id) {
                let _ = self.dp.set_peer_endpoint(slot, None);
            }
            return;
        };
        let ifindex = endpoint.local.map(|l| l.ifindex).filter(|&i| i != 0);
        let ifindex = ifindex.or_else(|| route_interface(endpoint.addr.ip()).ok());
        // A peer on this host is reached through `lo`: nothing for the programs to do there.
        if let Some(index) = ifindex
            && !endpoint.addr.ip().is_loopback()
        {
            self.ensure_underlay(index);
        }
        let Some(slot) = self.peer_slot(id) else { return };
        let e = PeerEndpoint {
            addr: endpoint.addr,
            local: endpoint.local.map(|l| l.ip),
            ifindex: ifindex.unwrap_or(0),
        };
        if let Err(err) = self.dp.set_peer_endpoint(slot, Some(&e)) {
            tracing::warn!(peer = id.0, "data plane: setting the endpoint: {err}");
        }
        // Our own write is not a roam: remember its generation.
        if let Ok((_, generation)) = self.dp.peer_endpoint(slot) {
            self.peers.entry(id).or_default().endpoint_generation = generation;
        }
    }

    /// The interfaces peers are reached through get the receive programs, once.
    fn ensure_underlay(&mut self, ifindex: u32) {
        if self.underlays.contains_key(&ifindex) || ifindex == self.config.tun_ifindex {
            return;
        }
        let name = crate::dataplane::Interface::from(ifindex)
            .resolve()
            .map(|(_, n)| n)
            .unwrap_or_else(|_| format!("#{ifindex}"));
        if !self.dp.receives() {
            return;
        }
        if let Err(e) = self.dp.attach_underlay(ifindex, self.prefer) {
            tracing::warn!(
                "data plane: cannot attach to {name}: {e}; its traffic stays in userspace"
            );
        }
        self.underlays.insert(ifindex, name);
    }

    fn sync_allowed_ips(&mut self, device: &Device, id: PeerId) {
        let Some(slot) = self.peer_slot(id) else { return };
        let nets: Vec<_> = device.allowed_ips().prefixes_of(&id).collect();
        if let Err(e) = self.dp.set_allowed_ips(slot, &nets) {
            tracing::warn!(peer = id.0, "data plane: setting AllowedIPs: {e}");
        }
    }
}

fn newer(seen: Option<Instant>, now: Option<Instant>) -> Option<Instant> {
    match (seen, now) {
        (Some(a), Some(b)) if b > a => Some(b),
        (None, Some(b)) => Some(b),
        _ => None,
    }
}

impl EventSink for EbpfSink {
    fn on_events(&mut self, device: &Device, events: &[Event]) {
        let mut keypairs = BTreeSet::new();
        let mut endpoints = BTreeSet::new();
        let mut allowed = BTreeSet::new();
        let mut removed = HashSet::new();
        for event in events {
            match *event {
                Event::PeerAdded(id) => {
                    removed.remove(&id);
                    self.peer_slot(id);
                }
                Event::PeerRemoved(id) => {
                    removed.insert(id);
                    self.remove_peer(id);
                }
                Event::KeypairsChanged(id) => {
                    keypairs.insert(id);
                }
                Event::EndpointChanged(id) => {
                    endpoints.insert(id);
                }
                Event::AllowedIpsChanged(id) => {
                    allowed.insert(id);
                }
                Event::ListenPortChanged(port) => self.set_config(|c| c.listen_port = port),
                Event::FwmarkChanged(mark) => self.set_config(|c| c.fwmark = mark),
                Event::MtuChanged(mtu) => self.set_config(|c| c.tun_mtu = mtu as u32),
                Event::HandshakeCompleted(_) => {}
            }
        }
        let live = |id: &PeerId| !removed.contains(id) && device.peer(*id).is_some();
        for id in endpoints.into_iter().filter(live) {
            self.sync_endpoint(device, id);
        }
        for id in allowed.into_iter().filter(live) {
            self.sync_allowed_ips(device, id);
        }
        for id in keypairs.into_iter().filter(live) {
            self.reconcile_sessions(device, id);
        }
    }

    fn tick(&mut self, device: &mut Device, now: Instant) {
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            let Some(mirror) = self.peers.get(&id) else { continue };
            let Some(slot) = mirror.slot else { continue };
            let Ok(activity) = self.dp.peer_activity(slot) else { continue };
            let endpoint = self.dp.peer_endpoint(slot).ok();
            let roamed =
                endpoint.filter(|(_, generation)| *generation != mirror.endpoint_generation);
            let seen = ObservedActivity {
                received: newer(mirror.seen.last_rx, activity.last_rx),
                sent: newer(mirror.seen.last_tx, activity.last_tx),
                data_received: newer(mirror.seen.last_data_rx, activity.last_data_rx),
                data_sent: newer(mirror.seen.last_data_tx, activity.last_data_tx),
                roamed_to: roamed.and_then(|(e, _)| e).map(|e| e.addr),
            };
            let mirror = self.peers.get_mut(&id).expect("present");
            mirror.seen = activity;
            if let Some((_, generation)) = endpoint {
                mirror.endpoint_generation = generation;
            }
            if seen != ObservedActivity::default() {
                device.absorb_activity(id, seen, now);
            }
        }
    }

    fn tick_every(&self) -> Option<Duration> {
        (!self.peers.is_empty()).then_some(ACTIVITY_TICK)
    }

    fn path_counters(&self, peer: PeerId) -> PathCounters {
        let activity = self
            .peers
            .get(&peer)
            .and_then(|m| m.slot)
            .and_then(|s| self.dp.peer_activity(s).ok())
            .unwrap_or_default();
        PathCounters {
            rx_bytes: activity.rx_bytes,
            tx_bytes: activity.tx_bytes,
            rx_packets: activity.rx_packets,
            tx_packets: activity.tx_packets,
        }
    }

    fn programs(&self) -> Vec<String> {
        self.dp.program_reports().iter().map(ToString::to_string).collect()
    }

    fn attachments(&self) -> Vec<String> {
        self.dp
            .attached()
            .into_iter()
            .map(|(ifindex, program)| {
                let name = crate::dataplane::Interface::from(ifindex)
                    .resolve()
                    .map(|(_, n)| n)
                    .unwrap_or_else(|_| format!("#{ifindex}"));
                let checksum = match program {
                    Program::RxXdp | Program::RxTc => self.dp.underlay_checksum(ifindex),
                    _ => None,
                };
                match checksum {
                    Some(c) => format!("{name}: {} (transmit checksum: {c})", program.name()),
                    None => format!("{name}: {}", program.name()),
                }
            })
            .collect()
    }

    /// An underlay's checksum offload may have changed (`ethtool -K`): the send program must
    /// know before it relies on it.
    fn link_changed(&mut self, ifindex: u32) {
        if self.underlays.contains_key(&ifindex) {
            self.dp.refresh_underlay(ifindex);
        }
    }

    fn stats(&self) -> BTreeMap<String, u64> {
        self.dp
            .stats()
            .map(|s| s.entries().into_iter().map(|(k, v)| (format!("{k:?}"), v)).collect())
            .unwrap_or_default()
    }
}
