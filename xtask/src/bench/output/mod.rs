//! The results of a run and how they are written: a Markdown table (stdout), results.json, and
//! an SVG chart.

pub mod json;
pub mod svg;
pub mod table;

use super::plan::{Better, Implementation, Metric, Scenario};
use super::stats::Reps;

/// One figure: a metric of an implementation in a scenario, with its repetitions.
#[derive(Debug, Clone)]
pub struct Record {
    pub scenario: Scenario,
    pub implementation: Implementation,
    pub metric: Metric,
    /// What distinguishes records of the same metric: a packet size ("64B"), a role ("vps").
    pub variant: Option<String>,
    pub reps: Reps,
}

impl Record {
    /// The metric's name in results.json, e.g. `decrypt_64B`, `ebpf_share_vps`.
    pub fn metric_id(&self) -> String {
        match &self.variant {
            Some(variant) => format!("{}_{variant}", self.metric.id),
            None => self.metric.id.to_string(),
        }
    }

    pub fn value(&self) -> f64 {
        self.reps.median
    }
}

/// Something that could not be measured, and why.
#[derive(Debug, Clone)]
pub struct Failure {
    pub scenario: Scenario,
    pub implementation: Implementation,
    pub what: String,
    pub error: String,
}

#[derive(Debug, Default)]
pub struct Results {
    pub records: Vec<Record>,
    pub failures: Vec<Failure>,
}

impl Results {
    pub fn find(
        &self,
        scenario: Scenario,
        implementation: Implementation,
        metric: &Metric,
        variant: Option<&str>,
    ) -> Option<&Record> {
        self.records.iter().find(|record| {
            record.scenario == scenario
                && record.implementation == implementation
                && record.metric.id == metric.id
                && record.variant.as_deref() == variant
        })
    }

    /// How much better `record` is than the best of its references (see
    /// [`Implementation::references`]) in the same scenario: > 1 means better, whichever way
    /// the metric points. `None` without a reference figure.
    pub fn advantage(&self, record: &Record) -> Option<f64> {
        let references: Vec<f64> = record
            .implementation
            .references()
            .into_iter()
            .filter_map(|reference| {
                self.find(record.scenario, reference, &record.metric, record.variant.as_deref())
            })
            .map(Record::value)
            .filter(|value| *value > 0.0)
            .collect();
        let value = record.value();
        match record.metric.better {
            Better::Higher => {
                let best = references.into_iter().reduce(f64::max)?;
                Some(value / best)
            }
            Better::Lower => {
                let best = references.into_iter().reduce(f64::min)?;
                (value > 0.0).then(|| best / value)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plan::{RTT_P50, TCP_1};

    fn record(implementation: Implementation, metric: Metric, value: f64) -> Record {
        Record {
            scenario: Scenario::Direct,
            implementation,
            metric,
            variant: None,
            reps: Reps::new(vec![value], vec![], vec![]).unwrap(),
        }
    }

    #[test]
    fn advantage_is_over_the_best_reference_in_the_right_direction() {
        let results = Results {
            records: vec![
                record(Implementation::GatewaydEbpf, TCP_1, 6.0),
                record(Implementation::WireguardGo, TCP_1, 1.5),
                record(Implementation::Boringtun, TCP_1, 2.0),
                record(Implementation::GatewaydEbpf, RTT_P50, 0.1),
                record(Implementation::WireguardGo, RTT_P50, 0.4),
                record(Implementation::Boringtun, RTT_P50, 0.2),
            ],
            failures: vec![],
        };
        let gatewayd_tcp = &results.records[0];
        assert_eq!(results.advantage(gatewayd_tcp), Some(3.0));
        let gatewayd_rtt = &results.records[3];
        assert_eq!(results.advantage(gatewayd_rtt), Some(2.0));
        // wireguard-go against the best other tunnel: gatewayd-ebpf.
        let wireguard_go_tcp = &results.records[1];
        assert_eq!(results.advantage(wireguard_go_tcp), Some(0.25));
    }

    #[test]
    fn no_reference_no_advantage() {
        let results = Results {
            records: vec![record(Implementation::GatewaydEbpf, TCP_1, 6.0)],
            failures: vec![],
        };
        assert_eq!(results.advantage(&results.records[0]), None);
    }
}
