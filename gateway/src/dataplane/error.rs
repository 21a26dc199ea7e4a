//! What can go wrong loading, attaching and driving the data plane. Every message is one line
//! that names the problem.

use std::fmt;

#[derive(Debug)]
pub enum DataplaneError {
    /// The process may not load programs or create maps.
    Permission(String),
    /// The kernel lacks something the programs need.
    Unsupported(String),
    /// The embedded object does not have what this code expects (a build mismatch).
    Object(String),
    /// An interface name or index that does not exist.
    UnknownInterface(String),
    /// A slot, index or argument outside what the maps hold.
    Invalid(String),
    /// Every slot of a map is in use.
    Full(&'static str),
    /// A map or attach operation failed.
    Kernel { what: String, error: String },
}

impl fmt::Display for DataplaneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataplaneError::Permission(m) => write!(f, "permission denied: {m}"),
            DataplaneError::Unsupported(m) => write!(f, "unsupported kernel: {m}"),
            DataplaneError::Object(m) => write!(f, "eBPF object: {m}"),
            DataplaneError::UnknownInterface(m) => write!(f, "unknown interface {m}"),
            DataplaneError::Invalid(m) => write!(f, "invalid argument: {m}"),
            DataplaneError::Full(what) => write!(f, "no free {what} slot"),
            DataplaneError::Kernel { what, error } => write!(f, "{what}: {error}"),
        }
    }
}

impl std::error::Error for DataplaneError {}

impl DataplaneError {
    /// A failed operation, with the error's whole chain of causes on one line.
    pub(crate) fn kernel(what: impl Into<String>, error: impl fmt::Display) -> Self {
        DataplaneError::Kernel { what: what.into(), error: error.to_string() }
    }

    pub(crate) fn kernel_chain(what: impl Into<String>, error: &dyn std::error::Error) -> Self {
        let mut text = error.to_string();
        let mut cause = error.source();
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        DataplaneError::Kernel { what: what.into(), error: text }
    }
}

pub type Result<T> = std::result::Result<T, DataplaneError>;
