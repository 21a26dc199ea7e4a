//! Why a UAPI request failed, and the `errno=` value that reports it.
//!
//! The values and their sign are wireguard-go's (`ipc/uapi_unix.go`): the reply carries the
//! negated errno, e.g. `errno=-22`, and `wg` turns it back into `EINVAL` for its message.

use std::fmt;

/// The errno values a reply can carry, negated as they go on the wire.
pub mod errno {
    pub const IO: i32 = -libc::EIO;
    pub const PROTOCOL: i32 = -libc::EPROTO;
    pub const INVALID: i32 = -libc::EINVAL;
    pub const PORT_IN_USE: i32 = -libc::EADDRINUSE;
    /// wireguard-go's catch-all (`ENOANO` on Linux).
    pub const UNKNOWN: i32 = -55;
}

/// Where in a `set` request a key appeared: device keys come before the first `public_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Device,
    Peer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UapiError {
    /// The first line of a request is neither `get=1` nor `set=1`. (EPROTO; the server closes
    /// the connection without a reply, as wireguard-go does.)
    UnknownOperation { line: String },
    /// A line of a `set` request is not `key=value`. (EPROTO)
    MalformedLine { line: String },
    /// The input ended before the blank line that ends a request. (EPROTO)
    Incomplete,
    /// A key this section does not have, including keys only `get` replies carry. (EINVAL)
    UnknownKey { section: Section, key: String },
    /// A known key with a value that does not parse or is out of range. (EINVAL)
    InvalidValue { key: &'static str, value: String, reason: String },
    /// `get=1` followed by something other than the blank line. (EINVAL)
    TrailingGetData,
    /// The device refused a well-formed update. (EINVAL)
    Rejected(String),
    /// The listen port (or the fwmark of the socket) could not be applied. (EADDRINUSE)
    PortInUse(String),
    /// Reading or writing failed, or a line or request exceeded the size limits. (EIO)
    Io(String),
    /// Anything else the handler could not classify. (wireguard-go's -55)
    Other(String),
}

impl UapiError {
    /// The value for the `errno=` line of the reply.
    pub fn errno(&self) -> i32 {
        match self {
            UapiError::UnknownOperation { .. }
            | UapiError::MalformedLine { .. }
            | UapiError::Incomplete => errno::PROTOCOL,
            UapiError::UnknownKey { .. }
            | UapiError::InvalidValue { .. }
            | UapiError::TrailingGetData
            | UapiError::Rejected(_) => errno::INVALID,
            UapiError::PortInUse(_) => errno::PORT_IN_USE,
            UapiError::Io(_) => errno::IO,
            UapiError::Other(_) => errno::UNKNOWN,
        }
    }

    pub(crate) fn invalid(key: &'static str, value: &str, reason: impl fmt::Display) -> Self {
        UapiError::InvalidValue { key, value: value.to_owned(), reason: reason.to_string() }
    }
}

impl fmt::Display for UapiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UapiError::UnknownOperation { line } => {
                write!(f, "{line:?} is neither get=1 nor set=1")
            }
            UapiError::MalformedLine { line } => write!(f, "line {line:?} is not key=value"),
            UapiError::Incomplete => write!(f, "the request ended before its blank line"),
            UapiError::UnknownKey { section: Section::Device, key } => {
                write!(f, "{key:?} is not a device key")
            }
            UapiError::UnknownKey { section: Section::Peer, key } => {
                write!(f, "{key:?} is not a peer key")
            }
            UapiError::InvalidValue { key, value, reason } => {
                write!(f, "invalid {key} {value:?}: {reason}")
            }
            UapiError::TrailingGetData => write!(f, "get=1 must be followed by a blank line"),
            UapiError::Rejected(reason) => write!(f, "update rejected: {reason}"),
            UapiError::PortInUse(reason) => write!(f, "cannot bind: {reason}"),
            UapiError::Io(reason) => write!(f, "I/O: {reason}"),
            UapiError::Other(reason) => write!(f, "{reason}"),
        }
    }
}

impl std::error::Error for UapiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_values_are_wireguard_gos() {
        assert_eq!(UapiError::MalformedLine { line: "x".into() }.errno(), -71);
        assert_eq!(UapiError::UnknownOperation { line: "x".into() }.errno(), -71);
        assert_eq!(UapiError::Incomplete.errno(), -71);
        let unknown = UapiError::UnknownKey { section: Section::Peer, key: "rx_bytes".into() };
        assert_eq!(unknown.errno(), -22);
        assert_eq!(UapiError::invalid("listen_port", "x", "not a number").errno(), -22);
        assert_eq!(UapiError::TrailingGetData.errno(), -22);
        assert_eq!(UapiError::Rejected("x".into()).errno(), -22);
        assert_eq!(UapiError::PortInUse("x".into()).errno(), -98);
        assert_eq!(UapiError::Io("x".into()).errno(), -5);
        assert_eq!(UapiError::Other("x".into()).errno(), -55);
    }
}
