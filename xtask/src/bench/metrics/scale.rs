//! Scale: the cost of many configured peers, of a large `wg setconf`, and the rate at which a
//! responder completes handshakes.
//!
//! - extra peers: random keys (derived from a random seed) with one /32 each from 10.100.0.0,
//!   added to both tunnel ends with `wg addconf`;
//! - `wg setconf` of 130 000 allowed IPs: 1 000 peers with 130 consecutive /32s each from
//!   10.128.0.0, replacing a config without peers; the wall time of the `wg` command (which
//!   returns once the daemon has applied it), measured in the server's namespace;
//! - handshakes: `gateway-bench handshakes` in the client's namespace against the server,
//!   configured with the flood's peers (see `tests/src/bin/gateway-bench/handshakes.rs`); new
//!   peers for every repetition, so each starts from the same state (no handshake history, no
//!   remembered endpoints).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use gateway_tests::{Netns, TestDir};

use crate::bench::tool::{self, number};
use crate::bench::tunnel::{LISTEN_PORT, Tunnel};

const SERVER: &str = "server";

/// A seed for peer keys that differs from run to run.
pub fn random_seed() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    now.as_nanos() as u64 ^ u64::from(std::process::id()) << 40
}

/// `[Peer]` sections from `gateway-bench peers`.
fn peer_sections(
    tool_path: &Path,
    peers: u32,
    seed: u64,
    per_peer: u32,
    first: &str,
) -> Result<String> {
    tool::run_text(
        tool_path,
        &[
            "peers".into(),
            "--peers".into(),
            peers.to_string(),
            "--seed".into(),
            seed.to_string(),
            "--allowed-ips-per-peer".into(),
            per_peer.to_string(),
            "--allowed-ips-from".into(),
            first.into(),
        ],
    )
}

fn write(dir: &TestDir, name: &str, text: &str) -> Result<PathBuf> {
    let path = dir.file(name);
    fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Adds `count` peers with a /32 each to both ends of the direct tunnel.
pub fn add_extra_peers(tool_path: &Path, tunnel: &Tunnel, dir: &TestDir, count: u32) -> Result<()> {
    let sections = peer_sections(tool_path, count, random_seed(), 1, "10.100.0.0")?;
    let path = write(dir, "extra-peers.conf", &sections)?;
    let path = path.to_string_lossy();
    for role in [SERVER, "client"] {
        let ifname = tunnel.endpoint(role)?.daemon.ifname().to_string();
        tunnel.wg(role, &["addconf", &ifname, &path]).with_context(|| {
            format!("adding {count} peers to the {role} ({})", tunnel.implementation)
        })?;
    }
    Ok(())
}

/// The server's interface section alone: a config that removes every peer.
fn interface_only(tunnel: &Tunnel) -> Result<String> {
    let keys = &tunnel.endpoint(SERVER)?.keys;
    Ok(format!("[Interface]\nPrivateKey = {}\nListenPort = {LISTEN_PORT}\n\n", keys.private_key))
}

/// The two configs of the setconf measurement: without peers, and with `peers` × `per_peer`
/// allowed IPs.
pub struct SetconfFiles {
    empty: PathBuf,
    large: PathBuf,
}

pub fn setconf_files(
    tool_path: &Path,
    tunnel: &Tunnel,
    dir: &TestDir,
    peers: u32,
    per_peer: u32,
) -> Result<SetconfFiles> {
    let interface = interface_only(tunnel)?;
    let sections = peer_sections(tool_path, peers, random_seed(), per_peer, "10.128.0.0")?;
    Ok(SetconfFiles {
        empty: write(dir, "setconf-empty.conf", &interface)?,
        large: write(dir, "setconf-large.conf", &format!("{interface}{sections}"))?,
    })
}

/// Seconds one `wg setconf` of the large config takes on the server (after an untimed one
/// that empties it).
pub fn setconf_seconds(tunnel: &Tunnel, files: &SetconfFiles) -> Result<f64> {
    let ifname = tunnel.endpoint(SERVER)?.daemon.ifname().to_string();
    tunnel.wg(SERVER, &["setconf", &ifname, &files.empty.to_string_lossy()])?;
    let started = Instant::now();
    tunnel.wg(SERVER, &["setconf", &ifname, &files.large.to_string_lossy()])?;
    Ok(started.elapsed().as_secs_f64())
}

pub struct Flood<'a> {
    pub tool: &'a Path,
    /// Where the flood is sent from.
    pub source: &'a Netns,
    pub target: String,
    pub server_public: String,
    pub peers: u32,
    pub initiations: u32,
    pub duration_ms: u64,
}

pub struct FloodRun {
    pub per_second: f64,
    pub sent: f64,
    pub responses: f64,
    pub cookie_replies: f64,
    pub lost: f64,
}

impl FloodRun {
    pub fn describe(&self) -> String {
        format!(
            "{:.0} handshakes/s ({} initiations, {} responses, {} cookie replies, {} lost)",
            self.per_second, self.sent, self.responses, self.cookie_replies, self.lost
        )
    }
}

impl Flood<'_> {
    /// Replaces the server's peers with a new set of flood peers, then floods as them.
    pub fn run(&self, tunnel: &Tunnel, dir: &TestDir) -> Result<FloodRun> {
        let seed = random_seed();
        self.configure(tunnel, dir, seed)?;
        let report = tool::run_json(
            self.tool,
            Some(self.source),
            &[
                "handshakes".into(),
                "--target".into(),
                self.target.clone(),
                "--server-public".into(),
                self.server_public.clone(),
                "--peers".into(),
                self.peers.to_string(),
                "--seed".into(),
                seed.to_string(),
                "--initiations".into(),
                self.initiations.to_string(),
                "--duration-ms".into(),
                self.duration_ms.to_string(),
            ],
        )?;
        Ok(FloodRun {
            per_second: number(&report, "handshakes_per_second")?,
            sent: number(&report, "sent")?,
            responses: number(&report, "responses")?,
            cookie_replies: number(&report, "cookie_replies")?,
            lost: number(&report, "lost")?,
        })
    }

    fn configure(&self, tunnel: &Tunnel, dir: &TestDir, seed: u64) -> Result<()> {
        let sections = peer_sections(self.tool, self.peers, seed, 0, "10.128.0.0")?;
        let path = write(dir, "flood.conf", &format!("{}{sections}", interface_only(tunnel)?))?;
        let ifname = tunnel.endpoint(SERVER)?.daemon.ifname().to_string();
        tunnel.wg(SERVER, &["setconf", &ifname, &path.to_string_lossy()]).map(drop)
    }
}
