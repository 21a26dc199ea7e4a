//! A userspace WireGuard peer (wireguard-go or boringtun-cli) running in a namespace, configured
//! through its UAPI socket with `wg`.

use std::fmt;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use super::WgDump;
use crate::netns::netns_command;
use crate::wait::Probe;
use crate::{Netns, Process, TestDir, command, guard, require};

/// Shared by every namespace: interface names must be unique machine-wide.
pub const UAPI_DIR: &str = "/var/run/wireguard";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implementation {
    WireguardGo,
    Boringtun,
}

impl Implementation {
    fn program(self) -> &'static str {
        match self {
            Implementation::WireguardGo => "wireguard-go",
            Implementation::Boringtun => "boringtun-cli",
        }
    }
}

impl fmt::Display for Implementation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.program())
    }
}

/// A running peer. Drop stops the daemon (which removes its interface) and its UAPI socket.
#[derive(Debug)]
pub struct WgPeer {
    command_line: String,
    netns: String,
    ifname: String,
    config_path: PathBuf,
    process: Process,
}

impl WgPeer {
    /// Starts `implementation` on interface `ifname` (use [`crate::unique_ifname`]) in `netns`,
    /// logging to `{ifname}.log` in `dir`, and waits for its UAPI socket.
    pub fn start(
        implementation: Implementation,
        netns: &Netns,
        dir: &TestDir,
        ifname: &str,
    ) -> Result<WgPeer> {
        let program = require::find_binary(implementation.program())?;
        let mut command = netns.command(&program);
        match implementation {
            Implementation::WireguardGo => {
                command
                    .arg("-f")
                    .arg(ifname)
                    // Without it wireguard-go refuses to run on kernels with WireGuard built in.
                    .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
                    .env("LOG_LEVEL", "verbose");
            }
            Implementation::Boringtun => {
                command
                    .args(["--foreground", "--disable-drop-privileges", "--verbosity", "info"])
                    .arg(ifname)
                    // Plain text in the log file, not terminal colours.
                    .env("NO_COLOR", "1");
            }
        }
        WgPeer::start_command(netns, dir, ifname, &mut command)
    }

    /// Starts any daemon that serves the cross-platform UAPI socket for `ifname` (gatewayd
    /// included): `command` must run it in the foreground inside `netns` (see
    /// [`Netns::command`]). Waits for the socket; the daemon's output goes to `{ifname}.log`.
    pub fn start_command(
        netns: &Netns,
        dir: &TestDir,
        ifname: &str,
        command: &mut Command,
    ) -> Result<WgPeer> {
        require::require_tools(&["wg"])?;
        let socket = uapi_socket(ifname);
        if socket.exists() {
            bail!("{} already exists: interface name {ifname} is in use", socket.display());
        }
        let command_line = command::describe(command);
        let process = Process::spawn(dir, ifname, command)?;
        guard::track_file(&socket);
        let mut peer = WgPeer {
            command_line,
            netns: netns.name().to_string(),
            ifname: ifname.to_string(),
            config_path: dir.file(&format!("{ifname}.conf")),
            process,
        };
        let what = format!("`{}` to create {}", peer.command_line, socket.display());
        dir.wait_for(&what, STARTUP_TIMEOUT, || {
            peer.process.check_running()?;
            Ok(if socket.exists() { Probe::Ready(()) } else { Probe::NotYet("no socket".into()) })
        })?;
        Ok(peer)
    }

    /// How the daemon was started.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    pub fn uapi_socket(&self) -> PathBuf {
        uapi_socket(&self.ifname)
    }

    /// `wg setconf` with a config in wg(8) format (`[Interface]`, `[Peer]`; no wg-quick keys
    /// such as `Address`). The file is kept in the test folder.
    pub fn setconf(&self, config: &str) -> Result<()> {
        fs::write(&self.config_path, config)
            .with_context(|| format!("cannot write {}", self.config_path.display()))?;
        let path = self.config_path.to_string_lossy();
        self.wg(&["setconf", &self.ifname, &path])
            .with_context(|| format!("applying this config to {}:\n{config}", self.ifname))
            .map(drop)
    }

    /// `wg set <ifname> args...`, e.g. `["peer", key, "endpoint", "192.0.2.1:51820"]`.
    pub fn set(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["set", self.ifname.as_str()];
        all.extend_from_slice(args);
        self.wg(&all).map(drop)
    }

    /// `wg show <ifname> dump`, parsed.
    pub fn show(&self) -> Result<WgDump> {
        let text = self.wg(&["show", &self.ifname, "dump"])?;
        WgDump::parse(&text)
            .with_context(|| format!("parsing `wg show {} dump`:\n{text}", self.ifname))
    }

    /// One raw request on the UAPI socket (e.g. `"set=1\nlisten_port=70000\n\n"`), for what
    /// `wg` refuses to send; returns the reply up to its closing blank line.
    pub fn uapi_request(&self, request: &str) -> Result<String> {
        let socket = self.uapi_socket();
        let mut stream = UnixStream::connect(&socket)
            .with_context(|| format!("cannot connect to {}", socket.display()))?;
        stream.set_read_timeout(Some(STARTUP_TIMEOUT))?;
        stream.write_all(request.as_bytes())?;
        let mut reply = Vec::new();
        let mut buffer = [0u8; 4096];
        while !reply.ends_with(b"\n\n") {
            let count = stream
                .read(&mut buffer)
                .with_context(|| format!("reading the reply to {request:?}"))?;
            if count == 0 {
                break;
            }
            reply.extend_from_slice(&buffer[..count]);
        }
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    /// Addresses (with their prefix lengths), MTU, link up: what wg-quick would do before routes.
    pub fn bring_up(&self, addresses: &[(IpAddr, u8)], mtu: u32) -> Result<()> {
        let netns = NetnsRef(&self.netns);
        for &(address, prefix_len) in addresses {
            let cidr = format!("{address}/{prefix_len}");
            let mut args = vec!["address", "add", &cidr, "dev", &self.ifname];
            if address.is_ipv6() {
                args.push("nodad");
            }
            netns.ip(&args)?;
        }
        netns.ip(&["link", "set", &self.ifname, "mtu", &mtu.to_string(), "up"]).map(drop)
    }

    fn wg(&self, args: &[&str]) -> Result<String> {
        command::run(netns_command(&self.netns, "wg").args(args))
    }
}

impl Drop for WgPeer {
    fn drop(&mut self) {
        self.process.stop();
        // wireguard-go removes its socket on SIGTERM; a killed daemon leaves it.
        let socket = self.uapi_socket();
        let _ = fs::remove_file(&socket);
        guard::untrack_file(&socket);
    }
}

fn uapi_socket(ifname: &str) -> PathBuf {
    PathBuf::from(UAPI_DIR).join(format!("{ifname}.sock"))
}

/// `ip -n` on a namespace the peer knows only by name.
struct NetnsRef<'a>(&'a str);

impl NetnsRef<'_> {
    fn ip(&self, args: &[&str]) -> Result<String> {
        command::run(Command::new("ip").args(["-n", self.0]).args(args))
    }
}
