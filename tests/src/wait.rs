//! Waiting for a condition with a deadline, and saying what was last seen when it never came.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What one look at the condition found.
pub enum Probe<T> {
    Ready(T),
    /// Not yet; the text says what was seen instead (shown if the wait times out).
    NotYet(String),
}

/// Calls `probe` until it is ready or `timeout` has passed. An `Err` from the probe ends the wait
/// at once (e.g. the daemon being waited on has died). The timeout error names `what` and the
/// last thing the probe saw.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Probe<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let last_seen = match probe()? {
            Probe::Ready(value) => return Ok(value),
            Probe::NotYet(seen) => seen,
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last seen: {last_seen}");
        }
        thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_ready() {
        let mut calls = 0;
        let value = wait_for("three calls", Duration::from_secs(5), || {
            calls += 1;
            Ok(if calls == 3 { Probe::Ready(calls) } else { Probe::NotYet(format!("{calls}")) })
        })
        .unwrap();
        assert_eq!(value, 3);
    }

    #[test]
    fn times_out_naming_what_and_the_last_observation() {
        let error = wait_for::<()>("the impossible", Duration::from_millis(120), || {
            Ok(Probe::NotYet("still nothing".into()))
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains("the impossible"), "{error}");
        assert!(error.contains("still nothing"), "{error}");
    }

    #[test]
    fn a_probe_error_ends_the_wait_at_once() {
        let started = Instant::now();
        let result =
            wait_for::<()>("a dead daemon", Duration::from_secs(10), || bail!("daemon exited"));
        assert!(result.is_err());
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
