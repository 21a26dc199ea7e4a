//! Real web clients and a real TLS server: `curl` over HTTP with a chosen `Host` header and
//! over HTTPS with a chosen server name (`--resolve`), and `openssl s_server` with a
//! self-signed certificate for its name, so a test can tell by the certificate which backend a
//! TLS connection reached.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};

use super::PeerReport;
use crate::wait::Probe;
use crate::{Netns, Process, TestDir, command};

const SERVER_START_TIMEOUT: Duration = Duration::from_secs(5);

/// What curl saw.
#[derive(Debug, Clone)]
pub struct CurlAnswer {
    /// The client's own address and port (`%{local_ip}:%{local_port}`).
    pub client: SocketAddr,
    /// Who answered (`%{remote_ip}:%{remote_port}`).
    pub answered_from: SocketAddr,
    pub body: String,
    /// curl's verbose log (certificate subject, headers sent).
    pub verbose: String,
}

impl CurlAnswer {
    /// The peer-report line in the body.
    pub fn report(&self) -> Result<PeerReport> {
        PeerReport::find(&self.body)
    }

    /// The server certificate's subject as curl printed it (`CN=name`).
    pub fn certificate_subject(&self) -> Option<&str> {
        self.verbose
            .lines()
            .find_map(|line| line.trim_start_matches(['*', ' ']).strip_prefix("subject: "))
    }
}

/// `curl http://ADDRESS:PORT/ -H 'Host: HOST'` from `netns`.
pub fn curl_http(
    netns: &Netns,
    address: IpAddr,
    port: u16,
    host: &str,
    timeout: Duration,
) -> Result<CurlAnswer> {
    let url = format!("http://{address}:{port}/");
    curl(netns, &["-H", &format!("Host: {host}"), &url], timeout)
}

/// `curl https://NAME:PORT/` from `netns` with NAME resolved to `address` (so the ClientHello
/// carries NAME as its SNI); the self-signed certificate is accepted (`-k`).
pub fn curl_https(
    netns: &Netns,
    address: IpAddr,
    port: u16,
    name: &str,
    timeout: Duration,
) -> Result<CurlAnswer> {
    let resolve = format!("{name}:{port}:{address}");
    let url = format!("https://{name}:{port}/");
    curl(netns, &["-k", "--resolve", &resolve, &url], timeout)
}

/// Separates the body from the `-w` trailer.
const TRAILER: &str = "\n--curl-trailer-- ";

fn curl(netns: &Netns, args: &[&str], timeout: Duration) -> Result<CurlAnswer> {
    let mut command = netns.command("curl");
    command
        .args(["-sS", "-v", "--max-time", &format!("{:.1}", timeout.as_secs_f64())])
        .args([
            "-w",
            &format!("{TRAILER}%{{local_ip}} %{{local_port}} %{{remote_ip}} %{{remote_port}}"),
        ])
        .args(args);
    let described = command::describe(&command);
    let output = command::output(&mut command)?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let verbose = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        let last = verbose.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or_default();
        return Err(anyhow!("`{described}` failed ({}): {last}", output.status));
    }
    let (body, trailer) = stdout
        .rsplit_once(TRAILER)
        .ok_or_else(|| anyhow!("`{described}` printed no trailer: {stdout:?}"))?;
    let words: Vec<&str> = trailer.split_whitespace().collect();
    let address = |ip: usize| -> Result<SocketAddr> {
        let (ip, port) = (words.get(ip).copied(), words.get(ip + 1).copied());
        let (Some(ip), Some(port)) = (ip, port) else {
            return Err(anyhow!("curl trailer {trailer:?} lacks addresses"));
        };
        Ok(SocketAddr::new(
            ip.parse().with_context(|| format!("address {ip:?} in curl's trailer"))?,
            port.parse().with_context(|| format!("port {port:?} in curl's trailer"))?,
        ))
    };
    Ok(CurlAnswer {
        client: address(0)?,
        answered_from: address(2)?,
        body: body.to_string(),
        verbose,
    })
}

/// `openssl s_server -www` on `port` in a namespace, with a self-signed certificate whose
/// subject is `CN=<name>`; it answers `GET /` with a status page. Stopped on drop.
#[derive(Debug)]
pub struct TlsServer {
    pub name: String,
    pub port: u16,
    process: Process,
}

impl TlsServer {
    pub fn start(netns: &Netns, dir: &TestDir, name: &str, port: u16) -> Result<TlsServer> {
        let key = dir.file(&format!("{name}.key"));
        let certificate = dir.file(&format!("{name}.crt"));
        let (key_path, certificate_path) =
            (key.to_string_lossy().into_owned(), certificate.to_string_lossy().into_owned());
        command::run(std::process::Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key_path,
            "-out",
            &certificate_path,
        ]))
        .with_context(|| format!("making a certificate for {name}"))?;
        let label = format!("tls-{name}-{}", netns.name());
        let mut command = netns.command("openssl");
        command.args([
            "s_server",
            "-www",
            "-accept",
            &port.to_string(),
            "-cert",
            &certificate_path,
            "-key",
            &key_path,
        ]);
        let process = Process::spawn(dir, &label, &mut command)?;
        let mut server = TlsServer { name: name.to_string(), port, process };
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
}
