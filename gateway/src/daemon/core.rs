//! The state every daemon thread shares: the protocol device behind one lock, the sockets,
//! the TUN, and the timer thread's alarm clock.
//!
//! Work under the lock is the protocol step itself; sending and TUN writes happen after it is
//! released, from the [`Outbox`] the step filled.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use super::proxy_nat::{OutboundTranslation, ProxyNat};
use super::udp::{self, Sockets};
use crate::entry::table::ForwardTable;
use crate::mirror::proxy_flows::ProxiedAddrs;
use crate::tun::{Tun, TunQueue};
use crate::wg::PeerId;
use crate::wg::device::{Device, Event, Transmit};

/// Reacts to the device's events while the lock is held (mirrors state into the eBPF maps).
pub trait EventSink: Send {
    /// One protocol step's events, in order (a step may emit thousands, e.g. a `wg setconf`
    /// with many AllowedIPs: the sink can coalesce).
    fn on_events(&mut self, device: &Device, events: &[Event]);
    /// Called on the timer thread's tick while the sink wants ticks (see [`EventSink::tick_every`]).
    fn tick(&mut self, device: &mut Device, now: Instant);
    fn tick_every(&self) -> Option<Duration>;
    /// What the sink's path carried for a peer, beyond the device's own counts.
    fn path_counters(&self, peer: PeerId) -> super::status::PathCounters;
    /// What the kernel's verifier made of each program (cost, or refusal and fallback).
    fn programs(&self) -> Vec<String>;
    /// Where its programs are attached, one line each.
    fn attachments(&self) -> Vec<String>;
    /// What its programs did with packets, by reason.
    fn stats(&self) -> std::collections::BTreeMap<String, u64>;
    /// Another interface of the host changed (flags, MTU, offload features...).
    fn link_changed(&mut self, _ifindex: u32) {}
    /// The interface's forwards, at start and after every change: the tcp and udp ones the
    /// programs carry, and whether this host is an entry point at all.
    fn forwards_changed(&mut self, _table: &ForwardTable) {}
    /// Which plane translates the packets proxied connections send into the tunnel (see
    /// `proxy_nat`). A sink without programs on the TUN leaves them all to the daemon.
    fn outbound_translation(&self) -> OutboundTranslation {
        OutboundTranslation::Daemon
    }
    /// Registers a connection the proxy made so that the backend sees the client's address:
    /// its entries for the programs, unless no plane translates it (`Untranslated`). Says
    /// which plane translates its packets into the tunnel.
    fn steer_proxied(&mut self, _addrs: ProxiedAddrs) -> Result<OutboundTranslation, String> {
        Ok(self.outbound_translation())
    }
    /// Forgets a connection the proxy closed.
    fn release_proxied(&mut self, _addrs: ProxiedAddrs) {}
    /// Whether the programs translate tcp and udp forwards (else the proxy carries them).
    fn forwards_in_ebpf(&self) -> bool {
        false
    }
    /// What the entry point's part of the data plane holds now.
    fn entry_status(&self) -> super::status::EntryDataplane {
        super::status::EntryDataplane::default()
    }
    /// What each tcp and udp forward of `table` carried in the programs.
    fn forward_traffic(
        &self,
        _table: &ForwardTable,
    ) -> Vec<(crate::entry::forward::Selector, gateway_common::maps::EntryTraffic)> {
        Vec::new()
    }
}

pub struct Core {
    pub device: Device,
    pub sink: Option<Box<dyn EventSink>>,
}

/// What a protocol step produced, to be carried out after the lock is released.
#[derive(Default)]
pub struct Outbox {
    pub transmits: Vec<Transmit>,
    pub tun: Vec<Vec<u8>>,
}

impl Core {
    /// Drains the device's outputs into `out`, and handles its events.
    pub fn drain(&mut self, out: &mut Outbox) {
        while let Some(t) = self.device.poll_transmit() {
            out.transmits.push(t);
        }
        while let Some(p) = self.device.poll_tun() {
            out.tun.push(p);
        }
        let mut events = Vec::new();
        while let Some(event) = self.device.poll_event() {
            tracing::trace!(?event, "device event");
            events.push(event);
        }
        // A new endpoint may be behind a narrower underlay: learn it now, and pass the path
        // MTU change it makes on with this step's events.
        let moved: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::EndpointChanged(id) => Some(*id),
                _ => None,
            })
            .collect();
        if !moved.is_empty() {
            super::path_mtu::refresh(self, moved);
            while let Some(event) = self.device.poll_event() {
                events.push(event);
            }
        }
        if let Some(sink) = self.sink.as_mut()
            && !events.is_empty()
        {
            sink.on_events(&self.device, &events);
        }
    }
}

pub struct Shared {
    core: Mutex<Core>,
    pub sockets: RwLock<Arc<Sockets>>,
    pub tun: Tun,
    pub stopping: AtomicBool,
    alarm: Alarm,
    /// Proxied connections' packets the daemon translates itself (see `proxy_nat`).
    pub proxy_nat: ProxyNat,
    /// Handshake messages waiting for the handshake thread (the device's "under load" input).
    pub handshake_backlog: std::sync::atomic::AtomicUsize,
    /// The device's up state, published by every step, for threads that hold their input
    /// until the device is up (see [`Shared::wait_until_up`]).
    link: LinkState,
}

/// `Device::is_up` outside the device lock: written with `lock` held (under the device lock,
/// so that concurrent steps publish in the order they ran), waited for on `changed`.
struct LinkState {
    up: AtomicBool,
    lock: Mutex<()>,
    changed: Condvar,
}

/// Wakes the timer thread when a step files a deadline earlier than the one it sleeps until,
/// and only then (a wake-up per packet would cost a syscall per packet).
struct Alarm {
    lock: Mutex<()>,
    cv: Condvar,
    /// Nanoseconds after `epoch` the timer thread will wake at; u64::MAX when idle.
    planned: AtomicU64,
    epoch: Instant,
}

impl Shared {
    pub fn new(core: Core, sockets: Sockets, tun: Tun) -> Arc<Shared> {
        Arc::new(Shared {
            core: Mutex::new(core),
            sockets: RwLock::new(Arc::new(sockets)),
            tun,
            stopping: AtomicBool::new(false),
            proxy_nat: ProxyNat::default(),
            alarm: Alarm {
                lock: Mutex::new(()),
                cv: Condvar::new(),
                planned: AtomicU64::new(u64::MAX),
                epoch: Instant::now(),
            },
            handshake_backlog: std::sync::atomic::AtomicUsize::new(0),
            link: LinkState {
                up: AtomicBool::new(false),
                lock: Mutex::new(()),
                changed: Condvar::new(),
            },
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock is a bug, but the device state is still the best
        // we have: keep serving rather than cascade.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn sockets(&self) -> Arc<Sockets> {
        Arc::clone(&self.sockets.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts `new` in place of the current sockets and returns those (which the caller shuts
    /// down). Readers of the old ones waiting in [`Shared::wait_until_up`] stop waiting.
    pub fn replace_sockets(&self, new: Arc<Sockets>) -> Arc<Sockets> {
        let old = {
            let mut guard = self.sockets.write().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *guard, new)
        };
        let _guard = self.link.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.link.changed.notify_all();
        old
    }

    fn sockets_are(&self, sockets: &Arc<Sockets>) -> bool {
        Arc::ptr_eq(&self.sockets.read().unwrap_or_else(|e| e.into_inner()), sockets)
    }

    /// Runs one protocol step under the lock, then carries out what it produced.
    pub fn step<R>(&self, f: impl FnOnce(&mut Core) -> R) -> R {
        let mut out = Outbox::default();
        let (result, next) = {
            let mut core = self.lock();
            let r = f(&mut core);
            core.drain(&mut out);
            self.publish_up(core.device.is_up());
            (r, core.device.next_timeout())
        };
        self.carry_out(out);
        if let Some(next) = next {
            self.wake_timer_if_earlier(next);
        }
        result
    }

    /// Mirrors the device's up state (called under the device lock, after every step).
    fn publish_up(&self, up: bool) {
        if self.link.up.load(Ordering::Acquire) != up {
            let _guard = self.link.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.link.up.store(up, Ordering::Release);
            self.link.changed.notify_all();
        }
    }

    /// Blocks while the device is down and `sockets` are the current ones; false once the
    /// daemon is stopping.
    ///
    /// The UDP readers call it with datagrams in hand, before giving them to the device:
    /// unlike the kernel, which opens its socket only when the interface goes up, our sockets
    /// are bound from the start (and from `wg setconf` on, at the configured port), so peers
    /// reach them while the interface is still down, and during the moment between
    /// `ip link set up` and the rtnetlink notification reaching the device. A datagram
    /// handed over then would be dropped as `NotRunning`; if it was a spoke's first handshake
    /// initiation, the hub would learn of that spoke only at its retry, REKEY_TIMEOUT later.
    /// Waiting instead keeps such datagrams (in hand, and queued in the socket behind them)
    /// until the device is up, and the first initiation is answered as soon as it is. What
    /// waits is bounded by the socket's buffer; whatever of it is stale by then costs little
    /// (transport data finds no keypair, as they were cleared when the interface went down;
    /// a response to an old initiation is ignored by its initiator).
    ///
    /// Readers of sockets that were replaced (a new listen port) stop waiting, so the old
    /// socket is closed and its port free again as before; what they held then meets a
    /// device that is down, as it would have without the wait.
    pub fn wait_until_up(&self, sockets: &Arc<Sockets>) -> bool {
        if self.link.up.load(Ordering::Acquire) {
            return true;
        }
        let mut guard = self.link.lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return false;
            }
            if self.link.up.load(Ordering::Acquire) || !self.sockets_are(sockets) {
                return true;
            }
            guard = self.link.changed.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub fn carry_out(&self, out: Outbox) {
        if !out.transmits.is_empty() {
            let sockets = self.sockets();
            let mut rest = &out.transmits[..];
            let mut joined = Vec::new();
            while let Some(first) = rest.first() {
                let run = segment_run(rest);
                let sent = if run == 1 {
                    sockets.send(&first.to, &first.data, first.ecn)
                } else {
                    joined.clear();
                    for t in &rest[..run] {
                        joined.extend_from_slice(&t.data);
                    }
                    sockets.send_segments(&first.to, &joined, first.ecn, first.data.len())
                };
                match sent {
                    Ok(false) => {}
                    Ok(true) => self.forget_endpoint_source(first),
                    Err(e) => tracing::debug!(to = %first.to.addr, "send failed: {e}"),
                }
                rest = &rest[run..];
            }
        }
        if let Some(queue) = self.tun.queues().first() {
            for p in &out.tun {
                if let Err(e) = TunQueue(queue).write_packet(p) {
                    tracing::debug!("TUN write failed: {e}");
                }
            }
        }
    }

    /// The local source address of a peer's endpoint was refused by the kernel: clear it, as
    /// the kernel's send path does, so later packets let routing pick the source.
    fn forget_endpoint_source(&self, t: &Transmit) {
        let mut core = self.lock();
        let peer = core
            .device
            .peer_ids()
            .find(|id| core.device.peer(*id).and_then(|p| p.endpoint()) == Some(t.to));
        if let Some(id) = peer {
            core.device.clear_endpoint_source(id);
        }
    }

    fn nanos_since_epoch(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.alarm.epoch).as_nanos().min(u64::MAX as u128 - 1) as u64
    }

    fn wake_timer_if_earlier(&self, deadline: Instant) {
        let at = self.nanos_since_epoch(deadline);
        if at < self.alarm.planned.load(Ordering::Acquire) {
            let _guard = self.alarm.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.alarm.planned.store(at, Ordering::Release);
            self.alarm.cv.notify_one();
        }
    }

    /// The timer thread's sleep: until `deadline`, or until woken for an earlier one.
    pub fn sleep_until(&self, deadline: Option<Instant>) {
        let guard = self.alarm.lock.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let wait = deadline.map(|d| d.saturating_duration_since(now));
        self.alarm.planned.store(
            deadline.map(|d| self.nanos_since_epoch(d)).unwrap_or(u64::MAX),
            Ordering::Release,
        );
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        match wait {
            Some(w) if w.is_zero() => {}
            Some(w) => drop(self.alarm.cv.wait_timeout(guard, w)),
            None => drop(self.alarm.cv.wait(guard)),
        }
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        {
            let _guard = self.link.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.link.changed.notify_all();
        }
        let _guard = self.alarm.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.alarm.planned.store(0, Ordering::Release);
        self.alarm.cv.notify_all();
    }
}

/// How many transmits, from the first, leave in one UDP GSO send: to the same endpoint with
/// the same ECN bits, each as long as the first except a shorter last one, within the
/// kernel's limits. Bulk sends seal runs of full-size segments, which then cost one system
/// call instead of one each.
fn segment_run(transmits: &[Transmit]) -> usize {
    let first = &transmits[0];
    let size = first.data.len();
    let (mut count, mut total) = (1, size);
    for t in &transmits[1..] {
        if count == udp::MAX_SEGMENTS
            || t.to != first.to
            || t.ecn != first.ecn
            || t.data.len() > size
            || total + t.data.len() > udp::MAX_SEGMENTED_BYTES
        {
            break;
        }
        count += 1;
        total += t.data.len();
        if t.data.len() < size {
            break;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wg::peer::Endpoint;

    fn transmit(to: &str, len: usize, ecn: u8) -> Transmit {
        Transmit { to: Endpoint::new(to.parse().unwrap()), data: vec![0; len], ecn }
    }

    #[test]
    fn runs_of_equal_datagrams_to_one_endpoint_go_together() {
        let a = "192.0.2.1:51820";
        let b = "192.0.2.2:51820";
        let t = |to, len| transmit(to, len, 0);
        assert_eq!(segment_run(&[t(a, 1000)]), 1);
        assert_eq!(segment_run(&[t(a, 1000), t(a, 1000), t(a, 400), t(a, 1000)]), 3);
        assert_eq!(segment_run(&[t(a, 1000), t(a, 1000), t(b, 1000)]), 2);
        assert_eq!(segment_run(&[t(a, 400), t(a, 1000)]), 1, "a longer one starts a new run");
        assert_eq!(segment_run(&[transmit(a, 100, 0), transmit(a, 100, 2)]), 1, "ECN differs");
        let many: Vec<_> = (0..100).map(|_| t(a, 100)).collect();
        assert_eq!(segment_run(&many), udp::MAX_SEGMENTS);
        let big: Vec<_> = (0..50).map(|_| t(a, 1500)).collect();
        assert_eq!(segment_run(&big), udp::MAX_SEGMENTED_BYTES / 1500);
    }
}
