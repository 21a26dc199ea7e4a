//! systemd's readiness protocol (sd_notify(3)), for `Type=notify` units: one datagram of
//! newline-separated `KEY=VALUE` lines sent to the `AF_UNIX` socket named by `$NOTIFY_SOCKET`
//! (a path, or an abstract name written with a leading `@`). Without the variable (not run by
//! systemd, or by a unit of another type) nothing is sent.
//!
//! Written here with std's `UnixDatagram` rather than taken from a crate: the protocol is one
//! `sendto`, and what gatewayd sends (READY=1 once serving, STOPPING=1 when shutting down,
//! STATUS= lines) needs none of the rest (watchdog, file descriptor store, credentials).

use std::ffi::OsString;
use std::io;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Where readiness is reported: the service manager's socket, if there is one.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<OsString>,
}

impl Notifier {
    /// The socket `$NOTIFY_SOCKET` names; none (every message dropped) without it.
    pub fn from_environment() -> Notifier {
        Notifier { socket: std::env::var_os(NOTIFY_SOCKET_ENV).filter(|name| !name.is_empty()) }
    }

    /// A notifier for an explicit socket name (`@` first for an abstract one).
    pub fn to_socket(name: impl Into<OsString>) -> Notifier {
        Notifier { socket: Some(name.into()) }
    }

    /// Whether a service manager listens (`$NOTIFY_SOCKET` was set).
    pub fn is_active(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends `state` (`KEY=VALUE` lines) in one datagram. Without a socket, does nothing.
    pub fn send(&self, state: &str) -> io::Result<()> {
        let Some(name) = &self.socket else {
            return Ok(());
        };
        let address = socket_address(name)?;
        let socket = UnixDatagram::unbound()?;
        let sent = socket.send_to_addr(state.as_bytes(), &address)?;
        if sent != state.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "notification truncated"));
        }
        Ok(())
    }

    /// `READY=1` with a status line: the daemon serves.
    pub fn ready(&self, status: &str) {
        self.report(&format!("READY=1\nSTATUS={}", one_line(status)), "READY=1");
    }

    /// `STOPPING=1` with a status line: the daemon is shutting down.
    pub fn stopping(&self, status: &str) {
        self.report(&format!("STOPPING=1\nSTATUS={}", one_line(status)), "STOPPING=1");
    }

    /// Sends, and says in the log when the service manager could not be told: the unit would
    /// then time out waiting for a readiness that was reached.
    fn report(&self, state: &str, what: &str) {
        if let Err(e) = self.send(state) {
            let name = self.socket.as_deref().unwrap_or_default().to_string_lossy();
            tracing::warn!("cannot send {what} to the service manager at {name}: {e}");
        }
    }
}

/// `$NOTIFY_SOCKET`'s value as an address: a leading `@` names an abstract socket (its first
/// byte NUL on the wire), anything else a path (systemd passes an absolute one).
fn socket_address(name: &OsString) -> io::Result<SocketAddr> {
    let bytes = name.as_bytes();
    match bytes.split_first() {
        Some((b'@', abstract_name)) => SocketAddr::from_abstract_name(abstract_name),
        Some((b'/', _)) => SocketAddr::from_pathname(name),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{NOTIFY_SOCKET_ENV}={} is neither an absolute path nor an abstract name (@…)",
                name.to_string_lossy()
            ),
        )),
    }
}

/// A status text on one line: a newline would start another assignment.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buffer = [0u8; 4096];
        let length = socket.recv(&mut buffer).unwrap();
        String::from_utf8(buffer[..length].to_vec()).unwrap()
    }

    #[test]
    fn ready_and_stopping_reach_a_socket_named_by_path() {
        let directory =
            std::env::temp_dir().join(format!("gatewayd-notify-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::to_socket(path.as_os_str());
        assert!(notifier.is_active());
        notifier.ready("serving wg0\nwith eBPF");
        assert_eq!(receive(&listener), "READY=1\nSTATUS=serving wg0 with eBPF");
        notifier.stopping("shutting down");
        assert_eq!(receive(&listener), "STOPPING=1\nSTATUS=shutting down");
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn an_at_sign_names_an_abstract_socket() {
        let name = format!("gatewayd-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&address).unwrap();
        Notifier::to_socket(format!("@{name}")).send("READY=1").unwrap();
        assert_eq!(receive(&listener), "READY=1");
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_nothing_fails() {
        let notifier = Notifier::default();
        assert!(!notifier.is_active());
        notifier.send("READY=1").unwrap();
    }

    #[test]
    fn a_relative_name_is_refused() {
        let error = Notifier::to_socket("notify.sock").send("READY=1").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("NOTIFY_SOCKET=notify.sock"), "{error}");
    }

    #[test]
    fn nobody_listening_is_an_error() {
        let path =
            std::env::temp_dir().join(format!("gatewayd-nobody-{}.sock", std::process::id()));
        assert!(Notifier::to_socket(path.as_os_str()).send("READY=1").is_err());
    }
}
