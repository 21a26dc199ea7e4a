//! What one scrape says: the daemon's [`Snapshot`] (the one the status socket serves) and the
//! verifier's verdicts on the programs, as metric families. Every sample carries the
//! `interface` label, so one Prometheus can scrape several gatewayds.
//!
//! | family | type | labels |
//! |---|---|---|
//! | `gateway_peers` | gauge | |
//! | `gateway_data_path` | gauge (1: in use) | `path` |
//! | `gateway_peer_received_bytes_total`, `gateway_peer_sent_bytes_total` | counter | `peer`, `path` |
//! | `gateway_peer_received_packets_total`, `gateway_peer_sent_packets_total` | counter | `peer`, `path` |
//! | `gateway_peer_last_handshake_timestamp_seconds` | gauge (0: never) | `peer` |
//! | `gateway_peer_dropped_packets_total` | counter | `peer`, `path` (`userspace`), `reason` |
//! | `gateway_handshake_messages_total` | counter | `message`, `direction` |
//! | `gateway_handshakes_completed_total` | counter | |
//! | `gateway_dataplane_packets_total` | counter | `reason` (the programs' `STATS`) |
//! | `gateway_userspace_dropped_packets_total` | counter | `reason` (the daemon's drops) |
//! | `gateway_program_loaded` | gauge (0: refused) | `program` |
//! | `gateway_program_verified_instructions` | gauge | `program` |
//! | `gateway_entry_forwards` | gauge | `protocol` |
//! | `gateway_forward_connections_total` | counter | `forward`, `path` (`proxy`, `ebpf`) |
//! | `gateway_forward_bytes_total` | counter | `forward`, `path` (`proxy`, `ebpf`), `direction` |
//! | `gateway_entry_forwarded_flows`, `gateway_entry_reply_to_flows`, `gateway_entry_steered_connections` | gauge | |
//!
//! Per-path counters exist for the paths that run: `userspace` always, `ebpf` while the
//! programs are loaded. Bytes are WireGuard message bytes (UDP payload), as `wg show`
//! counts them.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::exposition::{Family, Kind, Value};
use crate::daemon::status::{PathCounters, Snapshot};
use crate::dataplane::{ProgramReport, Verdict};

pub const PATH_EBPF: &str = "ebpf";
pub const PATH_USERSPACE: &str = "userspace";

/// The families of one scrape, in a fixed order.
pub fn families(snapshot: &Snapshot, programs: &[ProgramReport]) -> Vec<Family> {
    let status = &snapshot.status;
    let interface = || ("interface", status.interface.clone());
    let ebpf = status.data_path == PATH_EBPF;

    let mut peers = Family::new("gateway_peers", Kind::Gauge, "Peers configured on the interface.");
    peers.push(vec![interface()], Value::Integer(status.peers.len() as u64));

    let mut data_path = Family::new(
        "gateway_data_path",
        Kind::Gauge,
        "The data path carrying established sessions' packets: 1 for the one in use, 0 for the \
         other.",
    );
    for path in [PATH_EBPF, PATH_USERSPACE] {
        let in_use = status.data_path == path;
        data_path
            .push(vec![interface(), ("path", path.to_string())], Value::Integer(in_use.into()));
    }

    let mut rx_bytes = Family::new(
        "gateway_peer_received_bytes_total",
        Kind::Counter,
        "WireGuard message bytes (UDP payload) received from the peer, by the path that \
         handled them.",
    );
    let mut tx_bytes = Family::new(
        "gateway_peer_sent_bytes_total",
        Kind::Counter,
        "WireGuard message bytes (UDP payload) sent to the peer, by the path that sent them.",
    );
    let mut rx_packets = Family::new(
        "gateway_peer_received_packets_total",
        Kind::Counter,
        "WireGuard messages received from the peer, by the path that handled them.",
    );
    let mut tx_packets = Family::new(
        "gateway_peer_sent_packets_total",
        Kind::Counter,
        "WireGuard messages sent to the peer, by the path that sent them.",
    );
    let mut last_handshake = Family::new(
        "gateway_peer_last_handshake_timestamp_seconds",
        Kind::Gauge,
        "When the last handshake with the peer completed, as a Unix time in seconds (0: never).",
    );
    let mut peer_drops = Family::new(
        "gateway_peer_dropped_packets_total",
        Kind::Counter,
        "Datagrams and packets about the peer that the userspace path dropped, by reason (a \
         message that fails authentication or replays, a source outside its AllowedIPs...).",
    );
    for (i, peer) in status.peers.iter().enumerate() {
        let mut paths: Vec<(&str, &PathCounters)> = vec![(PATH_USERSPACE, &peer.userspace)];
        if ebpf {
            paths.push((PATH_EBPF, &peer.ebpf));
        }
        for (path, counters) in paths {
            let labels =
                || vec![interface(), ("peer", peer.public_key.clone()), ("path", path.to_string())];
            rx_bytes.push(labels(), Value::Integer(counters.rx_bytes));
            tx_bytes.push(labels(), Value::Integer(counters.tx_bytes));
            rx_packets.push(labels(), Value::Integer(counters.rx_packets));
            tx_packets.push(labels(), Value::Integer(counters.tx_packets));
        }
        let when = snapshot.last_handshakes.get(i).copied().flatten();
        last_handshake
            .push(vec![interface(), ("peer", peer.public_key.clone())], unix_seconds(when));
        for (reason, count) in &peer.userspace_drops {
            let labels = vec![
                interface(),
                ("peer", peer.public_key.clone()),
                ("path", PATH_USERSPACE.to_string()),
                ("reason", snake_case(reason)),
            ];
            peer_drops.push(labels, Value::Integer(*count));
        }
    }

    let mut handshake_messages = Family::new(
        "gateway_handshake_messages_total",
        Kind::Counter,
        "Handshake messages (initiation, response, cookie_reply) the daemon sent, and those it \
         received and accepted.",
    );
    let counts = &status.handshakes;
    for (message, direction, count) in [
        ("initiation", "sent", counts.initiations_sent),
        ("initiation", "received", counts.initiations_received),
        ("response", "sent", counts.responses_sent),
        ("response", "received", counts.responses_received),
        ("cookie_reply", "sent", counts.cookie_replies_sent),
        ("cookie_reply", "received", counts.cookie_replies_received),
    ] {
        let labels = vec![
            interface(),
            ("message", message.to_string()),
            ("direction", direction.to_string()),
        ];
        handshake_messages.push(labels, Value::Integer(count));
    }
    let mut handshakes_completed = Family::new(
        "gateway_handshakes_completed_total",
        Kind::Counter,
        "Handshakes completed (a session derived), as initiator or responder.",
    );
    handshakes_completed.push(vec![interface()], Value::Integer(counts.completed));

    let mut dataplane = Family::new(
        "gateway_dataplane_packets_total",
        Kind::Counter,
        "Packets the eBPF programs handled, by what they did with them (their STATS counters; \
         none without eBPF).",
    );
    push_by_reason(&mut dataplane, &status.ebpf_stats, interface);

    let mut drops = Family::new(
        "gateway_userspace_dropped_packets_total",
        Kind::Counter,
        "Datagrams and packets the daemon's userspace path dropped, by reason.",
    );
    push_by_reason(&mut drops, &status.userspace_drops, interface);

    let mut loaded = Family::new(
        "gateway_program_loaded",
        Kind::Gauge,
        "Whether the kernel's verifier accepted the eBPF program (0: refused, its fallback runs).",
    );
    let mut instructions = Family::new(
        "gateway_program_verified_instructions",
        Kind::Gauge,
        "Instructions the kernel's verifier processed to accept the program (its limit is \
         1000000).",
    );
    for report in programs {
        let labels = || vec![interface(), ("program", report.program.name().to_string())];
        loaded.push(labels(), Value::Integer(report.loaded().into()));
        if let Verdict::Loaded { instructions: Some(n) } = report.verdict {
            instructions.push(labels(), Value::Integer(n.into()));
        }
    }

    let mut forwards = Family::new(
        "gateway_entry_forwards",
        Kind::Gauge,
        "The entry point's forwards (gateway forward), by protocol.",
    );
    let mut by_protocol: BTreeMap<&str, u64> = BTreeMap::new();
    for forward in &status.entry.forwards {
        *by_protocol.entry(forward.protocol.as_str()).or_default() += 1;
    }
    for (protocol, count) in by_protocol {
        forwards.push(vec![interface(), ("protocol", protocol.to_string())], Value::Integer(count));
    }
    let mut flows = Family::new(
        "gateway_entry_forwarded_flows",
        Kind::Gauge,
        "Flows of tcp and udp forwards the eBPF programs remember now (ENTRY_FLOWS).",
    );
    let mut reply_to = Family::new(
        "gateway_entry_reply_to_flows",
        Kind::Gauge,
        "Flows from an entry point whose replies the programs send back to it now (REPLY_TO).",
    );
    let mut steered = Family::new(
        "gateway_entry_steered_connections",
        Kind::Gauge,
        "Proxied connections the eBPF programs translate now, so that backends see the \
         client's address (PROXY_FLOWS).",
    );
    let mut forward_connections = Family::new(
        "gateway_forward_connections_total",
        Kind::Counter,
        "Connections each forward carried, by path: the daemon's proxy (tls and http forwards; \
         tcp and udp ones when the eBPF programs do not translate them; for udp, clients) or \
         the eBPF programs (flows they started remembering).",
    );
    let mut forward_bytes = Family::new(
        "gateway_forward_bytes_total",
        Kind::Counter,
        "Bytes each forward carried, by path and direction (to_backend, to_client): transport \
         payload through the daemon's proxy, IP packets in the eBPF programs.",
    );
    for proxied in &status.entry.traffic {
        let labels = || {
            vec![interface(), ("forward", proxied.forward.clone()), ("path", proxied.path.clone())]
        };
        forward_connections.push(labels(), Value::Integer(proxied.count.connections));
        for (direction, bytes) in [
            ("to_backend", proxied.count.bytes_to_backend),
            ("to_client", proxied.count.bytes_to_client),
        ] {
            let mut labels = labels();
            labels.push(("direction", direction.to_string()));
            forward_bytes.push(labels, Value::Integer(bytes));
        }
    }
    if ebpf {
        let entry = &status.entry.dataplane;
        flows.push(vec![interface()], Value::Integer(entry.forwarded_flows as u64));
        reply_to.push(vec![interface()], Value::Integer(entry.reply_to_flows as u64));
        steered.push(vec![interface()], Value::Integer(entry.proxied_connections as u64));
    }

    vec![
        peers,
        data_path,
        rx_bytes,
        tx_bytes,
        rx_packets,
        tx_packets,
        last_handshake,
        peer_drops,
        handshake_messages,
        handshakes_completed,
        dataplane,
        drops,
        loaded,
        instructions,
        forwards,
        forward_connections,
        forward_bytes,
        flows,
        reply_to,
        steered,
    ]
}

/// One sample per reason, the reason in snake case (`RxDeliveredLocal` → `rx_delivered_local`).
fn push_by_reason(
    family: &mut Family,
    counts: &BTreeMap<String, u64>,
    interface: impl Fn() -> (&'static str, String),
) {
    for (reason, count) in counts {
        family.push(vec![interface(), ("reason", snake_case(reason))], Value::Integer(*count));
    }
}

/// `CamelCase` → `camel_case`.
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Seconds since the Unix epoch; 0 for never (and for a clock before 1970).
fn unix_seconds(when: Option<SystemTime>) -> Value {
    match when.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
        Some(since) => Value::Integer(since.as_secs()),
        None => Value::Integer(0),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::daemon::status::{
        EntryDataplane, EntryStatus, ForwardTrafficStatus, PeerStatus, Status,
    };
    use crate::dataplane::{Program, Stats};
    use crate::entry::store::ForwardRecord;
    use crate::entry::traffic::TrafficCount;
    use crate::metrics::exposition::{is_label_name, is_metric_name, render};
    use crate::wg::device::HandshakeCounts;

    const KEY: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    fn counters(base: u64) -> PathCounters {
        PathCounters {
            rx_bytes: base,
            tx_bytes: base + 1,
            rx_packets: base + 2,
            tx_packets: base + 3,
        }
    }

    fn snapshot(data_path: &str) -> Snapshot {
        let ebpf = data_path == PATH_EBPF;
        let stats = Stats { rx_delivered_local: 5, tx_encrypted: 6, ..Stats::default() };
        let forward = |protocol: &str| ForwardRecord {
            protocol: protocol.to_string(),
            ports: "443".to_string(),
            listen: None,
            sni: None,
            host: None,
            default: false,
            to: "192.168.1.10".to_string(),
        };
        Snapshot {
            status: Status {
                interface: "wg0".to_string(),
                listen_port: 51820,
                data_path: data_path.to_string(),
                peers: vec![
                    PeerStatus {
                        public_key: KEY.to_string(),
                        userspace: counters(100),
                        ebpf: counters(1000),
                        userspace_drops: [("Replayed".to_string(), 4)].into_iter().collect(),
                        ..PeerStatus::default()
                    },
                    PeerStatus { public_key: "other".to_string(), ..PeerStatus::default() },
                ],
                ebpf_stats: if ebpf {
                    stats.entries().into_iter().map(|(s, v)| (format!("{s:?}"), v)).collect()
                } else {
                    BTreeMap::new()
                },
                userspace_drops: [("UnknownIndex".to_string(), 3)].into_iter().collect(),
                handshakes: HandshakeCounts {
                    initiations_sent: 11,
                    cookie_replies_received: 12,
                    completed: 13,
                    ..HandshakeCounts::default()
                },
                entry: EntryStatus {
                    forwards: vec![forward("tls"), forward("tls"), forward("tcp")],
                    dataplane: EntryDataplane {
                        forwarded_flows: 7,
                        reply_to_flows: 8,
                        proxied_connections: 9,
                        ..EntryDataplane::default()
                    },
                    traffic: vec![ForwardTrafficStatus {
                        forward: "tls 443 --sni a.example".to_string(),
                        path: "proxy".to_string(),
                        count: TrafficCount {
                            connections: 2,
                            bytes_to_backend: 517,
                            bytes_to_client: 4096,
                        },
                    }],
                },
                ..Status::default()
            },
            last_handshakes: vec![
                Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_900)),
                None,
            ],
        }
    }

    fn reports() -> Vec<ProgramReport> {
        vec![
            ProgramReport {
                program: Program::RxXdp,
                verdict: Verdict::Loaded { instructions: Some(13_771) },
            },
            ProgramReport {
                program: Program::RxHandoff,
                verdict: Verdict::Loaded { instructions: None },
            },
            ProgramReport {
                program: Program::TxTun,
                verdict: Verdict::Rejected { reason: "E2BIG".to_string() },
            },
        ]
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn with_ebpf_each_peer_has_both_paths_and_the_programs_counters_are_by_reason() {
        let text = render(&families(&snapshot(PATH_EBPF), &reports()));
        let lines = lines(&text);
        for expected in [
            "gateway_peers{interface=\"wg0\"} 2",
            "gateway_data_path{interface=\"wg0\",path=\"ebpf\"} 1",
            "gateway_data_path{interface=\"wg0\",path=\"userspace\"} 0",
            &format!(
                "gateway_peer_received_bytes_total{{interface=\"wg0\",peer=\"{KEY}\",path=\"userspace\"}} 100"
            ),
            &format!(
                "gateway_peer_received_bytes_total{{interface=\"wg0\",peer=\"{KEY}\",path=\"ebpf\"}} 1000"
            ),
            &format!(
                "gateway_peer_sent_bytes_total{{interface=\"wg0\",peer=\"{KEY}\",path=\"ebpf\"}} 1001"
            ),
            &format!(
                "gateway_peer_received_packets_total{{interface=\"wg0\",peer=\"{KEY}\",path=\"ebpf\"}} 1002"
            ),
            &format!(
                "gateway_peer_sent_packets_total{{interface=\"wg0\",peer=\"{KEY}\",path=\"userspace\"}} 103"
            ),
            &format!(
                "gateway_peer_last_handshake_timestamp_seconds{{interface=\"wg0\",peer=\"{KEY}\"}} 1700000000"
            ),
            "gateway_peer_last_handshake_timestamp_seconds{interface=\"wg0\",peer=\"other\"} 0",
            "gateway_dataplane_packets_total{interface=\"wg0\",reason=\"rx_delivered_local\"} 5",
            "gateway_dataplane_packets_total{interface=\"wg0\",reason=\"tx_encrypted\"} 6",
            "gateway_dataplane_packets_total{interface=\"wg0\",reason=\"rx_drop_replay\"} 0",
            "gateway_userspace_dropped_packets_total{interface=\"wg0\",reason=\"unknown_index\"} 3",
            &format!(
                "gateway_peer_dropped_packets_total{{interface=\"wg0\",peer=\"{KEY}\",path=\"userspace\",reason=\"replayed\"}} 4"
            ),
            "gateway_handshake_messages_total{interface=\"wg0\",message=\"initiation\",direction=\"sent\"} 11",
            "gateway_handshake_messages_total{interface=\"wg0\",message=\"response\",direction=\"received\"} 0",
            "gateway_handshake_messages_total{interface=\"wg0\",message=\"cookie_reply\",direction=\"received\"} 12",
            "gateway_handshakes_completed_total{interface=\"wg0\"} 13",
            "gateway_program_loaded{interface=\"wg0\",program=\"wg_rx_xdp\"} 1",
            "gateway_program_loaded{interface=\"wg0\",program=\"wg_tx_tun\"} 0",
            "gateway_program_verified_instructions{interface=\"wg0\",program=\"wg_rx_xdp\"} 13771",
            "gateway_entry_forwards{interface=\"wg0\",protocol=\"tcp\"} 1",
            "gateway_entry_forwards{interface=\"wg0\",protocol=\"tls\"} 2",
            "gateway_forward_connections_total{interface=\"wg0\",forward=\"tls 443 --sni a.example\",path=\"proxy\"} 2",
            "gateway_forward_bytes_total{interface=\"wg0\",forward=\"tls 443 --sni a.example\",path=\"proxy\",direction=\"to_backend\"} 517",
            "gateway_forward_bytes_total{interface=\"wg0\",forward=\"tls 443 --sni a.example\",path=\"proxy\",direction=\"to_client\"} 4096",
            "gateway_entry_forwarded_flows{interface=\"wg0\"} 7",
            "gateway_entry_reply_to_flows{interface=\"wg0\"} 8",
            "gateway_entry_steered_connections{interface=\"wg0\"} 9",
        ] {
            assert!(lines.contains(&expected), "missing {expected} in\n{text}");
        }
        let instruction_lines =
            lines.iter().filter(|l| l.starts_with("gateway_program_verified_instructions")).count();
        assert_eq!(instruction_lines, 1, "only programs with a count have one:\n{text}");
        let reasons =
            lines.iter().filter(|l| l.starts_with("gateway_dataplane_packets_total")).count();
        assert_eq!(reasons, Stats::default().entries().len(), "every STATS counter");
    }

    #[test]
    fn without_ebpf_only_the_userspace_path_is_counted() {
        let text = render(&families(&snapshot(PATH_USERSPACE), &[]));
        let lines = lines(&text);
        assert!(lines.contains(&"gateway_data_path{interface=\"wg0\",path=\"userspace\"} 1"));
        assert!(lines.contains(&"gateway_data_path{interface=\"wg0\",path=\"ebpf\"} 0"));
        for line in &lines {
            assert!(
                !(line.contains("peer=") && line.contains("path=\"ebpf\"")),
                "an eBPF counter without eBPF: {line}"
            );
            assert!(!line.starts_with("gateway_dataplane_packets_total"), "{line}");
            assert!(!line.starts_with("gateway_program_"), "{line}");
            assert!(!line.starts_with("gateway_entry_forwarded_flows"), "{line}");
        }
        assert!(lines.contains(&"gateway_entry_forwards{interface=\"wg0\",protocol=\"tls\"} 2"));
    }

    #[test]
    fn names_follow_the_conventions() {
        let families = families(&snapshot(PATH_EBPF), &reports());
        let mut names = std::collections::HashSet::new();
        for family in &families {
            assert!(names.insert(family.name), "{} twice", family.name);
            assert!(family.name.starts_with("gateway_"), "{}", family.name);
            assert!(is_metric_name(family.name), "{}", family.name);
            assert_eq!(
                family.name.ends_with("_total"),
                family.kind == Kind::Counter,
                "{}: counters and only counters end in _total",
                family.name
            );
            assert!(!family.help.is_empty());
            let mut label_sets = std::collections::HashSet::new();
            for sample in &family.samples {
                assert_eq!(sample.labels[0].0, "interface", "{}", family.name);
                for (label, _) in &sample.labels {
                    assert!(is_label_name(label), "{label}");
                }
                assert!(
                    label_sets.insert(sample.labels.clone()),
                    "{}: a label set twice",
                    family.name
                );
            }
        }
    }

    #[test]
    fn reasons_are_snake_case() {
        assert_eq!(snake_case("RxDeliveredLocal"), "rx_delivered_local");
        assert_eq!(snake_case("NotIp"), "not_ip");
        assert_eq!(snake_case("Error"), "error");
        let reasons: std::collections::HashSet<String> = Stats::default()
            .entries()
            .into_iter()
            .map(|(stat, _)| snake_case(&format!("{stat:?}")))
            .collect();
        assert_eq!(reasons.len(), Stats::default().entries().len(), "distinct");
        assert!(reasons.iter().all(|r| r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }
}
