//! When a relay last moved a byte, for its idle timeout: a timestamp both directions touch
//! and one timer that rereads it when it fires, rather than a timer reset per transfer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// When a relay last moved a byte, either way.
pub(super) struct Activity {
    start: Instant,
    /// Milliseconds since `start`.
    last: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Activity {
        Activity { start: Instant::now(), last: AtomicU64::new(0) }
    }

    pub(super) fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// When it last moved a byte (when it started, if it has moved none).
    pub(super) fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    /// Resolves once nothing has moved for `timeout`.
    pub(super) async fn idle_for(&self, timeout: Duration) {
        loop {
            let deadline = self.last() + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}
