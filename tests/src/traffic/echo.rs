//! Echo checks through ncat: a server that sends back whatever it receives (TCP or UDP), and a
//! client that sends a payload and waits for exactly that payload to come back.

use std::io::{Read as _, Write as _};
use std::net::IpAddr;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::Protocol;
use crate::wait::Probe;
use crate::{Netns, Process, TestDir, command};

const SERVER_START_TIMEOUT: Duration = Duration::from_secs(5);
/// UDP has no retransmission: resend until the echo arrives (the first datagram may wait for a
/// handshake or be dropped).
const UDP_RESEND_INTERVAL: Duration = Duration::from_millis(250);

/// `ncat --listen --keep-open --exec /bin/cat` on IPv4 and IPv6, stopped on drop. Over UDP each
/// new client (address and port) gets a socket connected to it and a `cat` of its own.
#[derive(Debug)]
pub struct EchoServer {
    pub protocol: Protocol,
    pub port: u16,
    process: Process,
}

impl EchoServer {
    pub fn start(
        netns: &Netns,
        dir: &TestDir,
        protocol: Protocol,
        port: u16,
    ) -> Result<EchoServer> {
        let (flag, ss_flag) = match protocol {
            Protocol::Tcp => (None, "-Hltn"),
            Protocol::Udp => (Some("--udp"), "-Hlun"),
        };
        let label = format!("echo-{}-{:?}-{port}", netns.name(), protocol).to_lowercase();
        let mut command = netns.command("ncat");
        command.args(flag).args([
            "--verbose",
            "--listen",
            "--keep-open",
            "--exec",
            "/bin/cat",
            "--source-port",
        ]);
        command.arg(port.to_string());
        let process = Process::spawn(dir, &label, &mut command)?;
        let mut server = EchoServer { protocol, port, process };
        let filter = format!("sport = :{port}");
        dir.wait_for(&format!("{label} to listen"), SERVER_START_TIMEOUT, || {
            server.process.check_running()?;
            // ncat opens an IPv6 and an IPv4 socket, one after the other: wait for both.
            let listening = netns.run("ss", &[ss_flag, &filter])?;
            let sockets = listening.lines().filter(|line| !line.trim().is_empty()).count();
            Ok(if sockets >= 2 {
                Probe::Ready(())
            } else {
                Probe::NotYet(format!("{sockets} listening socket(s)"))
            })
        })?;
        Ok(server)
    }
}

/// Sends `payload` from `netns` to an echo server at `server:port` and checks the same bytes come
/// back within `timeout`.
pub fn echo_check(
    netns: &Netns,
    protocol: Protocol,
    server: IpAddr,
    port: u16,
    payload: &[u8],
    timeout: Duration,
) -> Result<()> {
    if payload.is_empty() {
        bail!("an echo check needs a non-empty payload");
    }
    let mut command = netns.command("ncat");
    if protocol == Protocol::Udp {
        command.arg("--udp");
    }
    // Keep stdin open (no --send-only, no EOF) so ncat stays to read the echo; it is killed after.
    command.args([&server.to_string(), &port.to_string()]);
    let described = command::describe(&command);
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{described}`"))?;
    let result = exchange(&mut child, protocol, payload, timeout);
    let _ = child.kill();
    let output = child.wait_with_output();
    result.map_err(|error| {
        let stderr = output
            .map(|output| String::from_utf8_lossy(&output.stderr).trim().to_string())
            .unwrap_or_default();
        error.context(format!("echo check `{described}` (ncat said: {stderr:?})"))
    })
}

fn exchange(
    child: &mut Child,
    protocol: Protocol,
    payload: &[u8],
    timeout: Duration,
) -> Result<()> {
    let mut stdin = child.stdin.take().context("ncat stdin")?;
    let mut stdout = child.stdout.take().context("ncat stdout")?;
    let (sender, receiver) = mpsc::channel::<Vec<u8>>();
    // Reads until EOF; the channel closing tells the waiting side that ncat is gone.
    thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(count @ 1..) = stdout.read(&mut buffer) {
            if sender.send(buffer[..count].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut received = Vec::new();
    let mut next_send = Instant::now();
    while received.len() < payload.len() {
        let now = Instant::now();
        if now >= deadline {
            bail!(
                "timed out after {timeout:?}: {} of {} bytes came back",
                received.len(),
                payload.len()
            );
        }
        if now >= next_send {
            stdin.write_all(payload).and_then(|()| stdin.flush()).context("sending the payload")?;
            next_send = match protocol {
                Protocol::Udp => now + UDP_RESEND_INTERVAL,
                Protocol::Tcp => deadline,
            };
        }
        let wait = next_send.min(deadline).saturating_duration_since(Instant::now());
        match receiver.recv_timeout(wait.max(Duration::from_millis(1))) {
            Ok(chunk) => received.extend_from_slice(&chunk),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("ncat exited after {} of {} bytes came back", received.len(), payload.len())
            }
        }
    }
    if !received.starts_with(payload) {
        bail!(
            "the echo differs: sent {:?}, received {:?}",
            String::from_utf8_lossy(payload),
            String::from_utf8_lossy(&received)
        );
    }
    Ok(())
}
