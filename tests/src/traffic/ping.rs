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
/// How [`ping_with`] pings.
#[derive(Debug, Clone, PartialEq)]
pub struct PingOptions {
    pub count: u32,
    /// Between echo requests (below 0.2 s needs root, which the tests have).
    pub interval: Duration,
    /// ICMP payload bytes (`-s`); ping's default (56) when `None`.
    pub size: Option<u32>,
    /// How long ping waits for each reply (`-W`, whole seconds).
    pub reply_timeout: Duration,
}

impl PingOptions {
    /// `count` echo requests 0.2 s apart, each given 3 s to come back (a loaded machine
    /// stalls for a second now and then; a broken path never answers).
    pub fn count(count: u32) -> PingOptions {
        PingOptions {
            count,
            interval: Duration::from_millis(200),
            size: None,
            reply_timeout: Duration::from_secs(3),
        }
    }
}

pub fn ping(netns: &Netns, destination: IpAddr, count: u32) -> Result<PingReport> {
    ping_with(netns, destination, &PingOptions::count(count))
}

/// Pings and returns the summary whatever was lost; an error only when ping itself failed
/// (no route, bad address) or printed no summary.
pub fn ping_with(netns: &Netns, destination: IpAddr, options: &PingOptions) -> Result<PingReport> {
    let output = ping_output(netns, destination, options)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
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

/// Bursts of `count` pings until one comes back whole, for at most `timeout`; returns it. A
/// burst that lost replies (the machine stalled) is tried again; a broken path never passes.
pub fn ping_until_clean(
    netns: &Netns,
    destination: IpAddr,
    count: u32,
    timeout: Duration,
) -> Result<PingReport> {
    let what = format!("{count} of {count} replies from {destination} in {}", netns.name());
    let mut lossy = Vec::new();
    let report = wait_for(&what, timeout, || {
        let report = ping(netns, destination, count)?;
        Ok(if report.all_received() {
            Probe::Ready(report)
        } else {
            lossy.push(report.clone());
            Probe::NotYet(format!("{report:?}"))
        })
    })?;
    if !lossy.is_empty() {
        eprintln!("{what}: lossy bursts before a clean one: {lossy:?}");
    }
    Ok(report)
}

pub fn wait_for_ping(netns: &Netns, destination: IpAddr, timeout: Duration) -> Result<()> {
    let what = format!("a ping reply from {destination} in {}", netns.name());
    wait_for(&what, timeout, || {
        let quick = PingOptions { reply_timeout: Duration::from_secs(1), ..PingOptions::count(1) };
        let output = ping_output(netns, destination, &quick)?;
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

fn ping_output(
    netns: &Netns,
    destination: IpAddr,
    options: &PingOptions,
) -> Result<std::process::Output> {
    let mut command = netns.command("ping");
    command.args(["-n", "-q", "-W", &options.reply_timeout.as_secs().max(1).to_string()]);
    command.args(["-c", &options.count.to_string()]);
    command.args(["-i", &format!("{:.3}", options.interval.as_secs_f64())]);
    if let Some(size) = options.size {
        command.args(["-s", &size.to_string()]);
    }
    command::output(command.arg(destination.to_string()))
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
