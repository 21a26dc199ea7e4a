//! `results.json`: a list of `{scenario, implementation, metric, value, unit, reps}`, where
//! `reps` holds every repetition's value, min, max, median, flags, and the load conditions.

use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::Results;

pub fn to_value(results: &Results) -> Value {
    let records: Vec<Value> = results
        .records
        .iter()
        .map(|record| {
            json!({
                "scenario": record.scenario.name(),
                "implementation": record.implementation.name(),
                "metric": record.metric_id(),
                "value": record.value(),
                "unit": record.metric.unit,
                "reps": record.reps,
            })
        })
        .collect();
    Value::Array(records)
}

pub fn write(results: &Results, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(&to_value(results))?;
    fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::output::Record;
    use crate::bench::plan::{Implementation, MICRO_DECRYPT, Scenario, VERIFIER_INSTRUCTIONS};
    use crate::bench::stats::Reps;

    #[test]
    fn records_carry_their_repetitions() {
        let results = Results {
            records: vec![Record {
                scenario: Scenario::EbpfMicro,
                implementation: Implementation::GatewaydEbpf,
                metric: MICRO_DECRYPT,
                variant: Some("64B".into()),
                reps: Reps::new(vec![300.0, 280.0, 310.0], vec!["rep 2: x".into()], vec![])
                    .unwrap(),
            }],
            failures: vec![],
        };
        let value = to_value(&results);
        let record = &value[0];
        assert_eq!(record["scenario"], "ebpf-micro");
        assert_eq!(record["implementation"], "gatewayd-ebpf");
        assert_eq!(record["metric"], "decrypt_64B");
        assert_eq!(record["value"], 300.0);
        assert_eq!(record["unit"], "ns/packet");
        assert_eq!(record["reps"]["values"], json!([300.0, 280.0, 310.0]));
        assert_eq!(record["reps"]["min"], 280.0);
        assert_eq!(record["reps"]["max"], 310.0);
        assert_eq!(record["reps"]["flags"][0], "rep 2: x");
    }

    #[test]
    fn a_verifier_count_is_one_record_per_program_measured_once() {
        let results = Results {
            records: vec![Record {
                scenario: Scenario::EbpfMicro,
                implementation: Implementation::GatewaydEbpf,
                metric: VERIFIER_INSTRUCTIONS,
                variant: Some("wg_tx_tun".into()),
                reps: Reps::single(123_456.0),
            }],
            failures: vec![],
        };
        let value = to_value(&results);
        let record = &value[0];
        assert_eq!(record["scenario"], "ebpf-micro");
        assert_eq!(record["implementation"], "gatewayd-ebpf");
        assert_eq!(record["metric"], "verifier_instructions_wg_tx_tun");
        assert_eq!(record["value"], 123_456.0);
        assert_eq!(record["unit"], "instructions");
        assert_eq!(record["reps"]["values"], json!([123_456.0]));
        assert_eq!(record["reps"]["min"], 123_456.0);
        assert_eq!(record["reps"]["max"], 123_456.0);
        assert_eq!(record["reps"]["flags"], json!([]));
        assert_eq!(record["reps"]["conditions"], json!([]));
    }
}
