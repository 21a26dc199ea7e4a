//! What each gatewayd carried on which path: its status socket read before and after the
//! traffic, and the difference printed.

use std::collections::BTreeMap;

use anyhow::Result;
use gateway::daemon::status::{PathCounters, Status};
use gateway_tests::gatewayd::Gatewayd;

pub struct Snapshot(BTreeMap<String, Status>);

impl Snapshot {
    pub fn take(daemons: &[&Gatewayd]) -> Result<Snapshot> {
        let mut all = BTreeMap::new();
        for d in daemons {
            all.insert(d.ifname().to_string(), d.status()?);
        }
        Ok(Snapshot(all))
    }
}

fn minus(a: PathCounters, b: PathCounters) -> PathCounters {
    PathCounters {
        rx_bytes: a.rx_bytes.saturating_sub(b.rx_bytes),
        tx_bytes: a.tx_bytes.saturating_sub(b.tx_bytes),
        rx_packets: a.rx_packets.saturating_sub(b.rx_packets),
        tx_packets: a.tx_packets.saturating_sub(b.tx_packets),
    }
}

fn share(ebpf: u64, userspace: u64) -> String {
    let total = ebpf + userspace;
    if total == 0 { "-".into() } else { format!("{:.1}%", 100.0 * ebpf as f64 / total as f64) }
}

/// Prints, per gatewayd and peer, the packets each path carried in between, and what the eBPF
/// programs did with packets (by reason).
pub fn print(before: &Snapshot, after: &Snapshot, hosts: &[(&str, &str)]) {
    for &(host, interface) in hosts {
        let (Some(a), Some(b)) = (after.0.get(interface), before.0.get(interface)) else {
            continue;
        };
        println!("  {host} ({interface}, data path: {}):", a.data_path);
        for attachment in &a.attachments {
            println!("    attached  {attachment}");
        }
        println!(
            "    {:<14} {:>12} {:>12} {:>12} {:>12} {:>9}",
            "peer", "eBPF rx pkts", "eBPF tx pkts", "user rx pkts", "user tx pkts", "in eBPF"
        );
        for peer in &a.peers {
            let old = b.peers.iter().find(|p| p.public_key == peer.public_key);
            let (e, u) = match old {
                Some(o) => (minus(peer.ebpf, o.ebpf), minus(peer.userspace, o.userspace)),
                None => (peer.ebpf, peer.userspace),
            };
            println!(
                "    {:<14} {:>12} {:>12} {:>12} {:>12} {:>9}",
                &peer.public_key[..12],
                e.rx_packets,
                e.tx_packets,
                u.rx_packets,
                u.tx_packets,
                share(e.rx_packets + e.tx_packets, u.rx_packets + u.tx_packets)
            );
        }
        let stats: Vec<String> = a
            .ebpf_stats
            .iter()
            .filter_map(|(k, v)| {
                let d = v.saturating_sub(*b.ebpf_stats.get(k).unwrap_or(&0));
                (d > 0).then(|| format!("{k} {d}"))
            })
            .collect();
        println!(
            "    eBPF programs: {}",
            if stats.is_empty() { "-".into() } else { stats.join(", ") }
        );
    }
}
