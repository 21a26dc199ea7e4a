//! `cargo xtask bench`: gatewayd (eBPF and userspace paths) against wireguard-go, boringtun and
//! plain routing, on namespaces and veths of its own (traffic never leaves them).
//!
//! Runs setup and the release build, then each scenario (direct, hub, scale, ebpf-micro, entry) with
//! each implementation in turn, on a fresh topology each time. Every figure is the median of
//! repetitions, each preceded by a load sample and repeated (then flagged) when the machine was
//! busy. Writes a Markdown table to stdout and `target/bench/results.md`, the records to
//! `target/bench/results.json`, and a chart to `target/bench/summary.svg`. Method and caveats:
//! docs/BENCHMARKS.md.
//!
//! Modules: `plan` (what is measured), `topology` and `tunnel` (the networks and the
//! implementations on them), `metrics` (one module per measurement), `tool` (the generators
//! in `gateway-bench`), `load`/`procfs`/`repeat`/`stats` (the method), `output` (table, JSON,
//! SVG), `machine` (what it ran on).

mod child;
mod cpu_speed;
mod load;
mod machine;
mod metrics;
mod output;
mod plan;
mod procfs;
mod repeat;
mod runner;
mod stats;
mod tool;
mod topology;
mod tunnel;

use std::cell::Cell;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;

use anyhow::{Context as _, Result};
use gateway_tests::{require_root, require_tools};

use crate::{run, setup};
use machine::Machine;
use output::{Results, json, svg, table};
use plan::{Implementation, Profile, Scenario};
use repeat::progress;
use runner::Runner;
use tunnel::Binaries;

const TOOLS: &[&str] = &["ip", "nft", "ping", "ss", "wg", "ethtool", "iperf3", "nginx"];

#[derive(clap::Args)]
pub struct Options {
    /// A representative subset in under three minutes: direct scenario (TCP 1 stream, UDP
    /// 1392 B, ping, CPU) for every implementation, and the eBPF microbenchmark at 1420 B
    /// (with the verifier's instruction counts).
    #[arg(long)]
    quick: bool,
    /// Scenarios to run, comma-separated (default: all; with --quick: direct,ebpf-micro).
    #[arg(long, value_enum, value_delimiter = ',')]
    scenarios: Vec<Scenario>,
    /// Implementations to run where a scenario applies to them, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    implementations: Vec<Implementation>,
    /// Repetitions per figure (default: 3).
    #[arg(long)]
    reps: Option<usize>,
    /// Where to write results.json, results.md and summary.svg (default: target/bench).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Skip setup and the release build: use the binaries already in target/release.
    #[arg(long)]
    no_build: bool,
}

pub fn run(options: &Options) -> Result<ExitCode> {
    let started = repeat::started();
    let root = run::workspace_root();
    if !options.no_build {
        setup::run()?;
        let mut build = run::cargo();
        build.current_dir(&root).args([
            "build",
            "--release",
            "-p",
            "gateway",
            "--bin",
            "gatewayd",
            "--bin",
            "gateway",
            "-p",
            "gateway-tests",
            "--bin",
            "gateway-bench",
            "--bin",
            "peer-report",
        ]);
        let described = run::describe(&build);
        progress(&format!("building: {described}"));
        run::status(&mut build, &described)?;
    }
    require_root()?;
    require_tools(TOOLS)?;
    let binaries = Binaries::locate(&root.join("target/release"))?;

    let mut profile = if options.quick { Profile::quick() } else { Profile::full() };
    if let Some(reps) = options.reps {
        anyhow::ensure!(reps > 0, "--reps must be at least 1");
        profile.reps = reps;
    }
    let scenarios = if options.scenarios.is_empty() {
        profile.default_scenarios()
    } else {
        options.scenarios.clone()
    };
    let implementations = if options.implementations.is_empty() {
        Implementation::ALL.to_vec()
    } else {
        options.implementations.clone()
    };
    let machine = Machine::describe(&binaries);
    progress(&format!(
        "{} profile: {}; {} repetitions per figure",
        profile.name,
        scenarios.iter().map(|scenario| scenario.name()).collect::<Vec<_>>().join(", "),
        profile.reps
    ));

    let retry_budget = Rc::new(Cell::new(profile.retry_budget));
    let mut runner =
        Runner { profile, retry_budget, binaries, implementations, results: Results::default() };
    runner.run(&scenarios);
    let results = runner.results;

    let elapsed = started.elapsed().as_secs_f64();
    let report = format!(
        "## Results ({} profile, {:.0} min {:02.0} s)\n\n{}\n{}",
        runner.profile.name,
        (elapsed / 60.0).floor(),
        elapsed % 60.0,
        machine.markdown(),
        table::render(&results, &scenarios)
    );
    println!("\n{report}");
    let out = options.out.clone().unwrap_or_else(|| root.join("target/bench"));
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    json::write(&results, &out.join("results.json"))?;
    let markdown = out.join("results.md");
    fs::write(&markdown, &report)
        .with_context(|| format!("cannot write {}", markdown.display()))?;
    let chart = out.join("summary.svg");
    fs::write(&chart, svg::render(&results, &scenarios))
        .with_context(|| format!("cannot write {}", chart.display()))?;
    progress(&format!(
        "wrote {}, {} and {}",
        out.join("results.json").display(),
        markdown.display(),
        chart.display()
    ));
    Ok(if results.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
