//! Running the system's tools (`ip`, `nft`, `resolvconf`, hooks) the way wg-quick does: each
//! command is echoed to stderr as `[#] …` before it runs, and a failure becomes one line
//! naming the command and what it said.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs `program args…`, echoed; returns its stdout.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    run_with_input(program, args, None)
}

/// Runs it without echoing: for the queries wg-quick makes silently (`ip route show …`).
pub fn query(program: &str, args: &[&str]) -> Result<String, String> {
    execute(program, args, None)
}

/// Runs `program args…` with `input` on its stdin, echoed.
pub fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    eprintln!("[#] {program} {}", args.join(" "));
    execute(program, args, input)
}

fn execute(program: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    let shown = format!("`{program} {}'", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A program that exits without reading reports its own error below.
        let _ = stdin.write_all(text.as_bytes());
    }
    let output = child.wait_with_output().map_err(|e| format!("{shown}: {e}"))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let said = String::from_utf8_lossy(&output.stderr);
    let said = said.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or("no message");
    Err(format!("{shown} failed ({}): {said}", output.status))
}

/// Runs one PreUp/PostUp/PreDown/PostDown hook with `sh -c`, `%i` replaced by the interface
/// name; its output goes where ours goes.
pub fn run_hook(kind: &str, hook: &str, interface: &str) -> Result<(), String> {
    let command = hook.replace("%i", interface);
    eprintln!("[#] {command}");
    let status = Command::new("sh")
        .args(["-c", &command])
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run the {kind} hook: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the {kind} hook `{command}' failed ({status})"))
    }
}

/// Where `program` is in PATH, if anywhere.
pub fn find_in_path(program: impl AsRef<OsStr>) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program.as_ref())).find(|p| is_executable(p))
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Whether this process may configure network interfaces (CAP_NET_ADMIN in its effective set).
pub fn has_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return false };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}
