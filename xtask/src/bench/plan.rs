//! What a run measures: scenarios, implementations, metrics, and the two profiles (full and
//! `--quick`) that set repetitions and durations.

use std::fmt;
use std::time::Duration;

use clap::ValueEnum;

use super::load::Thresholds;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Scenario {
    /// client ↔ server through a router hop.
    Direct,
    /// phone → VPS → home → a host on the home LAN; the VPS relays between its peers.
    Hub,
    /// 1 vs 10 000 peers, a 130 000-prefix `wg setconf`, handshakes per second.
    Scale,
    /// Nanoseconds per packet of each eBPF program (BPF_PROG_TEST_RUN), and the instructions
    /// the verifier processed for each.
    EbpfMicro,
    /// The public entry point: an internet client → a VPS's public address → a forward through
    /// the tunnel → a NAS on the home LAN (behind carrier NAT), keeping the client's address.
    Entry,
}

impl Scenario {
    pub const ALL: [Scenario; 5] =
        [Scenario::Direct, Scenario::Hub, Scenario::Scale, Scenario::EbpfMicro, Scenario::Entry];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Direct => "direct",
            Scenario::Hub => "hub",
            Scenario::Scale => "scale",
            Scenario::EbpfMicro => "ebpf-micro",
            Scenario::Entry => "entry",
        }
    }

    /// The implementations the scenario applies to, in table order.
    pub fn implementations(self) -> &'static [Implementation] {
        match self {
            Scenario::Direct | Scenario::Hub => &Implementation::PATHS,
            Scenario::Scale => &Implementation::TUNNELS,
            Scenario::EbpfMicro => &[Implementation::GatewaydEbpf],
            Scenario::Entry => &[Implementation::GatewaydEbpf, Implementation::NftablesNginx],
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Implementation {
    /// Plain routing, no tunnel: the ceiling.
    Plain,
    /// gatewayd with its eBPF data path.
    GatewaydEbpf,
    /// gatewayd --no-tun-gso: every TCP segment it sends through the eBPF send path.
    GatewaydEbpfSegments,
    /// gatewayd --no-ebpf.
    GatewaydUserspace,
    WireguardGo,
    Boringtun,
    /// The entry point as people build it today (entry scenario only): a wireguard-go tunnel,
    /// nftables DNAT on the VPS, connmark policy routing at the home, nginx `ssl_preread` with
    /// transparent `proxy_bind` for TLS.
    NftablesNginx,
}

impl Implementation {
    pub const ALL: [Implementation; 7] = [
        Implementation::Plain,
        Implementation::GatewaydEbpf,
        Implementation::GatewaydEbpfSegments,
        Implementation::GatewaydUserspace,
        Implementation::WireguardGo,
        Implementation::Boringtun,
        Implementation::NftablesNginx,
    ];
    /// What carries the direct and hub scenarios' paths.
    pub const PATHS: [Implementation; 6] = [
        Implementation::Plain,
        Implementation::GatewaydEbpf,
        Implementation::GatewaydEbpfSegments,
        Implementation::GatewaydUserspace,
        Implementation::WireguardGo,
        Implementation::Boringtun,
    ];
    pub const TUNNELS: [Implementation; 4] = [
        Implementation::GatewaydEbpf,
        Implementation::GatewaydUserspace,
        Implementation::WireguardGo,
        Implementation::Boringtun,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Implementation::Plain => "plain",
            Implementation::GatewaydEbpf => "gatewayd-ebpf",
            Implementation::GatewaydEbpfSegments => "gatewayd-ebpf-segments",
            Implementation::GatewaydUserspace => "gatewayd-userspace",
            Implementation::WireguardGo => "wireguard-go",
            Implementation::Boringtun => "boringtun",
            Implementation::NftablesNginx => "nftables-nginx",
        }
    }

    pub fn is_gatewayd(self) -> bool {
        self.is_ebpf() || self == Implementation::GatewaydUserspace
    }

    /// gatewayd with its programs attached.
    pub fn is_ebpf(self) -> bool {
        matches!(self, Implementation::GatewaydEbpf | Implementation::GatewaydEbpfSegments)
    }

    /// What a row of this implementation is compared with: gatewayd with the better of the
    /// other two tunnels (and, in the entry scenario, the only other row there: nftables and
    /// nginx), every other row with the best tunnel but itself.
    pub fn references(self) -> Vec<Implementation> {
        if self.is_gatewayd() {
            vec![
                Implementation::WireguardGo,
                Implementation::Boringtun,
                Implementation::NftablesNginx,
            ]
        } else {
            Implementation::TUNNELS.into_iter().filter(|other| *other != self).collect()
        }
    }
}

impl fmt::Display for Implementation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// A metric's identity in results.json, its column heading, unit and direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub id: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub better: Better,
}

const fn metric(
    id: &'static str,
    label: &'static str,
    unit: &'static str,
    better: Better,
) -> Metric {
    Metric { id, label, unit, better }
}

pub const TCP_1: Metric = metric("tcp_1_stream", "TCP 1 stream", "Gbit/s", Better::Higher);
pub const TCP_4: Metric = metric("tcp_4_streams", "TCP 4 streams", "Gbit/s", Better::Higher);
pub const UDP_64: Metric = metric("udp_64_rate", "UDP 64 B, ≤1% loss", "kpps", Better::Higher);
pub const UDP_1392: Metric =
    metric("udp_1392_rate", "UDP 1392 B, ≤1% loss", "kpps", Better::Higher);
pub const RTT_P50: Metric = metric("rtt_p50", "ping p50", "ms", Better::Lower);
pub const RTT_P99: Metric = metric("rtt_p99", "ping p99", "ms", Better::Lower);
pub const MACHINE_CPU: Metric =
    metric("machine_cpu_per_gb", "CPU, whole machine", "core-s/GB", Better::Lower);
pub const DAEMON_CPU: Metric =
    metric("daemon_cpu_per_gb", "CPU, tunnel daemons", "core-s/GB", Better::Lower);
pub const SOFTIRQ_CPU: Metric =
    metric("softirq_cpu_per_gb", "CPU, softirq", "core-s/GB", Better::Lower);
/// Share of data packets the eBPF programs carried (gatewayd-ebpf only), per tunnel endpoint.
pub const EBPF_SHARE: Metric = metric("ebpf_share", "carried by eBPF", "%", Better::Higher);
pub const TCP_1_PEERS_1: Metric =
    metric("tcp_1_stream_1_peer", "TCP, 1 peer", "Gbit/s", Better::Higher);
pub const TCP_1_PEERS_10K: Metric =
    metric("tcp_1_stream_10k_peers", "TCP, 10 000 peers", "Gbit/s", Better::Higher);
pub const SETCONF_130K: Metric =
    metric("setconf_130k_allowed_ips", "setconf 130 000 IPs", "s", Better::Lower);
pub const HANDSHAKES: Metric = metric("handshakes_per_second", "handshakes", "1/s", Better::Higher);
pub const MICRO_DECRYPT: Metric = metric("decrypt", "decrypt", "ns/packet", Better::Lower);
pub const MICRO_ENCRYPT: Metric = metric("encrypt", "encrypt", "ns/packet", Better::Lower);
pub const MICRO_HUB: Metric = metric("hub_reencrypt", "hub re-encrypt", "ns/packet", Better::Lower);
pub const MICRO_FLOOR: Metric =
    metric("empty_program", "empty program", "ns/packet", Better::Lower);
/// Entry scenario: connections opened, answered and closed per second through a tcp forward
/// and a tls (SNI) forward, with several clients at once, and the 99th percentile of the time
/// from `connect` to the first byte of the answer.
pub const TCP_CONNECTIONS: Metric =
    metric("tcp_connections_per_second", "new conns, tcp", "1/s", Better::Higher);
pub const TCP_FIRST_BYTE_P99: Metric =
    metric("tcp_first_byte_p99", "first byte p99, tcp", "ms", Better::Lower);
pub const TLS_CONNECTIONS: Metric =
    metric("tls_connections_per_second", "new conns, tls (SNI)", "1/s", Better::Higher);
pub const TLS_FIRST_BYTE_P99: Metric =
    metric("tls_first_byte_p99", "first byte p99, tls (SNI)", "ms", Better::Lower);
/// Instructions the kernel's verifier processed for one program (ebpf-micro, one record per
/// program): the cost its 1,000,000-instruction limit applies to. Not one of the per-size
/// columns of `metrics`: it has a table of its own.
pub const VERIFIER_INSTRUCTIONS: Metric =
    metric("verifier_instructions", "verifier", "instructions", Better::Lower);

/// The metrics of each scenario, in table order (the eBPF share is reported as a note, the
/// verifier's instruction counts in a table of their own).
pub fn metrics(scenario: Scenario) -> &'static [Metric] {
    match scenario {
        Scenario::Direct | Scenario::Hub => &[
            TCP_1,
            TCP_4,
            UDP_64,
            UDP_1392,
            RTT_P50,
            RTT_P99,
            MACHINE_CPU,
            DAEMON_CPU,
            SOFTIRQ_CPU,
        ],
        Scenario::Scale => &[TCP_1_PEERS_1, TCP_1_PEERS_10K, SETCONF_130K, HANDSHAKES],
        Scenario::EbpfMicro => &[MICRO_DECRYPT, MICRO_ENCRYPT, MICRO_HUB, MICRO_FLOOR],
        Scenario::Entry => &[
            TCP_1,
            UDP_64,
            TCP_CONNECTIONS,
            TCP_FIRST_BYTE_P99,
            TLS_CONNECTIONS,
            TLS_FIRST_BYTE_P99,
            MACHINE_CPU,
        ],
    }
}

/// Durations, sizes and counts of a run.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: &'static str,
    pub reps: usize,
    /// Extra attempts of a disturbed repetition before it is kept and flagged.
    pub retries: usize,
    /// The most time a run spends on measuring disturbed repetitions again.
    pub retry_budget: Duration,
    pub thresholds: Thresholds,
    pub tcp_seconds: u64,
    pub tcp_streams: Vec<u32>,
    pub udp_sizes: Vec<usize>,
    pub udp_probe: Duration,
    /// Probes after the first (the unpaced one) in each rate search.
    pub udp_search_steps: usize,
    pub ping_count: u32,
    pub ping_interval: Duration,
    pub scale_extra_peers: u32,
    pub setconf_peers: u32,
    pub setconf_ips_per_peer: u32,
    pub handshake_peers: u32,
    pub handshake_initiations: u32,
    pub handshake_duration: Duration,
    pub micro_runs: usize,
    pub micro_sizes: Vec<usize>,
    /// Entry scenario: how long each connection-rate run lasts, and how many clients connect
    /// at once in it.
    pub connection_duration: Duration,
    pub connection_clients: usize,
}

impl Profile {
    pub fn full() -> Profile {
        Profile {
            name: "full",
            reps: 3,
            retries: 2,
            retry_budget: Duration::from_secs(240),
            thresholds: Thresholds {
                min_idle_before: 0.8,
                max_foreign_cores: 0.15,
                max_slowdown: 1.3,
                idle_sample: Duration::from_millis(200),
                max_settle: Duration::from_secs(5),
            },
            tcp_seconds: 3,
            tcp_streams: vec![1, 4],
            udp_sizes: vec![64, 1392],
            udp_probe: Duration::from_millis(500),
            udp_search_steps: 5,
            ping_count: 150,
            ping_interval: Duration::from_millis(10),
            scale_extra_peers: 10_000,
            setconf_peers: 1_000,
            setconf_ips_per_peer: 130,
            handshake_peers: 2_000,
            handshake_initiations: 16_000,
            handshake_duration: Duration::from_secs(2),
            micro_runs: 3000,
            micro_sizes: vec![64, 512, 1420],
            connection_duration: Duration::from_secs(2),
            connection_clients: 8,
        }
    }

    /// A representative subset in well under three minutes: the direct scenario with every
    /// implementation (TCP 1 stream, UDP 1392 B, ping, CPU), and the eBPF microbenchmark at
    /// one size; three repetitions each, shorter.
    pub fn quick() -> Profile {
        let full = Profile::full();
        Profile {
            name: "quick",
            retries: 1,
            retry_budget: Duration::from_secs(30),
            thresholds: Thresholds { max_settle: Duration::from_secs(2), ..full.thresholds },
            tcp_seconds: 1,
            tcp_streams: vec![1],
            udp_sizes: vec![1392],
            udp_probe: Duration::from_millis(300),
            udp_search_steps: 4,
            ping_count: 50,
            micro_runs: 1000,
            micro_sizes: vec![1420],
            handshake_initiations: 6_000,
            handshake_duration: Duration::from_secs(1),
            connection_duration: Duration::from_secs(1),
            ..full
        }
    }

    /// The scenarios a run covers when none are named.
    pub fn default_scenarios(&self) -> Vec<Scenario> {
        if self.name == "quick" {
            vec![Scenario::Direct, Scenario::EbpfMicro]
        } else {
            Scenario::ALL.to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gatewayd_rows_compare_with_the_other_two_tunnels() {
        assert_eq!(
            Implementation::GatewaydEbpf.references(),
            vec![
                Implementation::WireguardGo,
                Implementation::Boringtun,
                Implementation::NftablesNginx
            ]
        );
        let references = Implementation::WireguardGo.references();
        assert!(!references.contains(&Implementation::WireguardGo));
        assert!(references.contains(&Implementation::GatewaydEbpf));
        assert!(!Implementation::Plain.references().contains(&Implementation::Plain));
    }
}
