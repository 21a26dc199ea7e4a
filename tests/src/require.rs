//! Preconditions: a test that cannot run here fails and says why, it never passes silently.

use std::path::PathBuf;

use anyhow::{Result, bail};

/// Network namespaces, veth pairs and TUN devices need root (CAP_NET_ADMIN, CAP_SYS_ADMIN).
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "this test needs root (it creates network namespaces and TUN devices); \
             run the tests as root, e.g. `sudo -E cargo xtask test`"
        );
    }
    Ok(())
}

/// Finds a program in PATH or in cargo's bin folder (where `cargo install` put boringtun-cli),
/// naming the fix when it is absent.
pub fn find_binary(name: &str) -> Result<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let found = path_dirs
        .into_iter()
        .chain(cargo_bin_dir())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    match found {
        Some(path) => Ok(path),
        None => bail!(
            "`{name}` is not installed (not in PATH nor ~/.cargo/bin); run `cargo xtask setup`"
        ),
    }
}

/// Fails naming every missing program at once.
pub fn require_tools(names: &[&str]) -> Result<()> {
    let missing: Vec<&str> =
        names.iter().copied().filter(|name| find_binary(name).is_err()).collect();
    if !missing.is_empty() {
        bail!("missing tools: {}; run `cargo xtask setup`", missing.join(", "));
    }
    Ok(())
}

fn cargo_bin_dir() -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))?;
    Some(cargo_home.join("bin"))
}
