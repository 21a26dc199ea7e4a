//! A per-test scratch folder for logs and generated configs, and waiting with those logs at hand.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};

use crate::wait::{Probe, wait_for};

/// Set to keep every test folder (they are otherwise removed unless the test panics).
pub const KEEP_ENV: &str = "GATEWAY_TESTS_KEEP";

/// How much of each log an error message carries.
const LOG_TAIL_LINES: usize = 40;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `$TMPDIR/gateway-tests/{test}-{pid}-{n}/`, removed on drop unless the thread is panicking or
/// [`KEEP_ENV`] is set; then its path is printed so the logs can be read.
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new(test_name: &str) -> Result<TestDir> {
        let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir()
            .join("gateway-tests")
            .join(format!("{test_name}-{}-{counter}", std::process::id()));
        fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TestDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The last lines of every `*.log` in the folder, each under its name.
    pub fn logs(&self) -> String {
        let mut paths: Vec<PathBuf> = fs::read_dir(&self.path)
            .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
            .unwrap_or_default();
        paths.retain(|path| path.extension().is_some_and(|ext| ext == "log"));
        paths.sort();
        let mut text = String::new();
        for path in paths {
            let _ = writeln!(text, "--- {} ---\n{}", path.display(), log_tail(&path));
        }
        text
    }

    /// [`wait_for`], with every log of this test appended to the timeout error.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        probe: impl FnMut() -> Result<Probe<T>>,
    ) -> Result<T> {
        wait_for(what, timeout, probe).map_err(|error| self.attach_logs(error))
    }

    /// `error` followed by the tails of this test's logs: what the daemons said is usually what
    /// explains a failure.
    pub fn attach_logs(&self, error: anyhow::Error) -> anyhow::Error {
        let logs = self.logs();
        if logs.is_empty() {
            return error;
        }
        anyhow!("{error:#}\n\nlogs of this test ({}):\n{logs}", self.path.display())
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os(KEEP_ENV).is_some() {
            eprintln!("gateway-tests: logs kept in {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// The last [`LOG_TAIL_LINES`] lines of a log file (or why it cannot be read).
pub(crate) fn log_tail(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}
