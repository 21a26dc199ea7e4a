//! `cargo xtask <command>`: the project's own tasks (an alias in .cargo/config.toml).
//!
//! Every command that needs tools runs `setup` first, so a fresh machine needs nothing but Rust.

mod bench;
mod build;
mod demo;
mod install;
mod run;
mod setup;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, test, demonstrate and benchmark the gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install everything the project needs (idempotent: skips what is already there).
    Setup,
    /// Run setup, then build the release binaries (the eBPF object included).
    Build,
    /// Run setup, then formatting checks, clippy and every test.
    Test(test::Options),
    /// Run setup, then the end-to-end demonstration.
    Demo,
    /// Run setup, build the release binaries, then the benchmarks (see docs/BENCHMARKS.md).
    Bench(bench::Options),
    /// Build the release binaries, then install them, the systemd unit and an example
    /// configuration (see the README's "Run it as a service").
    Install(install::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run().map(|()| ExitCode::SUCCESS),
        Command::Build => build::run().map(|()| ExitCode::SUCCESS),
        Command::Test(options) => test::run(&options),
        Command::Demo => demo::run(),
        Command::Bench(options) => bench::run(&options),
        Command::Install(options) => install::run(&options).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: {error:#}");
        ExitCode::FAILURE
    })
}
