//! `cargo xtask demo`: builds the release binaries and runs the demonstration (the `demo`
//! binary of the `gateway-tests` crate, which builds on the namespace harness): gatewayd on a
//! VPS and a home router behind CGNAT, a phone and an internet client, real traffic, and what
//! each data path carried. Everything it creates is removed at the end, on failure and on
//! Ctrl-C.

use std::process::ExitCode;

use anyhow::Result;

use crate::{run, setup};

pub fn run() -> Result<ExitCode> {
    setup::run()?;
    println!("[demo] building the release binaries (gatewayd, gateway, the demo)");
    run::status(
        run::cargo().args(["build", "--release", "-p", "gateway", "--bins"]),
        "cargo build --release -p gateway --bins",
    )?;
    run::status(
        run::cargo().args(["build", "--release", "-p", "gateway-tests", "--bin", "demo"]),
        "cargo build --release -p gateway-tests --bin demo",
    )?;
    let root = run::workspace_root();
    let logs = root.join("target").join("demo-logs");
    std::fs::create_dir_all(&logs)?;
    let status = std::process::Command::new(root.join("target/release/demo"))
        .env("TMPDIR", &logs)
        .status()?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
