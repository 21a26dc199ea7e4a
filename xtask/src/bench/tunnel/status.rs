//! gatewayd's status socket: which data path is active, and how many data packets each path
//! carried (summed over peers), so a run can say what share the eBPF programs handled.

use std::io::Read as _;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use serde_json::Value;

const STATUS_DIRECTORY: &str = "/var/run/gatewayd";
const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct GatewaydStatus {
    /// "ebpf" or "userspace".
    pub data_path: String,
    pub attachments: Vec<String>,
    pub packets: PathPackets,
}

/// Data packets (received + sent) per path, all peers together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathPackets {
    pub ebpf: u64,
    pub userspace: u64,
}

impl PathPackets {
    /// The eBPF share (0..=1) of what was carried from `earlier` to `self`; `None` if nothing.
    pub fn ebpf_share_since(&self, earlier: &PathPackets) -> Option<f64> {
        let ebpf = self.ebpf.saturating_sub(earlier.ebpf);
        let userspace = self.userspace.saturating_sub(earlier.userspace);
        let total = ebpf + userspace;
        (total > 0).then(|| ebpf as f64 / total as f64)
    }
}

pub fn read(ifname: &str) -> Result<GatewaydStatus> {
    let path = PathBuf::from(STATUS_DIRECTORY).join(format!("{ifname}.sock"));
    let mut stream =
        UnixStream::connect(&path).with_context(|| format!("connecting to {}", path.display()))?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut text = String::new();
    stream.read_to_string(&mut text).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("gatewayd status from {}", path.display()))
}

fn parse(text: &str) -> Result<GatewaydStatus> {
    let root: Value = serde_json::from_str(text).context("not JSON")?;
    let data_path = root
        .get("data_path")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("no data_path"))?
        .to_string();
    let attachments = root
        .get("attachments")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default();
    let mut packets = PathPackets::default();
    for peer in root.get("peers").and_then(Value::as_array).ok_or_else(|| anyhow!("no peers"))? {
        packets.ebpf += path_packets(peer, "ebpf")?;
        packets.userspace += path_packets(peer, "userspace")?;
    }
    Ok(GatewaydStatus { data_path, attachments, packets })
}

fn path_packets(peer: &Value, path: &str) -> Result<u64> {
    let counters = peer.get(path).ok_or_else(|| anyhow!("a peer has no {path} counters"))?;
    let count = |key: &str| {
        counters.get(key).and_then(Value::as_u64).ok_or_else(|| anyhow!("no {path}.{key}"))
    };
    Ok(count("rx_packets")? + count("tx_packets")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_each_path_over_peers() {
        let text = r#"{"interface":"wg0","listen_port":51820,"data_path":"ebpf",
            "attachments":["eth0: xdp (native)"],
            "peers":[
              {"public_key":"a","endpoint":null,
               "userspace":{"rx_bytes":0,"tx_bytes":0,"rx_packets":1,"tx_packets":2},
               "ebpf":{"rx_bytes":0,"tx_bytes":0,"rx_packets":10,"tx_packets":20}},
              {"public_key":"b","endpoint":null,
               "userspace":{"rx_bytes":0,"tx_bytes":0,"rx_packets":3,"tx_packets":4},
               "ebpf":{"rx_bytes":0,"tx_bytes":0,"rx_packets":30,"tx_packets":40}}],
            "ebpf_stats":{},"userspace_drops":{}}"#;
        let status = parse(text).unwrap();
        assert_eq!(status.data_path, "ebpf");
        assert_eq!(status.attachments, vec!["eth0: xdp (native)"]);
        assert_eq!(status.packets, PathPackets { ebpf: 100, userspace: 10 });
        assert!(parse(r#"{"data_path":"ebpf"}"#).is_err());
    }

    #[test]
    fn shares_are_of_what_was_carried_in_between() {
        let before = PathPackets { ebpf: 100, userspace: 50 };
        let after = PathPackets { ebpf: 400, userspace: 150 };
        assert_eq!(after.ebpf_share_since(&before), Some(0.75));
        assert_eq!(before.ebpf_share_since(&before), None);
    }
}
