//! The Rust side: the nightly toolchain the eBPF crate builds with, its standard library sources
//! (`build-std` for the BPF target), and the lint tools `cargo xtask test` runs.

use std::process::Command;

use anyhow::{Context as _, Result, anyhow, bail};

use super::{Outcome, Progress};
use crate::run;

/// gateway-ebpf/toolchain.toml: the nightly and bpf-linker the eBPF object is built with
/// (gateway/build.rs reads the same file and refuses other builds).
const PINS: &str = include_str!("../../../gateway-ebpf/toolchain.toml");

/// A `key = "value"` line of toolchain.toml.
pub fn pin(key: &str) -> &'static str {
    PINS.lines()
        .filter_map(|line| line.split_once('='))
        .find(|(name, _)| name.trim() == key)
        .map(|(_, value)| value.trim().trim_matches('"'))
        .unwrap_or_else(|| panic!("gateway-ebpf/toolchain.toml has no `{key}`"))
}

/// The installed toolchain whose rustc is the pinned build: the dated channel, else `nightly`
/// when it is that build (as on machines set up with it); None when neither is.
pub fn pinned_toolchain() -> Option<&'static str> {
    let wanted = format!("rustc {}", pin("rustc"));
    [pin("channel"), "nightly"].into_iter().find(|toolchain| {
        run::capture(Command::new("rustup").args(["run", toolchain, "rustc", "--version"]))
            .is_ok_and(|version| version.trim() == wanted)
    })
}

/// `pinned_toolchain`, or an error naming the fix.
pub fn require_pinned_toolchain() -> Result<&'static str> {
    pinned_toolchain().ok_or_else(|| {
        anyhow!(
            "no installed toolchain is rustc {}: run `cargo xtask setup` (it installs {})",
            pin("rustc"),
            pin("channel")
        )
    })
}

pub fn nightly_toolchain(progress: &Progress) -> Result<Outcome> {
    if run::find_program("rustup").is_none() {
        bail!(
            "rustup is not installed: install Rust with rustup (https://rustup.rs), then run again"
        );
    }
    let wanted = pin("rustc");
    if let Some(toolchain) = pinned_toolchain() {
        return Ok(Outcome::present(format!("`{toolchain}` is rustc {wanted}, as pinned")));
    }
    let channel = pin("channel");
    let nightly =
        run::capture(Command::new("rustup").args(["run", "nightly", "rustc", "--version"]))
            .map(|version| version.trim().to_string())
            .unwrap_or_else(|_| "not installed".into());
    let mut command = Command::new("rustup");
    command.args(["toolchain", "install", channel, "--profile", "minimal"]);
    command.args(["--component", "rust-src", "--component", "rustfmt"]);
    let described = run::describe(&command);
    progress.installing(&format!("`nightly` is {nightly}, rustc {wanted} is pinned"), &described);
    run::status(&mut command, &described).with_context(|| {
        format!("installing {channel} failed: check network access to static.rust-lang.org")
    })?;
    match pinned_toolchain() {
        Some(toolchain) => Ok(Outcome::installed(format!("`{toolchain}` is rustc {wanted}"))),
        None => bail!("{channel} was installed but is not rustc {wanted}: fix the pin"),
    }
}

pub fn rust_src(progress: &Progress) -> Result<Outcome> {
    ensure_components(progress, Some(require_pinned_toolchain()?), &["rust-src"])
}

pub fn lint_components(progress: &Progress) -> Result<Outcome> {
    // The stable toolchain is whichever one runs this xtask (rustup passes it on in
    // RUSTUP_TOOLCHAIN); gateway-ebpf is formatted with the nightly's rustfmt.
    let stable = ensure_components(progress, None, &["rustfmt", "clippy"])?;
    let nightly = ensure_components(progress, Some("nightly"), &["rustfmt"])?;
    let detail = format!("{}; nightly: {}", stable.detail, nightly.detail);
    Ok(Outcome { changed: stable.changed || nightly.changed, detail })
}

/// The toolchain that runs this xtask, for the record at the start of a run.
pub fn stable_toolchain(_: &Progress) -> Result<Outcome> {
    let rustc = run::capture(Command::new("rustc").arg("--version"))?;
    let cargo = run::capture(Command::new("cargo").arg("--version"))?;
    Ok(Outcome::present(format!("{}; {}", rustc.trim(), cargo.trim())))
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
