//! The client side of the UAPI socket, as `wg` uses it: one request per connection.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;

use super::protocol::{format_set_request, parse_errno_reply, parse_get_response};
use super::{DeviceSnapshot, DeviceUpdate, socket_path};

/// Sends `request` to `interface`'s daemon and returns its whole reply.
pub fn exchange(interface: &str, request: &str) -> Result<String, String> {
    let path = socket_path(interface).map_err(|e| e.to_string())?;
    let mut stream = UnixStream::connect(&path)
        .map_err(|e| format!("cannot reach {interface} at {}: {e}", path.display()))?;
    let talk = |stream: &mut UnixStream| -> std::io::Result<String> {
        stream.write_all(request.as_bytes())?;
        stream.shutdown(std::net::Shutdown::Write)?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply)
    };
    talk(&mut stream).map_err(|e| format!("talking to {interface} at {}: {e}", path.display()))
}

/// `get=1`: the device's configuration and peers.
pub fn get(interface: &str) -> Result<DeviceSnapshot, String> {
    let reply = exchange(interface, "get=1\n\n")?;
    parse_get_response(&reply).map_err(|e| format!("{interface} answered get badly: {e}"))
}

/// Why a `set` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetError {
    /// No daemon, or it answered something that is not a reply.
    Exchange(String),
    /// The daemon refused the update with this (positive) errno.
    Refused { interface: String, errno: i32 },
}

impl SetError {
    /// The daemon could not bind the listen port (wireguard-go's EADDRINUSE).
    pub fn is_port_in_use(&self) -> bool {
        matches!(self, SetError::Refused { errno, .. } if *errno == libc::EADDRINUSE)
    }
}

impl std::fmt::Display for SetError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetError::Exchange(message) => formatter.write_str(message),
            SetError::Refused { interface, errno } => write!(
                formatter,
                "{interface} refused the configuration: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
        }
    }
}

impl From<SetError> for String {
    fn from(error: SetError) -> String {
        error.to_string()
    }
}

/// `set=1`: applies `update`.
pub fn set(interface: &str, update: &DeviceUpdate) -> Result<(), SetError> {
    let reply = exchange(interface, &format!("{}\n", format_set_request(update)))
        .map_err(SetError::Exchange)?;
    let errno = parse_errno_reply(&reply)
        .map_err(|e| SetError::Exchange(format!("{interface} answered set badly: {e}")))?;
    match errno {
        0 => Ok(()),
        // wireguard-go's replies carry negative errnos.
        errno => Err(SetError::Refused { interface: interface.to_string(), errno: errno.abs() }),
    }
}
