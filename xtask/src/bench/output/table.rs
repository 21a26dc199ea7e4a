//! The Markdown tables: one per scenario, implementations as rows and metrics as columns, each
//! cell the median with its advantage over the best other tunnel (`×2.1`: 2.1 times better, in
//! whichever direction the metric points; gatewayd rows against the better of wireguard-go and
//! boringtun). The eBPF microbenchmark has packet sizes as rows instead, and the verifier's
//! instruction counts a table of their own, one row per program.

use std::fmt::Write as _;

use super::{Record, Results};
use crate::bench::plan::{self, EBPF_SHARE, Implementation, Scenario, VERIFIER_INSTRUCTIONS};

/// Marks a figure with at least one flagged repetition (disturbed, sender-bound, no figure), or a
/// verifier count over its budget.
const FLAGGED: &str = "†";

pub fn render(results: &Results, scenarios: &[Scenario]) -> String {
    let mut text = String::new();
    for &scenario in scenarios {
        if !results.records.iter().any(|record| record.scenario == scenario) {
            continue;
        }
        let _ = writeln!(text, "### {scenario}\n");
        match scenario {
            Scenario::EbpfMicro => {
                micro_table(&mut text, results);
                verifier_table(&mut text, results);
            }
            _ => implementation_table(&mut text, results, scenario),
        }
        notes(&mut text, results, scenario);
        text.push('\n');
    }
    if results.records.iter().any(|record| !record.reps.flags.is_empty()) {
        let _ = writeln!(
            text,
            "{FLAGGED} at least one repetition was flagged: disturbed, sender-bound, without a \
             figure or over the verifier's budget (see the flags in results.json)\n"
        );
    }
    if !results.failures.is_empty() {
        let _ = writeln!(text, "Not measured:\n");
        for failure in &results.failures {
            let _ = writeln!(
                text,
                "- {} / {} / {}: {}",
                failure.scenario,
                failure.implementation,
                failure.what,
                failure.error.lines().next().unwrap_or_default()
            );
        }
        text.push('\n');
    }
    text
}

fn implementation_table(text: &mut String, results: &Results, scenario: Scenario) {
    let metrics: Vec<_> = plan::metrics(scenario)
        .iter()
        .filter(|metric| {
            results
                .records
                .iter()
                .any(|record| record.scenario == scenario && record.metric == **metric)
        })
        .collect();
    let _ = write!(text, "| implementation |");
    for metric in &metrics {
        let _ = write!(text, " {} ({}) |", metric.label, metric.unit);
    }
    let _ = write!(text, "\n|---|");
    for _ in &metrics {
        let _ = write!(text, "---:|");
    }
    text.push('\n');
    for &implementation in scenario.implementations() {
        let cells: Vec<String> = metrics
            .iter()
            .map(|metric| {
                results
                    .find(scenario, implementation, metric, None)
                    .map_or("–".to_string(), |record| cell(results, record))
            })
            .collect();
        if cells.iter().all(|cell| cell == "–") {
            continue;
        }
        let _ = writeln!(text, "| {implementation} | {} |", cells.join(" | "));
    }
}

fn micro_table(text: &mut String, results: &Results) {
    let scenario = Scenario::EbpfMicro;
    let metrics = plan::metrics(scenario);
    let mut sizes: Vec<&str> = results
        .records
        .iter()
        .filter(|record| record.scenario == scenario && metrics.contains(&record.metric))
        .filter_map(|record| record.variant.as_deref())
        .collect();
    sizes.dedup();
    if sizes.is_empty() {
        return;
    }
    let _ = write!(text, "| inner packet |");
    for metric in metrics {
        let _ = write!(text, " {} ({}) |", metric.label, metric.unit);
    }
    let _ = write!(text, "\n|---|");
    for _ in metrics {
        let _ = write!(text, "---:|");
    }
    text.push('\n');
    for size in sizes {
        let cells: Vec<String> = metrics
            .iter()
            .map(|metric| {
                results
                    .find(scenario, Implementation::GatewaydEbpf, metric, Some(size))
                    .map_or("–".to_string(), |record| {
                        format!("{}{}", number(record.value()), flag(record))
                    })
            })
            .collect();
        let _ = writeln!(text, "| {size} | {} |", cells.join(" | "));
    }
}

/// The instructions the kernel's verifier processed, per program (measured once: they do not
/// vary between runs).
fn verifier_table(text: &mut String, results: &Results) {
    let counts: Vec<&Record> = results
        .records
        .iter()
        .filter(|record| {
            record.scenario == Scenario::EbpfMicro && record.metric == VERIFIER_INSTRUCTIONS
        })
        .collect();
    if counts.is_empty() {
        return;
    }
    // Below the per-size table when there is one.
    if !text.ends_with("\n\n") {
        text.push('\n');
    }
    let metric = VERIFIER_INSTRUCTIONS;
    let _ = writeln!(text, "| program | {} ({}) |\n|---|---:|", metric.label, metric.unit);
    for record in counts {
        let program = record.variant.as_deref().unwrap_or("?");
        let _ = writeln!(text, "| {program} | {:.0}{} |", record.value(), flag(record));
    }
}

/// Which share of the data packets gatewayd's eBPF programs carried, per implementation with
/// programs and tunnel endpoint.
fn notes(text: &mut String, results: &Results, scenario: Scenario) {
    let mut lines = Vec::new();
    for implementation in Implementation::ALL.into_iter().filter(|i| i.is_ebpf()) {
        let shares: Vec<String> = results
            .records
            .iter()
            .filter(|record| {
                record.scenario == scenario
                    && record.metric == EBPF_SHARE
                    && record.implementation == implementation
            })
            .map(|record| {
                format!("{} {:.0}%", record.variant.as_deref().unwrap_or("?"), record.value())
            })
            .collect();
        if !shares.is_empty() {
            lines.push(format!("{implementation}: {}", shares.join(", ")));
        }
    }
    if !lines.is_empty() {
        let _ = writeln!(
            text,
            "\nShare of data packets the eBPF programs carried during TCP 1 stream, per tunnel \
             endpoint: {}.",
            lines.join("; ")
        );
    }
}

fn cell(results: &Results, record: &Record) -> String {
    let advantage =
        results.advantage(record).map_or(String::new(), |ratio| format!(" ×{}", number(ratio)));
    format!("{}{advantage}{}", number(record.value()), flag(record))
}

fn flag(record: &Record) -> &'static str {
    if record.reps.flags.is_empty() { "" } else { FLAGGED }
}

/// Three significant digits, no exponent.
pub fn number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plan::{RTT_P50, TCP_1};
    use crate::bench::stats::Reps;

    fn record(implementation: Implementation, metric: plan::Metric, values: Vec<f64>) -> Record {
        Record {
            scenario: Scenario::Direct,
            implementation,
            metric,
            variant: None,
            reps: Reps::new(values, vec![], vec![]).unwrap(),
        }
    }

    #[test]
    fn numbers_keep_three_significant_digits() {
        assert_eq!(number(69.44), "69.4");
        assert_eq!(number(1234.5), "1234");
        assert_eq!(number(2.345), "2.35");
        assert_eq!(number(0.0554), "0.055");
    }

    #[test]
    fn table_rows_show_value_and_advantage() {
        let mut flagged = record(Implementation::Boringtun, TCP_1, vec![2.0]);
        flagged.reps.flags.push("rep 1: disturbed".into());
        let results = Results {
            records: vec![
                record(Implementation::GatewaydEbpf, TCP_1, vec![5.0, 6.0, 7.0]),
                record(Implementation::WireguardGo, TCP_1, vec![1.5]),
                flagged,
                record(Implementation::WireguardGo, RTT_P50, vec![0.3]),
            ],
            failures: vec![],
        };
        let text = render(&results, &[Scenario::Direct]);
        assert!(
            text.contains("| implementation | TCP 1 stream (Gbit/s) | ping p50 (ms) |"),
            "{text}"
        );
        assert!(text.contains("| gatewayd-ebpf | 6.00 ×3.00 | – |"), "{text}");
        assert!(text.contains("| boringtun | 2.00 ×0.333† | – |"), "{text}");
        assert!(!text.contains("| plain |"), "{text}");
        assert!(text.contains("† at least one repetition was flagged"), "{text}");
    }

    #[test]
    fn verifier_counts_get_a_table_of_their_own() {
        let micro = |metric, variant: &str, value| Record {
            scenario: Scenario::EbpfMicro,
            implementation: Implementation::GatewaydEbpf,
            metric,
            variant: Some(variant.into()),
            reps: Reps::single(value),
        };
        let results = Results {
            records: vec![
                micro(VERIFIER_INSTRUCTIONS, "wg_rx_xdp", 91_234.0),
                micro(VERIFIER_INSTRUCTIONS, "wg_tx_tun", 120_000.0),
                micro(plan::MICRO_DECRYPT, "1420B", 5288.0),
            ],
            failures: vec![],
        };
        let text = render(&results, &[Scenario::EbpfMicro]);
        assert!(text.contains("| 1420B | 5288 | – | – | – |"), "{text}");
        assert!(!text.contains("| wg_rx_xdp | –"), "no size row per program: {text}");
        assert!(text.contains("| program | verifier (instructions) |"), "{text}");
        assert!(text.contains("| wg_rx_xdp | 91234 |"), "{text}");
        assert!(text.contains("| wg_tx_tun | 120000 |"), "{text}");
    }
}
