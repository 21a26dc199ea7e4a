//! The instructions the kernel's verifier processed for each eBPF program: `gateway-bench
//! verifier`, which loads the data plane. The counts depend only on the kernel and the object
//! the toolchain produced, so one run gives them.

use std::path::Path;

use anyhow::{Result, anyhow};
use serde_json::Value;

use crate::bench::tool;

/// One program's count, with the budget tests/tests/verifier_budget.rs holds it to.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgramCount {
    pub program: String,
    pub instructions: f64,
    pub budget: f64,
}

impl ProgramCount {
    pub fn over_budget(&self) -> bool {
        self.instructions > self.budget
    }
}

pub fn measure(tool_path: &Path) -> Result<Vec<ProgramCount>> {
    parse(&tool::run_json(tool_path, None, &["verifier".into()])?)
}

fn parse(report: &Value) -> Result<Vec<ProgramCount>> {
    let rows = report.as_array().ok_or_else(|| anyhow!("verifier report is not a list"))?;
    rows.iter()
        .map(|row| {
            let program = row
                .get("program")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("verifier report has no program name: {row}"))?;
            Ok(ProgramCount {
                program: program.to_string(),
                instructions: tool::number(row, "instructions")?,
                budget: tool::number(row, "budget")?,
            })
        })
        .collect()
}

pub fn describe(counts: &[ProgramCount]) -> String {
    counts
        .iter()
        .map(|count| format!("{} {:.0}", count.program, count.instructions))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_one_count_per_program() {
        let report = json!([
            {"program": "wg_rx_xdp", "instructions": 90_000, "budget": 250_000, "limit": 1_000_000},
            {"program": "wg_tx_tun", "instructions": 260_000, "budget": 250_000, "limit": 1_000_000},
        ]);
        let counts = parse(&report).unwrap();
        assert_eq!(counts.len(), 2);
        assert_eq!(counts[0].program, "wg_rx_xdp");
        assert_eq!(counts[0].instructions, 90_000.0);
        assert!(!counts[0].over_budget());
        assert!(counts[1].over_budget());
        assert!(parse(&json!([{"program": "wg_rx_xdp"}])).is_err());
        assert!(parse(&json!({})).is_err());
    }
}
