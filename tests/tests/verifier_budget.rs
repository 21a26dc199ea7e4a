//! The verifier's cost of every program, held to a budget: a quarter of the kernel's
//! 1,000,000-instruction limit (docs/ARCHITECTURE.md, "The verifier's budget"). The count
//! depends on the kernel and on the object the pinned toolchain produced, so a program near the
//! limit here is over it on another machine; the margin is what keeps the product loading
//! everywhere. Prints every program's figures, then fails naming each one refused or over.
//!
//! Verification does not depend on where a program is attached later (native or generic XDP,
//! TC ingress or egress): loading each program once covers every attachment.

use anyhow::Result;
use gateway::dataplane::{
    Capacities, Dataplane, INSTRUCTION_BUDGET, INSTRUCTION_LIMIT, Program, Verdict,
};
use gateway_tests::require_root;

#[test]
fn every_program_verifies_within_a_quarter_of_the_limit() -> Result<()> {
    require_root()?;
    let dataplane = Dataplane::load(Capacities::default())?;
    let reports = dataplane.program_reports();
    println!(
        "verifier budget: {INSTRUCTION_BUDGET} of {INSTRUCTION_LIMIT} instructions per program"
    );
    println!("{:<16} {:>12} {:>9}", "program", "instructions", "of budget");
    let mut problems = Vec::new();
    for report in reports {
        let name = report.program.name();
        match &report.verdict {
            Verdict::Loaded { instructions: Some(n) } => {
                let share = f64::from(*n) * 100.0 / f64::from(INSTRUCTION_BUDGET);
                println!("{name:<16} {n:>12} {share:>8.1}%");
                if *n > INSTRUCTION_BUDGET {
                    problems.push(format!("{name}: {n} instructions, over {INSTRUCTION_BUDGET}"));
                }
            }
            Verdict::Loaded { instructions: None } => {
                problems.push(format!("{name}: the kernel does not report verified_insns"));
            }
            Verdict::Rejected { .. } => {
                println!("{name:<16} {:>12}", "rejected");
                problems.push(report.to_string());
            }
        }
    }
    let covered: Vec<Program> = reports.iter().map(|report| report.program).collect();
    assert_eq!(covered, Program::ALL, "every program of the data plane is measured");
    assert!(problems.is_empty(), "over the verifier budget:\n{}", problems.join("\n"));
    Ok(())
}
