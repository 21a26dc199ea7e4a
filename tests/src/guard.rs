//! The process-wide safety net: every live namespace and child process group is recorded here, so
//! that a Ctrl-C (SIGINT), SIGTERM or SIGHUP during a test still removes them before the process
//! exits. Panics need nothing from here: the owners' `Drop` runs while the stack unwinds.
//!
//! SIGKILL cannot be caught: a run killed that way leaves its namespaces (and UAPI sockets)
//! behind. [`cleanup_stale`] removes such leftovers, recognising them by the owner pid embedded
//! in their names; it runs automatically once per process, before the first namespace is made.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, Once};
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::names::{self, NAME_PREFIX};
use crate::netns::list_namespaces;
use crate::wg::UAPI_DIR;

struct Live {
    namespaces: BTreeSet<String>,
    process_groups: BTreeSet<i32>,
    /// Files a daemon removes when it exits cleanly (UAPI sockets), but not when killed.
    files: BTreeSet<PathBuf>,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    namespaces: BTreeSet::new(),
    process_groups: BTreeSet::new(),
    files: BTreeSet::new(),
});

/// How long daemons get to exit on SIGTERM when the run is interrupted.
const INTERRUPT_GRACE: Duration = Duration::from_millis(300);

static INSTALL: Once = Once::new();

fn live() -> MutexGuard<'static, Live> {
    // A panic elsewhere while holding the lock leaves the sets intact; keep using them.
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Installs the signal handler and clears leftovers of dead runs, once per process.
pub(crate) fn install() {
    INSTALL.call_once(|| {
        if let Err(error) = ctrlc::set_handler(clean_up_and_exit) {
            eprintln!(
                "gateway-tests: cannot install the interrupt handler ({error}); an interrupted \
                 run may leave namespaces behind"
            );
        }
        match cleanup_stale(NAME_PREFIX) {
            Ok(removed) if !removed.is_empty() => {
                eprintln!(
                    "gateway-tests: removed leftovers of earlier runs: {}",
                    removed.join(", ")
                );
            }
            Ok(_) => {}
            Err(error) => eprintln!("gateway-tests: cleaning leftovers failed: {error:#}"),
        }
    });
}

pub(crate) fn track_namespace(name: &str) {
    live().namespaces.insert(name.to_string());
}

pub(crate) fn untrack_namespace(name: &str) {
    live().namespaces.remove(name);
}

pub(crate) fn track_process_group(pgid: i32) {
    live().process_groups.insert(pgid);
}

pub(crate) fn untrack_process_group(pgid: i32) {
    live().process_groups.remove(&pgid);
}

pub(crate) fn track_file(path: &Path) {
    live().files.insert(path.to_path_buf());
}

pub(crate) fn untrack_file(path: &Path) {
    live().files.remove(path);
}

fn clean_up_and_exit() {
    let live = live();
    signal_groups(&live.process_groups, libc::SIGTERM);
    thread::sleep(INTERRUPT_GRACE);
    signal_groups(&live.process_groups, libc::SIGKILL);
    for path in &live.files {
        let _ = fs::remove_file(path);
    }
    for name in &live.namespaces {
        delete_namespace(name);
    }
    eprintln!(
        "gateway-tests: interrupted; removed {} namespace(s) and {} process group(s)",
        live.namespaces.len(),
        live.process_groups.len()
    );
    std::process::exit(130);
}

fn signal_groups(groups: &BTreeSet<i32>, signal: i32) {
    for &pgid in groups {
        // SAFETY: plain syscall; the group ids are our own children's.
        unsafe { libc::killpg(pgid, signal) };
    }
}

pub(crate) fn delete_namespace(name: &str) -> bool {
    Command::new("ip")
        .args(["netns", "delete", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Removes the namespaces and UAPI sockets named `{prefix}{role}{pid}-{n}` whose owner process
/// `pid` is gone (left by a run killed with SIGKILL). Those of live processes, this one included,
/// are left alone, so concurrent runs do not disturb each other. Returns what was removed.
pub fn cleanup_stale(prefix: &str) -> Result<Vec<String>> {
    let is_stale = |name: &str| {
        names::owner_pid(name, prefix).is_some_and(|pid| {
            pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
        })
    };
    let mut removed = Vec::new();
    for name in list_namespaces()? {
        if is_stale(&name) && delete_namespace(&name) {
            removed.push(name);
        }
    }
    if let Ok(entries) = fs::read_dir(UAPI_DIR) {
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if let Some(ifname) = file_name.strip_suffix(".sock").filter(|name| is_stale(name)) {
                fs::remove_file(entry.path())
                    .with_context(|| format!("cannot remove {}", entry.path().display()))?;
                removed.push(format!("{UAPI_DIR}/{ifname}.sock"));
            }
        }
    }
    Ok(removed)
}
