//! Unique names for namespaces and interfaces: `{prefix}{role}{pid}-{counter}`, e.g. `gtvps4711-3`.
//!
//! The pid keeps concurrent test processes apart (several worktrees test on one machine, and the
//! UAPI socket folder /var/run/wireguard is shared by every namespace); the counter keeps the
//! tests of one process apart; the role says what the thing is when you list them. The pid also
//! tells [`crate::cleanup_stale`] whether the owner is still alive.

use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Result, bail};

/// The prefix of every name the harness makes.
pub const NAME_PREFIX: &str = "gt";

/// Linux interface names hold at most 15 bytes (IFNAMSIZ - 1).
pub const IFNAME_MAX_LEN: usize = 15;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh interface name, e.g. `unique_ifname("wg")` → `gtwg4711-7`. Use it for every tunnel
/// interface: its UAPI socket lives in the filesystem, not in the namespace.
pub fn unique_ifname(role: &str) -> Result<String> {
    unique_name(NAME_PREFIX, role)
}

pub(crate) fn unique_name(prefix: &str, role: &str) -> Result<String> {
    if prefix.is_empty() || !prefix.bytes().all(|byte| byte.is_ascii_lowercase()) {
        bail!("name prefix {prefix:?} must be non-empty lowercase ASCII letters");
    }
    if !role.bytes().all(|byte| byte.is_ascii_lowercase()) {
        bail!("name role {role:?} must be lowercase ASCII letters (digits would blur the pid)");
    }
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{role}{}-{counter}", std::process::id());
    if name.len() > IFNAME_MAX_LEN {
        bail!(
            "name {name:?} is longer than {IFNAME_MAX_LEN} bytes: use a shorter role than {role:?}"
        );
    }
    Ok(name)
}

/// The pid a name made by [`unique_name`] with this `prefix` carries, if it is one of ours.
pub(crate) fn owner_pid(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_lowercase());
    let (pid, counter) = rest.split_once('-')?;
    let all_digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(pid) || !all_digits(counter) {
        return None;
    }
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_short_and_carry_the_pid() {
        let first = unique_name("gt", "vps").unwrap();
        let second = unique_name("gt", "vps").unwrap();
        assert_ne!(first, second);
        assert!(first.len() <= IFNAME_MAX_LEN);
        assert_eq!(owner_pid(&first, "gt"), Some(std::process::id()));
    }

    #[test]
    fn bad_roles_and_overlong_names_are_refused() {
        assert!(unique_name("gt", "vps1").is_err());
        assert!(unique_name("gt", "Vps").is_err());
        assert!(unique_name("gt", "averyverylongrole").is_err());
        assert!(unique_name("", "x").is_err());
    }

    #[test]
    fn owner_pid_parses_only_our_names() {
        assert_eq!(owner_pid("gtvps4711-3", "gt"), Some(4711));
        assert_eq!(owner_pid("gt4711-3", "gt"), Some(4711));
        assert_eq!(owner_pid("gtvps4711", "gt"), None);
        assert_eq!(owner_pid("gtvps-3", "gt"), None);
        assert_eq!(owner_pid("abvps4711-3", "gt"), None);
        assert_eq!(owner_pid("gtvps4711-3x", "gt"), None);
    }
}
