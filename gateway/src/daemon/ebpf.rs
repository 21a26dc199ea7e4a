//! Drives the eBPF data plane from the protocol device, and folds what the programs did back
//! into the device: the glue between `wg::device`, `mirror` and `dataplane`.
//!
//! - after each step: the peers the step touched are projected (`Device::dataplane_view`)
//!   and handed to the [`Mirror`], which writes what changed (sessions, endpoints,
//!   AllowedIPs; one diff per peer per step); the interfaces peers are reached through get
//!   the receive programs;
//! - on a short tick: per-peer activity and roaming → `Device::absorb_activity`, so timers,
//!   rekeying and `wg show` see traffic the programs carried;
//! - the entry point: the interface's forwards and the proxy's connections, through the
//!   mirror too.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::core::EventSink;
use super::proxy_nat::OutboundTranslation;
use super::status::{EntryDataplane, PathCounters};
use crate::dataplane::{
    AttachPreference, Dataplane, MasqueradeConfig, PeerActivitySnapshot, Program, TunnelConfig,
    TunnelSends,
};
use gateway_common::maps::EntryTraffic;

use crate::entry::forward::Selector;
use crate::entry::table::ForwardTable;
use crate::mirror::Mirror;
use crate::mirror::proxy_flows::ProxiedAddrs;
use crate::wg::PeerId;
use crate::wg::device::{Device, Event, ObservedActivity};
use crate::wg::projection::PeerView;
use crate::wg::timers::{REJECT_AFTER_TIME, TimerScale};

/// How often the programs' activity is folded into the timers. The kernel's own timers for
/// these events fire with up to ~12% slack (its timer wheel), far more than this.
const ACTIVITY_TICK: Duration = Duration::from_millis(100);

/// The flow maps are counted for `gateway status` and the metrics up to this many entries
/// each (a count walks the map under the daemon's lock).
pub const FLOWS_COUNTED_UP_TO: usize = 10_000;

#[derive(Debug, Clone)]
pub struct EbpfOptions {
    pub prefer: AttachPreference,
    /// Underlays named by the operator; others are found from peers' endpoints.
    pub underlays: Vec<String>,
    pub lan: Vec<String>,
    pub fast_forward: bool,
    pub tunnel_sends: TunnelSends,
}

pub struct EbpfSink {
    dp: Dataplane,
    mirror: Mirror,
    prefer: AttachPreference,
    /// Interfaces with the receive programs (or where attaching failed: not retried).
    underlays: HashMap<u32, String>,
    /// The programs' activity already folded in, per peer.
    seen: HashMap<PeerId, PeerActivitySnapshot>,
    /// Forwards whose publication failed part way: retried on the tick.
    forwards_pending: Option<ForwardTable>,
    /// Whether the first forward's preparations were made (`prepare_entry`).
    entry_prepared: bool,
    /// `--masquerade` in the programs: what they were told, and when to sweep next.
    masquerade: Option<MasqueradeState>,
}

/// The programs' masquerade, as the sink keeps it up to date.
struct MasqueradeState {
    config: MasqueradeConfig,
    interface: String,
    next_sweep: Instant,
}

/// How often timed-out masquerade mappings are swept out of the maps (and OUTIF's address
/// read again): mappings time out after a minute at the least.
const MASQUERADE_SWEEP: Duration = Duration::from_secs(10);

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
            entry: false,
            reply_to: false,
        };
        let mirror = Mirror::new(&mut dp, config)?;
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
            mirror,
            prefer: options.prefer,
            underlays,
            seen: HashMap::new(),
            forwards_pending: None,
            entry_prepared: false,
            masquerade: None,
        })
    }

    /// The programs expire sessions after the protocol's REJECT_AFTER_TIME, a constant they
    /// compare each session's age with. Under a shortened test timer scale the daemon expires
    /// them sooner; publishing each session as born earlier by the difference makes the
    /// programs expire it at the same moment, so the eBPF path hands expired sessions' traffic
    /// to the daemon (which rekeys) exactly as it would at the real scale.
    pub fn with_timer_scale(mut self, scale: TimerScale) -> EbpfSink {
        let shift = REJECT_AFTER_TIME - scale.apply(REJECT_AFTER_TIME);
        self.mirror = self.mirror.with_birth_shift(shift);
        self
    }

    /// What the kernel's verifier made of each program, fixed since the programs were loaded
    /// (the metrics endpoint takes it once, before the sink goes behind the daemon's lock).
    pub fn program_reports(&self) -> Vec<crate::dataplane::ProgramReport> {
        self.dp.program_reports().to_vec()
    }

    /// Where sessions' counters live: the device must allocate from it.
    pub fn session_pool(&self) -> std::sync::Arc<crate::dataplane::SlotPool> {
        self.dp.session_pool()
    }

    /// Whether `program` runs on the TUN.
    fn on_tunnel(&self, program: Program) -> bool {
        let tun = self.mirror.config().tun_ifindex;
        self.dp.attached().iter().any(|(ifindex, attached)| *ifindex == tun && *attached == program)
    }

    fn publish_forwards(&mut self, table: &ForwardTable) {
        if !table.is_empty() {
            self.prepare_entry();
        }
        match self.mirror.publish_forwards(&mut self.dp, table) {
            Ok(()) => self.forwards_pending = None,
            Err(e) => {
                tracing::warn!("data plane: publishing the forwards: {e}; retrying");
                self.forwards_pending = Some(table.clone());
            }
        }
    }

    /// What the first forward needs besides the maps, done once: the steering program in
    /// front of the TUN's send program (hosts without forwards never run it), and routing of
    /// translated replies on the tunnel interface.
    fn prepare_entry(&mut self) {
        if self.entry_prepared {
            return;
        }
        self.entry_prepared = true;
        let tun = self.mirror.config().tun_ifindex;
        if self.dp.is_loaded(Program::EntryProxy)
            && let Err(e) = self.dp.attach_proxy_steering(tun)
        {
            tracing::warn!(
                "data plane: cannot attach {} to the tunnel: {e}; \
                 proxied connections reach backends from the tunnel address",
                Program::EntryProxy.name()
            );
        }
        let name = crate::dataplane::Interface::from(tun).resolve().map(|(_, name)| name);
        if let Err(e) = name.map_err(|e| e.to_string()).and_then(|name| {
            crate::dataplane::enable_entry_routing(&name).map_err(|e| e.to_string())
        }) {
            tracing::warn!("entry point: {e}; replies of forwarded flows may be dropped");
        }
        if !crate::dataplane::ipv6_forwarding_enabled() {
            // Not switched on for the operator: it would stop the host accepting router
            // advertisements on interfaces without accept_ra=2, which a VPS's own IPv6
            // address may depend on.
            tracing::info!(
                "entry point: IPv6 forwarding is off on this host (net.ipv6.conf.all.forwarding); \
                 IPv6 forwards work where the programs send the replies themselves, the others \
                 need it on (with accept_ra=2 on an uplink configured by router advertisements)"
            );
        }
    }

    /// Masquerades out of `interface` in the programs (`--masquerade`): writes where and as
    /// what, then attaches them. Fails, with nothing left attached, if the kernel refused
    /// either program or attaching failed.
    pub fn start_masquerade(
        &mut self,
        config: MasqueradeConfig,
        interface: &str,
    ) -> crate::dataplane::Result<()> {
        for program in [Program::MasqOut, Program::MasqIn] {
            if !self.dp.is_loaded(program) {
                return Err(crate::dataplane::DataplaneError::Unsupported(format!(
                    "the kernel refused {}",
                    program.name()
                )));
            }
        }
        self.dp.set_masquerade(Some(config))?;
        if let Err(e) = self.dp.attach_masquerade(config.ifindex) {
            let _ = self.dp.set_masquerade(None);
            return Err(e);
        }
        self.masquerade = Some(MasqueradeState {
            config,
            interface: interface.to_string(),
            next_sweep: Instant::now() + MASQUERADE_SWEEP,
        });
        Ok(())
    }

    /// Every `MASQUERADE_SWEEP`: OUTIF's address again (a DHCP lease may move it), and the
    /// timed-out mappings out of the maps.
    fn maintain_masquerade(&mut self, now: Instant) {
        let Some(state) = self.masquerade.as_mut() else { return };
        if now < state.next_sweep {
            return;
        }
        state.next_sweep = now + MASQUERADE_SWEEP;
        if let Ok(addr) = super::masquerade::outside_address(&state.interface)
            && addr != state.config.addr
        {
            tracing::info!("masquerade: {} is now {addr}", state.interface);
            state.config.addr = addr;
            if let Err(e) = self.dp.set_masquerade(Some(state.config)) {
                tracing::warn!("masquerade: {e}");
            }
        }
        if let Err(e) = self.dp.sweep_masquerade(crate::dataplane::monotonic_now_ns()) {
            tracing::warn!("masquerade: sweeping timed-out mappings: {e}");
        }
    }

    /// The interfaces peers are reached through get the receive programs, once. The one a
    /// peer's endpoint routes through is the one the mirror wrote with it.
    fn ensure_underlays(&mut self, views: &[PeerView]) {
        for view in views {
            let Some(slot) = self.mirror.peer_slot(view.id) else { continue };
            let Ok((Some(endpoint), _)) = self.dp.peer_endpoint(slot) else { continue };
            // A peer on this host is reached through `lo`: nothing for the programs to do there.
            if endpoint.ifindex != 0 && !endpoint.addr.ip().is_loopback() {
                self.ensure_underlay(endpoint.ifindex);
            }
        }
    }

    fn ensure_underlay(&mut self, ifindex: u32) {
        if self.underlays.contains_key(&ifindex) || ifindex == self.mirror.config().tun_ifindex {
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
        for event in events {
            if let Event::PeerRemoved(id) = event {
                self.seen.remove(id);
            }
        }
        let synced = self.mirror.follow(&mut self.dp, device, events);
        self.ensure_underlays(&synced);
    }

    fn tick(&mut self, device: &mut Device, now: Instant) {
        self.maintain_masquerade(now);
        if let Some(table) = self.forwards_pending.take() {
            self.publish_forwards(&table);
        }
        let peers: Vec<_> = self.mirror.peer_slots().collect();
        for (id, slot) in peers {
            let Ok(activity) = self.dp.peer_activity(slot) else { continue };
            let endpoint = self.dp.peer_endpoint(slot).ok();
            let roamed = endpoint
                .filter(|(_, generation)| self.mirror.roamed(id, *generation))
                .and_then(|(e, _)| e);
            let seen = self.seen.insert(id, activity).unwrap_or_default();
            let observed = ObservedActivity {
                received: newer(seen.last_rx, activity.last_rx),
                sent: newer(seen.last_tx, activity.last_tx),
                data_received: newer(seen.last_data_rx, activity.last_data_rx),
                data_sent: newer(seen.last_data_tx, activity.last_data_tx),
                roamed_to: roamed.map(|e| e.addr),
            };
            if observed != ObservedActivity::default() {
                device.absorb_activity(id, observed, now);
            }
        }
    }

    fn tick_every(&self) -> Option<Duration> {
        let busy = !self.mirror.is_empty() || self.forwards_pending.is_some();
        (busy || self.masquerade.is_some()).then_some(ACTIVITY_TICK)
    }

    fn forwards_changed(&mut self, table: &ForwardTable) {
        self.publish_forwards(table);
    }

    /// The steering program when it runs on the TUN; else the daemon, if it reads every packet
    /// the stack sends into the tunnel (see `proxy_nat`).
    fn outbound_translation(&self) -> OutboundTranslation {
        if self.on_tunnel(Program::EntryProxy) {
            OutboundTranslation::Dataplane
        } else if self.on_tunnel(Program::TxTun) {
            OutboundTranslation::Untranslated
        } else {
            OutboundTranslation::Daemon
        }
    }

    /// Into `PROXY_FLOWS` whichever plane translates into the tunnel: the receive programs
    /// translate the replies they decrypt by it.
    fn steer_proxied(&mut self, addrs: ProxiedAddrs) -> Result<OutboundTranslation, String> {
        let translation = self.outbound_translation();
        if translation != OutboundTranslation::Untranslated {
            self.mirror.steer_proxied(&mut self.dp, addrs).map_err(|e| e.to_string())?;
        }
        Ok(translation)
    }

    fn release_proxied(&mut self, addrs: ProxiedAddrs) {
        self.mirror.release_proxied(&mut self.dp, addrs);
    }

    /// The forward program runs where the underlay's XDP receive program hands it packets.
    fn forwards_in_ebpf(&self) -> bool {
        self.dp.is_loaded(Program::EntryForward) && self.dp.is_loaded(Program::RxXdp)
    }

    fn entry_status(&self) -> EntryDataplane {
        let (forwarded_flows, reply_to_flows) = self.dp.entry_flow_counts(FLOWS_COUNTED_UP_TO);
        EntryDataplane {
            forwards_in_ebpf: self.forwards_in_ebpf(),
            proxy_steering: self.outbound_translation() != OutboundTranslation::Untranslated,
            forward_slots: self.mirror.forward_slots(),
            forwarded_flows,
            reply_to_flows,
            proxied_connections: self.mirror.proxied_connections(),
        }
    }

    fn forward_traffic(&self, table: &ForwardTable) -> Vec<(Selector, EntryTraffic)> {
        self.mirror.forward_traffic(table, |slot| self.dp.entry_traffic(slot))
    }

    fn path_counters(&self, peer: PeerId) -> PathCounters {
        let activity = self
            .mirror
            .peer_slot(peer)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_times_later_than_those_folded_in_are_new() {
        let t = Instant::now();
        let later = t + Duration::from_millis(5);
        assert_eq!(newer(None, Some(t)), Some(t), "the first the programs report");
        assert_eq!(newer(Some(t), Some(later)), Some(later));
        assert_eq!(newer(Some(later), Some(later)), None, "already folded in");
        assert_eq!(newer(Some(later), Some(t)), None, "never backwards");
        assert_eq!(newer(Some(t), None), None);
    }
}
