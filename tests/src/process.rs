//! Child processes started inside a namespace: output captured to a log in the test folder, own
//! process group, stopped (the whole group) on drop.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::test_dir::{TestDir, log_tail};
use crate::{command, guard};

/// How long a process gets to exit on SIGTERM (wireguard-go removes its socket then) before
/// SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Process {
    label: String,
    child: Child,
    log_path: PathBuf,
    stopped: bool,
}

impl Process {
    /// Spawns `command` (typically from [`crate::Netns::command`]) with stdout and stderr appended
    /// to `{label}.log` in `dir`, in a process group of its own: Ctrl-C in the terminal does not
    /// reach it, the harness stops it.
    pub fn spawn(dir: &TestDir, label: &str, command: &mut Command) -> Result<Process> {
        let log_path = dir.file(&format!("{label}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let log_for_stderr = log.try_clone().context("cannot duplicate the log file handle")?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {label}: `{}`", command::describe(command)))?;
        // The child leads its own group: its pid is the group id.
        guard::track_process_group(pid_as_i32(child.id()));
        Ok(Process { label: label.to_string(), child, log_path, stopped: false })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last lines of its output.
    pub fn log(&self) -> String {
        log_tail(&self.log_path)
    }

    /// An error with the exit status and the log if it is no longer running.
    pub fn check_running(&mut self) -> Result<()> {
        let status = self.child.try_wait().with_context(|| format!("waiting on {}", self.label))?;
        if let Some(status) = status {
            bail!("{} exited ({status}); its output:\n{}", self.label, self.log());
        }
        Ok(())
    }

    /// Sends `signal` to the process itself (not its group).
    pub fn signal(&mut self, signal: i32) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: plain syscall on our own child, which has not been reaped.
            unsafe { libc::kill(pid_as_i32(self.child.id()), signal) };
        }
    }

    /// Waits up to `timeout` for the process to exit and returns its status; an error (with
    /// the log) if it is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) =
                self.child.try_wait().with_context(|| format!("waiting on {}", self.label))?
            {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} still runs after {timeout:?}; its output:\n{}", self.label, self.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM to the group, SIGKILL after a grace period (2 s); waits for the exit. Idempotent.
    ///
    /// The group is signalled only while its leader is unreaped (running, or a zombie): once
    /// reaped, its pid — the group id — may already belong to a new process, e.g. another
    /// test's daemon.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let pid = pid_as_i32(self.child.id());
        let mut state = leader_state(pid);
        if state == Leader::Running {
            signal_group(pid, libc::SIGTERM);
            let deadline = Instant::now() + GRACE;
            while state == Leader::Running && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
                state = leader_state(pid);
            }
        }
        if state != Leader::Reaped {
            // Also reaches grandchildren that outlived the leader.
            signal_group(pid, libc::SIGKILL);
        }
        let _ = self.child.wait();
        guard::untrack_process_group(pid);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leader {
    Running,
    /// Exited but not reaped: its pid is still reserved.
    Exited,
    /// Already waited for (by `try_wait`): its pid is free for reuse.
    Reaped,
}

/// Looks at a child without reaping it (`waitid` with `WNOWAIT`).
fn leader_state(pid: i32) -> Leader {
    // SAFETY: an all-zero siginfo_t is valid; waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own child, with a valid siginfo_t out-parameter.
    let result = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if result != 0 {
        return Leader::Reaped;
    }
    // SAFETY: waitid succeeded, so si_pid is set (0 when the child has not exited).
    if unsafe { info.si_pid() } == 0 { Leader::Running } else { Leader::Exited }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: plain syscall on a group we created; ESRCH (already gone) is fine.
    unsafe { libc::killpg(pgid, signal) };
}

fn pid_as_i32(pid: u32) -> i32 {
    // Linux pids are at most 2^22 (PID_MAX_LIMIT).
    i32::try_from(pid).unwrap_or(i32::MAX)
}
