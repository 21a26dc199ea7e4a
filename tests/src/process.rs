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

    /// SIGTERM to the group, SIGKILL after [`GRACE`]; waits for the exit. Idempotent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let pgid = pid_as_i32(self.child.id());
        if matches!(self.child.try_wait(), Ok(None)) {
            signal_group(pgid, libc::SIGTERM);
            let deadline = Instant::now() + GRACE;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
        // Also reaches grandchildren that outlived the leader.
        signal_group(pgid, libc::SIGKILL);
        let _ = self.child.wait();
        guard::untrack_process_group(pgid);
    }
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
