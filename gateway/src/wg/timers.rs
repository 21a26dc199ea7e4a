//! Every protocol timer of one peer, with the kernel's semantics (`timers.c`).
//!
//! A timer is a deadline or nothing: `arm` is the kernel's `mod_timer`, `cancel` its
//! `del_timer`, `is_pending` its `timer_pending`. The peer calls the `on_*` hooks where the
//! kernel calls `wg_timers_*`, and asks `expire` for whatever fell due; what to do about an
//! expired timer (send an initiation, a keepalive, wipe keys) is the peer's business, not
//! this module's.

use std::time::{Duration, Instant};

use gateway_common::wire::{
    KEEPALIVE_TIMEOUT_SECS, MAX_TIMER_HANDSHAKES, REJECT_AFTER_TIME_SECS, REKEY_AFTER_TIME_SECS,
    REKEY_TIMEOUT_JITTER_MAX_MS, REKEY_TIMEOUT_SECS,
};
use rand_core::RngCore;

pub const REKEY_TIMEOUT: Duration = Duration::from_secs(REKEY_TIMEOUT_SECS);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(KEEPALIVE_TIMEOUT_SECS);
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(REJECT_AFTER_TIME_SECS);
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(REKEY_AFTER_TIME_SECS);
const ZERO_KEY_MATERIAL_AFTER: Duration = Duration::from_secs(REJECT_AFTER_TIME_SECS * 3);

/// What fell due, in the order `expire` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// REKEY_TIMEOUT passed without a response: retry, or give up after MAX_TIMER_HANDSHAKES.
    RetransmitHandshake { give_up: bool },
    /// We received data and sent nothing back for KEEPALIVE_TIMEOUT.
    SendKeepalive,
    /// We sent data and heard nothing back for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT.
    NewHandshake,
    /// Nothing happened for 3 × REJECT_AFTER_TIME: wipe every key.
    ZeroKeyMaterial,
    /// The persistent keepalive interval passed without any authenticated packet.
    PersistentKeepalive,
}

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    #[default]
    RetransmitHandshake,
    SendKeepalive,
    NewHandshake,
    ZeroKeyMaterial,
    PersistentKeepalive,
}

const KINDS: [Kind; 5] = [
    Kind::RetransmitHandshake,
    Kind::SendKeepalive,
    Kind::NewHandshake,
    Kind::ZeroKeyMaterial,
    Kind::PersistentKeepalive,
];

#[derive(Debug, Default)]
pub struct Timers {
    deadlines: [Option<Instant>; 5],
    /// Timers only run while the interface is up (the kernel's `netif_running` check).
    running: bool,
    pub handshake_attempts: u32,
    need_another_keepalive: bool,
    pub sent_lastminute_handshake: bool,
    persistent_keepalive_interval: Option<Duration>,
    /// Overrides for tests that need to cross a long timer quickly.
    scale: TimerScale,
}

/// Test-only shortening of the protocol's time constants (e.g. to exercise a rekey in an
/// interop test without waiting two minutes). Never set in production.
#[derive(Debug, Clone, Copy)]
pub struct TimerScale {
    pub divisor: u32,
}

impl Default for TimerScale {
    fn default() -> Self {
        TimerScale { divisor: 1 }
    }
}

impl TimerScale {
    pub fn apply(&self, d: Duration) -> Duration {
        d / self.divisor.max(1)
    }
}

fn jitter(rng: &mut dyn RngCore) -> Duration {
    Duration::from_millis(u64::from(rng.next_u32()) % REKEY_TIMEOUT_JITTER_MAX_MS)
}

impl Timers {
    pub fn new(scale: TimerScale) -> Self {
        Timers { scale, ..Timers::default() }
    }

    fn slot(&mut self, kind: Kind) -> &mut Option<Instant> {
        &mut self.deadlines[kind as usize]
    }

    fn arm(&mut self, kind: Kind, at: Instant) {
        if self.running {
            *self.slot(kind) = Some(at);
        }
    }

    fn cancel(&mut self, kind: Kind) {
        *self.slot(kind) = None;
    }

    fn is_pending(&self, kind: Kind) -> bool {
        self.deadlines[kind as usize].is_some()
    }

    pub fn set_running(&mut self, running: bool) {
        self.running = running;
        if !running {
            self.stop();
        }
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The kernel's `wg_timers_stop`: a removed peer or a downed interface.
    pub fn stop(&mut self) {
        self.deadlines = [None; 5];
    }

    pub fn persistent_keepalive_interval(&self) -> Option<Duration> {
        self.persistent_keepalive_interval
    }

    pub fn set_persistent_keepalive_interval(&mut self, secs: u16) {
        self.persistent_keepalive_interval =
            (secs != 0).then(|| self.scale.apply(Duration::from_secs(u64::from(secs))));
        if secs == 0 {
            self.cancel(Kind::PersistentKeepalive);
        }
    }

    pub fn scale(&self) -> TimerScale {
        self.scale
    }

    pub fn on_data_sent(&mut self, now: Instant, rng: &mut dyn RngCore) {
        if !self.is_pending(Kind::NewHandshake) {
            let after = self.scale.apply(KEEPALIVE_TIMEOUT + REKEY_TIMEOUT) + jitter(rng);
            self.arm(Kind::NewHandshake, now + after);
        }
    }

    pub fn on_data_received(&mut self, now: Instant) {
        if !self.running {
            return;
        }
        if !self.is_pending(Kind::SendKeepalive) {
            let after = self.scale.apply(KEEPALIVE_TIMEOUT);
            self.arm(Kind::SendKeepalive, now + after);
        } else {
            self.need_another_keepalive = true;
        }
    }

    pub fn on_any_authenticated_packet_sent(&mut self) {
        self.cancel(Kind::SendKeepalive);
    }

    pub fn on_any_authenticated_packet_received(&mut self) {
        self.cancel(Kind::NewHandshake);
    }

    pub fn on_handshake_initiated(&mut self, now: Instant, rng: &mut dyn RngCore) {
        let after = self.scale.apply(REKEY_TIMEOUT) + jitter(rng);
        self.arm(Kind::RetransmitHandshake, now + after);
    }

    pub fn on_handshake_complete(&mut self) {
        self.cancel(Kind::RetransmitHandshake);
        self.handshake_attempts = 0;
        self.sent_lastminute_handshake = false;
    }

    pub fn on_session_derived(&mut self, now: Instant) {
        let after = self.scale.apply(ZERO_KEY_MATERIAL_AFTER);
        self.arm(Kind::ZeroKeyMaterial, now + after);
    }

    pub fn on_any_authenticated_packet_traversal(&mut self, now: Instant) {
        if let Some(interval) = self.persistent_keepalive_interval {
            self.arm(Kind::PersistentKeepalive, now + interval);
        }
    }

    /// The earliest pending deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Takes the earliest timer due at `now`, applying the kernel's bookkeeping for it, and
    /// says which one it was. Call repeatedly until it returns None.
    pub fn expire(&mut self, now: Instant) -> Option<Expired> {
        let (kind, _) = KINDS
            .iter()
            .filter_map(|&k| self.deadlines[k as usize].map(|d| (k, d)))
            .filter(|&(_, d)| d <= now)
            .min_by_key(|&(_, d)| d)?;
        self.cancel(kind);
        Some(match kind {
            Kind::RetransmitHandshake => {
                if self.handshake_attempts > MAX_TIMER_HANDSHAKES {
                    self.cancel(Kind::SendKeepalive);
                    if !self.is_pending(Kind::ZeroKeyMaterial) {
                        let after = self.scale.apply(ZERO_KEY_MATERIAL_AFTER);
                        self.arm(Kind::ZeroKeyMaterial, now + after);
                    }
                    Expired::RetransmitHandshake { give_up: true }
                } else {
                    self.handshake_attempts += 1;
                    Expired::RetransmitHandshake { give_up: false }
                }
            }
            Kind::SendKeepalive => {
                if self.need_another_keepalive {
                    self.need_another_keepalive = false;
                    let after = self.scale.apply(KEEPALIVE_TIMEOUT);
                    self.arm(Kind::SendKeepalive, now + after);
                }
                Expired::SendKeepalive
            }
            Kind::NewHandshake => Expired::NewHandshake,
            Kind::ZeroKeyMaterial => Expired::ZeroKeyMaterial,
            Kind::PersistentKeepalive => Expired::PersistentKeepalive,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(u32);
    impl RngCore for Fixed {
        fn next_u32(&mut self) -> u32 {
            self.0
        }
        fn next_u64(&mut self) -> u64 {
            u64::from(self.0)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            dest.fill(0)
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            dest.fill(0);
            Ok(())
        }
    }

    fn running() -> Timers {
        let mut t = Timers::new(TimerScale::default());
        t.set_running(true);
        t
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn nothing_runs_while_down() {
        let t0 = Instant::now();
        let mut t = Timers::new(TimerScale::default());
        t.on_data_received(t0);
        t.on_handshake_initiated(t0, &mut Fixed(0));
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn passive_keepalive_after_data_received_and_rearmed_once_if_more_came() {
        let t0 = Instant::now();
        let mut t = running();
        t.on_data_received(t0);
        t.on_data_received(t0 + secs(3));
        assert_eq!(t.expire(t0 + secs(9)), None);
        assert_eq!(t.expire(t0 + secs(10)), Some(Expired::SendKeepalive));
        // data arrived while the timer was pending: one more keepalive 10 s later
        assert_eq!(t.next_deadline(), Some(t0 + secs(20)));
        assert_eq!(t.expire(t0 + secs(20)), Some(Expired::SendKeepalive));
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn sending_anything_cancels_the_passive_keepalive() {
        let t0 = Instant::now();
        let mut t = running();
        t.on_data_received(t0);
        t.on_any_authenticated_packet_sent();
        assert_eq!(t.expire(t0 + secs(60)), None);
    }

    #[test]
    fn new_handshake_when_sent_data_goes_unanswered() {
        let t0 = Instant::now();
        let mut t = running();
        t.on_data_sent(t0, &mut Fixed(100));
        // not re-armed while pending
        t.on_data_sent(t0 + secs(5), &mut Fixed(100));
        let due = t0 + secs(15) + Duration::from_millis(100);
        assert_eq!(t.next_deadline(), Some(due));
        assert_eq!(t.expire(due - Duration::from_millis(1)), None);
        assert_eq!(t.expire(due), Some(Expired::NewHandshake));
    }

    #[test]
    fn any_received_packet_cancels_new_handshake() {
        let t0 = Instant::now();
        let mut t = running();
        t.on_data_sent(t0, &mut Fixed(0));
        t.on_any_authenticated_packet_received();
        assert_eq!(t.expire(t0 + secs(100)), None);
    }

    #[test]
    fn jitter_stays_below_a_third_of_a_second() {
        let t0 = Instant::now();
        let mut t = running();
        t.on_handshake_initiated(t0, &mut Fixed(u32::MAX));
        let d = t.next_deadline().unwrap() - t0;
        assert!(d >= secs(5) && d < secs(5) + Duration::from_millis(333), "{d:?}");
    }

    #[test]
    fn retransmits_eighteen_times_then_gives_up_and_schedules_zeroing() {
        let t0 = Instant::now();
        let mut t = running();
        let mut now = t0;
        t.on_handshake_initiated(now, &mut Fixed(0));
        let mut retries = 0;
        loop {
            now = t.next_deadline().unwrap();
            match t.expire(now) {
                Some(Expired::RetransmitHandshake { give_up: false }) => {
                    retries += 1;
                    t.on_handshake_initiated(now, &mut Fixed(0));
                }
                Some(Expired::RetransmitHandshake { give_up: true }) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(retries, MAX_TIMER_HANDSHAKES + 1);
        // 1 initial + 19 retries, 5 s apart: the kernel gives up after about 95-100 s
        assert_eq!(now - t0, secs(5) * (MAX_TIMER_HANDSHAKES + 2));
        assert_eq!(t.next_deadline(), Some(now + secs(540)));
        assert_eq!(t.expire(now + secs(540)), Some(Expired::ZeroKeyMaterial));
    }

    #[test]
    fn handshake_complete_resets_attempts_and_stops_retransmission() {
        let t0 = Instant::now();
        let mut t = running();
        t.on_handshake_initiated(t0, &mut Fixed(0));
        assert!(matches!(t.expire(t0 + secs(5)), Some(Expired::RetransmitHandshake { .. })));
        assert_eq!(t.handshake_attempts, 1);
        t.on_handshake_initiated(t0 + secs(5), &mut Fixed(0));
        t.sent_lastminute_handshake = true;
        t.on_handshake_complete();
        assert_eq!(t.handshake_attempts, 0);
        assert!(!t.sent_lastminute_handshake);
        assert_eq!(t.expire(t0 + secs(60)), None);
    }

    #[test]
    fn persistent_keepalive_follows_traversal() {
        let t0 = Instant::now();
        let mut t = running();
        t.on_any_authenticated_packet_traversal(t0);
        assert_eq!(t.next_deadline(), None, "no interval configured");
        t.set_persistent_keepalive_interval(25);
        t.on_any_authenticated_packet_traversal(t0);
        t.on_any_authenticated_packet_traversal(t0 + secs(10));
        assert_eq!(t.expire(t0 + secs(34)), None);
        assert_eq!(t.expire(t0 + secs(35)), Some(Expired::PersistentKeepalive));
        t.set_persistent_keepalive_interval(0);
        t.on_any_authenticated_packet_traversal(t0 + secs(40));
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn session_derived_schedules_key_zeroing_at_three_reject_times() {
        let t0 = Instant::now();
        let mut t = running();
        t.on_session_derived(t0);
        assert_eq!(t.next_deadline(), Some(t0 + secs(540)));
    }

    #[test]
    fn expiry_order_follows_deadlines() {
        let t0 = Instant::now();
        let mut t = running();
        t.set_persistent_keepalive_interval(1);
        t.on_data_received(t0);
        t.on_any_authenticated_packet_traversal(t0);
        assert_eq!(t.expire(t0 + secs(11)), Some(Expired::PersistentKeepalive));
        assert_eq!(t.expire(t0 + secs(11)), Some(Expired::SendKeepalive));
        assert_eq!(t.expire(t0 + secs(11)), None);
    }

    #[test]
    fn downing_the_interface_stops_everything() {
        let t0 = Instant::now();
        let mut t = running();
        t.on_data_received(t0);
        t.on_session_derived(t0);
        t.set_running(false);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn scale_shortens_protocol_constants() {
        let t0 = Instant::now();
        let mut t = Timers::new(TimerScale { divisor: 10 });
        t.set_running(true);
        t.on_data_received(t0);
        assert_eq!(t.next_deadline(), Some(t0 + secs(1)));
    }
}
