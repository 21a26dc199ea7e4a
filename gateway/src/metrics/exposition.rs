//! The Prometheus text exposition format, version 0.0.4: per family a `# HELP` and a `# TYPE`
//! line, then one line per sample, `name{label="value",...} value`.
//!
//! Written here rather than taken from a crate: the daemon needs counters and gauges read at
//! scrape time from a snapshot, not a registry of live metric objects, and the format is a
//! few escaping rules.

use std::fmt::Write as _;

/// The `Content-Type` of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// Counts, exact however large.
    Integer(u64),
    Float(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: Value,
}

/// One metric family: a name, what it means, its type and its samples (one per label set).
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

impl Family {
    pub fn new(name: &'static str, kind: Kind, help: &'static str) -> Family {
        Family { name, help, kind, samples: Vec::new() }
    }

    pub fn push(&mut self, labels: Vec<(&'static str, String)>, value: Value) {
        self.samples.push(Sample { labels, value });
    }
}

/// The families as one exposition document.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for family in families {
        let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(family.help));
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.name());
        for sample in &family.samples {
            out.push_str(family.name);
            if !sample.labels.is_empty() {
                out.push('{');
                for (i, (name, value)) in sample.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{name}=\"{}\"", escape_label_value(value));
                }
                out.push('}');
            }
            out.push(' ');
            match sample.value {
                Value::Integer(n) => {
                    let _ = write!(out, "{n}");
                }
                Value::Float(x) => out.push_str(&format_float(x)),
            }
            out.push('\n');
        }
    }
    out
}

/// HELP text: backslash and line feed escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Label values: backslash, double quote and line feed escaped.
fn escape_label_value(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Go's ParseFloat spellings for the values Rust writes differently.
fn format_float(x: f64) -> String {
    if x.is_nan() {
        "NaN".to_string()
    } else if x == f64::INFINITY {
        "+Inf".to_string()
    } else if x == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{x}")
    }
}

/// Whether `name` is a valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// Whether `name` is a valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`).
pub fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    !name.starts_with("__")
        && bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_is_help_type_and_one_line_per_sample() {
        let mut counter = Family::new("gateway_test_total", Kind::Counter, "Things.");
        counter.push(vec![("interface", "wg0".into()), ("reason", "a".into())], Value::Integer(7));
        counter.push(vec![("interface", "wg0".into()), ("reason", "b".into())], Value::Integer(0));
        let mut gauge = Family::new("gateway_test_seconds", Kind::Gauge, "A time.");
        gauge.push(Vec::new(), Value::Float(1.5));
        let empty = Family::new("gateway_empty", Kind::Gauge, "Nothing yet.");
        assert_eq!(
            render(&[counter, gauge, empty]),
            "# HELP gateway_test_total Things.\n\
             # TYPE gateway_test_total counter\n\
             gateway_test_total{interface=\"wg0\",reason=\"a\"} 7\n\
             gateway_test_total{interface=\"wg0\",reason=\"b\"} 0\n\
             # HELP gateway_test_seconds A time.\n\
             # TYPE gateway_test_seconds gauge\n\
             gateway_test_seconds 1.5\n\
             # HELP gateway_empty Nothing yet.\n\
             # TYPE gateway_empty gauge\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut family = Family::new("gateway_x", Kind::Gauge, "Back\\slash\nand line.");
        family.push(vec![("peer", "a\"b\\c\nd".into())], Value::Integer(1));
        assert_eq!(
            render(&[family]),
            "# HELP gateway_x Back\\\\slash\\nand line.\n\
             # TYPE gateway_x gauge\n\
             gateway_x{peer=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
    }

    #[test]
    fn counts_stay_exact_and_special_floats_are_spelled_as_prometheus_reads_them() {
        let mut family = Family::new("gateway_x", Kind::Gauge, "x");
        family.push(Vec::new(), Value::Integer(u64::MAX));
        family.push(Vec::new(), Value::Float(f64::NAN));
        family.push(Vec::new(), Value::Float(f64::INFINITY));
        family.push(Vec::new(), Value::Float(f64::NEG_INFINITY));
        family.push(Vec::new(), Value::Float(1_700_000_000.0));
        let values: Vec<String> = render(&[family])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
            .collect();
        assert_eq!(values, ["18446744073709551615", "NaN", "+Inf", "-Inf", "1700000000"]);
    }

    #[test]
    fn names_are_checked_against_the_format() {
        assert!(is_metric_name("gateway_peer_sent_bytes_total"));
        assert!(is_metric_name("a:b"));
        assert!(!is_metric_name("1abc"));
        assert!(!is_metric_name("gateway-x"));
        assert!(!is_metric_name(""));
        assert!(is_label_name("peer"));
        assert!(!is_label_name("__name__"));
        assert!(!is_label_name("a:b"));
        assert!(!is_label_name(""));
    }
}
