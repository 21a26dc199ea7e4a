//! The socket file: where it lives, claiming it (refusing a live one, replacing a stale one),
//! and removing it again, but only while it is still ours.

use std::fmt;
use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Where `wg` looks for userspace interfaces.
pub const SOCKET_DIRECTORY: &str = "/var/run/wireguard";
/// The mode wireguard-go's sockets get (it binds under umask 077): only root may configure.
const SOCKET_MODE: u32 = 0o700;
const DIRECTORY_MODE: u32 = 0o755;
/// `IFNAMSIZ - 1`.
const MAX_INTERFACE_NAME: usize = 15;
/// The room in `sockaddr_un.sun_path`, less its terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug)]
pub enum BindError {
    InvalidInterfaceName {
        name: String,
        reason: &'static str,
    },
    /// Another process answers on this socket: it owns the interface.
    InUse {
        path: PathBuf,
    },
    /// Something other than a socket has the socket's name.
    NotASocket {
        path: PathBuf,
    },
    PathTooLong {
        path: PathBuf,
    },
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::InvalidInterfaceName { name, reason } => {
                write!(f, "invalid interface name {name:?}: {reason}")
            }
            BindError::InUse { path } => write!(
                f,
                "{} is in use: another process already serves this interface",
                path.display()
            ),
            BindError::NotASocket { path } => {
                write!(f, "{} exists and is not a socket; not replacing it", path.display())
            }
            BindError::PathTooLong { path } => {
                write!(f, "{} is too long for a unix socket address", path.display())
            }
            BindError::Io { path, action, source } => {
                write!(f, "cannot {action} {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BindError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> BindError {
    let path = path.to_owned();
    move |source| BindError::Io { path, action, source }
}

/// `/var/run/wireguard/<interface>.sock`, for a name `wg` would accept as an interface.
pub fn socket_path(interface: &str) -> Result<PathBuf, BindError> {
    let reason = if interface.is_empty() {
        Some("empty")
    } else if interface.len() > MAX_INTERFACE_NAME {
        Some("longer than 15 bytes")
    } else if interface.contains('/') || interface == "." || interface == ".." {
        Some("not a file name")
    } else if interface.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        Some("contains whitespace or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(BindError::InvalidInterfaceName { name: interface.to_owned(), reason }),
        None => Ok(Path::new(SOCKET_DIRECTORY).join(format!("{interface}.sock"))),
    }
}

/// The bound socket file. Dropping it removes the file if it is still the one we created (a
/// successor that replaced it keeps its own).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    device: u64,
    inode: u64,
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the path still names the socket we bound (false once deleted or replaced).
    pub fn is_present(&self) -> bool {
        fs::symlink_metadata(&self.path)
            .map(|meta| meta.dev() == self.device && meta.ino() == self.inode)
            .unwrap_or(false)
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if self.is_present() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Fails if a live server owns `path`; succeeds if nothing is there or the socket is stale.
fn check_existing(path: &Path) -> Result<(), BindError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(path, "inspect")(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(BindError::NotASocket { path: path.to_owned() });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(BindError::InUse { path: path.to_owned() }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(io_error(path, "probe the existing socket")(e)),
    }
}

/// Creates the directory (mode 0755) if needed, then binds the socket (mode 0700) at `path`.
///
/// The socket is bound under a temporary name, given its mode, then renamed over `path`: no
/// moment exists where the socket is reachable with the wrong mode or where `path` is missing
/// while a stale socket is replaced, and the process umask is left alone. (Two daemons started
/// for the same interface at the same instant could both pass the liveness check; the later
/// rename wins. wireguard-go has the same window.)
pub fn bind(path: &Path) -> Result<(UnixListener, SocketFile), BindError> {
    let directory = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().ok_or_else(|| BindError::InvalidInterfaceName {
        name: path.display().to_string(),
        reason: "the socket path has no file name",
    })?;
    DirBuilder::new()
        .recursive(true)
        .mode(DIRECTORY_MODE)
        .create(directory)
        .map_err(io_error(directory, "create the socket directory"))?;
    check_existing(path)?;

    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(file_name);
    temporary_name.push(format!(".{}.tmp", std::process::id()));
    let temporary = directory.join(temporary_name);
    for candidate in [path, temporary.as_path()] {
        if candidate.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(BindError::PathTooLong { path: candidate.to_owned() });
        }
    }
    match fs::remove_file(&temporary) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io_error(&temporary, "remove a leftover")(e));
        }
        _ => {}
    }
    let listener = UnixListener::bind(&temporary).map_err(io_error(&temporary, "bind"))?;
    let claim = fs::set_permissions(&temporary, Permissions::from_mode(SOCKET_MODE))
        .map_err(io_error(&temporary, "set the mode of"))
        .and_then(|()| fs::rename(&temporary, path).map_err(io_error(path, "move the socket to")));
    if let Err(e) = claim {
        let _ = fs::remove_file(&temporary);
        return Err(e);
    }
    let meta = fs::symlink_metadata(path).map_err(io_error(path, "inspect"))?;
    let file = SocketFile { path: path.to_owned(), device: meta.dev(), inode: meta.ino() };
    Ok((listener, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_for_interface_names() {
        assert_eq!(socket_path("wg0").unwrap(), Path::new("/var/run/wireguard/wg0.sock"));
        assert_eq!(
            socket_path("abcdefghijklmno").unwrap(),
            Path::new("/var/run/wireguard/abcdefghijklmno.sock")
        );
        for bad in ["", "abcdefghijklmnop", "a/b", ".", "..", "wg 0", "wg\n0"] {
            assert!(
                matches!(socket_path(bad), Err(BindError::InvalidInterfaceName { .. })),
                "{bad:?} accepted"
            );
        }
    }
}
