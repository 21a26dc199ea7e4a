//! `ebpf-micro`: the per-program benchmark of `gateway_tests::ebpf::bench`, as JSON.

use anyhow::{Result, ensure};
use gateway_tests::ebpf::bench;
use serde_json::json;

#[derive(clap::Args)]
pub struct Options {
    /// Single test runs per program and size (the median is reported).
    #[arg(long, default_value_t = 3000)]
    runs: usize,
    /// Inner packet sizes (IPv4 + UDP bytes), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = bench::SIZES)]
    sizes: Vec<usize>,
}

pub fn run(options: &Options) -> Result<()> {
    ensure!(!options.sizes.is_empty(), "--sizes needs at least one size");
    let rows = bench::measure(options.runs, &options.sizes)?;
    let rows: Vec<_> = rows
        .iter()
        .map(|row| {
            json!({
                "inner_bytes": row.inner_bytes,
                "decrypt_ns": row.decrypt_ns,
                "encrypt_ns": row.encrypt_ns,
                "hub_ns": row.hub_ns,
                "empty_ns": row.empty_ns,
            })
        })
        .collect();
    println!("{}", serde_json::Value::Array(rows));
    Ok(())
}
