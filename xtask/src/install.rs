//! `cargo xtask install`: the release binaries, the systemd unit and an example
//! configuration, where a service finds them (see dist/ and the README's "Run it as a
//! service"). Each step is one line; `--dry-run` prints them without doing anything.
//!
//! Layout, with `--prefix` (default /usr/local) and `--destdir` (a staging root for packaging:
//! everything goes under it, nothing is reloaded, root is not required):
//!
//! | what | where |
//! |---|---|
//! | gatewayd | PREFIX/sbin/gatewayd |
//! | gateway | PREFIX/bin/gateway |
//! | gatewayd@.service | /etc/systemd/system/gatewayd@.service (its paths under PREFIX) |
//! | wg0.toml | /etc/gateway/ (kept if it exists) |

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::{build, run};

/// The prefix the unit in dist/ is written for.
const UNIT_PREFIX: &str = "/usr/local";
const UNIT_NAME: &str = "gatewayd@.service";

#[derive(Args, Debug)]
pub struct Options {
    /// Where the programs go: PREFIX/sbin, PREFIX/bin.
    #[arg(long, default_value = UNIT_PREFIX)]
    prefix: PathBuf,
    /// Install under this staging root (for packages); no daemon-reload, no root needed.
    #[arg(long)]
    destdir: Option<PathBuf>,
    /// Print what would be done, and do nothing (no build either).
    #[arg(long)]
    dry_run: bool,
    /// Install the binaries already in target/release instead of building them.
    #[arg(long)]
    no_build: bool,
}

/// One thing to put in place.
struct Item {
    /// What is installed (a file in the workspace), or the unit's text rewritten for the prefix.
    source: Source,
    /// Where, on the target system (before DESTDIR).
    target: PathBuf,
    mode: u32,
    /// Left alone if it exists (the operator's configuration).
    keep_existing: bool,
}

enum Source {
    File(PathBuf),
    Text { from: PathBuf, text: String },
}

impl Source {
    fn origin(&self) -> &Path {
        match self {
            Source::File(path) | Source::Text { from: path, .. } => path,
        }
    }
}

pub fn run(options: &Options) -> Result<()> {
    if !options.prefix.is_absolute() {
        bail!("--prefix {} is not an absolute path", options.prefix.display());
    }
    if options.destdir.is_none() && !options.dry_run && !is_root() {
        bail!(
            "installing into / needs root: run it with sudo, or give --destdir for a staging root"
        );
    }
    let root = run::workspace_root();
    // Where cargo put them: CARGO_TARGET_DIR, else the workspace's target/.
    let release = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("release");
    if options.dry_run {
        println!("[install] would build the release binaries (cargo xtask build)");
    } else if options.no_build {
        println!("[install] using the binaries in {}", release.display());
    } else {
        build::run()?;
    }
    let items = plan(&root, &release, &options.prefix)?;
    let stage = |target: &Path| match &options.destdir {
        Some(destdir) => destdir.join(target.strip_prefix("/").unwrap_or(target)),
        None => target.to_path_buf(),
    };
    for item in &items {
        let destination = stage(&item.target);
        if item.keep_existing && destination.exists() {
            println!("[install] keep {} (exists)", destination.display());
            continue;
        }
        let verb = if options.dry_run { "would install" } else { "install" };
        println!(
            "[install] {verb} {} (mode {:04o}, from {})",
            destination.display(),
            item.mode,
            item.source.origin().strip_prefix(&root).unwrap_or(item.source.origin()).display()
        );
        if !options.dry_run {
            install(item, &destination)?;
        }
    }
    reload(options)
}

fn plan(root: &Path, release: &Path, prefix: &Path) -> Result<Vec<Item>> {
    let dist = root.join("dist");
    let unit_path = dist.join("systemd").join(UNIT_NAME);
    let unit = fs::read_to_string(&unit_path)
        .with_context(|| format!("cannot read {}", unit_path.display()))?;
    let prefix_text = prefix.to_str().context("--prefix is not UTF-8")?.trim_end_matches('/');
    // The unit names its programs under /usr/local; a packager's prefix replaces it.
    let unit = unit.replace(&format!("{UNIT_PREFIX}/"), &format!("{prefix_text}/"));
    let program = |source: PathBuf, target: PathBuf| Item {
        source: Source::File(source),
        target,
        mode: 0o755,
        keep_existing: false,
    };
    let config = |name: &str, mode: u32| Item {
        source: Source::File(dist.join("etc/gateway").join(name)),
        target: Path::new("/etc/gateway").join(name),
        mode,
        keep_existing: true,
    };
    Ok(vec![
        program(release.join("gatewayd"), prefix.join("sbin/gatewayd")),
        program(release.join("gateway"), prefix.join("bin/gateway")),
        Item {
            source: Source::Text { from: unit_path, text: unit },
            target: Path::new("/etc/systemd/system").join(UNIT_NAME),
            mode: 0o644,
            keep_existing: false,
        },
        // The private key goes in here: readable by root alone.
        config("wg0.toml", 0o600),
    ])
}

/// Writes the item beside its destination, then renames it over: a running gatewayd's binary
/// is replaced, not rewritten in place ("text file busy").
fn install(item: &Item, destination: &Path) -> Result<()> {
    let directory = destination.parent().context("a destination without a directory")?;
    fs::create_dir_all(directory)
        .with_context(|| format!("cannot create {}", directory.display()))?;
    if directory.ends_with("etc/gateway") {
        fs::set_permissions(directory, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot set the mode of {}", directory.display()))?;
    }
    let file_name = destination.file_name().context("a destination without a name")?;
    let temporary = directory.join(format!(".{}.install", file_name.to_string_lossy()));
    match &item.source {
        Source::File(source) => {
            if !source.is_file() {
                bail!("{} is missing: build it first (cargo xtask build)", source.display());
            }
            fs::copy(source, &temporary).map(|_| ())
        }
        Source::Text { text, .. } => fs::write(&temporary, text),
    }
    .with_context(|| format!("cannot write {}", temporary.display()))?;
    fs::set_permissions(&temporary, fs::Permissions::from_mode(item.mode))
        .with_context(|| format!("cannot set the mode of {}", temporary.display()))?;
    fs::rename(&temporary, destination)
        .with_context(|| format!("cannot move {} into place", destination.display()))
}

/// `systemctl daemon-reload` when systemd manages this machine and the unit went into it.
fn reload(options: &Options) -> Result<()> {
    if options.destdir.is_some() {
        println!("[install] skip systemctl daemon-reload (--destdir: not this machine's system)");
        return Ok(());
    }
    if !Path::new("/run/systemd/system").exists() {
        println!("[install] skip systemctl daemon-reload (systemd is not running here)");
        return Ok(());
    }
    if options.dry_run {
        println!("[install] would run systemctl daemon-reload");
        return Ok(());
    }
    println!("[install] systemctl daemon-reload");
    run::status(Command::new("systemctl").arg("daemon-reload"), "systemctl daemon-reload")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
