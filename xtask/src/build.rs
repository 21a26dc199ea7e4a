//! `cargo xtask build`: setup, then the release build of `gateway` (its build script builds the
//! eBPF object with the nightly and bpf-linker, which is why setup runs first).

use anyhow::Result;

use crate::{run, setup};

pub fn run() -> Result<()> {
    setup::run()?;
    let root = run::workspace_root();
    run::status(
        run::cargo().current_dir(&root).args(["build", "--release", "-p", "gateway"]),
        "cargo build --release -p gateway",
    )?;
    let release = root.join("target/release");
    println!(
        "[build] ok: {} and {}",
        release.join("gatewayd").display(),
        release.join("gateway").display()
    );
    Ok(())
}
