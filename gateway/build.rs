//! Builds the eBPF object (gateway-ebpf) through aya-build, with the nightly and bpf-linker
//! pinned in gateway-ebpf/toolchain.toml (another build of either produces another object, which
//! the verifier may judge differently); `gateway` embeds it.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, anyhow, bail};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root =
        Path::new(&manifest_dir).parent().ok_or_else(|| anyhow!("gateway crate has no parent"))?;
    let ebpf_dir = root.join("gateway-ebpf");
    let pins_path = ebpf_dir.join("toolchain.toml");
    println!("cargo:rerun-if-changed={}", root.join("gateway-common/src").display());
    println!("cargo:rerun-if-changed={}", pins_path.display());
    let pins = std::fs::read_to_string(&pins_path)
        .with_context(|| format!("cannot read {}", pins_path.display()))?;
    let toolchain = pinned_nightly(&pins)?;
    check_bpf_linker(&pins)?;
    // gateway-ebpf is a workspace of its own (its release profile sets target-cpu=v3); aya-build
    // runs `cargo build --package gateway-ebpf` in the current directory, so run it from there.
    std::env::set_current_dir(&ebpf_dir).with_context(|| format!("cd {}", ebpf_dir.display()))?;
    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path to gateway-ebpf")?;
    aya_build::build_ebpf(
        [Package { name: "gateway-ebpf", root_dir: ebpf_dir, ..Default::default() }],
        Toolchain::Custom(&toolchain),
    )
}

/// A `key = "value"` line of toolchain.toml.
fn pin<'a>(pins: &'a str, key: &str) -> anyhow::Result<&'a str> {
    pins.lines()
        .filter_map(|line| line.split_once('='))
        .find(|(name, _)| name.trim() == key)
        .map(|(_, value)| value.trim().trim_matches('"'))
        .ok_or_else(|| anyhow!("gateway-ebpf/toolchain.toml has no `{key}`"))
}

/// The installed toolchain whose rustc is the pinned build: the dated channel, else `nightly`.
fn pinned_nightly(pins: &str) -> anyhow::Result<String> {
    let (channel, rustc) = (pin(pins, "channel")?, pin(pins, "rustc")?);
    for toolchain in [channel, "nightly"] {
        let version =
            Command::new("rustup").args(["run", toolchain, "rustc", "--version"]).output();
        if let Ok(output) = version
            && output.status.success()
            && String::from_utf8_lossy(&output.stdout).trim() == format!("rustc {rustc}")
        {
            return Ok(toolchain.to_string());
        }
    }
    bail!(
        "the eBPF object is built with rustc {rustc}; neither `{channel}` nor `nightly` is that \
         build: run `cargo xtask setup`"
    )
}

fn check_bpf_linker(pins: &str) -> anyhow::Result<()> {
    let wanted = format!("bpf-linker {}", pin(pins, "bpf-linker")?);
    let found = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .unwrap_or_else(|_| "no bpf-linker".into());
    if found != wanted {
        bail!("the eBPF object is linked with {wanted}, found {found}: run `cargo xtask setup`");
    }
    Ok(())
}
