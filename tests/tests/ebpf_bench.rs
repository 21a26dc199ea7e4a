//! Nanoseconds per packet of the fast paths, as BPF_PROG_TEST_RUN measures them: decrypt + local
//! delivery (XDP), encrypt (LAN XDP), and hub re-encryption (XDP), at 64, 512 and 1420 inner
//! bytes. The measurement is `gateway_tests::ebpf::bench` (shared with `cargo xtask bench`).
//!
//! `cargo test -p gateway-tests --test ebpf_bench -- --ignored --nocapture`

use gateway_tests::ebpf::bench::{self, SIZES};
use gateway_tests::ebpf::require_root;

const RUNS: usize = 3000;

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn bench_ns_per_packet() {
    require_root();
    let rows = bench::measure(RUNS, &SIZES).unwrap_or_else(|error| panic!("{error:#}"));
    println!(
        "\n{:>6} | {:>12} {:>12} {:>12} | {:>10} | {:>8}",
        "inner", "decrypt", "encrypt", "hub", "Gbit/s dec", "empty"
    );
    for row in rows {
        println!(
            "{:>6} | {:>9} ns {:>9} ns {:>9} ns | {:>10.2} | {:>5} ns",
            row.inner_bytes,
            row.decrypt_ns,
            row.encrypt_ns,
            row.hub_ns,
            row.inner_bytes as f64 * 8.0 / row.decrypt_ns.max(1) as f64,
            row.empty_ns
        );
    }
}
