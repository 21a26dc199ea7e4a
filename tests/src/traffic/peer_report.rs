//! The `peer-report` server (this crate's binary) in a namespace, and clients made by the test
//! itself inside another: each exchange returns the client's own address, the address the
//! answer came from, and what the server saw (its name and the client's address and port), so
//! a test can check that a forward kept the client's real address both ways.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};

use crate::wait::Probe;
use crate::{Netns, Process, TestDir};

/// Set to a peer-report binary to use that one instead of the one built next to this program.
pub const PEER_REPORT_ENV: &str = "PEER_REPORT";

const SERVER_START_TIMEOUT: Duration = Duration::from_secs(5);
/// UDP has no retransmission: resend until the answer comes (the first datagram may wait for a
/// handshake or be dropped).
const UDP_RESEND_INTERVAL: Duration = Duration::from_millis(250);

/// The peer-report binary: [`PEER_REPORT_ENV`], else the one cargo built in the target folder
/// this program runs from (`target/<profile>/peer-report`; a test binary lives one folder
/// deeper, in `deps/`).
pub fn peer_report_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(PEER_REPORT_ENV) {
        let path = PathBuf::from(path);
        ensure!(path.is_file(), "{PEER_REPORT_ENV}={} is not a file", path.display());
        return Ok(path);
    }
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let candidates: Vec<PathBuf> =
        exe.ancestors().skip(1).take(2).map(|dir| dir.join("peer-report")).collect();
    candidates.iter().find(|path| path.is_file()).cloned().ok_or_else(|| {
        anyhow!(
            "peer-report is not built (looked for {}); run `cargo build -p gateway-tests --bin \
             peer-report` or set {PEER_REPORT_ENV}",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )
    })
}

/// A running `peer-report`, stopped on drop.
#[derive(Debug)]
pub struct PeerReportServer {
    pub name: String,
    process: Process,
}

impl PeerReportServer {
    /// Serves TCP on `tcp` ports and UDP on `udp` ports of every address in `netns`, answering
    /// as `name`; waits until every socket is there.
    pub fn start(
        netns: &Netns,
        dir: &TestDir,
        name: &str,
        tcp: &[u16],
        udp: &[u16],
    ) -> Result<PeerReportServer> {
        PeerReportServer::start_binary(&peer_report_binary()?, netns, dir, name, tcp, udp)
    }

    /// [`PeerReportServer::start`] with the given peer-report binary (e.g. a release build).
    pub fn start_binary(
        binary: &Path,
        netns: &Netns,
        dir: &TestDir,
        name: &str,
        tcp: &[u16],
        udp: &[u16],
    ) -> Result<PeerReportServer> {
        let mut command = netns.command(binary);
        command.args(["--name", name]);
        for port in tcp {
            command.args(["--tcp", &format!("0.0.0.0:{port}")]);
        }
        for port in udp {
            command.args(["--udp", &format!("0.0.0.0:{port}")]);
        }
        let label = format!("peer-report-{name}-{}", netns.name());
        let process = Process::spawn(dir, &label, &mut command)?;
        let mut server = PeerReportServer { name: name.to_string(), process };
        dir.wait_for(&format!("{label} to serve"), SERVER_START_TIMEOUT, || {
            server.process.check_running()?;
            let missing = missing_sockets(netns, tcp, udp)?;
            Ok(if missing.is_empty() { Probe::Ready(()) } else { Probe::NotYet(missing) })
        })?;
        Ok(server)
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// The sockets not yet listening, as text ("" when all are).
fn missing_sockets(netns: &Netns, tcp: &[u16], udp: &[u16]) -> Result<String> {
    let listening = |flag: &str| -> Result<Vec<u16>> {
        let text = netns.run("ss", &[flag])?;
        Ok(text
            .lines()
            .filter_map(|line| line.split_whitespace().nth(3))
            .filter_map(|local| local.rsplit_once(':').and_then(|(_, port)| port.parse().ok()))
            .collect())
    };
    let (tcp_up, udp_up) = (listening("-Hltn")?, listening("-Hlun")?);
    let mut missing: Vec<String> = tcp
        .iter()
        .filter(|port| !tcp_up.contains(port))
        .map(|port| format!("tcp {port}"))
        .collect();
    missing.extend(udp.iter().filter(|p| !udp_up.contains(p)).map(|port| format!("udp {port}")));
    Ok(missing.join(", "))
}

/// What the server said: `name=NAME peer=IP:PORT local=IP:PORT bytes=N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReport {
    pub name: String,
    /// The client as the server saw it (`accept` / `recvfrom`).
    pub peer: SocketAddr,
    /// Where it arrived at the server.
    pub local: SocketAddr,
    /// Request bytes the server read.
    pub bytes: usize,
}

impl PeerReport {
    /// The report line in `text` (the whole answer; an HTTP answer's body holds it).
    pub fn find(text: &str) -> Result<PeerReport> {
        let line = text
            .lines()
            .find(|line| line.starts_with("name="))
            .ok_or_else(|| anyhow!("no peer-report line in the answer {text:?}"))?;
        let field = |key: &str| -> Result<&str> {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
                .ok_or_else(|| anyhow!("no {key}= in {line:?}"))
        };
        let address = |key: &str| -> Result<SocketAddr> {
            let text = field(key)?;
            text.parse().with_context(|| format!("{key}={text:?} in {line:?}"))
        };
        Ok(PeerReport {
            name: field("name")?.to_string(),
            peer: address("peer")?,
            local: address("local")?,
            bytes: field("bytes")?.parse().with_context(|| format!("bytes= in {line:?}"))?,
        })
    }
}

/// One exchange as the client saw it.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The client socket's own address (what the server should report as `peer`).
    pub client: SocketAddr,
    /// Where the answer came from (TCP: the connected peer; UDP: `recvfrom`).
    pub answered_from: SocketAddr,
    /// The whole answer.
    pub answer: String,
    pub report: PeerReport,
}

/// A TCP connection made from inside a namespace, held open until [`TcpClient::exchange`]:
/// several can be open at once (e.g. one through each of two VPSes, interleaved).
#[derive(Debug)]
pub struct TcpClient {
    stream: TcpStream,
    to: SocketAddr,
    timeout: Duration,
}

impl TcpClient {
    /// Connects from `netns` to `to` (the handshake is complete when this returns).
    pub fn connect(netns: &Netns, to: SocketAddr, timeout: Duration) -> Result<TcpClient> {
        let stream = {
            let _inside = netns.enter()?;
            TcpStream::connect_timeout(&to, timeout)
                .with_context(|| format!("connecting from {} to {to}", netns.name()))?
        };
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        Ok(TcpClient { stream, to, timeout })
    }

    /// Writes `parts` one after another (`pause` between them; with TCP_NODELAY each part
    /// leaves as segments of its own), reads the answer up to the server's close and parses
    /// its report.
    pub fn exchange(mut self, parts: &[&[u8]], pause: Duration) -> Result<Exchange> {
        let to = self.to;
        let client = self.stream.local_addr()?;
        let answered_from = self.stream.peer_addr()?;
        for (index, part) in parts.iter().enumerate() {
            if index > 0 && !pause.is_zero() {
                thread::sleep(pause);
            }
            self.stream.write_all(part).with_context(|| format!("sending part {index} to {to}"))?;
        }
        let mut answer = Vec::new();
        self.stream.read_to_end(&mut answer).with_context(|| {
            format!(
                "reading the answer from {to} within {:?} ({} bytes so far)",
                self.timeout,
                answer.len()
            )
        })?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let report = PeerReport::find(&answer).with_context(|| format!("TCP {client} → {to}"))?;
        Ok(Exchange { client, answered_from, answer, report })
    }
}

/// [`TcpClient::connect`] then [`TcpClient::exchange`].
pub fn tcp_exchange(
    netns: &Netns,
    to: SocketAddr,
    parts: &[&[u8]],
    pause: Duration,
    timeout: Duration,
) -> Result<Exchange> {
    TcpClient::connect(netns, to, timeout)?.exchange(parts, pause)
}

/// Whether a TCP connection from `netns` to `to` is refused or gets no answer within
/// `timeout` (what a removed forward looks like): `Ok(())` if so, an error showing the
/// answer if a server answered.
pub fn tcp_no_answer(
    netns: &Netns,
    to: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> Result<()> {
    match tcp_exchange(netns, to, &[request], Duration::ZERO, timeout) {
        Ok(exchange) => bail!("{to} still answers: {:?}", exchange.answer),
        Err(_) => Ok(()),
    }
}

/// Sends `payload` from a fresh unconnected UDP socket bound to `from` (port 0: any) in
/// `netns` to `to` until an answer comes (resending every 250 ms) or `timeout` passes.
pub fn udp_exchange(
    netns: &Netns,
    from: IpAddr,
    to: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Result<Exchange> {
    let socket = {
        let _inside = netns.enter()?;
        UdpSocket::bind((from, 0))
            .with_context(|| format!("UDP socket on {from} in {}", netns.name()))?
    };
    let client = socket.local_addr()?;
    let deadline = Instant::now() + timeout;
    let mut buffer = vec![0u8; 65536];
    loop {
        let now = Instant::now();
        if now >= deadline {
            bail!("no UDP answer from {to} within {timeout:?} (client {client})");
        }
        socket.send_to(payload, to).with_context(|| format!("sending UDP to {to}"))?;
        let wait = UDP_RESEND_INTERVAL.min(deadline - now);
        socket.set_read_timeout(Some(wait))?;
        match socket.recv_from(&mut buffer) {
            Ok((length, from)) => {
                let answer = String::from_utf8_lossy(&buffer[..length]).into_owned();
                let report =
                    PeerReport::find(&answer).with_context(|| format!("UDP {client} → {to}"))?;
                return Ok(Exchange { client, answered_from: from, answer, report });
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(error) => return Err(error).with_context(|| format!("receiving from {to}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_found_in_plain_and_http_answers() {
        let line = "name=nas peer=198.51.100.10:40000 local=192.168.60.10:8080 bytes=77";
        let report = PeerReport::find(&format!("{line}\n")).unwrap();
        assert_eq!(report.name, "nas");
        assert_eq!(report.peer, "198.51.100.10:40000".parse().unwrap());
        assert_eq!(report.local, "192.168.60.10:8080".parse().unwrap());
        assert_eq!(report.bytes, 77);
        let http = format!("HTTP/1.1 200 OK\r\nContent-Length: 70\r\n\r\n{line}\n");
        assert_eq!(PeerReport::find(&http).unwrap(), report);
    }

    #[test]
    fn malformed_reports_are_errors_naming_the_field() {
        assert!(PeerReport::find("nothing here").is_err());
        let error = PeerReport::find("name=x peer=nope local=1.2.3.4:5 bytes=1").unwrap_err();
        assert!(format!("{error:#}").contains("peer="), "{error:#}");
    }
}
