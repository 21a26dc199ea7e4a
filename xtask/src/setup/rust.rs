//! The Rust side: the nightly toolchain the eBPF crate builds with, its standard library sources
//! (`build-std` for the BPF target), and the lint tools `cargo xtask test` runs.

use std::process::Command;

use anyhow::{Context as _, Result, anyhow, bail};

use super::{Outcome, Progress};
use crate::run;

const NIGHTLY: &str = "nightly";

pub fn nightly_toolchain(_: &Progress) -> Result<Outcome> {
    if run::find_program("rustup").is_none() {
        bail!(
            "rustup is not installed: install Rust with rustup (https://rustup.rs), then run again"
        );
    }
    let version = run::capture(Command::new("rustup").args(["run", NIGHTLY, "rustc", "--version"]))
        .map_err(|error| {
            anyhow!(
                "the `{NIGHTLY}` toolchain is missing or broken ({error:#}); install it with \
                 `rustup toolchain install {NIGHTLY} --profile minimal`"
            )
        })?;
    Ok(Outcome::present(version.trim()))
}

pub fn rust_src(progress: &Progress) -> Result<Outcome> {
    ensure_components(progress, Some(NIGHTLY), &["rust-src"])
}

pub fn lint_components(progress: &Progress) -> Result<Outcome> {
    // The stable toolchain is whichever one runs this xtask (rustup passes it on in
    // RUSTUP_TOOLCHAIN); gateway-ebpf is formatted with the nightly's rustfmt.
    let stable = ensure_components(progress, None, &["rustfmt", "clippy"])?;
    let nightly = ensure_components(progress, Some(NIGHTLY), &["rustfmt"])?;
    let detail = format!("{}; nightly: {}", stable.detail, nightly.detail);
    Ok(Outcome { changed: stable.changed || nightly.changed, detail })
}

fn ensure_components(
    progress: &Progress,
    toolchain: Option<&str>,
    components: &[&str],
) -> Result<Outcome> {
    let toolchain_args: Vec<&str> =
        toolchain.map(|name| vec!["--toolchain", name]).unwrap_or_default();
    let installed = run::capture(
        Command::new("rustup").args(["component", "list", "--installed"]).args(&toolchain_args),
    )
    .context("cannot list rustup components: is rustup installed (https://rustup.rs)?")?;
    // Installed components are listed with their target triple (`rust-src`, `clippy-x86_64-...`).
    let is_installed = |component: &str| {
        installed.lines().any(|line| {
            let line = line.trim();
            line == component || line.starts_with(&format!("{component}-"))
        })
    };
    let missing: Vec<&str> =
        components.iter().copied().filter(|component| !is_installed(component)).collect();
    if missing.is_empty() {
        return Ok(Outcome::present(components.join(", ")));
    }
    let mut command = Command::new("rustup");
    command.args(["component", "add"]).args(&missing).args(&toolchain_args);
    let described = run::describe(&command);
    progress.installing(&format!("missing {}", missing.join(", ")), &described);
    run::status(&mut command, &described)
        .context("check network access to static.rust-lang.org")?;
    Ok(Outcome::installed(missing.join(", ")))
}
