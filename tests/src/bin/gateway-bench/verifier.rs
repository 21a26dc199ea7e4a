//! `verifier`: the instructions the kernel's verifier processed for each program of the data
//! plane, as JSON, with the budget tests/tests/verifier_budget.rs holds them to and the
//! kernel's limit. Loading is all it takes: the count does not depend on where a program is
//! attached later.

use anyhow::{Result, bail};
use gateway::dataplane::{
    Capacities, Dataplane, INSTRUCTION_BUDGET, INSTRUCTION_LIMIT, ProgramReport, Verdict,
};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct Options {}

pub fn run(_options: &Options) -> Result<()> {
    let dataplane = Dataplane::load(Capacities::default())?;
    println!("{}", report(dataplane.program_reports())?);
    Ok(())
}

/// `[{program, instructions, budget, limit}, ...]`, or an error naming every program without a
/// count: one the verifier refused (with its reason), or one the kernel gave no count for.
fn report(reports: &[ProgramReport]) -> Result<Value> {
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for report in reports {
        let name = report.program.name();
        match &report.verdict {
            Verdict::Loaded { instructions: Some(instructions) } => rows.push(json!({
                "program": name,
                "instructions": instructions,
                "budget": INSTRUCTION_BUDGET,
                "limit": INSTRUCTION_LIMIT,
            })),
            Verdict::Loaded { instructions: None } => problems.push(format!(
                "{name}: loaded, but the kernel does not report verified_insns (before 5.16)"
            )),
            // The report's own line names the program, the verifier's reason and the fallback.
            Verdict::Rejected { .. } => problems.push(report.to_string()),
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(Value::Array(rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway::dataplane::Program;

    #[test]
    fn loaded_programs_are_listed_with_budget_and_limit() {
        let reports = [ProgramReport {
            program: Program::TxTun,
            verdict: Verdict::Loaded { instructions: Some(120_000) },
        }];
        let value = report(&reports).unwrap();
        assert_eq!(
            value,
            json!([{
                "program": "wg_tx_tun",
                "instructions": 120_000,
                "budget": INSTRUCTION_BUDGET,
                "limit": INSTRUCTION_LIMIT,
            }])
        );
    }

    #[test]
    fn a_rejected_program_fails_on_one_line_naming_it_and_why() {
        let reports = [
            ProgramReport {
                program: Program::RxXdp,
                verdict: Verdict::Loaded { instructions: Some(1) },
            },
            ProgramReport {
                program: Program::TxLan,
                verdict: Verdict::Rejected { reason: "Argument list too long".into() },
            },
        ];
        let error = report(&reports).unwrap_err().to_string();
        assert!(!error.contains('\n'), "{error}");
        assert!(error.starts_with("wg_tx_lan: rejected"), "{error}");
        assert!(error.contains("Argument list too long"), "{error}");
    }
}
