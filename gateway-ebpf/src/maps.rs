//! The maps (layouts and names in `gateway_common::maps`, the contract with the daemon) and
//! typed accessors for them.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_NOEXIST},
    macros::map,
    maps::{
        Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, lpm_trie::Key,
    },
};
use gateway_common::maps::{
    Config, DEFAULT_MAX_ALLOWED_IPS, DEFAULT_MAX_PEERS, DEFAULT_MAX_SESSIONS, ENTRY_PORTS_LEN,
    ENTRY_PROGRAM_FORWARD, EntryForward, EntryTraffic, FlowKey, FlowNat, MAX_ENTRY_FLOWS,
    MAX_ENTRY_FORWARDS, MAX_MASQ_FLOWS, MAX_PROXY_FLOWS, MasqFlow, Masquerade, Peer, ReplyTo,
    STAT_COUNT, Session, Stat, UNDERLAY_GENERIC_CHECKSUM,
};

use crate::packet::L3;
use crate::scratch::Scratch;

#[map]
static SESSIONS: Array<Session> = Array::with_max_entries(DEFAULT_MAX_SESSIONS, BPF_F_MMAPABLE);

#[map]
static PEERS: Array<Peer> = Array::with_max_entries(DEFAULT_MAX_PEERS, BPF_F_MMAPABLE);

/// Our receiver index (as a native little-endian load from the packet) → session slot.
#[map]
static RX_INDEX: HashMap<u32, u32> = HashMap::with_max_entries(DEFAULT_MAX_SESSIONS, 0);

/// Inner address prefix → peer slot (cryptokey routing).
#[map]
static ALLOWED_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(DEFAULT_MAX_ALLOWED_IPS, 0);

#[map]
static ALLOWED_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(DEFAULT_MAX_ALLOWED_IPS, 0);

#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// LAN interfaces decrypted packets may be redirected to (key and value: the ifindex).
#[map]
static REDIRECT_IFACES: DevMapHash = DevMapHash::with_max_entries(64, 0);

/// What the daemon knows about underlay interfaces (ifindex → `UNDERLAY_*` bits).
#[map]
static UNDERLAYS: HashMap<u32, u32> = HashMap::with_max_entries(64, 0);

/// Entry point: `transport * 65536 + port` → slot + 1 in `ENTRY_FORWARDS` (0: none).
#[map]
static ENTRY_PORTS: Array<u32> = Array::with_max_entries(ENTRY_PORTS_LEN, 0);

/// Entry point: the tcp and udp forwards.
#[map]
static ENTRY_FORWARDS: Array<EntryForward> = Array::with_max_entries(MAX_ENTRY_FORWARDS, 0);

/// Entry point: what each `ENTRY_FORWARDS` slot carried (per CPU; the daemon sums them).
#[map]
static ENTRY_TRAFFIC: PerCpuArray<EntryTraffic> =
    PerCpuArray::with_max_entries(MAX_ENTRY_FORWARDS, 0);

/// Entry point: replies of forwarded flows (key: the reply as decrypted) → the public side.
#[map]
static ENTRY_FLOWS: LruHashMap<FlowKey, FlowNat> = LruHashMap::with_max_entries(MAX_ENTRY_FLOWS, 0);

/// Entry point: proxied connections, both directions, written by the daemon.
#[map]
static PROXY_FLOWS: HashMap<FlowKey, FlowNat> = HashMap::with_max_entries(MAX_PROXY_FLOWS, 0);

/// Behind an entry point: the reply's flow → the entry peer it came from.
#[map]
static REPLY_TO: LruHashMap<FlowKey, ReplyTo> = LruHashMap::with_max_entries(MAX_ENTRY_FLOWS, 0);

/// Entry point: programs the underlay's XDP program tail-calls (`ENTRY_PROGRAM_*`).
#[map]
static ENTRY_PROGRAMS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Masquerade: OUTIF, its address, the port range (`MASQUERADE[0]`).
#[map]
static MASQUERADE: Array<Masquerade> = Array::with_max_entries(1, 0);

/// Masquerade: the inside flow (peer → remote) → the public address and port it leaves with.
#[map]
static MASQ_OUT: LruHashMap<FlowKey, MasqFlow> = LruHashMap::with_max_entries(MAX_MASQ_FLOWS, 0);

/// Masquerade: the reply as it arrives (remote → public address and port) → the peer's.
#[map]
static MASQ_IN: LruHashMap<FlowKey, MasqFlow> = LruHashMap::with_max_entries(MAX_MASQ_FLOWS, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// Per-packet working memory, one entry per program kind so that programs that could run on
/// the same CPU (TC egress from process context with a softirq arriving) never share one.
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(3, 0);

pub const SCRATCH_XDP: u32 = 0;
pub const SCRATCH_TC_INGRESS: u32 = 1;
pub const SCRATCH_TC_EGRESS: u32 = 2;

#[inline(always)]
pub fn count(stat: Stat) {
    if let Some(p) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: a per-CPU slot: no other writer while this program runs on this CPU.
        unsafe { *p += 1 };
    }
}

/// `count` for a `Stat` kept as its index (out-of-range indexes count nothing).
#[inline(always)]
pub fn count_index(stat: u32) {
    if let Some(p) = STATS.get_ptr_mut(stat) {
        // SAFETY: as in `count`.
        unsafe { *p += 1 };
    }
}

/// Whether `ifindex` completes CHECKSUM_PARTIAL skbs generically (`UNDERLAY_GENERIC_CHECKSUM`).
#[inline(always)]
pub fn completes_checksums(ifindex: u32) -> bool {
    // SAFETY: a plain u32 value.
    unsafe { UNDERLAYS.get(&ifindex) }.is_some_and(|f| f & UNDERLAY_GENERIC_CHECKSUM != 0)
}

#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

#[inline(always)]
pub fn scratch(slot: u32) -> Option<&'static mut Scratch> {
    // SAFETY: per-CPU memory owned by the running program for the duration of the packet.
    SCRATCH.get_ptr_mut(slot).map(|p| unsafe { &mut *p })
}

#[inline(always)]
pub fn session(slot: u32) -> Option<&'static Session> {
    SESSIONS.get(slot)
}

#[inline(always)]
pub fn peer(slot: u32) -> Option<&'static Peer> {
    PEERS.get(slot)
}

#[inline(always)]
pub fn rx_session_slot(receiver: u32) -> Option<u32> {
    // SAFETY: the value is a plain u32 copied out at once.
    unsafe { RX_INDEX.get(receiver).copied() }
}

/// The peer slot whose AllowedIPs hold `addr` (network-order words, as loaded from the
/// packet; IPv4 in the first word).
#[inline(always)]
pub fn allowed(family: L3, addr: &[u32; 4]) -> Option<u32> {
    match family {
        L3::V4 => allowed_v4(addr[0]),
        L3::V6 => allowed_v6(addr),
    }
}

#[inline(always)]
fn allowed_v4(addr: u32) -> Option<u32> {
    let key = Key::new(32, addr.to_ne_bytes());
    ALLOWED_V4.get(&key).copied()
}

#[inline(always)]
fn allowed_v6(addr: &[u32; 4]) -> Option<u32> {
    let mut data = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = addr[i].to_ne_bytes();
        data[4 * i] = b[0];
        data[4 * i + 1] = b[1];
        data[4 * i + 2] = b[2];
        data[4 * i + 3] = b[3];
        i += 1;
    }
    let key = Key::new(128, data);
    ALLOWED_V6.get(&key).copied()
}

#[inline(always)]
pub fn redirect_iface(ifindex: u32) -> bool {
    REDIRECT_IFACES.get(ifindex).is_some()
}

#[inline(always)]
pub fn redirect_to_iface(ifindex: u32) -> Option<u32> {
    REDIRECT_IFACES.redirect(ifindex, 0).ok()
}

/// `ENTRY_PORTS[index]`: slot + 1 of the first forward of a public port, 0 for none.
#[inline(always)]
pub fn entry_port(index: u32) -> u32 {
    ENTRY_PORTS.get(index).copied().unwrap_or(0)
}

#[inline(always)]
pub fn entry_forward(slot: u32) -> Option<&'static EntryForward> {
    ENTRY_FORWARDS.get(slot)
}

/// Which way a forwarded packet went, for `count_entry_traffic`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Towards {
    Backend,
    Client,
}

/// Counts a packet of `len` bytes that the forward piece in `slot` carried (`ENTRY_TRAFFIC`).
#[inline(always)]
pub fn count_entry_traffic(slot: u32, towards: Towards, len: u32) {
    if let Some(t) = ENTRY_TRAFFIC.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot, as in `count`.
        unsafe {
            if towards == Towards::Backend {
                (*t).packets_to_backend += 1;
                (*t).bytes_to_backend += len as u64;
            } else {
                (*t).packets_to_client += 1;
                (*t).bytes_to_client += len as u64;
            }
        }
    }
}

/// Counts a flow the forward piece in `slot` started (`ENTRY_TRAFFIC`).
#[inline(always)]
pub fn count_entry_flow(slot: u32) {
    if let Some(t) = ENTRY_TRAFFIC.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot, as in `count`.
        unsafe { (*t).flows += 1 };
    }
}

/// The translation of a forwarded flow's replies (`ENTRY_FLOWS`), writable in place (its
/// `last_seen_ns`).
#[inline(always)]
pub fn entry_flow(key: &FlowKey) -> Option<*mut FlowNat> {
    ENTRY_FLOWS.get_ptr_mut(key)
}

#[inline(always)]
pub fn record_entry_flow(key: &FlowKey, nat: &FlowNat) -> bool {
    ENTRY_FLOWS.insert(key, nat, 0).is_ok()
}

#[inline(always)]
pub fn proxy_flow(key: &FlowKey) -> Option<*const FlowNat> {
    PROXY_FLOWS.get_ptr(key)
}

/// The entry peer a flow's replies go back to (`REPLY_TO`), writable in place.
#[inline(always)]
pub fn reply_to(key: &FlowKey) -> Option<*mut ReplyTo> {
    REPLY_TO.get_ptr_mut(key)
}

#[inline(always)]
pub fn record_reply_to(key: &FlowKey, value: &ReplyTo) -> bool {
    REPLY_TO.insert(key, value, 0).is_ok()
}

/// Jumps to the entry point's forward program; returns only if the slot is empty (not
/// loaded) or the jump failed.
#[inline(always)]
pub unsafe fn tail_call_entry_forward<C: aya_ebpf::EbpfContext>(ctx: &C) {
    // SAFETY: the context is the caller's own; the program array holds XDP programs only.
    unsafe { ENTRY_PROGRAMS.tail_call(ctx, ENTRY_PROGRAM_FORWARD) };
}

#[inline(always)]
pub fn masquerade() -> Option<&'static Masquerade> {
    MASQUERADE.get(0)
}

/// A masqueraded flow's mapping by its inside flow, writable in place (state, last seen).
#[inline(always)]
pub fn masq_out(key: &FlowKey) -> Option<*mut MasqFlow> {
    MASQ_OUT.get_ptr_mut(key)
}

#[inline(always)]
pub fn record_masq_out(key: &FlowKey, value: &MasqFlow) -> bool {
    MASQ_OUT.insert(key, value, 0).is_ok()
}

/// A masqueraded flow's mapping by its reply.
#[inline(always)]
pub fn masq_in(key: &FlowKey) -> Option<*const MasqFlow> {
    MASQ_IN.get_ptr(key)
}

/// Enters a reply's mapping; with `only_new`, fails if the key is there already (another
/// inside flow holds the port towards this remote end).
#[inline(always)]
pub fn record_masq_in(key: &FlowKey, value: &MasqFlow, only_new: bool) -> bool {
    let flags = if only_new { BPF_NOEXIST as u64 } else { 0 };
    MASQ_IN.insert(key, value, flags).is_ok()
}
