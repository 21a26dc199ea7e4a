//! How each implementation's daemon is started: in the foreground, inside its namespace, with
//! logging reduced to errors for all of them (a flood of handshakes must not be measured as a
//! flood of log lines).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use gateway_tests::{Netns, find_binary};

use crate::bench::plan::Implementation;

/// The programs the benchmark runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub gatewayd: PathBuf,
    /// The operator CLI `gateway` (`gateway forward` in the entry scenario).
    pub gateway_cli: PathBuf,
    /// `peer-report`: the entry scenario's backend for new connections.
    pub peer_report: PathBuf,
    /// `gateway-bench`: the UDP generator and receiver, the handshake flood, the eBPF
    /// microbenchmark.
    pub tool: PathBuf,
    pub wireguard_go: PathBuf,
    pub boringtun: PathBuf,
}

impl Binaries {
    /// The release binaries under `release_dir` and the reference implementations from PATH.
    pub fn locate(release_dir: &Path) -> Result<Binaries> {
        let built = |name: &str| -> Result<PathBuf> {
            let path = release_dir.join(name);
            anyhow::ensure!(path.is_file(), "{} was not built", path.display());
            Ok(path)
        };
        Ok(Binaries {
            gatewayd: built("gatewayd")?,
            gateway_cli: built("gateway")?,
            peer_report: built("peer-report")?,
            tool: built("gateway-bench")?,
            wireguard_go: find_binary("wireguard-go")?,
            boringtun: find_binary("boringtun-cli")?,
        })
    }
}

/// Options of one daemon beyond its interface name.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// gatewayd-ebpf only: the LAN interface whose traffic is encrypted in XDP and to which
    /// decrypted packets are redirected.
    pub lan_interface: Option<String>,
}

/// The command that runs `implementation` for `ifname` in `netns`, in the foreground.
pub fn command(
    implementation: Implementation,
    binaries: &Binaries,
    netns: &Netns,
    ifname: &str,
    options: &DaemonOptions,
) -> Result<Command> {
    Ok(match implementation {
        Implementation::GatewaydEbpf
        | Implementation::GatewaydEbpfSegments
        | Implementation::GatewaydUserspace => {
            let mut command = netns.command(&binaries.gatewayd);
            command.arg("--foreground").env("LOG_LEVEL", "error");
            if implementation == Implementation::GatewaydUserspace {
                command.arg("--no-ebpf");
            } else if let Some(lan) = &options.lan_interface {
                command.args(["--lan-iface", lan]);
            }
            if implementation == Implementation::GatewaydEbpfSegments {
                command.arg("--no-tun-gso");
            }
            command.arg(ifname);
            command
        }
        // The entry point as people build it today runs its tunnel with wireguard-go.
        Implementation::WireguardGo | Implementation::NftablesNginx => {
            let mut command = netns.command(&binaries.wireguard_go);
            command
                .args(["-f", ifname])
                // Without it wireguard-go refuses to run on kernels with WireGuard built in.
                .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
                .env("LOG_LEVEL", "error");
            command
        }
        Implementation::Boringtun => {
            let mut command = netns.command(&binaries.boringtun);
            command
                .args(["--foreground", "--disable-drop-privileges", "--verbosity", "error"])
                .arg(ifname)
                .env("NO_COLOR", "1");
            command
        }
        Implementation::Plain => anyhow::bail!("plain routing runs no tunnel daemon"),
    })
}
