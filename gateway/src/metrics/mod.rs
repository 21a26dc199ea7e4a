//! Prometheus metrics: `gatewayd --metrics [ADDR[:PORT]]` serves `GET /metrics` in the text
//! format (0.0.4). Off by default; loopback port 9586 when on without an address.
//!
//! Nothing is counted for the metrics' sake and nothing runs between scrapes: each scrape
//! reads the daemon's [`Snapshot`](crate::daemon::status::Snapshot) (the one the status
//! socket serves: one pass under the daemon's lock), turns it into families after the lock is
//! released, and writes them out.
//!
//! - `address`: the `--metrics` value;
//! - `families`: what a snapshot says, as metric families (the list of them is there);
//! - `exposition`: the text format;
//! - `server`: the HTTP server (hyper).

pub mod address;
pub mod exposition;
pub mod families;
pub mod server;

use std::sync::Arc;

use crate::daemon::core::Shared;
use crate::daemon::forwards::EntryPoint;
use crate::daemon::status;
use crate::dataplane::ProgramReport;

/// What a scrape reads: the daemon's shared state and entry point, and the verifier's
/// verdicts on the programs (fixed when the programs were loaded, so taken once).
pub struct DaemonMetrics {
    pub shared: Arc<Shared>,
    pub entry: Arc<EntryPoint>,
    pub interface: String,
    pub programs: Vec<ProgramReport>,
}

impl DaemonMetrics {
    /// One exposition document, read now.
    pub fn scrape(&self) -> String {
        let snapshot = status::snapshot(&self.shared, &self.entry, self.interface.clone());
        exposition::render(&families::families(&snapshot, &self.programs))
    }
}

/// Serves scrapes of `metrics` on `listener` (bound by [`server::bind`]) until the runtime
/// stops.
pub async fn serve(listener: std::net::TcpListener, metrics: DaemonMetrics) {
    let metrics = Arc::new(metrics);
    server::serve(listener, Arc::new(move || metrics.scrape())).await
}
