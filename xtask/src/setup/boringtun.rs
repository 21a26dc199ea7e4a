//! boringtun-cli, the second independent WireGuard implementation the tests interoperate with.

use anyhow::{Context as _, Result, anyhow, bail};
use std::process::Command;

use super::{Outcome, Progress};
use crate::run;

const VERSION: &str = "0.7.1";

pub fn boringtun_cli(progress: &Progress) -> Result<Outcome> {
    let problem = match working_version() {
        Ok(version) => return Ok(Outcome::present(version)),
        Err(problem) => problem,
    };
    let mut command = run::cargo();
    command.args(["install", "--locked", "boringtun-cli", "--version", VERSION]);
    let described = run::describe(&command);
    progress.installing(&format!("{problem:#}"), &described);
    run::status(&mut command, &described).context("check network access to crates.io")?;
    let version = working_version().context("boringtun-cli was installed but does not run")?;
    Ok(Outcome::installed(version))
}

fn working_version() -> Result<String> {
    let program = run::find_program("boringtun-cli")
        .ok_or_else(|| anyhow!("boringtun-cli is not installed"))?;
    let version = run::capture(Command::new(&program).arg("--version"))
        .context("boringtun-cli does not run")?;
    let version = version.trim();
    // `boringtun 0.7.1`: the tests' second reference peer is pinned like the rest.
    if version.split_whitespace().last() != Some(VERSION) {
        bail!("found {version}, boringtun-cli {VERSION} is pinned");
    }
    Ok(format!("{version} ({})", program.display()))
}
