//! New connections per second and the 99th percentile of the time to first byte, through a
//! forward: `gateway-bench connect` in the client's namespace, several clients at once, each
//! opening a connection, sending one request (a line, or a ClientHello naming the server an
//! SNI forward routes by), reading the answer and closing.
//!
//! Failed connections are counted by the tool; more than [`MAX_FAILED_SHARE`] of them make the
//! run an error rather than a figure (a forward that drops connections is not fast).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use gateway_tests::Netns;

use crate::bench::tool::{self, number};

const MAX_FAILED_SHARE: f64 = 0.01;

pub struct ConnectionRun {
    pub per_second: f64,
    pub first_byte_p99_ms: f64,
    pub first_byte_p50_ms: f64,
    pub failures: f64,
}

impl ConnectionRun {
    pub fn describe(&self) -> String {
        format!(
            "{:.0} connections/s, first byte p50 {:.3} ms, p99 {:.3} ms, {} failed",
            self.per_second, self.first_byte_p50_ms, self.first_byte_p99_ms, self.failures
        )
    }
}

/// One run from `source` to `target`; `sni`: send a ClientHello naming it.
pub fn measure(
    tool: &Path,
    source: &Netns,
    target: SocketAddr,
    sni: Option<&str>,
    duration: Duration,
    clients: usize,
) -> Result<ConnectionRun> {
    let mut args = vec![
        "connect".to_string(),
        "--target".into(),
        target.to_string(),
        "--duration-ms".into(),
        duration.as_millis().to_string(),
        "--clients".into(),
        clients.to_string(),
    ];
    if let Some(name) = sni {
        args.extend(["--sni".to_string(), name.to_string()]);
    }
    let report = tool::run_json(tool, Some(source), &args)?;
    let connections = number(&report, "connections")?;
    let failures = number(&report, "failures")?;
    if connections == 0.0 || failures > (connections + failures) * MAX_FAILED_SHARE {
        bail!("{failures} of {} connections to {target} failed", connections + failures);
    }
    Ok(ConnectionRun {
        per_second: number(&report, "per_second")?,
        first_byte_p99_ms: number(&report, "first_byte_p99_ms")?,
        first_byte_p50_ms: number(&report, "first_byte_p50_ms")?,
        failures,
    })
}
