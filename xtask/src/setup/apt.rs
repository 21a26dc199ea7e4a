//! The Debian packages the tests and demo drive: namespaces and links (iproute2), NAT (nftables),
//! traffic (iperf3, ping, ncat), the reference WireGuard peer and its tools, eBPF inspection,
//! and what the public entry point's tests and benchmark need: clients (curl, `openssl
//! s_client`), TLS servers (`openssl s_server`), nginx with its `stream` module (the
//! `ssl_preread` baseline people run today) and `dig` (the README's checks).

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::{Outcome, Progress};
use crate::run;

const PACKAGES: &[&str] = &[
    "iproute2",
    "nftables",
    "iperf3",
    "wireguard-tools",
    "wireguard-go",
    "iputils-ping",
    "ncat",
    "bpftool",
    "ethtool",
    "procps",
    "curl",
    "openssl",
    "nginx",
    "libnginx-mod-stream",
    "bind9-dnsutils",
];

pub fn packages(progress: &Progress) -> Result<Outcome> {
    let missing = missing_packages()?;
    if missing.is_empty() {
        return Ok(Outcome::present(installed_versions()?));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "missing Debian packages: {}; install them as root: \
             `apt-get install -y --no-install-recommends {}`",
            missing.join(" "),
            missing.join(" ")
        );
    }
    progress.installing(&format!("missing {}", missing.join(", ")), "apt-get update");
    run::status(
        Command::new("apt-get").arg("update").env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get update",
    )
    .context("check network access to the Debian mirrors in /etc/apt/sources.list*")?;
    // --no-install-recommends: wireguard-tools otherwise pulls in a kernel image.
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    let described = run::describe(&install);
    progress.installing(&format!("missing {}", missing.join(", ")), &described);
    run::status(&mut install, &described)?;
    if missing.contains(&"nginx") {
        stop_system_nginx()?;
    }
    let still_missing = missing_packages()?;
    if !still_missing.is_empty() {
        bail!("apt-get succeeded but {} are still not installed", still_missing.join(", "));
    }
    Ok(Outcome::installed(format!("{}; now {}", missing.join(", "), installed_versions()?)))
}

/// The tests and the benchmark run nginx in their own namespaces with configs of their own; the
/// system service Debian starts (and enables) when it installs nginx would only hold port 80 of
/// the machine. Stopped and disabled right after installing it, never when nginx was already
/// there (that one is the operator's).
fn stop_system_nginx() -> Result<()> {
    // Only under systemd: in containers nothing was started (policy-rc.d forbids it).
    if !std::path::Path::new("/run/systemd/system").exists() {
        return Ok(());
    }
    let mut disable = Command::new("systemctl");
    disable.args(["disable", "--now", "nginx"]);
    let described = run::describe(&disable);
    run::status(&mut disable, &described)
        .context("stopping the nginx service Debian started on install")
}

/// `package version` for every package, for the record of what a run used.
fn installed_versions() -> Result<String> {
    let mut versions = Vec::new();
    for &package in PACKAGES {
        let version = installed_version(package)?.unwrap_or_else(|| "not installed".into());
        versions.push(format!("{package} {version}"));
    }
    Ok(versions.join(", "))
}

fn missing_packages() -> Result<Vec<&'static str>> {
    let mut missing = Vec::new();
    for &package in PACKAGES {
        if !is_installed(package)? {
            missing.push(package);
        }
    }
    Ok(missing)
}

fn is_installed(package: &str) -> Result<bool> {
    Ok(installed_version(package)?.is_some())
}

fn installed_version(package: &str) -> Result<Option<String>> {
    let output = Command::new("dpkg-query")
        .args(["--show", "--showformat=${db:Status-Abbrev} ${Version}", package])
        .output()
        .context("cannot run dpkg-query: this setup expects Debian (bookworm) or a derivative")?;
    // Unknown packages make dpkg-query fail; "ii" is "wanted: install, state: installed".
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(match text.split_once(' ') {
        Some((status, version)) if output.status.success() && status.starts_with("ii") => {
            Some(version.trim().to_string())
        }
        _ => None,
    })
}
