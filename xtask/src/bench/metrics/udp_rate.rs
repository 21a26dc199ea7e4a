//! The highest UDP packet rate a path carries with at most 1% loss, measured at the receiver.
//!
//! A probe offers a rate for a fixed time with `gateway-bench udp-send` (paced sendmmsg
//! batches) while `gateway-bench udp-recv` counts what arrives (recvmmsg); loss is
//! 1 − received / sent. The search:
//!
//! 1. a probe as fast as the generator can send, with one sending thread and with two. (One
//!    thread leaves the other core to a userspace tunnel; but gatewayd's TC program encrypts
//!    in the sender's context, and the veths and XDP programs run in softirq on the sending
//!    core, so there the sender's threads are the tunnel's cores.) If both lose ≤ 1%, the path
//!    carried everything the sender could offer: the figure is flagged as sender-bound;
//! 2. otherwise the search goes on with the sender of the lossy flood that got more through:
//!    from between a passing flood's rate and what the lossy one offered, or, if neither
//!    passed, from just below what got through (a flood usually loses to CPU contention, so
//!    the sustainable rate is often higher); then it bisects geometrically between the highest
//!    rate that passed and the lowest that failed, using the rates the generator really
//!    offered.
//!
//! The figure is the received rate of the best passing probe.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::bench::tool::{self, Background, number};
use crate::bench::tunnel::TrafficPath;

pub const MAX_LOSS: f64 = 0.01;
pub const RECEIVER_PORT: u16 = 5300;
/// The receiver stops once nothing arrived for this long (the queues of the slowest tunnels
/// drain well within it).
const RECEIVER_IDLE: Duration = Duration::from_millis(150);
/// A probe whose generator offered less than this share of the asked rate did not test it.
const OFFERED_ENOUGH: f64 = 0.97;

#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub threads: usize,
    pub asked_pps: f64,
    pub offered_pps: f64,
    pub received_pps: f64,
    pub loss: f64,
}

impl Probe {
    fn passed(&self) -> bool {
        self.loss <= MAX_LOSS
    }
}

pub struct Search {
    /// Received packets per second of the best passing probe.
    pub rate_pps: Option<f64>,
    /// The path carried everything the sender could offer.
    pub sender_bound: bool,
    pub probes: Vec<Probe>,
}

impl Search {
    pub fn describe(&self) -> String {
        let rate = match self.rate_pps {
            Some(rate) => format!("{:.1} kpps", rate / 1e3),
            None => "no rate with ≤1% loss".to_string(),
        };
        let bound = if self.sender_bound { " (sender-bound)" } else { "" };
        let floods: Vec<String> = self
            .probes
            .iter()
            .filter(|probe| probe.asked_pps == 0.0)
            .map(|probe| {
                format!(
                    "{} thread(s) {:.0} kpps offered, {:.1}% lost",
                    probe.threads,
                    probe.offered_pps / 1e3,
                    probe.loss * 100.0
                )
            })
            .collect();
        format!("{rate}{bound}; floods: {}; {} probes", floods.join(", "), self.probes.len())
    }
}

pub struct Generator<'a> {
    pub tool: &'a Path,
    pub path: &'a TrafficPath<'a>,
    pub size: usize,
    pub probe_duration: Duration,
}

impl Generator<'_> {
    pub fn search(&self, steps: usize) -> Result<Search> {
        search_with(steps, |rate, threads| self.probe(rate, threads))
    }

    /// Offers `rate` packets per second (0: as fast as possible) from `threads` sending
    /// threads for the probe duration.
    fn probe(&self, rate: f64, threads: usize) -> Result<Probe> {
        let run_id = run_id();
        let duration_ms = self.probe_duration.as_millis() as u64;
        let receiver = Background::start(
            self.tool,
            self.path.destination,
            &[
                "udp-recv".into(),
                "--bind".into(),
                format!("0.0.0.0:{RECEIVER_PORT}"),
                "--run-id".into(),
                run_id.to_string(),
                "--idle-ms".into(),
                RECEIVER_IDLE.as_millis().to_string(),
                "--max-ms".into(),
                (duration_ms + 10_000).to_string(),
            ],
        )?;
        let sent = tool::run_json(
            self.tool,
            Some(self.path.source),
            &[
                "udp-send".into(),
                "--target".into(),
                format!("{}:{RECEIVER_PORT}", self.path.address),
                "--size".into(),
                self.size.to_string(),
                "--rate".into(),
                format!("{}", rate.round() as u64),
                "--duration-ms".into(),
                duration_ms.to_string(),
                "--threads".into(),
                threads.to_string(),
                "--run-id".into(),
                run_id.to_string(),
            ],
        )?;
        let received = receiver.finish()?;
        let sent_packets = number(&sent, "sent")?;
        let seconds = number(&sent, "seconds")?.max(f64::EPSILON);
        let received_packets = number(&received, "packets")?;
        Ok(Probe {
            threads,
            asked_pps: rate,
            offered_pps: sent_packets / seconds,
            received_pps: received_packets / seconds,
            loss: if sent_packets > 0.0 { 1.0 - received_packets / sent_packets } else { 1.0 },
        })
    }
}

/// The search, over `probe(rate, threads)` (rate 0: as fast as possible).
fn search_with(steps: usize, mut probe: impl FnMut(f64, usize) -> Result<Probe>) -> Result<Search> {
    let floods = [probe(0.0, 1)?, probe(0.0, 2)?];
    let mut probes = floods.to_vec();
    let mut best = best_passing(&floods);
    // Search with the sender that offered more than got through cleanly: between what
    // passed (if a flood did) and what it offered.
    let Some(flood) = floods
        .into_iter()
        .filter(|flood| !flood.passed())
        .max_by(|a, b| a.received_pps.total_cmp(&b.received_pps))
    else {
        return Ok(Search {
            rate_pps: best.map(|best| best.received_pps),
            sender_bound: true,
            probes,
        });
    };
    let mut low = best.map_or(0.0, |best| best.offered_pps);
    let mut high = flood.offered_pps;
    let mut asked = if low > 0.0 { (low * high).sqrt() } else { flood.received_pps * 0.95 };
    for _ in 0..steps {
        if asked < 1.0 || low > 0.0 && high <= low * 1.02 {
            break;
        }
        let probe = probe(asked, flood.threads)?;
        probes.push(probe);
        if probe.passed() {
            low = low.max(probe.offered_pps);
            if best.is_none_or(|best| probe.received_pps > best.received_pps) {
                best = Some(probe);
            }
        } else {
            high = high.min(probe.offered_pps.max(low));
        }
        asked = if low > 0.0 { (low * high).sqrt() } else { asked / 2.0 };
    }
    // Sender-bound: the best figure is a flood's, or the generator could not offer the
    // rate asked of it there.
    let sender_bound = best.is_some_and(|best| {
        best.asked_pps == 0.0 || best.offered_pps < best.asked_pps * OFFERED_ENOUGH
    });
    Ok(Search { rate_pps: best.map(|best| best.received_pps), sender_bound, probes })
}

/// The passing probe that got the most through.
fn best_passing(probes: &[Probe]) -> Option<Probe> {
    probes
        .iter()
        .copied()
        .filter(Probe::passed)
        .max_by(|a, b| a.received_pps.total_cmp(&b.received_pps))
}

/// Distinct per probe, so a probe never counts an earlier probe's stragglers.
fn run_id() -> u32 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    now.subsec_nanos() ^ (now.as_secs() as u32).rotate_left(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path that carries up to `capacity` packets per second, fed by a generator that can
    /// offer `single` with one thread and `double` with two.
    fn path(capacity: f64, single: f64, double: f64) -> impl FnMut(f64, usize) -> Result<Probe> {
        move |asked, threads| {
            let most = if threads == 1 { single } else { double };
            let offered = if asked == 0.0 { most } else { asked.min(most) };
            let received = offered.min(capacity);
            Ok(Probe {
                threads,
                asked_pps: asked,
                offered_pps: offered,
                received_pps: received,
                loss: 1.0 - received / offered,
            })
        }
    }

    #[test]
    fn a_path_faster_than_the_sender_is_sender_bound() {
        let search = search_with(5, path(1e6, 200e3, 350e3)).unwrap();
        assert_eq!(search.rate_pps, Some(350e3));
        assert!(search.sender_bound);
        assert_eq!(search.probes.len(), 2);
    }

    #[test]
    fn one_clean_flood_still_searches_with_the_stronger_sender() {
        let search = search_with(6, path(100e3, 31e3, 400e3)).unwrap();
        let rate = search.rate_pps.unwrap();
        assert!(rate > 90e3 && rate <= 100e3, "{rate}");
        assert!(!search.sender_bound);
    }

    #[test]
    fn lossy_floods_bisect_down_to_the_capacity() {
        let search = search_with(6, path(60e3, 800e3, 1.5e6)).unwrap();
        let rate = search.rate_pps.unwrap();
        assert!(rate > 55e3 && rate <= 60e3, "{rate}");
        assert!(search.probes.iter().skip(2).all(|probe| probe.threads == 2));
    }

    #[test]
    fn nothing_passing_is_no_rate() {
        let never = |asked: f64, threads| {
            Ok(Probe { threads, asked_pps: asked, offered_pps: 1e5, received_pps: 5e4, loss: 0.5 })
        };
        let search = search_with(3, never).unwrap();
        assert_eq!(search.rate_pps, None);
        assert!(!search.sender_bound);
    }
}
