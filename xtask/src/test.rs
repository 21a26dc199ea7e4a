//! `cargo xtask test`: setup, then formatting, clippy and every test, with a summary at the end.
//! Every stage runs even when an earlier one failed, so one run reports everything.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::{run, setup};

#[derive(clap::Args)]
pub struct Options {
    /// Skip the formatting and clippy checks; run only the tests.
    #[arg(long)]
    skip_lint: bool,
    /// Passed on to the test binaries (`cargo test --workspace --no-fail-fast -- ARGS`), e.g. a
    /// test name filter or `--nocapture`.
    #[arg(last = true)]
    test_binary_args: Vec<String>,
}

struct Stage {
    name: &'static str,
    command: Command,
}

struct StageResult {
    name: &'static str,
    passed: bool,
    elapsed: Duration,
}

pub fn run(options: &Options) -> Result<ExitCode> {
    setup::run()?;
    let results: Vec<StageResult> = stages(options).into_iter().map(run_stage).collect();
    println!("[test] summary:");
    for result in &results {
        let verdict = if result.passed { "ok" } else { "FAILED" };
        println!(
            "[test]   {verdict:<6} {:<22} {:>6.1} s",
            result.name,
            result.elapsed.as_secs_f64()
        );
    }
    let failed = results.iter().filter(|result| !result.passed).count();
    if failed == 0 {
        println!("[test] all {} stages passed", results.len());
        Ok(ExitCode::SUCCESS)
    } else {
        println!("[test] {failed} of {} stages failed", results.len());
        Ok(ExitCode::FAILURE)
    }
}

fn stages(options: &Options) -> Vec<Stage> {
    let root = run::workspace_root();
    let mut stages = Vec::new();
    if !options.skip_lint {
        let mut fmt = run::cargo();
        fmt.current_dir(&root).args(["fmt", "--all", "--check"]);
        stages.push(Stage { name: "fmt", command: fmt });

        // gateway-ebpf is a workspace of its own, built (and so formatted) with the nightly.
        let mut fmt_ebpf = run::cargo();
        fmt_ebpf.current_dir(root.join("gateway-ebpf")).args(["+nightly", "fmt", "--check"]);
        stages.push(Stage { name: "fmt (gateway-ebpf)", command: fmt_ebpf });

        let mut clippy = run::cargo();
        clippy.current_dir(&root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        stages.push(Stage { name: "clippy", command: clippy });
    }
    let mut test = run::cargo();
    // --no-fail-fast: one failing test binary must not hide the results of the others.
    test.current_dir(&root).args(["test", "--workspace", "--no-fail-fast"]);
    if !options.test_binary_args.is_empty() {
        test.arg("--").args(&options.test_binary_args);
    }
    stages.push(Stage { name: "cargo test", command: test });
    stages
}

fn run_stage(mut stage: Stage) -> StageResult {
    let described = run::describe(&stage.command);
    println!("[test] {}: {described}", stage.name);
    let started = Instant::now();
    let passed = match run::status(&mut stage.command, &described) {
        Ok(()) => true,
        Err(error) => {
            println!("[test] {}: {error:#}", stage.name);
            false
        }
    };
    StageResult { name: stage.name, passed, elapsed: started.elapsed() }
}
