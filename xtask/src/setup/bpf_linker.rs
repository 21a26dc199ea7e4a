//! bpf-linker, built against the LLVM the nightly rustc itself uses (the eBPF crate's bitcode must
//! be readable by the linker's LLVM). The nightly ships LLVM only as
//! `lib/libLLVM.so.<version>-rust-<release>`; bpf-linker's build wants an LLVM prefix with a
//! `lib/libLLVM.so`, and the binary it produces looks for the versioned name in that prefix at run
//! time (its RUNPATH), so the prefix is a lasting folder of links, not a temporary one.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, anyhow, bail};

use super::{Outcome, Progress, rust};
use crate::run;

/// The nightly's shared LLVM library.
struct NightlyLlvm {
    library: PathBuf,
    file_name: String,
    major: u32,
}

pub fn llvm_prefix(_: &Progress) -> Result<Outcome> {
    let llvm = find_nightly_llvm()?;
    let lib_dir = prefix_dir(llvm.major)?.join("lib");
    fs::create_dir_all(&lib_dir).with_context(|| format!("cannot create {}", lib_dir.display()))?;
    let removed = remove_dangling_links(&lib_dir)?;
    let mut created = Vec::new();
    for link_name in ["libLLVM.so", llvm.file_name.as_str()] {
        let link = lib_dir.join(link_name);
        if fs::read_link(&link).is_ok_and(|target| target == llvm.library) {
            continue;
        }
        if link.symlink_metadata().is_ok() {
            fs::remove_file(&link).with_context(|| format!("cannot replace {}", link.display()))?;
        }
        symlink(&llvm.library, &link).with_context(|| {
            format!("cannot link {} to {}", link.display(), llvm.library.display())
        })?;
        created.push(link_name.to_string());
    }
    let detail = format!("{} -> {}", lib_dir.display(), llvm.library.display());
    if created.is_empty() && removed.is_empty() {
        return Ok(Outcome::present(detail));
    }
    Ok(Outcome::installed(format!(
        "{detail}; linked {}; removed {} stale link(s)",
        created.join(", "),
        removed.len()
    )))
}

pub fn bpf_linker(progress: &Progress) -> Result<Outcome> {
    let problem = match working_version() {
        Ok(version) => return Ok(Outcome::present(version)),
        Err(problem) => problem,
    };
    let llvm = find_nightly_llvm()?;
    let prefix = prefix_dir(llvm.major)?;
    let feature = format!("llvm-{}", llvm.major);
    let mut command = run::cargo();
    // --force: a bpf-linker built against an earlier nightly is still registered with cargo.
    command
        .args(["install", "--locked", "bpf-linker", "--version", rust::pin("bpf-linker")])
        .args(["--no-default-features", "--features", &feature, "--force"])
        .env("LLVM_PREFIX", &prefix);
    let described = format!("LLVM_PREFIX={} {}", prefix.display(), run::describe(&command));
    progress.installing(&format!("{problem:#}"), &described);
    run::status(&mut command, &described).with_context(|| {
        format!(
            "building bpf-linker against the nightly's LLVM {} failed; it needs a C++ toolchain \
             (`apt-get install -y build-essential`) and a bpf-linker release with the `{feature}` \
             feature",
            llvm.major
        )
    })?;
    let version = working_version().context("bpf-linker was installed but does not run")?;
    Ok(Outcome::installed(version))
}

/// `bpf-linker --version`, run without the LD_LIBRARY_PATH rustup gives this process (it must
/// find its LLVM on its own, wherever cargo or aya-build start it); an error unless it is the
/// pinned release.
fn working_version() -> Result<String> {
    let program =
        run::find_program("bpf-linker").ok_or_else(|| anyhow!("bpf-linker is not installed"))?;
    let version =
        run::capture(Command::new(&program).arg("--version").env_remove("LD_LIBRARY_PATH"))
            .context("bpf-linker does not run")?;
    let version = version.trim();
    let pinned = format!("bpf-linker {}", rust::pin("bpf-linker"));
    if version != pinned {
        bail!("found {version}, {pinned} is pinned");
    }
    Ok(format!("{version} ({})", program.display()))
}

fn find_nightly_llvm() -> Result<NightlyLlvm> {
    let toolchain = rust::require_pinned_toolchain()?;
    let sysroot = run::capture(
        Command::new("rustup").args(["run", toolchain, "rustc", "--print", "sysroot"]),
    )?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let entries =
        fs::read_dir(&lib_dir).with_context(|| format!("cannot list {}", lib_dir.display()))?;
    for entry in entries {
        let file_name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(major) = llvm_major(&file_name) {
            return Ok(NightlyLlvm { library: lib_dir.join(&file_name), file_name, major });
        }
    }
    bail!(
        "no libLLVM.so.<version>-rust-* in {}: the nightly should ship its LLVM as a shared library; \
         reinstall it with `rustup toolchain install {toolchain} --force`",
        lib_dir.display()
    )
}

/// `libLLVM.so.22.1-rust-1.97.0-nightly` → 22.
fn llvm_major(file_name: &str) -> Option<u32> {
    let version = file_name.strip_prefix("libLLVM.so.")?;
    if !version.contains("-rust-") {
        return None;
    }
    version.split(['.', '-']).next()?.parse().ok()
}

fn prefix_dir(major: u32) -> Result<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .ok_or_else(|| {
            anyhow!("neither XDG_CACHE_HOME nor HOME is set: cannot place the LLVM prefix")
        })?;
    Ok(cache.join(format!("llvm{major}")))
}

/// Links left behind by an earlier nightly (its versioned library is gone).
fn remove_dangling_links(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let is_link = path.symlink_metadata().is_ok_and(|meta| meta.file_type().is_symlink());
        if is_link && !path.exists() {
            fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::llvm_major;

    #[test]
    fn llvm_major_comes_from_the_versioned_library_name() {
        assert_eq!(llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly"), Some(22));
        assert_eq!(llvm_major("libLLVM.so.19.1-rust-1.84.0-nightly"), Some(19));
        assert_eq!(llvm_major("libLLVM-22-rust-1.97.0-nightly.so"), None);
        assert_eq!(llvm_major("libLLVM.so"), None);
        assert_eq!(llvm_major("libLLVM.so.22.1"), None);
    }
}
