//! Our daemon in a namespace: `gatewayd -f <ifname>` with the options a test picks, driven with
//! `wg` like any UAPI daemon ([`WgPeer`], which it dereferences to), and its status socket read
//! into [`gateway::daemon::status::Status`] so tests can check which path carried the traffic.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read as _;
use std::ops::Deref;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use gateway::daemon::status::{self, PathCounters, Status};
use gateway::dataplane::{Capacities, Dataplane};
use gateway_common::maps::Stat;

use crate::wait::Probe;
use crate::wg::WgPeer;
use crate::{Netns, TestDir, guard};

/// Set to a gatewayd binary to test that one instead of the workspace's build.
pub const GATEWAYD_ENV: &str = "GATEWAYD";

const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// Which data path the daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPath {
    /// The eBPF programs, attached with native XDP (`--xdp-mode native`).
    Ebpf,
    /// `--no-ebpf`.
    Userspace,
}

impl fmt::Display for DataPath {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            DataPath::Ebpf => "ebpf",
            DataPath::Userspace => "userspace",
        })
    }
}

#[derive(Debug, Clone)]
pub struct GatewaydOptions {
    pub data_path: DataPath,
    /// Hub and LAN forwarding in XDP (off: `--no-fast-forward`).
    pub fast_forward: bool,
    /// `--test-timer-divisor`: every protocol timer this many times shorter.
    pub timer_divisor: Option<u32>,
    /// `--lan-iface`: LAN ports served in XDP.
    pub lan_ifaces: Vec<String>,
    /// GSO on the tunnel interface (off: `--no-tun-gso`, every TCP segment through the
    /// eBPF send path).
    pub tun_gso: bool,
    /// `--entry-peer`: public keys of peers that bring in traffic from the internet (a second
    /// VPS in front of a home) besides those whose AllowedIPs hold a default route.
    pub entry_peers: Vec<String>,
    /// `--metrics=VALUE`: serve Prometheus metrics ("" for the default, 127.0.0.1:9586).
    pub metrics: Option<String>,
    /// `--masquerade OUTIF`: the host as an exit node out of OUTIF.
    pub masquerade: Option<String>,
    /// `--config FILE`: the interface's configuration file, applied at start.
    pub config: Option<PathBuf>,
}

impl GatewaydOptions {
    pub fn new(data_path: DataPath) -> GatewaydOptions {
        GatewaydOptions {
            data_path,
            fast_forward: true,
            timer_divisor: None,
            lan_ifaces: Vec::new(),
            tun_gso: true,
            entry_peers: Vec::new(),
            metrics: None,
            masquerade: None,
            config: None,
        }
    }

    /// The command-line options (everything but `-f` and the interface name).
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        match self.data_path {
            DataPath::Ebpf => args.extend(["--xdp-mode".to_string(), "native".to_string()]),
            DataPath::Userspace => args.push("--no-ebpf".to_string()),
        }
        if !self.fast_forward {
            args.push("--no-fast-forward".to_string());
        }
        if !self.tun_gso {
            args.push("--no-tun-gso".to_string());
        }
        if let Some(divisor) = self.timer_divisor {
            args.extend(["--test-timer-divisor".to_string(), divisor.to_string()]);
        }
        for lan in &self.lan_ifaces {
            args.extend(["--lan-iface".to_string(), lan.clone()]);
        }
        for peer in &self.entry_peers {
            args.extend(["--entry-peer".to_string(), peer.clone()]);
        }
        // With `=`: a bare `--metrics` would take the interface name after it as its value.
        if let Some(metrics) = &self.metrics {
            args.push(format!("--metrics={metrics}"));
        }
        if let Some(outif) = &self.masquerade {
            args.extend(["--masquerade".to_string(), outif.clone()]);
        }
        if let Some(file) = &self.config {
            args.extend(["--config".to_string(), file.to_string_lossy().into_owned()]);
        }
        args
    }
}

/// The gatewayd binary: [`GATEWAYD_ENV`], else the one cargo built next to this test binary
/// (`target/<profile>/gatewayd`; `cargo test --workspace` and `cargo xtask test` build it), else
/// under `CARGO_TARGET_DIR`.
pub fn gatewayd_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(GATEWAYD_ENV) {
        let path = PathBuf::from(path);
        ensure!(path.is_file(), "{GATEWAYD_ENV}={} is not a file", path.display());
        return Ok(path);
    }
    let mut candidates = Vec::new();
    // A test binary is target/<profile>/deps/<name>-<hash>; a binary of this crate (the demo,
    // the benchmark tools) is target/<profile>/<name>.
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            candidates.push(dir.join("gatewayd"));
        }
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        for profile in ["debug", "release"] {
            candidates.push(PathBuf::from(&target).join(profile).join("gatewayd"));
        }
    }
    if let Some(found) = candidates.iter().find(|path| path.is_file()) {
        return Ok(found.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|path| path.display().to_string()).collect();
    bail!(
        "the gatewayd binary is not built (looked for {}); run `cargo build -p gateway --bins`, \
         `cargo test --workspace` or `cargo xtask test`, or set {GATEWAYD_ENV}",
        looked.join(", ")
    )
}

/// The operator CLI `gateway`, built next to gatewayd.
pub fn gateway_cli_binary() -> Result<PathBuf> {
    let daemon = gatewayd_binary()?;
    let cli = daemon.with_file_name("gateway");
    ensure!(cli.is_file(), "the gateway CLI is not built next to {}", daemon.display());
    Ok(cli)
}

/// A running `gatewayd -f`. Drop stops it (SIGTERM, which removes its interface and sockets).
#[derive(Debug)]
pub struct Gatewayd {
    daemon: WgPeer,
    options: GatewaydOptions,
    status_socket: PathBuf,
}

impl Gatewayd {
    /// Starts gatewayd on `ifname` (use [`crate::unique_ifname`]) in `netns` and waits until
    /// both its UAPI socket and its status socket answer.
    pub fn start(
        netns: &Netns,
        dir: &TestDir,
        ifname: &str,
        options: &GatewaydOptions,
    ) -> Result<Gatewayd> {
        let binary = gatewayd_binary()?;
        let status_socket = status::socket_path(ifname);
        let mut command = netns.command(&binary);
        command.arg("-f").args(options.args()).arg(ifname);
        guard::track_file(&status_socket);
        let daemon = WgPeer::start_command(netns, dir, ifname, &mut command)?;
        let mut gatewayd = Gatewayd { daemon, options: options.clone(), status_socket };
        let what = format!("gatewayd {ifname} to answer on its status socket");
        let status = dir.wait_for(&what, STATUS_TIMEOUT, || {
            gatewayd.daemon.process().check_running()?;
            Ok(match gatewayd.status() {
                Ok(status) => Probe::Ready(status),
                Err(error) => Probe::NotYet(format!("{error:#}")),
            })
        })?;
        let wanted = options.data_path.to_string();
        if status.data_path != wanted {
            return Err(dir.attach_logs(anyhow::anyhow!(
                "gatewayd {ifname} runs the {} data path, not {wanted}",
                status.data_path
            )));
        }
        Ok(gatewayd)
    }

    pub fn options(&self) -> &GatewaydOptions {
        &self.options
    }

    pub fn status_socket(&self) -> &Path {
        &self.status_socket
    }

    /// The daemon's status document, parsed.
    pub fn status(&self) -> Result<Status> {
        read_status(&self.status_socket)
    }

    /// What `gateway status <ifname> [--json]` prints.
    pub fn cli_status(&self, json: bool) -> Result<String> {
        let mut command = std::process::Command::new(gateway_cli_binary()?);
        command.args(["status", self.ifname()]);
        if json {
            command.arg("--json");
        }
        crate::command::run(&mut command)
    }

    /// The eBPF programs' counters now (all zero without eBPF).
    pub fn ebpf_stats(&self) -> Result<EbpfStats> {
        Ok(EbpfStats(self.status()?.ebpf_stats))
    }

    /// What each path carried for the peer with this public key.
    pub fn peer_counters(&self, public_key: &str) -> Result<PeerPaths> {
        let status = self.status()?;
        let peer = status
            .peers
            .iter()
            .find(|peer| peer.public_key == public_key)
            .with_context(|| format!("no peer {public_key} in gatewayd's status"))?;
        Ok(PeerPaths { userspace: peer.userspace, ebpf: peer.ebpf })
    }

    /// An error with the daemon's log if it is no longer running.
    pub fn check_running(&mut self) -> Result<()> {
        self.daemon.process().check_running()
    }

    /// Waits (up to `timeout`) for the daemon to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.daemon.process().wait_exit(timeout)
    }

    /// Sends `signal` to the daemon and waits (up to `timeout`) for it to exit.
    pub fn signal_and_wait(&mut self, signal: i32, timeout: Duration) -> Result<ExitStatus> {
        let process = self.daemon.process();
        process.signal(signal);
        process.wait_exit(timeout)
    }
}

impl Deref for Gatewayd {
    type Target = WgPeer;

    fn deref(&self) -> &WgPeer {
        &self.daemon
    }
}

impl Drop for Gatewayd {
    fn drop(&mut self) {
        self.daemon.process().stop();
        // A daemon that had to be killed leaves its status socket.
        let _ = std::fs::remove_file(&self.status_socket);
        guard::untrack_file(&self.status_socket);
    }
}

/// One JSON document from a gatewayd status socket.
pub fn read_status(socket: &Path) -> Result<Status> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    stream.set_read_timeout(Some(STATUS_TIMEOUT))?;
    let mut json = String::new();
    stream.read_to_string(&mut json).with_context(|| format!("reading {}", socket.display()))?;
    serde_json::from_str(&json).with_context(|| format!("parsing the status document {json:?}"))
}

/// The userspace and eBPF counters of one peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerPaths {
    pub userspace: PathCounters,
    pub ebpf: PathCounters,
}

/// The programs' `STATS` by reason, as the status socket names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EbpfStats(pub BTreeMap<String, u64>);

impl EbpfStats {
    pub fn get(&self, stat: Stat) -> u64 {
        self.0.get(&format!("{stat:?}")).copied().unwrap_or(0)
    }

    /// The growth of every counter since `earlier`.
    pub fn since(&self, earlier: &EbpfStats) -> EbpfStats {
        EbpfStats(
            self.0
                .iter()
                .map(|(name, value)| {
                    let before = earlier.0.get(name).copied().unwrap_or(0);
                    (name.clone(), value.wrapping_sub(before))
                })
                .collect(),
        )
    }

    /// Whether every counter is zero (or there are none: no eBPF).
    pub fn all_zero(&self) -> bool {
        self.0.values().all(|&value| value == 0)
    }

    /// `Name=value` for the counters that are not zero, for messages.
    pub fn nonzero(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .filter(|&(_, &value)| value != 0)
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        if parts.is_empty() { "(all zero)".to_string() } else { parts.join(" ") }
    }
}

/// The data plane's `xdp_pass` program attached to a veth end, detached on drop. A veth
/// receives the frames its peer's XDP program sends back out (XDP_TX) only when it runs an
/// XDP program itself: GRO alone queues them without waking the receiver.
pub struct XdpPass {
    device: String,
    _dataplane: Dataplane,
}

impl XdpPass {
    pub fn attach(netns: &Netns, device: &str) -> Result<XdpPass> {
        let capacities = Capacities { sessions: 1, peers: 1, allowed_ips: 1 };
        let mut dataplane = Dataplane::load(capacities)
            .map_err(|error| anyhow::anyhow!("loading the eBPF object for xdp_pass: {error}"))?;
        {
            let _inside = netns.enter()?;
            dataplane.attach_xdp_pass(device).map_err(|error| {
                anyhow::anyhow!("attaching xdp_pass to {device} in {}: {error}", netns.name())
            })?;
        }
        Ok(XdpPass { device: device.to_string(), _dataplane: dataplane })
    }
}

impl fmt::Debug for XdpPass {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "XdpPass({})", self.device)
    }
}

/// A BPF link a process holds (from `/proc/<pid>/fdinfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfLink {
    pub id: u32,
    /// `xdp`, `tcx`, ...
    pub kind: String,
    pub program_id: u32,
}

/// Every BPF link `pid` holds open.
pub fn bpf_links_of(pid: u32) -> Result<Vec<BpfLink>> {
    let folder = format!("/proc/{pid}/fdinfo");
    let mut links = Vec::new();
    for entry in std::fs::read_dir(&folder).with_context(|| format!("cannot list {folder}"))? {
        // A descriptor closed meanwhile is simply not a link any more.
        let Ok(info) = std::fs::read_to_string(entry?.path()) else { continue };
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|value| value.trim_start_matches(':').trim().to_string())
        };
        if let (Some(kind), Some(id), Some(program_id)) =
            (field("link_type"), field("link_id"), field("prog_id"))
        {
            links.push(BpfLink { id: id.parse()?, kind, program_id: program_id.parse()? });
        }
    }
    Ok(links)
}

impl Gatewayd {
    /// The BPF links the daemon holds: its attached programs.
    pub fn bpf_links(&mut self) -> Result<Vec<BpfLink>> {
        let pid = self.daemon.process().pid();
        bpf_links_of(pid)
    }
}

/// What a stopped gatewayd left behind: its interface in `netns`, its UAPI and status
/// sockets, any of `links` (its programs' attachments, from [`Gatewayd::bpf_links`]) still in
/// the kernel, and any XDP program or legacy TC filter attached in the namespace (gatewayd is
/// the only thing that attaches programs in the namespaces the tests give it). Empty when it
/// cleaned up.
pub fn leftovers(netns: &Netns, ifname: &str, links: &[BpfLink]) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let interfaces = netns.ip(&["-o", "link", "show"])?;
    for line in interfaces.lines() {
        let name = line.split(':').nth(1).unwrap_or_default().trim();
        let name = name.split('@').next().unwrap_or_default();
        if name == ifname {
            found.push(format!("interface {ifname} in {}", netns.name()));
        }
        if line.contains("prog/xdp") || line.contains(" xdp") {
            found.push(format!("an XDP program on {name} in {}", netns.name()));
        }
    }
    let uapi = PathBuf::from(crate::wg::UAPI_DIR).join(format!("{ifname}.sock"));
    for socket in [uapi, status::socket_path(ifname)] {
        if socket.exists() {
            found.push(format!("socket {}", socket.display()));
        }
    }
    for link in links {
        let shown = std::process::Command::new("bpftool")
            .args(["link", "show", "id", &link.id.to_string()])
            .output()
            .context("running bpftool")?;
        if shown.status.success() {
            found.push(format!("{} link {} (program {})", link.kind, link.id, link.program_id));
        }
    }
    let listing = netns.run("bpftool", &["-j", "net", "show"])?;
    let attached: serde_json::Value = serde_json::from_str(&listing)
        .with_context(|| format!("parsing `bpftool -j net show`: {listing}"))?;
    for section in attached.as_array().into_iter().flatten() {
        for kind in ["xdp", "tc"] {
            for program in section.get(kind).and_then(|list| list.as_array()).into_iter().flatten()
            {
                found.push(format!("{kind} attachment {program}"));
            }
        }
    }
    Ok(found)
}

/// A gatewayd that detached (started by wg-quick or `gateway up`), found by its command
/// line; SIGTERM on drop if it is still there (a failed test must not leave it running in a
/// namespace being deleted).
pub struct DetachedGatewayd {
    pub pid: u32,
}

impl DetachedGatewayd {
    /// The gatewayd process whose last argument is `ifname`, if one runs.
    pub fn find(ifname: &str) -> Result<Option<DetachedGatewayd>> {
        for entry in std::fs::read_dir("/proc")? {
            let entry = entry?;
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(command_line) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let words: Vec<&[u8]> =
                command_line.split(|&byte| byte == 0).filter(|w| !w.is_empty()).collect();
            let program =
                words.first().map(|w| Path::new(std::str::from_utf8(w).unwrap_or_default()));
            if program.is_some_and(|p| p.file_name().is_some_and(|name| name == "gatewayd"))
                && words.last() == Some(&ifname.as_bytes())
            {
                return Ok(Some(DetachedGatewayd { pid }));
            }
        }
        Ok(None)
    }

    pub fn alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

impl Drop for DetachedGatewayd {
    fn drop(&mut self) {
        if self.alive() {
            // SAFETY: a plain syscall on the pid of the daemon this test started.
            unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        }
    }
}
