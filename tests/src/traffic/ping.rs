//! `ping` (iputils), IPv4 or IPv6 by the destination's family, with its summary parsed.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};

use crate::wait::{Probe, wait_for};
use crate::{Netns, command};

#[derive(Debug, Clone, PartialEq)]
pub struct PingReport {
    pub transmitted: u32,
    pub received: u32,
    /// Round-trip times in milliseconds; `None` when nothing came back.
    pub rtt_min_ms: Option<f64>,
    pub rtt_avg_ms: Option<f64>,
    pub rtt_max_ms: Option<f64>,
}

impl PingReport {
    pub fn all_received(&self) -> bool {
        self.transmitted > 0 && self.received == self.transmitted
    }

    /// Reads the summary of `ping -q`:
    /// `3 packets transmitted, 3 received, 0% packet loss, time 402ms` and
    /// `rtt min/avg/max/mdev = 0.041/0.052/0.061/0.008 ms`.
    pub fn parse(output: &str) -> Result<PingReport> {
        let counts = output
            .lines()
            .find(|line| line.contains("packets transmitted"))
            .ok_or_else(|| anyhow!("no `packets transmitted` line in ping output:\n{output}"))?;
        let mut parts = counts.split(',').map(str::trim);
        let leading_number = |part: Option<&str>, what: &str| -> Result<u32> {
            let part = part.ok_or_else(|| anyhow!("no {what} count in {counts:?}"))?;
            let number = part.split_whitespace().next().unwrap_or_default();
            number.parse().with_context(|| format!("{what} count in {counts:?}"))
        };
        let transmitted = leading_number(parts.next(), "transmitted")?;
        let received = leading_number(parts.next(), "received")?;
        let (rtt_min_ms, rtt_avg_ms, rtt_max_ms) = match output
            .lines()
            .find_map(|line| line.trim().strip_prefix("rtt min/avg/max/mdev = "))
        {
            Some(values) => {
                // A slow path adds `, pipe N` after the unit.
                let values = values.split(" ms").next().unwrap_or_default();
                let values: Vec<f64> = values
                    .split('/')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("rtt values {values:?}"))?;
                if values.len() != 4 {
                    bail!("expected 4 rtt values, found {values:?}");
                }
                (Some(values[0]), Some(values[1]), Some(values[2]))
            }
            None => (None, None, None),
        };
        Ok(PingReport { transmitted, received, rtt_min_ms, rtt_avg_ms, rtt_max_ms })
    }
}

/// Sends `count` echo requests 0.2 s apart from `netns`, waiting up to a second for the last
/// reply. Losing replies is a result, not an error; being unable to ping at all is an error.
pub fn ping(netns: &Netns, destination: IpAddr, count: u32) -> Result<PingReport> {
    let output = ping_output(netns, destination, count)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    // iputils: 0 = replies, 1 = no (or too few) replies, 2 = other error.
    if output.status.code() == Some(2) || !stdout.contains("packets transmitted") {
        bail!(
            "ping {destination} from {} failed ({}): {}{}",
            netns.name(),
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    PingReport::parse(&stdout)
}

/// Pings once at a time until a reply comes back (e.g. until a tunnel is up).
pub fn wait_for_ping(netns: &Netns, destination: IpAddr, timeout: Duration) -> Result<()> {
    let what = format!("a ping reply from {destination} in {}", netns.name());
    wait_for(&what, timeout, || {
        let output = ping_output(netns, destination, 1)?;
        if output.status.success() {
            return Ok(Probe::Ready(()));
        }
        let seen = format!(
            "{} {}",
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(Probe::NotYet(seen))
    })
}

fn ping_output(netns: &Netns, destination: IpAddr, count: u32) -> Result<std::process::Output> {
    let count = count.to_string();
    let destination = destination.to_string();
    command::output(netns.command("ping").args([
        "-n",
        "-q",
        "-c",
        &count,
        "-i",
        "0.2",
        "-W",
        "1",
        &destination,
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_summary() {
        let output = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\n\
            --- 10.0.0.2 ping statistics ---\n\
            3 packets transmitted, 3 received, 0% packet loss, time 402ms\n\
            rtt min/avg/max/mdev = 0.041/0.052/0.061/0.008 ms\n";
        let report = PingReport::parse(output).unwrap();
        assert_eq!((report.transmitted, report.received), (3, 3));
        assert!(report.all_received());
        assert_eq!(report.rtt_min_ms, Some(0.041));
        assert_eq!(report.rtt_avg_ms, Some(0.052));
        assert_eq!(report.rtt_max_ms, Some(0.061));
    }

    #[test]
    fn parses_a_summary_with_pipe() {
        let output = "5 packets transmitted, 5 received, 0% packet loss, time 813ms\n\
            rtt min/avg/max/mdev = 0.362/41.301/204.517/81.607 ms, pipe 2\n";
        let report = PingReport::parse(output).unwrap();
        assert!(report.all_received());
        assert_eq!(report.rtt_max_ms, Some(204.517));
    }

    #[test]
    fn parses_total_loss_and_errors() {
        let output = "--- fd50::2 ping statistics ---\n\
            2 packets transmitted, 0 received, +2 errors, 100% packet loss, time 1001ms\n";
        let report = PingReport::parse(output).unwrap();
        assert_eq!((report.transmitted, report.received), (2, 0));
        assert!(!report.all_received());
        assert_eq!(report.rtt_avg_ms, None);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(PingReport::parse("ping: connect: Network is unreachable").is_err());
        assert!(PingReport::parse("x packets transmitted, 1 received").is_err());
        assert!(
            PingReport::parse("1 packets transmitted, 1 received\nrtt min/avg/max/mdev = 1/2 ms")
                .is_err()
        );
    }
}
