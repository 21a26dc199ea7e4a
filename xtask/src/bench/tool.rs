//! Running `gateway-bench` (the load generators, built in release mode from the tests crate):
//! to completion for one JSON report, or in the background (the UDP receiver) until it reports.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use anyhow::{Context as _, Result, anyhow, bail};
use gateway_tests::Netns;
use serde_json::Value;

use super::child::die_with_parent;
use crate::run;

/// `gateway-bench args...` (inside `netns` if given), its stdout parsed as one JSON document.
pub fn run_json(tool: &Path, netns: Option<&Netns>, args: &[String]) -> Result<Value> {
    let mut command = match netns {
        Some(netns) => netns.command(tool),
        None => Command::new(tool),
    };
    die_with_parent(command.args(args));
    let output = run::capture(&mut command)?;
    parse_report(&output).with_context(|| format!("`{}`", run::describe(&command)))
}

/// `gateway-bench args...` with its plain stdout (e.g. a generated config).
pub fn run_text(tool: &Path, args: &[String]) -> Result<String> {
    run::capture(Command::new(tool).args(args))
}

fn parse_report(output: &str) -> Result<Value> {
    let last = output.lines().rev().find(|line| !line.trim().is_empty());
    let last = last.ok_or_else(|| anyhow!("no report on stdout"))?;
    serde_json::from_str(last).with_context(|| format!("report {last:?} is not JSON"))
}

/// A number from a report, or an error naming the key.
pub fn number(report: &Value, key: &str) -> Result<f64> {
    report
        .get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| anyhow!("report has no number {key}: {report}"))
}

/// A `gateway-bench` running in the background that prints `ready` once it can be used and a
/// JSON report when it is done. Killed if dropped before then.
pub struct Background {
    child: Child,
    stdout: BufReader<ChildStdout>,
    described: String,
}

impl Background {
    /// Starts it in `netns` and waits for its `ready` line.
    pub fn start(tool: &Path, netns: &Netns, args: &[String]) -> Result<Background> {
        let mut command = netns.command(tool);
        die_with_parent(&mut command)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let described = run::describe(&command);
        let mut child = command.spawn().with_context(|| format!("cannot start `{described}`"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout of `{described}`"))?;
        let mut background = Background { child, stdout: BufReader::new(stdout), described };
        let mut line = String::new();
        background.stdout.read_line(&mut line).context("reading the ready line")?;
        if line.trim() != "ready" {
            let _ = background.child.kill();
            let _ = background.child.wait();
            let stderr = background.stderr();
            bail!("`{}` did not get ready: {}{}", background.described, line.trim(), stderr);
        }
        Ok(background)
    }

    /// Waits for it to finish and returns its report.
    pub fn finish(mut self) -> Result<Value> {
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).context("reading the report")?;
        let status = self.child.wait().context("waiting for the receiver")?;
        if !status.success() {
            let stderr = self.stderr();
            bail!("`{}` failed ({status}): {stderr}", self.described);
        }
        parse_report(&rest).with_context(|| format!("`{}`", self.described))
    }

    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(stderr) = self.child.stderr.as_mut() {
            let _ = stderr.read_to_string(&mut text);
        }
        text.trim().to_string()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_the_last_line() {
        let report = parse_report("ready\n{\"packets\": 5}\n\n").unwrap();
        assert_eq!(number(&report, "packets").unwrap(), 5.0);
        assert!(number(&report, "bytes").is_err());
        assert!(parse_report("").is_err());
        assert!(parse_report("not json\n").is_err());
    }
}
