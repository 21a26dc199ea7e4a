//! Builds the eBPF object (gateway-ebpf) with the nightly through aya-build; `gateway` embeds it.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root =
        Path::new(&manifest_dir).parent().ok_or_else(|| anyhow!("gateway crate has no parent"))?;
    let ebpf_dir = root.join("gateway-ebpf");
    println!("cargo:rerun-if-changed={}", root.join("gateway-common/src").display());
    // gateway-ebpf is a workspace of its own (its release profile sets target-cpu=v3); aya-build
    // runs `cargo build --package gateway-ebpf` in the current directory, so run it from there.
    std::env::set_current_dir(&ebpf_dir).with_context(|| format!("cd {}", ebpf_dir.display()))?;
    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path to gateway-ebpf")?;
    aya_build::build_ebpf(
        [Package { name: "gateway-ebpf", root_dir: ebpf_dir, ..Default::default() }],
        Toolchain::default(),
    )
}
