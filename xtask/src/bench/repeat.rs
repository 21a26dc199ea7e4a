//! Repetitions under watch: each one is preceded by a load sample (waiting briefly for the
//! machine to settle) and followed by a check of what other processes used meanwhile; a
//! disturbed repetition is measured again, up to the profile's retries, then kept and flagged.
//! A run-wide budget for measuring again keeps a busy machine from stretching a run without
//! bound: once spent, disturbed repetitions are kept (and flagged) at once.

use std::cell::Cell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::load::{Conditions, Thresholds, Watch};
use super::stats::Reps;

/// One kept repetition.
pub struct Measured<T> {
    pub value: T,
    pub conditions: Conditions,
    /// Why it is not to be trusted, if it is not.
    pub flag: Option<String>,
}

pub struct Repeater {
    pub reps: usize,
    pub retries: usize,
    pub thresholds: Thresholds,
    /// The benchmark's own namespaces: processes inside them are not "other processes".
    pub own_namespaces: HashSet<u64>,
    /// What is left of the run's time for measuring disturbed repetitions again (shared by
    /// every repeater of the run).
    pub retry_budget: Rc<Cell<Duration>>,
}

impl Repeater {
    /// Runs `measure` for every repetition; `describe` turns a value into its progress text.
    pub fn run<T>(
        &self,
        label: &str,
        mut measure: impl FnMut() -> Result<T>,
        describe: impl Fn(&T) -> String,
    ) -> Result<Vec<Measured<T>>> {
        let mut kept = Vec::with_capacity(self.reps);
        for rep in 1..=self.reps {
            for attempt in 0..=self.retries {
                let attempt_started = Instant::now();
                let watch = Watch::start(&self.thresholds, &self.own_namespaces)?;
                let value = measure()?;
                let conditions = watch.finish(attempt + 1)?;
                let reasons = conditions.disturbances(&self.thresholds);
                let state = format!(
                    "idle {:.0}% before, load {:.2}, CPU speed ×{:.2}, others {:.2} cores",
                    conditions.idle_before * 100.0,
                    conditions.loadavg[0],
                    1.0 / conditions.cpu_slowdown,
                    conditions.foreign_cores
                );
                let budget = self.retry_budget.get();
                if !reasons.is_empty() && attempt < self.retries && !budget.is_zero() {
                    self.retry_budget.set(budget.saturating_sub(attempt_started.elapsed()));
                    progress(&format!(
                        "{label} rep {rep}/{}: {} ({state}): disturbed ({}), measuring again",
                        self.reps,
                        describe(&value),
                        reasons.join("; ")
                    ));
                    continue;
                }
                let flag = (!reasons.is_empty()).then(|| {
                    format!(
                        "rep {rep}: disturbed after {} attempts: {}",
                        attempt + 1,
                        reasons.join("; ")
                    )
                });
                let mark = if flag.is_some() { " [flagged: disturbed]" } else { "" };
                progress(&format!(
                    "{label} rep {rep}/{}: {} ({state}){mark}",
                    self.reps,
                    describe(&value)
                ));
                kept.push(Measured { value, conditions, flag });
                break;
            }
        }
        Ok(kept)
    }
}

/// The repetitions' `extract`ed figures as [`Reps`]; `None` if no repetition produced one.
/// A repetition without a figure (e.g. a rate search where no rate met the loss limit) is
/// flagged with `missing`.
pub fn summarise<T>(
    measured: &[Measured<T>],
    extract: impl Fn(&T) -> Option<f64>,
    missing: &str,
) -> Option<Reps> {
    let mut values = Vec::new();
    let mut flags = Vec::new();
    let mut conditions = Vec::new();
    for (index, item) in measured.iter().enumerate() {
        match extract(&item.value) {
            Some(value) => {
                values.push(value);
                conditions.push(item.conditions.clone());
            }
            None => flags.push(format!("rep {}: {missing}", index + 1)),
        }
        flags.extend(item.flag.clone());
    }
    Reps::new(values, flags, conditions)
}

/// One progress line, with the time since the run started.
pub fn progress(text: &str) {
    let elapsed = started().elapsed().as_secs();
    println!("[bench {:2}:{:02}] {text}", elapsed / 60, elapsed % 60);
}

/// When the first progress line was printed (or this was first asked).
pub fn started() -> Instant {
    static STARTED: OnceLock<Instant> = OnceLock::new();
    *STARTED.get_or_init(Instant::now)
}
