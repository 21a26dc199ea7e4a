//! The status socket: `/var/run/gatewayd/<ifname>.sock` answers every connection with one JSON
//! document — which data path is active, what each path carried per peer, what the eBPF
//! programs did with packets, and the entry point's forwards and flows. `gateway status`
//! reads it; so do the tests and the demo. The metrics endpoint reads the same [`Snapshot`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;

use super::core::Shared;
use super::forwards::EntryPoint;
use crate::entry::store::ForwardRecord;
use crate::entry::traffic::TrafficCount;
use crate::wg::device::HandshakeCounts;

pub const STATUS_DIRECTORY: &str = "/var/run/gatewayd";

pub fn socket_path(interface: &str) -> PathBuf {
    Path::new(STATUS_DIRECTORY).join(format!("{interface}.sock"))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub interface: String,
    pub listen_port: u16,
    /// "ebpf" or "userspace".
    pub data_path: String,
    /// Each program as the kernel's verifier took it: its cost, or why it was refused and
    /// what runs instead (empty without eBPF).
    #[serde(default)]
    pub programs: Vec<String>,
    /// Where the programs are attached, e.g. "eth0: xdp (native)".
    pub attachments: Vec<String>,
    pub peers: Vec<PeerStatus>,
    /// What the eBPF programs did with packets, by reason (empty without eBPF).
    pub ebpf_stats: BTreeMap<String, u64>,
    /// Packets the userspace path dropped, by reason.
    pub userspace_drops: BTreeMap<String, u64>,
    /// Handshake messages the userspace path handled.
    #[serde(default)]
    pub handshakes: HandshakeCounts,
    /// The public entry point (`gateway forward`).
    #[serde(default)]
    pub entry: EntryStatus,
}

/// The entry point: its forwards, and what the data plane holds for them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EntryStatus {
    /// As `gateway forward list --json` prints them.
    pub forwards: Vec<ForwardRecord>,
    #[serde(default)]
    pub dataplane: EntryDataplane,
    /// What each forward carried, by the path that carried it.
    #[serde(default)]
    pub traffic: Vec<ForwardTrafficStatus>,
}

/// What one forward carried on one path.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ForwardTrafficStatus {
    /// The forward's selector as `forward remove` takes it, e.g. `tls 443 --sni a.example`.
    pub forward: String,
    /// `proxy`: the daemon's proxy (bytes of transport payload; for udp, connections are
    /// clients). `ebpf`: the programs (bytes of IP packets; connections are flows).
    pub path: String,
    #[serde(flatten)]
    pub count: TrafficCount,
}

pub const PATH_PROXY: &str = "proxy";
pub const PATH_EBPF: &str = "ebpf";

/// What the entry point's part of the data plane holds (without eBPF: only what the daemon
/// translates itself).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EntryDataplane {
    /// The programs translate tcp and udp forwards (else the proxy carries them).
    pub forwards_in_ebpf: bool,
    /// Proxied connections reach their backend with the client's address (else with ours).
    pub proxy_steering: bool,
    /// `ENTRY_FORWARDS` slots in use.
    pub forward_slots: usize,
    /// Forwarded flows the programs remember (`ENTRY_FLOWS`), counted up to
    /// `ebpf::FLOWS_COUNTED_UP_TO`.
    pub forwarded_flows: usize,
    /// Flows behind an entry point whose replies go back to it (`REPLY_TO`), counted up to
    /// `ebpf::FLOWS_COUNTED_UP_TO`.
    pub reply_to_flows: usize,
    /// Proxied connections steered now (`PROXY_FLOWS`, two entries each; without eBPF, the
    /// daemon's tables).
    pub proxied_connections: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerStatus {
    pub public_key: String,
    /// The operator's name for it (`name` in the configuration file), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub endpoint: Option<String>,
    /// An entry point: its packets may carry public sources (see `wg::device::entry`).
    #[serde(default)]
    pub entry_point: bool,
    pub userspace: PathCounters,
    pub ebpf: PathCounters,
    /// What the userspace path dropped that was about this peer, by reason.
    #[serde(default)]
    pub userspace_drops: BTreeMap<String, u64>,
}

/// Message bytes (UDP payload) and packets one path carried for a peer.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PathCounters {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// Binds the status socket, replacing a stale one. The returned guard removes it on drop.
pub fn bind(interface: &str) -> std::io::Result<(UnixListener, SocketGuard)> {
    std::fs::create_dir_all(STATUS_DIRECTORY)?;
    let path = socket_path(interface);
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    listener.set_nonblocking(true)?;
    Ok((UnixListener::from_std(listener)?, SocketGuard(path)))
}

pub struct SocketGuard(PathBuf);

impl SocketGuard {
    /// Removes `path` when dropped.
    pub fn new(path: PathBuf) -> SocketGuard {
        SocketGuard(path)
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    entry: Arc<EntryPoint>,
    interface: String,
    names: super::config_file::PeerNames,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let shared = Arc::clone(&shared);
        let entry = Arc::clone(&entry);
        let interface = interface.clone();
        let names = Arc::clone(&names);
        tokio::spawn(async move {
            let status = tokio::task::spawn_blocking(move || {
                let mut status = snapshot(&shared, &entry, interface).status;
                let names = names.read().unwrap_or_else(|e| e.into_inner());
                for peer in &mut status.peers {
                    let key = crate::uapi::Key::from_base64(&peer.public_key).ok();
                    peer.name = key.and_then(|key| names.get(&key).cloned());
                }
                status
            })
            .await;
            if let Ok(status) = status
                && let Ok(json) = serde_json::to_vec_pretty(&status)
            {
                let _ = stream.write_all(&json).await;
                let _ = stream.shutdown().await;
            }
        });
    }
}

/// The daemon's state at one moment, read under its lock once: the status document, and what
/// the metrics endpoint (`crate::metrics`) needs beside it. The lock is released on return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub status: Status,
    /// Each peer's last completed handshake (wall clock), in the order of `status.peers`.
    pub last_handshakes: Vec<Option<SystemTime>>,
}

pub fn snapshot(shared: &Shared, entry: &EntryPoint, interface: String) -> Snapshot {
    let forwards_table = entry.table();
    let forwards = forwards_table.forwards().iter().map(ForwardRecord::from).collect();
    let core = shared.lock();
    let device = &core.device;
    let mut ids: Vec<_> = device.peer_ids().collect();
    ids.sort();
    let (peers, last_handshakes) = ids
        .into_iter()
        .filter_map(|id| {
            let p = device.snapshot_peer(id)?;
            let ebpf = core.sink.as_ref().map(|s| s.path_counters(id)).unwrap_or_default();
            let status = PeerStatus {
                public_key: crate::uapi::Key(p.public_key).to_base64(),
                name: None,
                endpoint: p.endpoint.map(|e| e.to_string()),
                entry_point: device.is_entry_peer(id),
                userspace: PathCounters {
                    rx_bytes: p.rx_bytes,
                    tx_bytes: p.tx_bytes,
                    rx_packets: p.rx_packets,
                    tx_packets: p.tx_packets,
                },
                ebpf,
                userspace_drops: device
                    .peer_drops(id)
                    .into_iter()
                    .flatten()
                    .map(|(reason, count)| (format!("{reason:?}"), *count))
                    .collect(),
            };
            Some((status, p.last_handshake))
        })
        .unzip();
    let (data_path, programs, attachments, ebpf_stats) = match core.sink.as_ref() {
        Some(sink) => ("ebpf".to_string(), sink.programs(), sink.attachments(), sink.stats()),
        None => ("userspace".to_string(), Vec::new(), Vec::new(), BTreeMap::new()),
    };
    let status = Status {
        interface,
        listen_port: device.listen_port(),
        data_path,
        programs,
        attachments,
        peers,
        ebpf_stats,
        userspace_drops: device.drops().iter().map(|(k, v)| (format!("{k:?}"), *v)).collect(),
        handshakes: device.handshake_counts(),
        entry: EntryStatus {
            forwards,
            dataplane: match core.sink.as_ref() {
                Some(sink) => sink.entry_status(),
                // The daemon carries every packet, and translates proxied connections itself.
                None => EntryDataplane {
                    proxy_steering: true,
                    proxied_connections: shared.proxy_nat.connections(),
                    ..EntryDataplane::default()
                },
            },
            traffic: forward_traffic(&core, entry, &forwards_table),
        },
    };
    Snapshot { status, last_handshakes }
}

/// What each forward carried: through the proxy (counted by the daemon), then in the
/// programs (their `ENTRY_TRAFFIC`, by the forward's pieces).
fn forward_traffic(
    core: &super::core::Core,
    entry: &EntryPoint,
    table: &crate::entry::table::ForwardTable,
) -> Vec<ForwardTrafficStatus> {
    let proxied = entry.traffic().snapshot().into_iter().map(|(selector, count)| {
        ForwardTrafficStatus { forward: selector.to_string(), path: PATH_PROXY.to_string(), count }
    });
    let in_programs =
        core.sink.iter().flat_map(|sink| sink.forward_traffic(table)).map(|(selector, traffic)| {
            ForwardTrafficStatus {
                forward: selector.to_string(),
                path: PATH_EBPF.to_string(),
                count: TrafficCount {
                    connections: traffic.flows,
                    bytes_to_backend: traffic.bytes_to_backend,
                    bytes_to_client: traffic.bytes_to_client,
                },
            }
        });
    proxied.chain(in_programs).collect()
}
