//! The verifier's cost of every program, held to a budget: a quarter of the kernel's
//! 1,000,000-instruction limit (docs/ARCHITECTURE.md, "The verifier's budget"). The count
//! depends on the kernel and on the object the pinned toolchain produced, so a program near the
//! limit here is over it on another machine; the margin is what keeps the product loading
//! everywhere. Prints every program's figures from the verifier's statistics log, then fails
//! naming each one refused or over.
//!
//! Verification does not depend on where a program is attached later (native or generic XDP,
//! TC ingress or egress): loading each program once covers every attachment.

use anyhow::{Result, anyhow};
use gateway::dataplane::{
    Capacities, Dataplane, INSTRUCTION_BUDGET, INSTRUCTION_LIMIT, Program, Verdict, embedded_object,
};
use gateway_tests::ebpf::verifier_log::verifier_stats;
use gateway_tests::require_root;

#[test]
fn every_program_verifies_within_a_quarter_of_the_limit() -> Result<()> {
    require_root()?;
    // The daemon's own load: what it reports, and what decides the fallbacks.
    let dataplane = Dataplane::load(Capacities::default())?;
    let reports = dataplane.program_reports();
    let covered: Vec<Program> = reports.iter().map(|report| report.program).collect();
    assert_eq!(covered, Program::ALL, "every program of the data plane is measured");
    let refused: Vec<String> =
        reports.iter().filter(|r| !r.loaded()).map(ToString::to_string).collect();
    assert!(refused.is_empty(), "refused by the verifier:\n{}", refused.join("\n"));
    // The same object again with the verifier's statistics log, for the states.
    let stats = verifier_stats(embedded_object())?;
    println!(
        "verifier budget: {INSTRUCTION_BUDGET} of {INSTRUCTION_LIMIT} instructions per program"
    );
    println!(
        "{:<14} {:>12} {:>9} {:>12} {:>11} {:>14} {:>26} {:>9}",
        "program",
        "instructions",
        "of budget",
        "total states",
        "peak states",
        "states / insn",
        "stack depth",
        "time (µs)"
    );
    let mut over = Vec::new();
    for report in reports {
        let name = report.program.name();
        let stat = stats
            .iter()
            .find(|s| s.program == name)
            .ok_or_else(|| anyhow!("{name}: not in the object's statistics"))?;
        println!(
            "{name:<14} {:>12} {:>8.1}% {:>12} {:>11} {:>14} {:>26} {:>9}",
            stat.instructions,
            stat.instructions as f64 * 100.0 / f64::from(INSTRUCTION_BUDGET),
            stat.total_states,
            stat.peak_states,
            stat.max_states_per_instruction,
            stat.stack_depth,
            stat.microseconds
        );
        // The daemon's count (the kernel's verified_insns) and the log's must be one walk.
        if let Verdict::Loaded { instructions: Some(n) } = report.verdict {
            assert_eq!(u64::from(n), stat.instructions, "{name}: the two loads differ");
        }
        if stat.instructions > u64::from(INSTRUCTION_BUDGET) {
            over.push(format!("{name}: {} instructions", stat.instructions));
        }
    }
    assert!(over.is_empty(), "over the budget of {INSTRUCTION_BUDGET}:\n{}", over.join("\n"));
    Ok(())
}
