//! `gateway status IF`: the interface, its data path and programs, each peer with its whole key
//! (as `wg show` lists them), the programs' counters and the entry point. `--json` is the
//! status socket's document as the daemon sent it.

use std::time::SystemTime;

use super::forwards::forward_table;
use super::peers::{PeersView, handshake, path_name, transfer};
use super::source::Daemon;
use super::table::Table;
use crate::daemon::status::Status;

pub fn render(daemon: &Daemon, now: SystemTime) -> String {
    let s = &daemon.status;
    let mut text = format!("interface: {}\n", s.interface);
    text += &format!("  listen port: {}\n", s.listen_port);
    text += &format!("  data path: {}\n", path_name(&s.data_path));
    for program in &s.programs {
        text += &format!("  program: {program}\n");
    }
    for attachment in &s.attachments {
        text += &format!("  attached: {attachment}\n");
    }
    for peer in &PeersView::new(daemon, now).peers {
        let entry = if peer.entry_point { " (entry point)" } else { "" };
        text += &format!("\npeer: {}{entry}\n", peer.public_key);
        text += &format!("  endpoint: {}\n", peer.endpoint.as_deref().unwrap_or("(none)"));
        text += &format!("  path: {}\n", path_name(&peer.path));
        text += &format!("  latest handshake: {}\n", handshake(peer.latest_handshake_seconds_ago));
        let ips =
            if peer.allowed_ips.is_empty() { "(none)".into() } else { peer.allowed_ips.join(", ") };
        text += &format!("  allowed ips: {ips}\n");
        if let Some(seconds) = peer.persistent_keepalive {
            text += &format!("  persistent keepalive: every {seconds} seconds\n");
        }
        text += &format!("  transfer (eBPF): {}\n", transfer(&peer.ebpf));
        text += &format!("  transfer (userspace): {}\n", transfer(&peer.userspace));
    }
    text += &counters("eBPF programs", s.ebpf_stats.iter().filter(|(_, v)| **v != 0));
    text += &counters("userspace drops", s.userspace_drops.iter().filter(|(_, v)| **v != 0));
    text += &entry(s);
    text
}

/// A titled two-column table of non-zero counters; nothing for none.
fn counters<'a>(title: &str, values: impl Iterator<Item = (&'a String, &'a u64)>) -> String {
    let mut table = Table::new(&["COUNTER", "VALUE"]).right(&[1]);
    for (name, value) in values {
        table.row(vec![name.clone(), value.to_string()]);
    }
    if table.is_empty() { String::new() } else { format!("\n{title}:\n{}", table.render("  ")) }
}

/// The entry point: its forwards, what carries them, and its counters.
fn entry(s: &Status) -> String {
    let entry = &s.entry;
    let behind_an_entry_point = s.peers.iter().any(|p| p.entry_point);
    if entry.forwards.is_empty() && !behind_an_entry_point {
        return String::new();
    }
    let mut text = String::from("\nentry point:\n");
    if !entry.forwards.is_empty() {
        text += &forward_table(&entry.forwards, "  ");
        let d = &entry.dataplane;
        let carried = |yes: bool, ebpf: &'static str, otherwise: &'static str| {
            if s.data_path == "ebpf" && yes { ebpf } else { otherwise }
        };
        text += &format!(
            "  tcp/udp forwards: {}; tls/http: the proxy, backends see {}\n",
            carried(d.forwards_in_ebpf, "eBPF", "the proxy"),
            if d.proxy_steering { "the client's address" } else { "the tunnel address" }
        );
        text += &format!(
            "  data plane: {} forward slots, {} forwarded flows, {} proxied connections\n",
            d.forward_slots, d.forwarded_flows, d.proxied_connections
        );
    }
    if behind_an_entry_point {
        text += &format!(
            "  replies sent back to entry peers: {} flows\n",
            entry.dataplane.reply_to_flows
        );
    }
    text
}
