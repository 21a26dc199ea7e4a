//! The eBPF data plane from userspace: loading the programs (gateway-ebpf, embedded at build
//! time), attaching them, and typed access to their maps (the layouts are the contract in
//! `gateway_common::maps`). What the maps should hold is decided on the other side of the
//! seam, by `crate::mirror`, which writes through [`crate::mirror::MapOps`].
//!
//! One file per map or concern, each owning its fields: `sessions` (`SESSIONS`,
//! `RX_INDEX`, and the slot pool of `session_pool`), `peers` (`PEERS`), `allowed_ips` (the
//! LPM tries), `config` (`CONFIG`), `stats` (`STATS`), `attach` (links, `REDIRECT_IFACES`,
//! `UNDERLAYS`), `loader` (the object and its programs). [`Dataplane`] holds them and keeps
//! the rules that span two maps (a session names a peer in use; retiring a session stops
//! its peer sending with it; removing a peer removes its prefixes first).
//!
//! The daemon:
//! 1. `Dataplane::load(Capacities::default())`, and gives `session_pool()` to the protocol
//!    core as its session memory;
//! 2. `attach_tunnel(tun, TunnelSends::Batched)`, `attach_underlay(iface,
//!    AttachPreference::Native)` for each underlay (see `underlay_interfaces`),
//!    `attach_lan(iface)` for LAN interfaces;
//! 3. after each protocol step: hands the step to the mirror, which writes `CONFIG`, peers,
//!    endpoints, AllowedIPs and sessions through `MapOps` (the namespace tests call the
//!    same typed writes directly: `add_peer`, `set_allowed_ips`, `publish_session`, ...);
//! 4. on its timer tick: `peer_activity` and `peer_endpoint` (roaming), `stats`.
//!
//! The daemon's own (userspace) path must take send nonces and accept received counters on
//! the shared words of `session_counters`, so each is used once whichever path carried it.

mod allowed_ips;
mod attach;
mod clock;
mod config;
mod entry;
mod error;
mod loader;
mod masquerade;
mod mirror_ops;
mod mmap;
mod netdev;
mod netlink;
mod peers;
mod programs;
mod session_pool;
mod sessions;
mod slots;
mod stats;
mod test_run;
mod underlay;
mod verifier;

pub use attach::{AttachMode, AttachPreference, Interface, TunnelSends};
pub use clock::{instant_to_monotonic_ns, monotonic_now_ns, monotonic_ns_to_instant};
pub use config::TunnelConfig;
pub use entry::{EntryTransport, ForwardSlot};
pub use error::{DataplaneError, Result};
pub use loader::{Capacities, embedded_object};
pub use masquerade::MasqueradeConfig;
pub use mmap::MappedArray;
pub use netdev::{
    TxChecksum, enable_entry_routing, gso_max_segs, ipv6_forwarding_enabled, tx_checksum,
};
pub use peers::{PeerActivitySnapshot, PeerEndpoint, PeerSlot};
pub use programs::Program;
#[cfg(test)]
pub(crate) use session_pool::HeapRegion;
pub use session_pool::{SlotPool, SlotRegion};
pub use sessions::{SessionEntry, SessionSlot, SessionState, SessionUse};
pub use stats::Stats;
pub use test_run::{TestRunInput, TestRunOutput};
pub use underlay::{route_interface, underlay_interfaces};
pub use verifier::{INSTRUCTION_BUDGET, INSTRUCTION_LIMIT, ProgramReport, Verdict};

use std::net::IpAddr;
use std::sync::Arc;

use gateway_common::maps::{
    EntryForward, EntryTraffic, FlowKey, FlowNat, MasqFlow, ReplyTo, SessionCounters,
};
use ipnet::IpNet;

use self::allowed_ips::AllowedIpMaps;
use self::attach::Attachments;
use self::config::ConfigMap;
use self::entry::EntryMaps;
use self::loader::Programs;
use self::masquerade::MasqueradeMaps;
use self::peers::PeerMaps;
use self::sessions::SessionMaps;
use self::stats::StatsMap;

/// The loaded data plane: programs, maps, and what is attached where. Dropping it (or
/// `detach_all`) detaches everything; nothing is pinned.
pub struct Dataplane {
    // Field order is drop order: attachments before the programs they refer to.
    attachments: Attachments,
    programs: Programs,
    sessions: SessionMaps,
    peers: PeerMaps,
    allowed_ips: AllowedIpMaps,
    config: ConfigMap,
    stats: StatsMap,
    entry: EntryMaps,
    masquerade: MasqueradeMaps,
    capacities: Capacities,
}

impl Dataplane {
    /// Loads the object with the given capacities and verifies every program.
    pub fn load(capacities: Capacities) -> Result<Dataplane> {
        let loaded = loader::load(capacities)?;
        Ok(Dataplane {
            attachments: loaded.attachments,
            programs: loaded.programs,
            sessions: loaded.sessions,
            peers: loaded.peers,
            allowed_ips: loaded.allowed_ips,
            config: loaded.config,
            stats: loaded.stats,
            entry: loaded.entry,
            masquerade: loaded.masquerade,
            capacities,
        })
    }

    pub fn capacities(&self) -> Capacities {
        self.capacities
    }

    // Programs.

    /// What the verifier made of each program (its cost, or why it refused it).
    pub fn program_reports(&self) -> &[ProgramReport] {
        self.programs.reports()
    }

    /// Whether the kernel took the program (a rejected one has a fallback, see
    /// `Program::fallback`).
    pub fn is_loaded(&self, program: Program) -> bool {
        self.programs.is_loaded(program)
    }

    /// The loaded program, for attaching and `BPF_PROG_TEST_RUN`.
    pub fn program(&self, program: Program) -> Result<&aya::programs::Program> {
        self.programs.get(program)
    }

    /// Runs `program` once (or `repeat` times) on `input` with `BPF_PROG_TEST_RUN`.
    pub fn test_run(&self, program: Program, input: &TestRunInput<'_>) -> Result<TestRunOutput> {
        test_run::test_run(self.programs.get(program)?, program, input)
    }

    // Attachments.

    /// Attaches the receive path to an underlay interface: XDP in the driver, else generic
    /// XDP, else the TC receive program, starting at `prefer`. With XDP, the TC handoff
    /// program goes on the interface's ingress too. Logs one line naming the mode.
    pub fn attach_underlay(
        &mut self,
        iface: impl Into<Interface>,
        prefer: AttachPreference,
    ) -> Result<AttachMode> {
        self.attachments.attach_underlay(&mut self.programs, iface, prefer)
    }

    /// Whether any receive program loaded (XDP with its handoff, or TC).
    pub fn receives(&self) -> bool {
        self.programs.receives()
    }

    /// How an attached underlay completes checksums, as the send program knows it.
    pub fn underlay_checksum(&self, ifindex: u32) -> Option<TxChecksum> {
        self.attachments.underlay_checksum(ifindex)
    }

    /// Reads an attached underlay's checksum offload again (after a link change).
    pub fn refresh_underlay(&mut self, ifindex: u32) {
        self.attachments.refresh_underlay(ifindex)
    }

    /// Tells the send program how an underlay completes the checksums the stack leaves to
    /// it (`UNDERLAYS`). `attach_underlay` does this by itself.
    pub fn set_underlay_checksum(&mut self, ifindex: u32, checksum: TxChecksum) -> Result<()> {
        self.attachments.set_underlay_checksum(ifindex, checksum)
    }

    /// Puts the send program on the TUN's egress (see `TunnelSends`).
    pub fn attach_tunnel(&mut self, iface: impl Into<Interface>, sends: TunnelSends) -> Result<()> {
        self.attachments.attach_tunnel(&mut self.programs, iface, sends)
    }

    /// Puts the entry point's proxy program (`Program::EntryProxy`) on the TUN's egress, in
    /// front of the send program whether that is attached before or after: proxied (tls/http)
    /// connections then carry their clients' addresses (`PROXY_FLOWS`). It works without the
    /// send program too (the packets reach the daemon through the TUN fd). Only an entry
    /// point needs it.
    pub fn attach_proxy_steering(&mut self, iface: impl Into<Interface>) -> Result<()> {
        self.attachments.attach_proxy_steering(&mut self.programs, iface)
    }

    /// Puts the LAN send program on a LAN interface (driver XDP, else generic) and lets the
    /// receive path redirect decrypted packets out of it.
    pub fn attach_lan(&mut self, iface: impl Into<Interface>) -> Result<AttachMode> {
        self.attachments.attach_lan(&mut self.programs, iface)
    }

    /// Attaches the do-nothing XDP program (native mode), e.g. to the far end of a veth pair,
    /// which only accepts XDP_TX/redirected frames while it runs an XDP program.
    pub fn attach_xdp_pass(&mut self, iface: impl Into<Interface>) -> Result<()> {
        self.attachments.attach_xdp_pass(&mut self.programs, iface)
    }

    /// Detaches every program from one interface (and forgets it as a LAN interface).
    pub fn detach_interface(&mut self, ifindex: u32) -> Result<()> {
        self.attachments.detach_interface(ifindex)
    }

    /// Detaches everything this data plane attached.
    pub fn detach_all(&mut self) -> Result<()> {
        self.attachments.detach_all()
    }

    /// (interface index, program) pairs currently attached.
    pub fn attached(&self) -> Vec<(u32, Program)> {
        self.attachments.attached()
    }

    // CONFIG and STATS.

    /// Sets `CONFIG[0]`. Until it is set (listen port 0), the programs pass everything.
    pub fn set_config(&mut self, c: &TunnelConfig) -> Result<()> {
        self.config.set(c)
    }

    pub fn config(&self) -> Result<TunnelConfig> {
        self.config.get()
    }

    /// Every counter, summed over CPUs.
    pub fn stats(&self) -> Result<Stats> {
        self.stats.read()
    }

    // Sessions.

    /// Where sessions' counters come from: give it to the protocol core
    /// (`DeviceOptions::session_memory`), which allocates a slot per keypair.
    pub fn session_pool(&self) -> Arc<SlotPool> {
        self.sessions.pool()
    }

    /// Publishes a keypair in the slot its counters occupy and makes its receiver index
    /// known to the programs: `write_session`, `set_session_state`, `index_session`. The
    /// counters are left as they are: they may be in use already.
    pub fn publish_session(
        &mut self,
        slot: SessionSlot,
        entry: &SessionEntry,
        state: SessionState,
    ) -> Result<()> {
        self.write_session(slot, entry)?;
        self.set_session_state(slot, state)?;
        if let Err(e) = self.index_session(entry.local_index, slot) {
            let _ = self.set_session_state(slot, SessionState::default());
            return Err(e);
        }
        Ok(())
    }

    /// Writes a session's fields with its state cleared first, so the programs ignore the
    /// slot until `set_session_state`. Its peer must be in use.
    pub fn write_session(&mut self, slot: SessionSlot, e: &SessionEntry) -> Result<()> {
        self.peers.check(e.peer)?;
        self.sessions.write(slot, e)
    }

    /// Stores a session's `state`; the default state retires it.
    pub fn set_session_state(&mut self, slot: SessionSlot, state: SessionState) -> Result<()> {
        self.sessions.set_state(slot, state)
    }

    /// Makes `local_index` lead the programs to `slot` (`RX_INDEX`).
    pub fn index_session(&mut self, local_index: u32, slot: SessionSlot) -> Result<()> {
        self.sessions.index(local_index, slot)
    }

    /// Forgets `local_index`, if it still leads to `slot` (the index may have been reused).
    pub fn unindex_session(&mut self, local_index: u32, slot: SessionSlot) -> Result<()> {
        self.sessions.unindex(local_index, slot)
    }

    /// Changes what the programs may do with a published session (e.g. confirming a
    /// responder's `next` keypair once its first packet arrived).
    pub fn set_session_use(&mut self, slot: SessionSlot, usable: SessionUse) -> Result<()> {
        self.sessions.set_use(slot, usable)
    }

    /// Retires the session published under `local_index`: programs stop using it at once, its
    /// receiver index is forgotten, and a peer still sending with it sends with none (its
    /// packets go to the daemon). If the slot already holds a newer session (the keypair was
    /// dropped and its slot reused before this), only the old index goes.
    pub fn retire_session(&mut self, slot: SessionSlot, local_index: u32) -> Result<()> {
        let (published_index, peer) = self.sessions.written(slot)?;
        if published_index == local_index {
            self.sessions.set_state(slot, SessionState::default())?;
            if self.peers.is_used(peer) {
                self.peers.clear_tx_session_if(peer, slot);
            }
        }
        self.sessions.unindex(local_index, slot)
    }

    /// The `state` word of a slot (0: not published).
    pub fn session_state(&self, slot: SessionSlot) -> Result<u32> {
        self.sessions.state(slot)
    }

    /// The session's send nonce counter and replay window, shared with the programs: the
    /// daemon's own path takes nonces (`send_nonce.fetch_add`) and accepts counters
    /// (`replay.accept`) on the same words, so each is used once whichever path carries the
    /// packet.
    pub fn session_counters(&self, slot: SessionSlot) -> Result<&SessionCounters> {
        self.sessions.counters(slot)
    }

    // Peers.

    /// A fresh peer slot: no endpoint, no session, zeroed activity.
    pub fn add_peer(&mut self) -> Result<PeerSlot> {
        self.peers.add()
    }

    /// Removes a peer: its AllowedIPs first (no new packets map to it; found by walking the
    /// tries), then its endpoint and session. Its sessions must be retired by the caller
    /// (before or after).
    pub fn remove_peer(&mut self, slot: PeerSlot) -> Result<()> {
        self.peers.check(slot)?;
        self.allowed_ips.clear(slot)?;
        self.peers.remove(slot)
    }

    /// Frees a peer's slot (its endpoint and session) when its AllowedIPs are known to be
    /// gone already, as the mirror removes them first: no walk of the tries.
    pub fn release_peer(&mut self, slot: PeerSlot) -> Result<()> {
        self.peers.remove(slot)
    }

    /// Sets (or, with None, clears) where the peer's packets go. Without an endpoint the
    /// programs leave the peer's outgoing packets to the daemon.
    pub fn set_peer_endpoint(&mut self, slot: PeerSlot, e: Option<&PeerEndpoint>) -> Result<()> {
        self.peers.set_endpoint(slot, e)
    }

    /// The peer's endpoint as the programs last left it (they roam it), and the roaming
    /// generation: it changes each time a program moves the endpoint.
    pub fn peer_endpoint(&self, slot: PeerSlot) -> Result<(Option<PeerEndpoint>, u64)> {
        self.peers.endpoint(slot)
    }

    /// Sets the session the programs send this peer's packets with (the current keypair);
    /// None: packets to the peer go to the daemon.
    pub fn set_peer_tx_session(
        &mut self,
        slot: PeerSlot,
        session: Option<SessionSlot>,
    ) -> Result<()> {
        if let Some(s) = session
            && s.0 >= self.sessions.entries()
        {
            return Err(DataplaneError::Invalid(format!("session slot {} out of range", s.0)));
        }
        self.peers.set_tx_session(slot, session)
    }

    /// What the programs counted for the peer.
    pub fn peer_activity(&self, slot: PeerSlot) -> Result<PeerActivitySnapshot> {
        self.peers.activity(slot)
    }

    // AllowedIPs.

    /// Adds prefixes to a peer's AllowedIPs (host bits are ignored); returns how many were
    /// added. One map update per prefix: 130 000 prefixes take a fraction of a second.
    pub fn add_allowed_ips(
        &mut self,
        peer: PeerSlot,
        nets: impl IntoIterator<Item = IpNet>,
    ) -> Result<usize> {
        self.peers.check(peer)?;
        self.allowed_ips.add(peer, nets)
    }

    /// Removes one prefix if it belongs to `peer`; returns whether it did.
    pub fn remove_allowed_ip(&mut self, peer: PeerSlot, net: IpNet) -> Result<bool> {
        self.allowed_ips.remove(peer, net)
    }

    /// Replaces a peer's AllowedIPs with `nets`, touching only what changes.
    pub fn set_allowed_ips(&mut self, peer: PeerSlot, nets: &[IpNet]) -> Result<()> {
        self.peers.check(peer)?;
        self.allowed_ips.set(peer, nets)
    }

    /// Removes every prefix of a peer (found by walking the tries).
    pub fn clear_allowed_ips(&mut self, peer: PeerSlot) -> Result<()> {
        self.allowed_ips.clear(peer)
    }

    /// A peer's AllowedIPs, sorted, as the kernel's tries hold them (for diagnostics and
    /// tests: one walk of both tries; a failed walk lists nothing).
    pub fn allowed_ips(&self, peer: PeerSlot) -> Vec<IpNet> {
        self.allowed_ips.of(peer).unwrap_or_else(|e| {
            tracing::warn!("data plane: {e}");
            Vec::new()
        })
    }

    /// The peer the programs map `addr` to (longest-prefix match in the kernel's trie, as
    /// the programs look it up), for diagnostics.
    pub fn allowed_ip_owner(&self, addr: IpAddr) -> Result<Option<PeerSlot>> {
        self.allowed_ips.owner(addr)
    }

    /// Marks a peer as an entry point (`PEER_ENTRY`): its packets may carry sources no
    /// ordinary peer owns, and replies to the flows it brings in go back to it.
    pub fn set_peer_entry(&mut self, slot: PeerSlot, entry: bool) -> Result<()> {
        self.peers.check(slot)?;
        self.peers.set_entry(slot, entry)
    }

    // The entry point.

    /// Writes (or, with None, clears) one tcp/udp forward.
    pub fn set_entry_forward(
        &mut self,
        slot: ForwardSlot,
        forward: Option<&EntryForward>,
    ) -> Result<()> {
        self.entry.set_forward(slot, forward)
    }

    /// Points the public ports `first..=last` of `transport` at a forward (None: at none).
    pub fn set_entry_ports(
        &mut self,
        transport: EntryTransport,
        first: u16,
        last: u16,
        slot: Option<ForwardSlot>,
    ) -> Result<()> {
        self.entry.set_ports(transport, first, last, slot)
    }

    /// What the forward piece in `slot` carried (`ENTRY_TRAFFIC`, summed over CPUs).
    pub fn entry_traffic(&self, slot: ForwardSlot) -> Result<EntryTraffic> {
        self.entry.traffic(slot)
    }

    /// The forward the programs find for a public port.
    pub fn entry_port(&self, transport: EntryTransport, port: u16) -> Result<Option<ForwardSlot>> {
        self.entry.port(transport, port)
    }

    /// Registers one direction of a proxied connection (`PROXY_FLOWS`).
    pub fn add_proxy_flow(&mut self, key: &FlowKey, nat: &FlowNat) -> Result<()> {
        self.entry.add_proxy_flow(key, nat)
    }

    /// Forgets one direction of a proxied connection.
    pub fn remove_proxy_flow(&mut self, key: &FlowKey) -> Result<()> {
        self.entry.remove_proxy_flow(key)
    }

    /// The forwarded flows the programs remember (`ENTRY_FLOWS`).
    pub fn entry_flows(&self) -> Vec<(FlowKey, FlowNat)> {
        self.entry.flows()
    }

    /// How many flows `ENTRY_FLOWS` and `REPLY_TO` hold, each counted up to `limit`.
    pub fn entry_flow_counts(&self, limit: usize) -> (usize, usize) {
        self.entry.flow_counts(limit)
    }

    /// The flows whose replies go back to an entry peer (`REPLY_TO`).
    pub fn reply_to_flows(&self) -> Vec<(FlowKey, ReplyTo)> {
        self.entry.reply_to()
    }

    // Masquerade.

    /// Puts the masquerade programs on `iface`: `masq_out` on its egress, `masq_in` first on
    /// its ingress (before the receive handoff, which ends the chain for what it passes).
    pub fn attach_masquerade(&mut self, iface: impl Into<Interface>) -> Result<()> {
        self.attachments.attach_masquerade(&mut self.programs, iface)
    }

    /// Writes (None: clears) where and as what the programs masquerade.
    pub fn set_masquerade(&mut self, config: Option<MasqueradeConfig>) -> Result<()> {
        self.masquerade.set(config)
    }

    /// The masquerade's mappings, by inside flow (diagnostics and tests).
    pub fn masquerade_mappings(&self) -> Vec<(FlowKey, MasqFlow)> {
        self.masquerade.mappings()
    }

    /// Removes the mappings that timed out at `now_ns` (CLOCK_MONOTONIC); returns how many.
    pub fn sweep_masquerade(&mut self, now_ns: u64) -> Result<usize> {
        self.masquerade.sweep(now_ns)
    }
}
