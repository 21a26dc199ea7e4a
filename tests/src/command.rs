//! Running helper programs: an error always carries the command line, the exit status and what
//! the program wrote to stderr, so a failing test explains itself.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, Result, bail};

pub fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(command.get_args().map(|arg| arg.to_string_lossy().into_owned()));
    words.join(" ")
}

/// Runs `command` to completion and returns its stdout; non-zero exit is an error.
pub fn run(command: &mut Command) -> Result<String> {
    let output = output(command.stdin(Stdio::null()))?;
    checked(command, output)
}

/// Like [`run`], feeding `input` on stdin.
pub fn run_with_stdin(command: &mut Command, input: &[u8]) -> Result<String> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", describe(command)))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .with_context(|| format!("cannot write to `{}`", describe(command)))?;
    }
    let output = child.wait_with_output().with_context(|| format!("`{}`", describe(command)))?;
    checked(command, output)
}

/// Runs `command` and returns its output whatever the exit status (for programs such as ping
/// whose exit status is a result, not a failure).
pub fn output(command: &mut Command) -> Result<Output> {
    command.output().with_context(|| format!("cannot start `{}`", describe(command)))
}

fn checked(command: &Command, output: Output) -> Result<String> {
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(command),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
