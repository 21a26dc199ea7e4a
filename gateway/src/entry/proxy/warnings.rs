//! Warnings that a flood could repeat thousands of times a second, at most one per period,
//! each saying how many were left out since the last.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often one kind of warning may be logged.
const PERIOD: Duration = Duration::from_secs(10);

pub(super) struct RateLimited {
    state: Mutex<State>,
}

struct State {
    last: Option<Instant>,
    left_out: u64,
}

impl RateLimited {
    pub(super) const fn new() -> RateLimited {
        RateLimited { state: Mutex::new(State { last: None, left_out: 0 }) }
    }

    /// Some(how many were left out before this one) when this one may be logged.
    pub(super) fn allow(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if state.last.is_some_and(|last| now.duration_since(last) < PERIOD) {
            state.left_out += 1;
            return None;
        }
        state.last = Some(now);
        Some(std::mem::take(&mut state.left_out))
    }
}

impl Default for RateLimited {
    fn default() -> RateLimited {
        RateLimited::new()
    }
}

/// ", and N more like it" when some were left out; empty otherwise.
pub(super) fn left_out(count: u64) -> String {
    match count {
        0 => String::new(),
        count => format!(" ({count} more like it since the last warning)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_of_a_burst_is_logged_and_the_next_counts_the_rest() {
        let limited = RateLimited::new();
        assert_eq!(limited.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(limited.allow(), None);
        }
        // Pretend the period has passed.
        limited.state.lock().unwrap().last = Some(Instant::now() - PERIOD);
        assert_eq!(limited.allow(), Some(5));
        assert_eq!(left_out(5), " (5 more like it since the last warning)");
        assert_eq!(left_out(0), "");
    }
}
