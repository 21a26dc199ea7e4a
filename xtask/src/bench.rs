//! `cargo xtask bench`: the benchmarks.

use std::process::ExitCode;

pub fn run() -> ExitCode {
    eprintln!("cargo xtask bench: not built yet");
    ExitCode::from(2)
}
