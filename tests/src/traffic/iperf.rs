//! iperf3 server and client; the client's JSON report reduced to the numbers tests compare.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;

use super::Protocol;
use crate::wait::{Probe, wait_for};
use crate::{Netns, Process, TestDir, command};

const SERVER_START_TIMEOUT: Duration = Duration::from_secs(5);

/// `iperf3 -s` in a namespace, serving one client at a time, stopped on drop.
#[derive(Debug)]
pub struct IperfServer {
    pub port: u16,
    process: Process,
}

impl IperfServer {
    /// Starts it and waits until it listens on `port`.
    pub fn start(netns: &Netns, dir: &TestDir, port: u16) -> Result<IperfServer> {
        let port_text = port.to_string();
        let label = format!("iperf3-server-{}-{port}", netns.name());
        let process = Process::spawn(
            dir,
            &label,
            netns.command("iperf3").args(["--server", "--port", &port_text]),
        )?;
        let mut server = IperfServer { port, process };
        let filter = format!("sport = :{port}");
        dir.wait_for(&format!("{label} to listen"), SERVER_START_TIMEOUT, || {
            server.process.check_running()?;
            let listening = netns.run("ss", &["-Hltn", &filter])?;
            Ok(if listening.trim().is_empty() {
                Probe::NotYet("not listening".into())
            } else {
                Probe::Ready(())
            })
        })?;
        Ok(server)
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

#[derive(Debug, Clone)]
pub struct IperfOptions {
    pub protocol: Protocol,
    pub duration: Duration,
    /// Target rate in bits/s (`-b`); iperf3's default for UDP is only 1 Mbit/s.
    pub bitrate: Option<u64>,
    /// Datagram or write size in bytes (`-l`).
    pub length: Option<u32>,
    /// Server sends, client receives (`-R`).
    pub reverse: bool,
    pub parallel_streams: Option<u32>,
}

impl Default for IperfOptions {
    fn default() -> IperfOptions {
        IperfOptions {
            protocol: Protocol::Tcp,
            duration: Duration::from_secs(2),
            bitrate: None,
            length: None,
            reverse: false,
            parallel_streams: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct IperfReport {
    pub sent_bytes: u64,
    pub received_bytes: u64,
    pub sent_bits_per_second: f64,
    pub received_bits_per_second: f64,
    /// TCP only.
    pub retransmits: Option<u64>,
    /// UDP only: datagrams sent, lost, and the loss the receiver saw.
    pub packets: Option<u64>,
    pub lost_packets: Option<u64>,
    pub lost_percent: Option<f64>,
    pub jitter_ms: Option<f64>,
}

impl IperfReport {
    /// Reads `iperf3 --json` output (iperf3 3.x: `end.sum_sent` / `end.sum_received`).
    pub fn parse(json: &str) -> Result<IperfReport> {
        let root: Value = serde_json::from_str(json).context("iperf3 output is not JSON")?;
        if let Some(error) = root.get("error").and_then(Value::as_str) {
            bail!("iperf3: {error}");
        }
        let end = root.get("end").ok_or_else(|| anyhow!("iperf3 report has no `end`"))?;
        let sent =
            end.get("sum_sent").ok_or_else(|| anyhow!("iperf3 report has no `end.sum_sent`"))?;
        let received = end
            .get("sum_received")
            .ok_or_else(|| anyhow!("iperf3 report has no `end.sum_received`"))?;
        let number = |section: &Value, key: &str| -> Result<f64> {
            section
                .get(key)
                .and_then(Value::as_f64)
                .ok_or_else(|| anyhow!("iperf3 report lacks {key}"))
        };
        let integer = |section: &Value, key: &str| section.get(key).and_then(Value::as_u64);
        Ok(IperfReport {
            sent_bytes: number(sent, "bytes")? as u64,
            received_bytes: number(received, "bytes")? as u64,
            sent_bits_per_second: number(sent, "bits_per_second")?,
            received_bits_per_second: number(received, "bits_per_second")?,
            retransmits: integer(sent, "retransmits"),
            packets: integer(sent, "packets"),
            lost_packets: integer(received, "lost_packets"),
            lost_percent: received.get("lost_percent").and_then(Value::as_f64),
            jitter_ms: received.get("jitter_ms").and_then(Value::as_f64),
        })
    }
}

/// Runs `iperf3 --client` from `netns` against a server at `server:port`.
pub fn iperf3_client(
    netns: &Netns,
    server: IpAddr,
    port: u16,
    options: &IperfOptions,
) -> Result<IperfReport> {
    let mut command = netns.command("iperf3");
    command
        .args(["--client", &server.to_string(), "--port", &port.to_string(), "--json"])
        .args(["--time", &options.duration.as_secs().max(1).to_string()]);
    if options.protocol == Protocol::Udp {
        command.arg("--udp");
    }
    if let Some(bitrate) = options.bitrate {
        command.args(["--bitrate", &bitrate.to_string()]);
    }
    if let Some(length) = options.length {
        command.args(["--length", &length.to_string()]);
    }
    if options.reverse {
        command.arg("--reverse");
    }
    if let Some(streams) = options.parallel_streams {
        command.args(["--parallel", &streams.to_string()]);
    }
    // iperf3 writes errors into the JSON too and may exit 0 or 1: read the JSON either way.
    let output = command::output(&mut command)?;
    IperfReport::parse(&String::from_utf8_lossy(&output.stdout)).with_context(|| {
        format!(
            "`{}` ({}): {}",
            command::describe(&command),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })
}

/// [`iperf3_client`], tried again (for up to `timeout`) while the server is not ready for a
/// new test: iperf3 serves one client at a time, and on a loaded machine it may still be
/// finishing the previous one ("busy", "unable to connect", a reset control connection).
pub fn iperf3_client_when_ready(
    netns: &Netns,
    server: IpAddr,
    port: u16,
    options: &IperfOptions,
    timeout: Duration,
) -> Result<IperfReport> {
    let what = format!("iperf3 to {server}:{port} to run");
    wait_for(&what, timeout, || match iperf3_client(netns, server, port, options) {
        Ok(report) => Ok(Probe::Ready(report)),
        Err(error) => {
            let text = format!("{error:#}");
            let not_ready = ["busy", "unable to connect", "reset by peer", "unable to receive"]
                .iter()
                .any(|sign| text.contains(sign));
            if not_ready { Ok(Probe::NotYet(text)) } else { Err(error) }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_tcp_report() {
        let json = r#"{"start":{},"intervals":[],"end":{
            "sum_sent":{"bytes":4659609600,"bits_per_second":37269385653.48,"retransmits":3},
            "sum_received":{"bytes":4658298880,"bits_per_second":37140928981.89}}}"#;
        let report = IperfReport::parse(json).unwrap();
        assert_eq!(report.sent_bytes, 4_659_609_600);
        assert_eq!(report.received_bytes, 4_658_298_880);
        assert_eq!(report.retransmits, Some(3));
        assert_eq!(report.lost_packets, None);
        assert!(report.received_bits_per_second > 3.7e10);
    }

    #[test]
    fn parses_a_udp_report() {
        let json = r#"{"end":{
            "sum_sent":{"bytes":12489024,"bits_per_second":99904699.1,"jitter_ms":0,
                        "lost_packets":0,"packets":8972,"lost_percent":0},
            "sum_received":{"bytes":12480672,"bits_per_second":99895509.4,"jitter_ms":0.0019,
                            "lost_packets":6,"packets":8972,"lost_percent":0.0669}}}"#;
        let report = IperfReport::parse(json).unwrap();
        assert_eq!(report.packets, Some(8972));
        assert_eq!(report.lost_packets, Some(6));
        assert_eq!(report.lost_percent, Some(0.0669));
        assert_eq!(report.jitter_ms, Some(0.0019));
        assert_eq!(report.retransmits, None);
    }

    #[test]
    fn reports_iperf_errors_and_bad_json() {
        let error = IperfReport::parse(
            r#"{"start":{},"intervals":[],"end":{},"error":"unable to connect to server: Connection refused"}"#,
        )
        .unwrap_err();
        assert!(error.to_string().contains("Connection refused"), "{error}");
        assert!(IperfReport::parse("not json").is_err());
        assert!(IperfReport::parse(r#"{"end":{}}"#).is_err());
    }
}
