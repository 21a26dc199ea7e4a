//! Starting and stopping the gatewayd that serves an interface brought up by `gateway up`.
//!
//! gatewayd, like wireguard-go, creates the interface and binds its UAPI socket before it
//! detaches: when the command it was started as exits 0, both exist, and any failure (a name in
//! use, missing privileges, no TUN) has been reported on stderr in one line. It exits, removing
//! both, when its interface is deleted.

use std::io::{Read as _, Seek as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::system;
use crate::uapi::socket_path;

/// How long a daemon gets to notice its interface is gone and exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The gatewayd to run: the one beside this program (`gateway` and `gatewayd` are built and
/// installed together), else the one in PATH.
pub fn find_gatewayd() -> Result<PathBuf, String> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("gatewayd")))
        .filter(|path| system::is_executable(path));
    beside
        .or_else(|| system::find_in_path("gatewayd"))
        .ok_or_else(|| "gatewayd is neither beside this program nor in PATH".to_string())
}

/// Runs `gatewayd <daemon_args> <interface>` and waits for it to detach.
pub fn start(interface: &str, daemon_args: &[String]) -> Result<(), String> {
    let gatewayd = find_gatewayd()?;
    let mut shown: Vec<&str> = daemon_args.iter().map(String::as_str).collect();
    shown.push(interface);
    eprintln!("[#] {} {}", gatewayd.display(), shown.join(" "));
    // Its stderr goes to a memory file, not a pipe: the detached daemon may keep the
    // descriptor (LOG_LEVEL set), and a pipe would then never reach end of file.
    let mut log = memory_file()?;
    let status = Command::new(&gatewayd)
        .args(daemon_args)
        .arg(interface)
        .env_remove("WG_PROCESS_FOREGROUND")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.try_clone().map_err(|e| format!("cannot share the log file: {e}"))?)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", gatewayd.display()))?;
    let mut said = String::new();
    let _ = log.rewind().and_then(|()| log.read_to_string(&mut said));
    if !status.success() {
        let reason = said
            .lines()
            .rev()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .unwrap_or("no message")
            .to_string();
        return Err(format!("gatewayd could not create {interface} ({status}): {reason}"));
    }
    // Its warnings (an eBPF fallback, say) are the operator's business.
    eprint!("{said}");
    let socket = socket_path(interface).map_err(|e| e.to_string())?;
    if !socket.exists() {
        return Err(format!("gatewayd detached but {} does not exist", socket.display()));
    }
    Ok(())
}

fn memory_file() -> Result<std::fs::File, String> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: a plain syscall; the descriptor it returns is owned by the File alone.
    let fd = unsafe { libc::memfd_create(c"gatewayd-stderr".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("cannot create a memory file: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Whether a daemon serves `interface` (its UAPI socket accepts connections).
pub fn is_running(interface: &str) -> bool {
    socket_path(interface).is_ok_and(|path| std::os::unix::net::UnixStream::connect(path).is_ok())
}

/// Deletes the interface, which makes its daemon exit, and waits until it has (its UAPI
/// socket gone). If the interface is already gone, removing the socket stops the daemon.
pub fn stop(interface: &str) -> Result<(), String> {
    let socket = socket_path(interface).map_err(|e| e.to_string())?;
    if let Err(link_error) = system::run("ip", &["link", "delete", "dev", interface]) {
        if !socket.exists() {
            return Err(link_error);
        }
        eprintln!("[#] rm -f {}", socket.display());
        let _ = std::fs::remove_file(&socket);
    }
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while socket.exists() {
        if Instant::now() >= deadline {
            return Err(format!(
                "gatewayd for {interface} did not exit within {}s ({} is still there)",
                EXIT_TIMEOUT.as_secs(),
                socket.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
