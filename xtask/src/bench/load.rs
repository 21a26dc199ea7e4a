//! How quiet the machine is around a repetition: the load average, a short idle sample and the
//! CPUs' speed (see `cpu_speed`) before it, and how much CPU other processes took while it ran.
//! A repetition that started on a busy or slowed-down machine, or shared it, is "disturbed":
//! the caller repeats it, then flags it.

use std::collections::HashSet;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use super::cpu_speed;
use super::procfs::{CpuTimes, OwnProcesses, TICKS_PER_SECOND, loadavg};

/// When a repetition counts as disturbed.
#[derive(Debug, Clone)]
pub struct Thresholds {
    /// The machine must be at least this idle (0..1) just before a repetition starts.
    pub min_idle_before: f64,
    /// Other processes may use at most this many cores on average while it runs.
    pub max_foreign_cores: f64,
    /// The CPUs may be at most this much slower than at their fastest in this run.
    pub max_slowdown: f64,
    /// How long the idle sample before each repetition lasts.
    pub idle_sample: Duration,
    /// How long to wait for the machine to become idle before starting anyway.
    pub max_settle: Duration,
}

/// What the machine was doing around one repetition.
#[derive(Debug, Clone, Serialize)]
pub struct Conditions {
    /// /proc/loadavg before the repetition.
    pub loadavg: [f64; 3],
    /// Idle share of all CPUs over the sample just before it.
    pub idle_before: f64,
    /// How much slower the slowest CPU ran a fixed computation than the fastest run of it so
    /// far (1.0: as fast), the lesser of the probes before and after the repetition: a slowdown
    /// that lasted through it.
    pub cpu_slowdown: f64,
    /// Cores other processes used on average while it ran (the machine's user and system
    /// time less our processes').
    pub foreign_cores: f64,
    /// Seconds spent waiting for the machine to settle first.
    pub waited_s: f64,
    /// Which attempt this was (1: the first; more when earlier ones were disturbed).
    pub attempt: usize,
}

impl Conditions {
    /// Why the repetition is disturbed; empty if it is not.
    pub fn disturbances(&self, thresholds: &Thresholds) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.idle_before < thresholds.min_idle_before {
            reasons.push(format!(
                "only {:.0}% idle before starting (load {:.2})",
                self.idle_before * 100.0,
                self.loadavg[0]
            ));
        }
        if self.cpu_slowdown > thresholds.max_slowdown {
            reasons.push(format!(
                "CPUs {:.2}× slower than at their fastest (host contention)",
                self.cpu_slowdown
            ));
        }
        if self.foreign_cores > thresholds.max_foreign_cores {
            reasons.push(format!("other processes used {:.2} cores", self.foreign_cores));
        }
        reasons
    }
}

/// Watches one repetition: [`Watch::start`] samples (and waits for quiet) before it,
/// [`Watch::finish`] measures what others used during it.
pub struct Watch {
    loadavg: [f64; 3],
    idle_before: f64,
    cpu_slowdown: f64,
    waited: Duration,
    own: OwnProcesses,
    started: Instant,
    own_namespaces: HashSet<u64>,
}

impl Watch {
    pub fn start(thresholds: &Thresholds, own_namespaces: &HashSet<u64>) -> Result<Watch> {
        let settle_started = Instant::now();
        let idle_before = loop {
            let idle = idle_over(thresholds.idle_sample)?;
            if idle >= thresholds.min_idle_before
                || settle_started.elapsed() >= thresholds.max_settle
            {
                break idle;
            }
        };
        Ok(Watch {
            loadavg: loadavg()?,
            idle_before,
            cpu_slowdown: cpu_speed::slowdown()?,
            waited: settle_started.elapsed().saturating_sub(thresholds.idle_sample),
            own: OwnProcesses::take(own_namespaces)?,
            started: Instant::now(),
            own_namespaces: own_namespaces.clone(),
        })
    }

    pub fn finish(self, attempt: usize) -> Result<Conditions> {
        let elapsed = self.started.elapsed().as_secs_f64().max(f64::EPSILON);
        let foreign_ticks = OwnProcesses::take(&self.own_namespaces)?.foreign_ticks(&self.own);
        let cpu_slowdown = self.cpu_slowdown.min(cpu_speed::slowdown()?);
        Ok(Conditions {
            loadavg: self.loadavg,
            idle_before: self.idle_before,
            cpu_slowdown,
            foreign_cores: foreign_ticks as f64 / TICKS_PER_SECOND / elapsed,
            waited_s: self.waited.as_secs_f64(),
            attempt,
        })
    }
}

fn idle_over(window: Duration) -> Result<f64> {
    let before = CpuTimes::read()?;
    thread::sleep(window);
    Ok(CpuTimes::read()?.since(&before).idle_fraction())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> Thresholds {
        Thresholds {
            min_idle_before: 0.8,
            max_foreign_cores: 0.15,
            max_slowdown: 1.25,
            idle_sample: Duration::from_millis(10),
            max_settle: Duration::ZERO,
        }
    }

    #[test]
    fn disturbances_name_each_reason() {
        let quiet = Conditions {
            loadavg: [0.1; 3],
            idle_before: 0.95,
            cpu_slowdown: 1.0,
            foreign_cores: 0.0,
            waited_s: 0.0,
            attempt: 1,
        };
        assert!(quiet.disturbances(&thresholds()).is_empty());
        let busy = Conditions { idle_before: 0.5, foreign_cores: 0.6, cpu_slowdown: 1.6, ..quiet };
        let reasons = busy.disturbances(&thresholds());
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("50% idle"), "{reasons:?}");
        assert!(reasons[1].contains("1.60× slower"), "{reasons:?}");
        assert!(reasons[2].contains("0.60 cores"), "{reasons:?}");
    }

    #[test]
    fn a_watch_reports_plausible_conditions() {
        let watch = Watch::start(&thresholds(), &HashSet::new()).unwrap();
        let conditions = watch.finish(1).unwrap();
        assert!((0.0..=1.0).contains(&conditions.idle_before));
        assert!(conditions.foreign_cores >= 0.0);
    }
}
