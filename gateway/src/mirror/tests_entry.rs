//! The entry point's part of the mirror: forward tables published into `ENTRY_FORWARDS` and
//! `ENTRY_PORTS`, and proxied connections into `PROXY_FLOWS`, against maps that record every
//! write, in order.

use std::net::{IpAddr, SocketAddr};

use gateway_common::maps::{
    AF_INET, AF_INET6, AF_NONE, EntryForward, EntryTraffic, FlowKey, FlowNat, MAX_ENTRY_FORWARDS,
    NAT_DESTINATION, NAT_SOURCE,
};

use super::forwards::{ForwardPlan, Piece, PlanError};
use super::proxy_flows::{ProxiedAddrs, ProxyFlowEntries, SteerError};
use super::tests::{RecordingMaps, Write, Write::*};
use super::*;
use crate::dataplane::{EntryTransport, ForwardSlot};
use crate::entry::forward::Forward;

use EntryTransport::{Tcp, Udp};

/// A forward from `forward add` words, e.g. `tcp 22 --listen 192.0.2.1 --to 10.0.0.2`.
fn forward(words: &str) -> Forward {
    Forward::from_words(words)
}

fn lines(owned: &[String]) -> Vec<&str> {
    owned.iter().map(String::as_str).collect()
}

fn table(lines: &[&str]) -> ForwardTable {
    ForwardTable::from_forwards(lines.iter().map(|line| forward(line))).unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn sa(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn v4(text: &str) -> [u8; 16] {
    let mut bytes = [0; 16];
    if let IpAddr::V4(address) = ip(text) {
        bytes[..4].copy_from_slice(&address.octets());
    }
    bytes
}

/// An IPv4 forward's slot content.
fn slot_value(first: u16, to: &str, to_port: u16, listen: Option<&str>, next: u32) -> EntryForward {
    EntryForward {
        family: AF_INET,
        listen_family: if listen.is_some() { AF_INET } else { AF_NONE },
        first_port: first,
        to_port,
        next,
        to_addr: v4(to),
        listen: listen.map(v4).unwrap_or_default(),
    }
}

fn tunnel() -> TunnelConfig {
    TunnelConfig { tun_ifindex: 7, tun_mtu: 1420, listen_port: 51820, ..Default::default() }
}

/// A mirror on recording maps, its initial CONFIG write taken.
fn rig() -> (Mirror, RecordingMaps) {
    let mut maps = RecordingMaps::default();
    let mirror = Mirror::new(&mut maps, tunnel()).unwrap();
    maps.writes.clear();
    (mirror, maps)
}

fn publish(mirror: &mut Mirror, maps: &mut RecordingMaps, lines: &[&str]) -> Vec<Write> {
    mirror.publish_forwards(maps, &table(lines)).unwrap();
    std::mem::take(&mut maps.writes)
}

const ENTRY: TunnelConfig =
    TunnelConfig { tun_ifindex: 7, tun_mtu: 1420, listen_port: 51820, entry: true, ..NO_FLAGS };
const NO_FLAGS: TunnelConfig = TunnelConfig {
    tun_ifindex: 0,
    tun_mtu: 0,
    listen_port: 0,
    hub_forward: false,
    lan_redirect: false,
    fwmark: 0,
    entry: false,
    reply_to: false,
};

const S0: ForwardSlot = ForwardSlot(0);
const S1: ForwardSlot = ForwardSlot(1);
const S2: ForwardSlot = ForwardSlot(2);

#[test]
fn the_first_forward_is_written_then_its_ports_then_the_entry_flag() {
    let (mut mirror, mut maps) = rig();
    let writes = publish(&mut mirror, &mut maps, &["tcp 8000-8010 --to 10.0.0.2:9000"]);
    assert_eq!(
        writes,
        [
            Forward(S0, Some(slot_value(8000, "10.0.0.2", 9000, None, 0))),
            Ports(Tcp, 8000, 8010, Some(S0)),
            Config(ENTRY),
        ]
    );
    assert_eq!(publish(&mut mirror, &mut maps, &["tcp 8000-8010 --to 10.0.0.2:9000"]), []);
    // Keeping ports: the backend port of the first port is the first port.
    let writes = publish(
        &mut mirror,
        &mut maps,
        &["tcp 8000-8010 --to 10.0.0.2:9000", "udp 53 --to 10.0.0.3"],
    );
    assert_eq!(
        writes,
        [Forward(S1, Some(slot_value(53, "10.0.0.3", 53, None, 0))), Ports(Udp, 53, 53, Some(S1))]
    );
}

#[test]
fn name_routed_forwards_take_no_slot_but_turn_the_entry_point_on() {
    let (mut mirror, mut maps) = rig();
    let writes = publish(&mut mirror, &mut maps, &["tls 443 --sni a.example --to 10.0.0.2:443"]);
    assert_eq!(writes, [Config(ENTRY)]);
    assert_eq!(mirror.forward_slots(), 0);
    assert_eq!(publish(&mut mirror, &mut maps, &[]), [Config(tunnel())]);
}

#[test]
fn forwards_of_one_port_on_other_addresses_are_chained_each_slot_written_before_it_is_reached() {
    let (mut mirror, mut maps) = rig();
    let a = "tcp 22 --listen 192.0.2.1 --to 10.0.0.2";
    let b = "tcp 22 --listen 192.0.2.2 --to 10.0.0.3";
    let before_a = "tcp 22 --listen 192.0.2.0 --to 10.0.0.4";
    publish(&mut mirror, &mut maps, &[a]);
    // Appended to the chain: its slot, then the link to it.
    assert_eq!(
        publish(&mut mirror, &mut maps, &[a, b]),
        [
            Forward(S1, Some(slot_value(22, "10.0.0.3", 22, Some("192.0.2.2"), 0))),
            Forward(S0, Some(slot_value(22, "10.0.0.2", 22, Some("192.0.2.1"), 2))),
        ]
    );
    // A new head: its slot, leading on to the old head, then the port.
    assert_eq!(
        publish(&mut mirror, &mut maps, &[a, b, before_a]),
        [
            Forward(S2, Some(slot_value(22, "10.0.0.4", 22, Some("192.0.2.0"), 1))),
            Ports(Tcp, 22, 22, Some(S2)),
        ]
    );
    // The middle one goes: the link around it first, then its slot.
    assert_eq!(
        publish(&mut mirror, &mut maps, &[b, before_a]),
        [
            Forward(S2, Some(slot_value(22, "10.0.0.4", 22, Some("192.0.2.0"), 2))),
            Forward(S0, None),
        ]
    );
    // The head goes: the port moves on first, then its slot is cleared.
    assert_eq!(
        publish(&mut mirror, &mut maps, &[b]),
        [Ports(Tcp, 22, 22, Some(S1)), Forward(S2, None)]
    );
    // The last one: the flag off first, then the port, then the slot.
    assert_eq!(
        publish(&mut mirror, &mut maps, &[]),
        [Config(tunnel()), Ports(Tcp, 22, 22, None), Forward(S1, None)]
    );
    assert_eq!(mirror.forward_slots(), 0);
}

#[test]
fn ranges_overlapping_on_other_addresses_are_cut_where_the_forwards_sharing_them_change() {
    let forwards = table(&[
        "tcp 20-30 --listen 192.0.2.1 --to 10.0.0.2:1020",
        "tcp 25-35 --listen 192.0.2.2 --to 10.0.0.3",
        "udp 25 --to 10.0.0.4",
    ]);
    let plan = ForwardPlan::of(&forwards).unwrap();
    let piece = |transport, first, last, listen: Option<&str>, to: &str, to_port| Piece {
        transport,
        first,
        last,
        listen: listen.map(ip),
        to: ip(to),
        to_port,
    };
    assert_eq!(
        plan.pieces(),
        [
            piece(Tcp, 20, 24, Some("192.0.2.1"), "10.0.0.2", 1020),
            piece(Tcp, 25, 30, Some("192.0.2.1"), "10.0.0.2", 1025),
            piece(Tcp, 25, 30, Some("192.0.2.2"), "10.0.0.3", 25),
            piece(Tcp, 31, 35, Some("192.0.2.2"), "10.0.0.3", 31),
            piece(Udp, 25, 25, None, "10.0.0.4", 25),
        ]
    );
    let chains: Vec<usize> = plan.chains().map(<[Piece]>::len).collect();
    assert_eq!(chains, [1, 2, 1, 1]);

    let (mut mirror, mut maps) = rig();
    mirror.publish_forwards(&mut maps, &forwards).unwrap();
    let ports: Vec<&Write> = maps.writes.iter().filter(|w| matches!(w, Ports(..))).collect();
    assert_eq!(
        ports,
        [
            &Ports(Tcp, 20, 24, Some(S0)),
            &Ports(Tcp, 25, 30, Some(S1)),
            &Ports(Tcp, 31, 35, Some(ForwardSlot(3))),
            &Ports(Udp, 25, 25, Some(ForwardSlot(4))),
        ]
    );
    assert!(
        maps.writes
            .contains(&Forward(S1, Some(slot_value(25, "10.0.0.2", 1025, Some("192.0.2.1"), 3))))
    );
}

#[test]
fn more_forwards_on_one_port_than_a_chain_holds_are_refused_and_nothing_is_written() {
    let (mut mirror, mut maps) = rig();
    let lines: Vec<String> =
        (1..=5).map(|i| format!("udp 5000-5001 --listen 192.0.2.{i} --to 10.0.0.2")).collect();
    let four: Vec<&str> = lines[..4].iter().map(String::as_str).collect();
    assert!(ForwardPlan::of(&table(&four)).is_ok());
    let five: Vec<&str> = lines.iter().map(String::as_str).collect();
    let error = mirror.publish_forwards(&mut maps, &table(&five)).unwrap_err();
    assert!(matches!(
        error,
        ForwardsError::Plan(PlanError::ChainTooLong { transport: Udp, port: 5000, forwards: 5 })
    ));
    assert_eq!(
        error.to_string(),
        "5 forwards on different listen addresses would take udp port 5000; the data plane \
         takes at most 4 per port"
    );
    assert_eq!(maps.writes, []);
}

#[test]
fn freed_slots_are_reused_last() {
    let (mut mirror, mut maps) = rig();
    publish(&mut mirror, &mut maps, &["tcp 1 --to 10.0.0.2", "tcp 2 --to 10.0.0.2"]);
    publish(&mut mirror, &mut maps, &["tcp 2 --to 10.0.0.2"]);
    let writes = publish(&mut mirror, &mut maps, &["tcp 2 --to 10.0.0.2", "tcp 3 --to 10.0.0.2"]);
    assert_eq!(writes[0], Forward(S2, Some(slot_value(3, "10.0.0.2", 3, None, 0))));
}

#[test]
fn a_change_needing_more_fresh_slots_than_are_free_retires_the_old_pieces_first() {
    let (mut mirror, mut maps) = rig();
    let count = MAX_ENTRY_FORWARDS as u16;
    let old: Vec<String> = (1..=count).map(|p| format!("udp {p} --to 10.0.0.2")).collect();
    let new: Vec<String> =
        (1..=count).map(|p| format!("udp {} --to 10.0.0.3", p + 10_000)).collect();
    publish(&mut mirror, &mut maps, &lines(&old));
    let writes = publish(&mut mirror, &mut maps, &lines(&new));
    // Every slot is cleared (after its port) before any is written again.
    let first_fill = writes.iter().position(|w| matches!(w, Forward(_, Some(_)))).unwrap();
    let cleared = writes[..first_fill].iter().filter(|w| matches!(w, Forward(_, None))).count();
    assert_eq!(cleared, usize::from(count));
    assert!(matches!(writes[0], Ports(Udp, 1, _, None)), "the ports go first: {:?}", writes[0]);
    assert_eq!(mirror.forward_slots(), usize::from(count));
    assert_eq!(publish(&mut mirror, &mut maps, &lines(&new)), []);
}

#[test]
fn a_failed_write_is_not_recorded_and_the_next_publication_goes_on_from_there() {
    let (mut mirror, mut maps) = rig();
    let lines = ["tcp 80 --to 10.0.0.2", "tcp 81 --to 10.0.0.3"];
    maps.fail_at = Some(1);
    assert!(matches!(
        mirror.publish_forwards(&mut maps, &table(&lines)),
        Err(ForwardsError::Dataplane(_))
    ));
    assert_eq!(maps.writes, [Forward(S0, Some(slot_value(80, "10.0.0.2", 80, None, 0)))]);
    maps.writes.clear();
    assert_eq!(
        publish(&mut mirror, &mut maps, &lines),
        [
            Forward(S1, Some(slot_value(81, "10.0.0.3", 81, None, 0))),
            Ports(Tcp, 80, 80, Some(S0)),
            Ports(Tcp, 81, 81, Some(S1)),
            Config(ENTRY),
        ]
    );
}

#[test]
fn ipv6_forwards_carry_their_family_and_listen_address() {
    let forwards = table(&["udp 443 --listen 2001:db8::1 --to [fd00::2]:8443"]);
    let plan = ForwardPlan::of(&forwards).unwrap();
    let value = plan.pieces()[0].entry(Some(ForwardSlot(6)));
    assert_eq!((value.family, value.listen_family), (AF_INET6, AF_INET6));
    assert_eq!((value.first_port, value.to_port, value.next), (443, 8443, 7));
    assert_eq!(value.to_addr, "fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
    assert_eq!(value.listen, "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
}

// Proxied connections.

fn addrs(client: &str, local: &str, backend: &str) -> ProxiedAddrs {
    let transport = crate::entry::forward::Transport::Tcp;
    ProxiedAddrs { transport, client: sa(client), local: sa(local), backend: sa(backend) }
}

fn flow_key(src: &str, dst: &str) -> FlowKey {
    let (src, dst) = (sa(src), sa(dst));
    FlowKey {
        family: AF_INET,
        proto: 6,
        _pad: 0,
        src_port: src.port().to_be(),
        dst_port: dst.port().to_be(),
        src: v4(&src.ip().to_string()),
        dst: v4(&dst.ip().to_string()),
    }
}

fn flow_nat(rewrite: u16, to: &str) -> FlowNat {
    let to = sa(to);
    FlowNat {
        rewrite,
        port: to.port().to_be(),
        forward: 0,
        addr: v4(&to.ip().to_string()),
        last_seen_ns: 0,
    }
}

const CLIENT: &str = "203.0.113.5:40000";
const LOCAL: &str = "10.0.0.1:51000";
const BACKEND: &str = "10.0.0.2:443";

#[test]
fn a_proxied_connection_is_two_entries_its_packets_source_and_its_replies_destination() {
    let entries = ProxyFlowEntries::of(addrs(CLIENT, LOCAL, BACKEND)).unwrap();
    assert_eq!(entries.outbound, (flow_key(LOCAL, BACKEND), flow_nat(NAT_SOURCE, CLIENT)));
    assert_eq!(entries.inbound, (flow_key(BACKEND, CLIENT), flow_nat(NAT_DESTINATION, LOCAL)));
    assert_eq!(
        entries.outbound.0.src_port,
        u16::from_ne_bytes([0xc7, 0x38]),
        "51000, network order"
    );
    // An IPv4 client accepted on a dual-stack socket.
    let mapped = ProxyFlowEntries::of(addrs("[::ffff:203.0.113.5]:40000", LOCAL, BACKEND));
    assert_eq!(mapped.unwrap(), entries);
    let mixed = addrs("[2001:db8::5]:40000", LOCAL, BACKEND);
    assert_eq!(ProxyFlowEntries::of(mixed), Err(SteerError::Families(mixed)));
    // A udp client of a udp forward the proxy relays: the same, for UDP.
    let udp = ProxiedAddrs {
        transport: crate::entry::forward::Transport::Udp,
        ..addrs(CLIENT, LOCAL, BACKEND)
    };
    let entries = ProxyFlowEntries::of(udp).unwrap();
    assert_eq!((entries.outbound.0.proto, entries.inbound.0.proto), (17, 17));
    assert_eq!(entries.inbound.1, flow_nat(NAT_DESTINATION, LOCAL));
}

#[test]
fn steering_writes_the_replies_entry_first_and_releasing_removes_it_last() {
    let (mut mirror, mut maps) = rig();
    let connection = addrs(CLIENT, LOCAL, BACKEND);
    mirror.steer_proxied(&mut maps, connection).unwrap();
    let entries = ProxyFlowEntries::of(connection).unwrap();
    assert_eq!(
        std::mem::take(&mut maps.writes),
        [
            AddProxyFlow(entries.inbound.0, entries.inbound.1),
            AddProxyFlow(entries.outbound.0, entries.outbound.1),
        ]
    );
    assert_eq!(mirror.proxied_connections(), 1);
    // The same client port to the same backend again (through another public port): the
    // backend could not tell the two apart.
    let again = addrs(CLIENT, "10.0.0.1:51001", BACKEND);
    assert_eq!(mirror.steer_proxied(&mut maps, again), Err(SteerError::InUse(again)));
    assert_eq!(maps.writes, []);
    mirror.release_proxied(&mut maps, again);
    assert_eq!(maps.writes, [], "never steered: nothing to remove");
    mirror.release_proxied(&mut maps, connection);
    assert_eq!(
        std::mem::take(&mut maps.writes),
        [RemoveProxyFlow(entries.outbound.0), RemoveProxyFlow(entries.inbound.0)]
    );
    assert_eq!(mirror.proxied_connections(), 0);
    mirror.steer_proxied(&mut maps, again).unwrap();
}

#[test]
fn a_connection_whose_second_entry_fails_leaves_no_entry_behind() {
    let (mut mirror, mut maps) = rig();
    maps.fail_at = Some(1);
    let connection = addrs(CLIENT, LOCAL, BACKEND);
    assert!(matches!(mirror.steer_proxied(&mut maps, connection), Err(SteerError::Dataplane(_))));
    let inbound = ProxyFlowEntries::of(connection).unwrap().inbound;
    assert_eq!(
        std::mem::take(&mut maps.writes),
        [AddProxyFlow(inbound.0, inbound.1), RemoveProxyFlow(inbound.0)]
    );
    assert_eq!(mirror.proxied_connections(), 0);
    mirror.steer_proxied(&mut maps, connection).unwrap();
    assert_eq!(maps.writes.len(), 2);
}

#[test]
fn a_forwards_traffic_is_the_sum_over_its_pieces_and_no_other_forwards() {
    let (mut mirror, mut maps) = rig();
    // tcp 22 on 192.0.2.2 cuts 20-30 on 192.0.2.1 into three pieces.
    let lines = [
        "tcp 20-30 --listen 192.0.2.1 --to 10.0.0.2",
        "tcp 22 --listen 192.0.2.2 --to 10.0.0.3",
        "udp 53 --to 10.0.0.4",
        "tls 443 --sni a.example --to 10.0.0.5",
    ];
    publish(&mut mirror, &mut maps, &lines);
    let table = table(&lines);
    // Each slot carried slot + 1 flows and 100 × (slot + 1) bytes each way.
    let read = |slot: ForwardSlot| -> Result<EntryTraffic> {
        let n = u64::from(slot.0) + 1;
        Ok(EntryTraffic {
            flows: n,
            packets_to_backend: n,
            bytes_to_backend: 100 * n,
            packets_to_client: n,
            bytes_to_client: 100 * n,
        })
    };
    let traffic = mirror.forward_traffic(&table, read);
    let of = |words: &str| {
        let selector = forward(&format!("{words} --to 10.0.0.9")).selector().clone();
        traffic.iter().find(|(s, _)| *s == selector).map(|(_, t)| *t)
    };
    let slots = mirror.forward_slots() as u64;
    assert_eq!(slots, 5, "three pieces of 20-30, one of 22 on 192.0.2.2, one of udp 53");
    let all: u64 = (1..=slots).sum();
    let wide = of("tcp 20-30 --listen 192.0.2.1").unwrap();
    let narrow = of("tcp 22 --listen 192.0.2.2").unwrap();
    let udp = of("udp 53").unwrap();
    assert_eq!(wide.flows + narrow.flows + udp.flows, all, "every slot counted once");
    assert_eq!(wide.bytes_to_backend, 100 * wide.flows);
    assert!(wide.flows >= 1 + 2 + 3, "three slots: {wide:?}");
    assert!(narrow.flows >= 1 && udp.flows >= 1);
    assert_eq!(of("tls 443 --sni a.example"), None, "the proxy's, not the programs'");

    // A slot that cannot be read counts nothing; the others still do.
    let failing = |slot: ForwardSlot| -> Result<EntryTraffic> {
        if slot.0 == 0 {
            Err(crate::dataplane::DataplaneError::Invalid("gone".to_string()))
        } else {
            read(slot)
        }
    };
    let partial = mirror.forward_traffic(&table, failing);
    let total: u64 = partial.iter().map(|(_, t)| t.flows).sum();
    assert_eq!(total, all - 1);
}
