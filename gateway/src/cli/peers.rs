//! `gateway peers IF`: per peer, its key, endpoint, data path, latest handshake, what each
//! path carried and its allowed IPs — one aligned table, or JSON.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::human::{self, ago, bytes, elapsed_since, short_key, unix_seconds};
use super::source::Daemon;
use super::table::Table;
use crate::daemon::status::PathCounters;

/// One peer as `peers --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    /// The whole public key (base64).
    pub public_key: String,
    /// The operator's name for it (`name` in gatewayd's configuration file), if any.
    #[serde(default)]
    pub name: Option<String>,
    /// Where its packets go now (`ip:port`), if known.
    pub endpoint: Option<String>,
    /// The data path that carries its transport packets: "ebpf" or "userspace" (the
    /// interface's; handshakes always go through userspace).
    pub path: String,
    /// An entry point's peer (see `gatewayd --entry-peer`).
    pub entry_point: bool,
    /// The latest completed handshake, seconds since the Unix epoch; null for never.
    pub latest_handshake: Option<u64>,
    /// How many seconds before this read that was; null for never.
    pub latest_handshake_seconds_ago: Option<u64>,
    /// Seconds; null when off.
    pub persistent_keepalive: Option<u16>,
    pub preshared_key: bool,
    pub allowed_ips: Vec<String>,
    /// What the eBPF programs carried for it.
    pub ebpf: PathCounters,
    /// What the daemon carried for it in userspace.
    pub userspace: PathCounters,
}

/// `peers --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeersView {
    pub interface: String,
    pub data_path: String,
    pub peers: Vec<PeerView>,
}

impl PeersView {
    /// The UAPI's peers, in its order, with the status document's counters beside them.
    pub fn new(daemon: &Daemon, now: SystemTime) -> PeersView {
        let peers = daemon
            .device
            .peers
            .iter()
            .map(|peer| {
                let key = peer.public_key.to_base64();
                let counted = daemon.status.peers.iter().find(|p| p.public_key == key);
                PeerView {
                    endpoint: peer.endpoint.map(|e| e.to_string()),
                    path: daemon.status.data_path.clone(),
                    entry_point: counted.is_some_and(|p| p.entry_point),
                    latest_handshake: peer.last_handshake.map(unix_seconds),
                    latest_handshake_seconds_ago: peer
                        .last_handshake
                        .map(|then| elapsed_since(then, now).as_secs()),
                    persistent_keepalive: Some(peer.persistent_keepalive_interval)
                        .filter(|&seconds| seconds != 0),
                    preshared_key: peer.preshared_key.is_some_and(|k| !k.is_zero()),
                    allowed_ips: peer.allowed_ips.iter().map(|ip| ip.to_string()).collect(),
                    ebpf: counted.map(|p| p.ebpf).unwrap_or_default(),
                    userspace: counted.map(|p| p.userspace).unwrap_or_default(),
                    name: counted.and_then(|p| p.name.clone()),
                    public_key: key,
                }
            })
            .collect();
        PeersView {
            interface: daemon.interface.clone(),
            data_path: daemon.status.data_path.clone(),
            peers,
        }
    }

    /// The table: keys shortened, one line per peer.
    pub fn table(&self) -> String {
        if self.peers.is_empty() {
            return format!("{} has no peers\n", self.interface);
        }
        let mut table = Table::new(&[
            "PEER",
            "ENDPOINT",
            "PATH",
            "HANDSHAKE",
            "RX EBPF",
            "TX EBPF",
            "RX USER",
            "TX USER",
            "ALLOWED IPS",
        ])
        .right(&[4, 5, 6, 7]);
        for peer in &self.peers {
            let mut key = short_key(&peer.public_key);
            if let Some(name) = &peer.name {
                key = format!("{name} {key}");
            }
            if peer.entry_point {
                key += " (entry)";
            }
            table.row(vec![
                key,
                peer.endpoint.clone().unwrap_or_else(|| "-".into()),
                path_name(&peer.path).to_string(),
                handshake(peer.latest_handshake_seconds_ago),
                bytes(peer.ebpf.rx_bytes),
                bytes(peer.ebpf.tx_bytes),
                bytes(peer.userspace.rx_bytes),
                bytes(peer.userspace.tx_bytes),
                if peer.allowed_ips.is_empty() {
                    "(none)".into()
                } else {
                    peer.allowed_ips.join(", ")
                },
            ]);
        }
        table.render("")
    }
}

/// "ebpf" and "userspace" as people write them.
pub fn path_name(path: &str) -> &str {
    match path {
        "ebpf" => "eBPF",
        other => other,
    }
}

/// A latest handshake for people: `1 minute, 3 seconds ago`, or `never`.
pub fn handshake(seconds_ago: Option<u64>) -> String {
    match seconds_ago {
        Some(seconds) => ago(std::time::Duration::from_secs(seconds)),
        None => "never".into(),
    }
}

/// The `wg show`-style transfer line of one path.
pub fn transfer(counters: &PathCounters) -> String {
    format!(
        "{} received, {} sent ({} / {} packets)",
        human::bytes(counters.rx_bytes),
        human::bytes(counters.tx_bytes),
        counters.rx_packets,
        counters.tx_packets
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(key: &str, ago: Option<u64>, ips: &[&str]) -> PeerView {
        PeerView {
            public_key: key.into(),
            name: None,
            endpoint: Some("192.0.2.7:51820".into()),
            path: "ebpf".into(),
            entry_point: false,
            latest_handshake: ago.map(|a| 1_700_000_000 - a),
            latest_handshake_seconds_ago: ago,
            persistent_keepalive: None,
            preshared_key: false,
            allowed_ips: ips.iter().map(|s| s.to_string()).collect(),
            ebpf: PathCounters { rx_bytes: 2048, tx_bytes: 100, rx_packets: 2, tx_packets: 1 },
            userspace: PathCounters::default(),
        }
    }

    #[test]
    fn the_peers_table_is_aligned_with_short_keys() {
        let peers = PeersView {
            interface: "wg0".into(),
            data_path: "ebpf".into(),
            peers: vec![
                view("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=", Some(63), &["10.0.0.2/32"]),
                view("TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=", None, &[]),
            ],
        };
        let text = peers.table();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("PEER         ENDPOINT         PATH  HANDSHAKE"), "{text}");
        assert!(
            lines[1].starts_with("xTIBA5rboU…  192.0.2.7:51820  eBPF  1 minute, 3 seconds ago")
        );
        assert!(lines[1].ends_with("10.0.0.2/32"), "{text}");
        assert!(lines[2].contains("never") && lines[2].ends_with("(none)"), "{text}");
        let mut named = peers.clone();
        named.peers[1].name = Some("phone".into());
        assert!(named.table().lines().nth(2).unwrap().starts_with("phone TrMvSoP4jY…"));
        // Right-aligned numbers end in the same column.
        let end = |line: &str, what: &str| {
            line[..line.find(what).unwrap()].chars().count() + what.chars().count()
        };
        assert_eq!(end(lines[0], "RX EBPF"), end(lines[1], "2.00 KiB"));
    }
}
