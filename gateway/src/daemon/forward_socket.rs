//! The forwards' control socket: `/var/run/gatewayd/<ifname>.ctl`, beside the status socket,
//! root's alone. One request per connection, one JSON document each way: the client writes
//! its request and shuts its side down, the daemon answers with the result or one line of
//! error.
//!
//! ```json
//! {"add": {"protocol": "tcp", "ports": "8000-8010", "to": "10.0.0.2:9000"}}
//! {"remove": {"protocol": "tls", "ports": "443", "sni": "a.example"}}
//! "list"
//! "reload"
//! ```
//!
//! `reload` (`gateway reload`) reads the configuration file again (`daemon::reload`) and is
//! answered `{"reloaded": "what changed"}`, or an error if the daemon has no file.
//!
//! answered `{"added": {...}}`, `{"removed": {...}}`, `{"forwards": [...]}` or
//! `{"error": "no peer's AllowedIPs route 192.0.2.9"}`. Forwards travel as the `forward add`
//! arguments that make them (`entry::store::ForwardRecord`); the daemon parses them with the
//! CLI's own rules, so a request from elsewhere is held to the same.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};

use super::forwards::{EntryHost, EntryPoint};
use super::network::{NetworkRequest, NetworkService};
use super::reload::Reloader;
use super::status::{STATUS_DIRECTORY, SocketGuard};
use crate::entry::forward::{Selector, SelectorArgs};
use crate::entry::store::ForwardRecord;

/// The largest request the daemon reads: a forward is a few hundred bytes.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub fn socket_path(interface: &str) -> PathBuf {
    PathBuf::from(STATUS_DIRECTORY).join(format!("{interface}.ctl"))
}

/// `forward remove`'s arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorRecord {
    pub protocol: String,
    pub ports: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
}

impl SelectorRecord {
    pub fn to_selector(&self) -> Result<Selector, String> {
        let args = SelectorArgs {
            protocol: &self.protocol,
            ports: &self.ports,
            listen: self.listen.as_deref(),
            sni: self.sni.as_deref(),
            host: self.host.as_deref(),
            default: self.default,
        };
        Selector::parse(&args).map_err(|e| e.to_string())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Add(ForwardRecord),
    Remove(SelectorRecord),
    List,
    Reload,
    /// `gateway network …` and `gateway route …` (`daemon::network`).
    Network(NetworkRequest),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Added(ForwardRecord),
    Removed(ForwardRecord),
    Forwards(Vec<ForwardRecord>),
    Reloaded(String),
    Network(serde_json::Value),
    Error(String),
}

/// What the daemon answers `request` with.
pub fn handle(entry: &EntryPoint, host: &dyn EntryHost, request: Request) -> Response {
    let result = match request {
        Request::Add(record) => record
            .to_forward()
            .map_err(|e| e.to_string())
            .and_then(|forward| entry.add(host, forward))
            .map(|added| Response::Added(ForwardRecord::from(&added))),
        Request::Remove(record) => record
            .to_selector()
            .and_then(|selector| entry.remove(host, &selector))
            .map(|removed| Response::Removed(ForwardRecord::from(&removed))),
        Request::List => Ok(Response::Forwards(
            entry.table().forwards().iter().map(ForwardRecord::from).collect(),
        )),
        Request::Reload => Err("gatewayd was not started with --config: nothing to reload".into()),
        Request::Network(_) => {
            Err("the network is answered by the daemon's network service".into())
        }
    };
    result.unwrap_or_else(Response::Error)
}

/// Binds the control socket (replacing a stale one), for root alone. The guard removes it.
pub fn bind(interface: &str) -> std::io::Result<(UnixListener, SocketGuard)> {
    std::fs::create_dir_all(STATUS_DIRECTORY)?;
    let path = socket_path(interface);
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    let guard = SocketGuard::new(path.clone());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok((UnixListener::from_std(listener)?, guard))
}

/// Answers requests until the runtime stops.
/// `reloader`: the daemon's configuration file, if it was started with one.
pub async fn serve(
    listener: UnixListener,
    entry: Arc<EntryPoint>,
    host: Arc<dyn EntryHost>,
    reloader: Option<Arc<Reloader>>,
    network: Arc<NetworkService>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (entry, host, reloader) = (Arc::clone(&entry), Arc::clone(&host), reloader.clone());
        tokio::spawn(answer(stream, entry, host, reloader, Arc::clone(&network)));
    }
}

async fn answer(
    mut stream: UnixStream,
    entry: Arc<EntryPoint>,
    host: Arc<dyn EntryHost>,
    reloader: Option<Arc<Reloader>>,
    network: Arc<NetworkService>,
) {
    // The socket is root's; a process that got in regardless (it raced the chmod) is not.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let ours = unsafe { libc::geteuid() };
    if stream.peer_cred().map_or(true, |cred| cred.uid() != ours) {
        let refusal = Response::Error("forwards are changed by root alone".into());
        let _ = write_response(&mut stream, &refusal).await;
        return;
    }
    let mut text = Vec::new();
    let read = tokio::time::timeout(
        REQUEST_TIMEOUT,
        (&mut stream).take(MAX_REQUEST + 1).read_to_end(&mut text),
    )
    .await;
    let response = match read {
        Err(_) => Response::Error("the request did not arrive in time".into()),
        Ok(Err(e)) => Response::Error(format!("cannot read the request: {e}")),
        Ok(Ok(_)) if text.len() as u64 > MAX_REQUEST => {
            Response::Error(format!("a request is at most {MAX_REQUEST} bytes"))
        }
        Ok(Ok(_)) => match serde_json::from_slice::<Request>(&text) {
            Err(e) => Response::Error(format!("bad request: {e}")),
            // Enrolling waits on the controller: answered on the runtime.
            Ok(Request::Network(request)) => {
                network.handle(request).await.map_or_else(Response::Error, Response::Network)
            }
            // Saving syncs the disk: off the runtime's thread.
            Ok(request) => tokio::task::spawn_blocking(move || match (request, reloader) {
                (Request::Reload, Some(reloader)) => {
                    let result = reloader.reload();
                    super::reload::log(&result, "gateway reload");
                    result.map_or_else(Response::Error, Response::Reloaded)
                }
                (request, _) => handle(&entry, &*host, request),
            })
            .await
            .unwrap_or_else(|e| Response::Error(format!("the request failed: {e}"))),
        },
    };
    let _ = write_response(&mut stream, &response).await;
}

async fn write_response(stream: &mut UnixStream, response: &Response) -> std::io::Result<()> {
    let json = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    stream.write_all(&json).await?;
    stream.shutdown().await
}

/// Sends `request` to the gatewayd of `interface` (the CLI's side); its answer, or one line
/// saying why there is none.
pub fn request(interface: &str, request: &Request) -> Result<Response, String> {
    crate::tun::validate_name(interface).map_err(|e| e.to_string())?;
    let path = socket_path(interface);
    let mut stream = connect(&path, interface)?;
    let json = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    let mut exchange = || -> std::io::Result<String> {
        // An enrollment takes up to 20 seconds.
        stream.set_read_timeout(Some(Duration::from_secs(45)))?;
        stream.write_all(&json)?;
        stream.shutdown(std::net::Shutdown::Write)?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    };
    let answer = exchange().map_err(|e| format!("gatewayd on {interface}: {e}"))?;
    serde_json::from_str(&answer)
        .map_err(|e| format!("gatewayd on {interface} answered something else than forwards: {e}"))
}

/// Connects to one of the sockets gatewayd serves for `interface` (its status or control
/// socket): a socket that is missing or that nobody listens on means no gatewayd runs there.
pub fn connect(
    path: &std::path::Path,
    interface: &str,
) -> Result<std::os::unix::net::UnixStream, String> {
    std::os::unix::net::UnixStream::connect(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            format!("no gatewayd runs on {interface}")
        }
        _ => format!("cannot reach gatewayd on {interface} ({}): {e}", path.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_are_the_documented_json() {
        let add = Request::Add(ForwardRecord {
            protocol: "tcp".into(),
            ports: "8000-8010".into(),
            listen: None,
            sni: None,
            host: None,
            default: false,
            to: "10.0.0.2:9000".into(),
        });
        let text = serde_json::to_string(&add).unwrap();
        assert_eq!(text, r#"{"add":{"protocol":"tcp","ports":"8000-8010","to":"10.0.0.2:9000"}}"#);
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), add);
        assert_eq!(serde_json::to_string(&Request::List).unwrap(), r#""list""#);
        let remove: Request = serde_json::from_str(
            r#"{"remove": {"protocol": "tls", "ports": "443", "sni": "a.example"}}"#,
        )
        .unwrap();
        let Request::Remove(selector) = remove else { panic!("{remove:?}") };
        assert_eq!(selector.to_selector().unwrap().to_string(), "tls 443 --sni a.example");
        assert!(serde_json::from_str::<Request>(r#"{"remove": {"protocol": "tcp"}}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"flush": null}"#).is_err());
        let error = Response::Error("no peer's AllowedIPs route 192.0.2.9".into());
        assert_eq!(
            serde_json::to_string(&error).unwrap(),
            r#"{"error":"no peer's AllowedIPs route 192.0.2.9"}"#
        );
    }

    #[test]
    fn a_selector_that_does_not_parse_says_why_in_one_line() {
        let record =
            SelectorRecord { protocol: "tcp".into(), ports: "70000".into(), ..Default::default() };
        assert_eq!(
            record.to_selector().unwrap_err(),
            "'70000' is not a port: ports are 1 to 65535"
        );
    }

    #[test]
    fn an_interface_without_a_daemon_is_named() {
        assert_eq!(request("gwnone0", &Request::List).unwrap_err(), "no gatewayd runs on gwnone0");
        assert!(
            request("bad/name", &Request::List).unwrap_err().contains("invalid interface name")
        );
    }
}
