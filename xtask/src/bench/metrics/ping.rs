//! Round-trip times with ping (56-byte payload, one every `interval`): the 50th and 99th
//! percentiles of the replies' times.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::bench::child::die_with_parent;
use crate::bench::stats::quantile;
use crate::bench::tunnel::TrafficPath;
use crate::run;

pub struct PingRun {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub sent: u32,
    pub received: usize,
}

impl PingRun {
    pub fn describe(&self) -> String {
        format!(
            "p50 {:.3} ms, p99 {:.3} ms ({}/{} replies)",
            self.p50_ms, self.p99_ms, self.received, self.sent
        )
    }
}

pub fn measure(path: &TrafficPath<'_>, count: u32, interval: Duration) -> Result<PingRun> {
    let interval = format!("{:.3}", interval.as_secs_f64());
    let mut command = path.source.command("ping");
    die_with_parent(&mut command).args([
        "-n",
        "-c",
        &count.to_string(),
        "-i",
        &interval,
        "-W",
        "1",
    ]);
    command.arg(path.address.to_string());
    // Lost replies make ping exit non-zero: its output is the result either way.
    let output =
        command.output().with_context(|| format!("cannot run `{}`", run::describe(&command)))?;
    let times = reply_times(&String::from_utf8_lossy(&output.stdout));
    // A few lost echoes do not spoil percentiles; most of them lost means a broken path.
    if times.len() * 2 < count as usize {
        bail!(
            "only {} of {count} pings to {} were answered: {}",
            times.len(),
            path.address,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(PingRun {
        p50_ms: quantile(&times, 0.5).unwrap_or_default(),
        p99_ms: quantile(&times, 0.99).unwrap_or_default(),
        sent: count,
        received: times.len(),
    })
}

/// The `time=0.123 ms` of every reply line.
fn reply_times(output: &str) -> Vec<f64> {
    output
        .lines()
        .filter_map(|line| line.split("time=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|value| value.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_reply_times() {
        let output = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\
            64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.051 ms\n\
            64 bytes from 10.0.0.2: icmp_seq=2 ttl=64 time=1.25 ms\n\
            \n--- 10.0.0.2 ping statistics ---\n\
            2 packets transmitted, 2 received, 0% packet loss, time 10ms\n\
            rtt min/avg/max/mdev = 0.051/0.650/1.250/0.600 ms\n";
        assert_eq!(reply_times(output), vec![0.051, 1.25]);
        assert!(reply_times("ping: connect: Network is unreachable").is_empty());
    }
}
