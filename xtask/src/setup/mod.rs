//! `cargo xtask setup`: brings a fresh Debian machine with rustup (stable + nightly) to everything
//! the project builds and tests with. Each step checks first and changes nothing when satisfied,
//! so running it again is cheap; a failing step says what is missing and how to fix it.

mod apt;
mod boringtun;
mod bpf_linker;
mod rust;

use anyhow::Result;

/// What a step found or did, for its progress line.
pub struct Outcome {
    changed: bool,
    detail: String,
}

impl Outcome {
    pub fn present(detail: impl Into<String>) -> Outcome {
        Outcome { changed: false, detail: detail.into() }
    }

    pub fn installed(detail: impl Into<String>) -> Outcome {
        Outcome { changed: true, detail: detail.into() }
    }
}

/// Passed to steps so the installer output that follows is attributed to the step.
pub struct Progress {
    step: &'static str,
}

impl Progress {
    pub fn installing(&self, reason: &str, command: &str) {
        println!("[setup] {} ... {reason}; running: {command}", self.step);
    }
}

struct Step {
    name: &'static str,
    ensure: fn(&Progress) -> Result<Outcome>,
}

const STEPS: &[Step] = &[
    Step { name: "stable toolchain", ensure: rust::stable_toolchain },
    Step { name: "nightly toolchain", ensure: rust::nightly_toolchain },
    Step { name: "rust-src for the pinned nightly", ensure: rust::rust_src },
    Step { name: "rustfmt and clippy", ensure: rust::lint_components },
    Step { name: "LLVM prefix for bpf-linker", ensure: bpf_linker::llvm_prefix },
    Step { name: "bpf-linker", ensure: bpf_linker::bpf_linker },
    Step { name: "Debian packages", ensure: apt::packages },
    Step { name: "boringtun-cli", ensure: boringtun::boringtun_cli },
];

pub fn run() -> Result<()> {
    for step in STEPS {
        let progress = Progress { step: step.name };
        match (step.ensure)(&progress) {
            Ok(Outcome { changed: false, detail }) => {
                println!("[setup] {} ... ok (already installed: {detail})", step.name);
            }
            Ok(Outcome { changed: true, detail }) => {
                println!("[setup] {} ... ok (installed: {detail})", step.name);
            }
            Err(error) => {
                println!("[setup] {} ... FAILED", step.name);
                return Err(error.context(format!("setup step `{}` failed", step.name)));
            }
        }
    }
    Ok(())
}
