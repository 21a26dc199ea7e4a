//! The mirror driven by the protocol itself: device `b` of the virtual network (its sessions
//! in a pool of heap slots) against maps that record every write, in order.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use gateway_common::maps::{EntryForward, FlowKey, FlowNat};

use super::*;
use crate::dataplane::{
    EntryTransport, ForwardSlot, HeapRegion, SessionEntry, SessionSlot, SessionState, SessionUse,
};
use crate::wg::device::DeviceOptions;
use crate::wg::device::virtual_net::{A_ADDR, A_INNER, B_INNER, Net, key, packet, public, sa};
use crate::wg::projection::{SessionRole, SessionView};

/// One write, as the maps received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Write {
    Config(TunnelConfig),
    AddPeer(PeerSlot),
    RemovePeer(PeerSlot),
    PeerEndpoint(PeerSlot, Option<SocketAddr>),
    Tx(PeerSlot, Option<SessionSlot>),
    PeerEntry(PeerSlot, bool),
    Keys(SessionSlot, SessionEntry),
    State(SessionSlot, SessionState),
    Index(u32, SessionSlot),
    Unindex(u32, SessionSlot),
    Insert(PeerSlot, IpNet),
    Remove(PeerSlot, IpNet),
    Forward(ForwardSlot, Option<EntryForward>),
    Ports(EntryTransport, u16, u16, Option<ForwardSlot>),
    AddProxyFlow(FlowKey, FlowNat),
    RemoveProxyFlow(FlowKey),
}

use Write::*;

/// Maps that record what is written to them. Peer slots are handed out like the real ones
/// (first freed, last reused); a roaming generation per slot stands for the programs'.
pub(super) struct RecordingMaps {
    pub(super) writes: Vec<Write>,
    /// The attempt (counted from 0, over the entry point's writes) that fails, if any.
    pub(super) fail_at: Option<usize>,
    attempts: usize,
    free_peers: VecDeque<u32>,
    generations: HashMap<PeerSlot, u64>,
}

impl Default for RecordingMaps {
    fn default() -> Self {
        RecordingMaps {
            writes: Vec::new(),
            fail_at: None,
            attempts: 0,
            free_peers: (0..16).collect(),
            generations: HashMap::new(),
        }
    }
}

impl RecordingMaps {
    /// What the programs do when a peer's packets arrive from a new address.
    fn roam(&mut self, peer: PeerSlot) -> u64 {
        let generation = self.generations.entry(peer).or_default();
        *generation += 1;
        *generation
    }
}

impl MapOps for RecordingMaps {
    fn set_config(&mut self, config: &TunnelConfig) -> Result<()> {
        self.writes.push(Config(*config));
        Ok(())
    }
    fn add_peer(&mut self) -> Result<PeerSlot> {
        let slot = PeerSlot(self.free_peers.pop_front().expect("a free peer slot"));
        self.writes.push(AddPeer(slot));
        Ok(slot)
    }
    fn remove_peer(&mut self, peer: PeerSlot) -> Result<()> {
        self.free_peers.push_back(peer.0);
        self.writes.push(RemovePeer(peer));
        Ok(())
    }
    fn set_peer_endpoint(&mut self, peer: PeerSlot, endpoint: Option<&Endpoint>) -> Result<u64> {
        self.writes.push(PeerEndpoint(peer, endpoint.map(|e| e.addr)));
        Ok(self.generations.get(&peer).copied().unwrap_or(0))
    }
    fn set_peer_tx(&mut self, peer: PeerSlot, session: Option<SessionSlot>) -> Result<()> {
        self.writes.push(Tx(peer, session));
        Ok(())
    }
    fn set_peer_entry(&mut self, peer: PeerSlot, entry: bool) -> Result<()> {
        self.writes.push(PeerEntry(peer, entry));
        Ok(())
    }
    fn write_session(&mut self, slot: SessionSlot, entry: &SessionEntry) -> Result<()> {
        self.writes.push(Keys(slot, *entry));
        Ok(())
    }
    fn set_session_state(&mut self, slot: SessionSlot, state: SessionState) -> Result<()> {
        self.writes.push(State(slot, state));
        Ok(())
    }
    fn index_session(&mut self, local_index: u32, slot: SessionSlot) -> Result<()> {
        self.writes.push(Index(local_index, slot));
        Ok(())
    }
    fn unindex_session(&mut self, local_index: u32, slot: SessionSlot) -> Result<()> {
        self.writes.push(Unindex(local_index, slot));
        Ok(())
    }
    fn insert_allowed_ip(&mut self, peer: PeerSlot, net: IpNet) -> Result<()> {
        self.writes.push(Insert(peer, net));
        Ok(())
    }
    fn remove_allowed_ip(&mut self, peer: PeerSlot, net: IpNet) -> Result<()> {
        self.writes.push(Remove(peer, net));
        Ok(())
    }
}

impl RecordingMaps {
    /// Records `write`, unless it is the attempt that fails.
    fn record(&mut self, write: Write) -> Result<()> {
        let attempt = self.attempts;
        self.attempts += 1;
        if self.fail_at == Some(attempt) {
            return Err(crate::dataplane::DataplaneError::Invalid(format!("refused {write:?}")));
        }
        self.writes.push(write);
        Ok(())
    }
}

impl ForwardOps for RecordingMaps {
    fn set_entry_forward(
        &mut self,
        slot: ForwardSlot,
        forward: Option<&EntryForward>,
    ) -> Result<()> {
        self.record(Forward(slot, forward.copied()))
    }
    fn set_entry_ports(
        &mut self,
        transport: EntryTransport,
        first: u16,
        last: u16,
        slot: Option<ForwardSlot>,
    ) -> Result<()> {
        self.record(Ports(transport, first, last, slot))
    }
}

impl ProxyFlowOps for RecordingMaps {
    fn add_proxy_flow(&mut self, key: &FlowKey, nat: &FlowNat) -> Result<()> {
        self.record(AddProxyFlow(*key, *nat))
    }
    fn remove_proxy_flow(&mut self, key: &FlowKey) -> Result<()> {
        self.record(RemoveProxyFlow(*key))
    }
}

const PEER: PeerSlot = PeerSlot(0);

fn tunnel() -> TunnelConfig {
    TunnelConfig { tun_ifindex: 7, tun_mtu: 1420, listen_port: 51820, ..Default::default() }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// The virtual network, with `b` mirrored.
struct Rig {
    net: Net,
    mirror: Mirror,
    maps: RecordingMaps,
}

impl Rig {
    /// `b`'s sessions take their counters from a pool of `slots` slots.
    fn new(slots: usize) -> Rig {
        Rig::with(slots, DeviceOptions::default())
    }

    /// `b` with `options` besides its pool.
    fn with(slots: usize, options: DeviceOptions) -> Rig {
        let pool = HeapRegion::pool(slots);
        let b = DeviceOptions { session_memory: Arc::new(pool), ..options };
        let net = Net::with_each(DeviceOptions::default(), b, 0);
        let mut maps = RecordingMaps::default();
        let mut mirror = Mirror::new(&mut maps, tunnel()).unwrap();
        // The network's setup drained its events: its peer's first sync is its whole view.
        mirror.sync(&mut maps, &[net.b.dataplane_view(net.b_peer).unwrap()]);
        Rig { net, mirror, maps }
    }

    /// Follows what `b` did since the last step; returns the writes, in order.
    fn step(&mut self) -> Vec<Write> {
        let events: Vec<Event> = std::iter::from_fn(|| self.net.b.poll_event()).collect();
        self.mirror.follow(&mut self.maps, &self.net.b, &events);
        std::mem::take(&mut self.maps.writes)
    }

    fn view(&self) -> PeerView {
        self.net.b.dataplane_view(self.net.b_peer).unwrap()
    }

    fn session(&self, role: SessionRole) -> SessionView {
        *self.view().sessions.iter().find(|s| s.role == role).expect("a session in that role")
    }

    /// `b` initiates a handshake and sends with the new session.
    fn b_rekeys(&mut self) {
        self.net.advance(Duration::from_secs(121));
        self.step();
        self.net.b_sends(10);
    }
}

/// The writes that publish a session: keys (state cleared), then state, then index.
fn publication(s: &SessionView) -> [Write; 3] {
    let slot = SessionSlot(s.slot);
    let entry = SessionEntry {
        peer: PEER,
        local_index: s.local_index,
        remote_index: s.remote_index,
        created: s.created,
        send_key: s.send_key,
        recv_key: s.recv_key,
    };
    let state = SessionState { usable: s.usable, initiator: s.initiator };
    [Keys(slot, entry), State(slot, state), Index(s.local_index, slot)]
}

/// The writes that retire a session: state cleared, then index removed.
fn retirement(s: &SessionView) -> [Write; 2] {
    let slot = SessionSlot(s.slot);
    [State(slot, SessionState::default()), Unindex(s.local_index, slot)]
}

const BOTH: SessionUse = SessionUse { receive: true, send: true };
const RECEIVE: SessionUse = SessionUse { receive: true, send: false };

#[test]
fn a_new_peer_gets_its_slot_then_its_endpoint_then_its_prefixes() {
    let mut rig = Rig::new(4);
    assert_eq!(
        rig.step(),
        [
            Config(tunnel()),
            AddPeer(PEER),
            PeerEndpoint(PEER, Some(sa(A_ADDR))),
            Insert(PEER, net("10.0.0.1/32")),
        ]
    );
    assert_eq!(rig.step(), [], "nothing changed, nothing written");
}

#[test]
fn an_initiators_session_is_published_keys_first_and_then_sent_with() {
    let mut rig = Rig::new(4);
    rig.step();
    rig.net.b_sends(10);
    let writes = rig.step();
    let current = rig.session(SessionRole::Current);
    assert_eq!((current.slot, current.usable, current.initiator), (0, BOTH, true));
    let mut expected = publication(&current).to_vec();
    expected.push(Tx(PEER, Some(SessionSlot(0))));
    assert_eq!(writes, expected);
}

#[test]
fn a_responders_next_session_is_published_unusable_until_its_first_packet_confirms_it() {
    let mut rig = Rig::new(4);
    rig.step();
    // a's initiation reaches b; b's response is not delivered yet.
    rig.net.a.handle_tun_packet(rig.net.now, &packet(A_INNER, B_INNER, 10));
    let initiation = rig.net.a.poll_transmit().unwrap();
    rig.net.deliver_to_b(initiation.data);
    let next = rig.session(SessionRole::Next);
    assert_eq!(next.usable, SessionUse::default());
    assert_eq!(rig.step(), publication(&next), "published, but neither receives nor sends");
    // The response reaches a, whose staged packet confirms the session at b.
    rig.net.pump();
    assert_eq!(rig.session(SessionRole::Current).local_index, next.local_index);
    let confirmed = SessionState { usable: BOTH, initiator: false };
    assert_eq!(
        rig.step(),
        [State(SessionSlot(next.slot), confirmed), Tx(PEER, Some(SessionSlot(next.slot)))]
    );
}

#[test]
fn rotation_demotes_then_retires_and_freed_slots_are_reused_in_fifo_order() {
    let mut rig = Rig::new(3);
    rig.step();
    rig.net.b_sends(10);
    rig.step();
    let first = rig.session(SessionRole::Current);

    rig.b_rekeys();
    let second = rig.session(SessionRole::Current);
    assert_eq!((first.slot, second.slot), (0, 1));
    let demoted = SessionState { usable: RECEIVE, initiator: true };
    let mut expected = publication(&second).to_vec();
    expected.extend([State(SessionSlot(0), demoted), Tx(PEER, Some(SessionSlot(1)))]);
    assert_eq!(rig.step(), expected, "the new one first, then the old one stops sending");

    rig.b_rekeys();
    let third = rig.session(SessionRole::Current);
    assert_eq!(third.slot, 2);
    let mut expected = retirement(&first).to_vec();
    expected.extend(publication(&third));
    expected.extend([State(SessionSlot(1), demoted), Tx(PEER, Some(SessionSlot(2)))]);
    assert_eq!(rig.step(), expected, "the dropped one is retired before anything is published");

    rig.b_rekeys();
    let fourth = rig.session(SessionRole::Current);
    assert_eq!(fourth.slot, 0, "the first slot freed is the first reused");
    let mut expected = retirement(&second).to_vec();
    expected.extend(publication(&fourth));
    expected.extend([State(SessionSlot(2), demoted), Tx(PEER, Some(SessionSlot(0)))]);
    assert_eq!(rig.step(), expected);

    rig.b_rekeys();
    assert_eq!(rig.session(SessionRole::Current).slot, 1);
}

#[test]
fn a_removed_peer_loses_its_prefixes_then_its_sessions_then_its_slot() {
    let mut rig = Rig::new(4);
    rig.step();
    rig.net.b_sends(10);
    rig.step();
    let previous = rig.session(SessionRole::Current);
    rig.b_rekeys();
    rig.step();
    let current = rig.session(SessionRole::Current);
    rig.net.b.remove_peer(rig.net.b_peer);
    let mut expected = vec![Remove(PEER, net("10.0.0.1/32"))];
    expected.extend(retirement(&previous));
    expected.push(Tx(PEER, None));
    expected.extend(retirement(&current));
    expected.push(RemovePeer(PEER));
    assert_eq!(rig.step(), expected);
    assert!(rig.mirror.is_empty());
}

#[test]
fn sessions_that_expire_stop_sending_then_are_retired_with_the_rest() {
    let mut rig = Rig::new(4);
    rig.step();
    rig.net.b_sends(10);
    rig.step();
    let current = rig.session(SessionRole::Current);
    // Nothing is sent for three REJECT_AFTER_TIMEs: the keys are zeroed (all dropped).
    rig.net.advance(Duration::from_secs(541));
    let mut expected = vec![Tx(PEER, None)];
    expected.extend(retirement(&current));
    assert_eq!(rig.step(), expected);
    assert!(rig.view().sessions.is_empty());
}

#[test]
fn endpoint_roaming_is_written_and_the_programs_roaming_is_told_apart_from_ours() {
    let mut rig = Rig::new(4);
    rig.step();
    rig.net.a_sends(10);
    rig.step();
    let roamed_to = sa("198.51.100.7:40000");
    rig.net.b_sees_a_from = roamed_to;
    rig.net.a_sends(10);
    assert_eq!(rig.step(), [PeerEndpoint(PEER, Some(roamed_to))]);
    let id = rig.net.b_peer;
    assert!(!rig.mirror.roamed(id, 0), "our own write is not a roam");
    let generation = rig.maps.roam(PEER);
    assert!(rig.mirror.roamed(id, generation), "the programs moved it");
    assert!(!rig.mirror.roamed(id, generation), "and that is seen once");
}

/// 130 000 distinct prefixes, both families.
fn many_prefixes() -> Vec<IpNet> {
    (0u32..130_000)
        .map(|i| match i % 2 {
            0 => IpNet::new(std::net::Ipv4Addr::from(0x6440_0000 + i).into(), 32).unwrap(),
            _ => IpNet::new(std::net::Ipv6Addr::from(0xfd00_u128 << 112 | i as u128).into(), 128)
                .unwrap(),
        })
        .collect()
}

#[test]
fn allowed_ips_of_130_000_prefixes_are_one_diff_per_step() {
    let mut rig = Rig::new(4);
    rig.step();
    let id = rig.net.b_peer;
    let prefixes = many_prefixes();
    for &p in &prefixes {
        rig.net.b.add_allowed_ip(id, p);
    }
    let writes = rig.step();
    assert_eq!(writes.len(), prefixes.len(), "one insert each, nothing else");
    let mut inserted: Vec<IpNet> = writes
        .iter()
        .map(|w| match w {
            Insert(PEER, n) => *n,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    inserted.sort();
    let mut wanted = prefixes.clone();
    wanted.sort();
    assert_eq!(inserted, wanted);

    // `wg set ... allowed-ips`: replaced by the second half and 1 000 new ones.
    let fresh: Vec<IpNet> = (0u32..1000)
        .map(|i| IpNet::new([172, 16, (i >> 8) as u8, i as u8].into(), 32).unwrap())
        .collect();
    rig.net.b.clear_allowed_ips(id);
    for &p in prefixes[65_000..].iter().chain(&fresh) {
        rig.net.b.add_allowed_ip(id, p);
    }
    let writes = rig.step();
    let (gained, lost) = writes.split_at(fresh.len());
    assert!(gained.iter().all(|w| matches!(w, Insert(PEER, n) if fresh.contains(n))));
    assert_eq!(lost.len(), 65_001, "the first half and the original prefix");
    assert!(lost.iter().all(|w| matches!(w, Remove(PEER, _))));
    assert!(lost.contains(&Remove(PEER, net("10.0.0.1/32"))));
    assert_eq!(rig.mirror.prefixes(id).len(), 65_000 + 1000);
}

#[test]
fn a_prefix_moving_to_another_peer_is_taken_over_never_unmapped() {
    let mut rig = Rig::new(4);
    rig.step();
    let c = rig.net.b.upsert_peer(public(key(3)), false).unwrap().unwrap();
    rig.net.b.add_allowed_ip(c, net("10.0.0.1/32"));
    assert_eq!(rig.step(), [AddPeer(PeerSlot(1)), Insert(PeerSlot(1), net("10.0.0.1/32"))]);
    assert_eq!(rig.mirror.prefixes(rig.net.b_peer), []);
    assert_eq!(rig.mirror.prefixes(c), [net("10.0.0.1/32")]);
}

#[test]
fn configuration_changes_are_written_once() {
    let mut rig = Rig::new(4);
    rig.step();
    rig.net.b.set_listen_port(51821);
    rig.net.b.set_listen_port(51821);
    rig.net.b.set_mtu(1280);
    let expected = TunnelConfig { listen_port: 51821, tun_mtu: 1280, ..tunnel() };
    let writes = rig.step();
    assert_eq!(writes.last(), Some(&Config(expected)));
    assert_eq!(rig.mirror.config(), &expected);
}

#[test]
fn a_default_route_marks_the_peer_an_entry_point_after_its_prefixes_and_turns_reply_to_on() {
    let mut rig = Rig::new(4);
    rig.step();
    let id = rig.net.b_peer;
    rig.net.b.add_allowed_ip(id, net("0.0.0.0/0"));
    let reply_to = TunnelConfig { reply_to: true, ..tunnel() };
    assert_eq!(
        rig.step(),
        [Insert(PEER, net("0.0.0.0/0")), PeerEntry(PEER, true), Config(reply_to)]
    );
    rig.net.b.add_allowed_ip(id, net("::/0"));
    assert_eq!(rig.step(), [Insert(PEER, net("::/0"))], "marked already");
    rig.net.b.clear_allowed_ips(id);
    assert_eq!(
        rig.step(),
        [
            PeerEntry(PEER, false),
            Remove(PEER, net("0.0.0.0/0")),
            Remove(PEER, net("10.0.0.1/32")),
            Remove(PEER, net("::/0")),
            Config(tunnel()),
        ]
    );
}

#[test]
fn a_named_entry_peer_is_marked_from_its_first_sync_until_it_is_removed() {
    let named = DeviceOptions {
        entry_peers: std::collections::HashSet::from([public(key(1))]),
        ..Default::default()
    };
    let mut rig = Rig::with(4, named);
    let reply_to = TunnelConfig { reply_to: true, ..tunnel() };
    assert_eq!(
        rig.step(),
        [
            Config(tunnel()),
            AddPeer(PEER),
            PeerEndpoint(PEER, Some(sa(A_ADDR))),
            Insert(PEER, net("10.0.0.1/32")),
            PeerEntry(PEER, true),
            Config(reply_to),
        ]
    );
    // An ordinary peer beside it changes nothing of that.
    let c = rig.net.b.upsert_peer(public(key(3)), false).unwrap().unwrap();
    rig.net.b.add_allowed_ip(c, net("10.0.0.3/32"));
    assert_eq!(rig.step(), [AddPeer(PeerSlot(1)), Insert(PeerSlot(1), net("10.0.0.3/32"))]);
    rig.net.b.remove_peer(rig.net.b_peer);
    let writes = rig.step();
    assert_eq!(writes[writes.len() - 2..], [RemovePeer(PEER), Config(tunnel())]);
    assert!(!rig.mirror.has_entry_peers());
}
