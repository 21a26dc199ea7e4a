//! The eBPF per-program microbenchmark: `gateway-bench ebpf-micro` (the code the ignored test
//! `ebpf_bench` runs), once per repetition.

use std::path::Path;

use anyhow::{Result, anyhow};
use serde_json::Value;

use crate::bench::tool;

/// Medians of single BPF_PROG_TEST_RUN runs at one inner packet size.
#[derive(Debug, Clone, Copy)]
pub struct MicroRow {
    pub inner_bytes: usize,
    pub decrypt_ns: f64,
    pub encrypt_ns: f64,
    pub hub_ns: f64,
    pub empty_ns: f64,
}

pub fn measure(tool_path: &Path, runs: usize, sizes: &[usize]) -> Result<Vec<MicroRow>> {
    let sizes: Vec<String> = sizes.iter().map(usize::to_string).collect();
    let report = tool::run_json(
        tool_path,
        None,
        &[
            "ebpf-micro".into(),
            "--runs".into(),
            runs.to_string(),
            "--sizes".into(),
            sizes.join(","),
        ],
    )?;
    let rows = report.as_array().ok_or_else(|| anyhow!("ebpf-micro report is not a list"))?;
    rows.iter().map(row).collect()
}

fn row(value: &Value) -> Result<MicroRow> {
    Ok(MicroRow {
        inner_bytes: tool::number(value, "inner_bytes")? as usize,
        decrypt_ns: tool::number(value, "decrypt_ns")?,
        encrypt_ns: tool::number(value, "encrypt_ns")?,
        hub_ns: tool::number(value, "hub_ns")?,
        empty_ns: tool::number(value, "empty_ns")?,
    })
}

pub fn describe(rows: &[MicroRow]) -> String {
    rows.iter()
        .map(|row| {
            format!(
                "{} B: decrypt {:.0} ns, encrypt {:.0} ns, hub {:.0} ns",
                row.inner_bytes, row.decrypt_ns, row.encrypt_ns, row.hub_ns
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}
