//! Map layouts: the contract between the daemon (which owns sessions and peers) and the eBPF
//! programs (which use them per packet).
//!
//! `SESSIONS` and `PEERS` are `BPF_F_MMAPABLE` arrays: the daemon maps them into its own
//! address space and shares the counters in them with the programs through atomics, so that
//! whichever path carries a packet, a send counter is used once, a received counter is
//! accepted once, and the byte counts `wg show` prints are complete. Everything else is an
//! ordinary map written with `bpf_map_update_elem`.
//!
//! Publication order: the daemon writes every other field of a slot before `state`, and
//! clears `state` first when retiring it; the programs read `state` first.

use crate::atomic::SharedU64;
use crate::replay::ReplayWindow;

/// Map names, as the eBPF object defines them.
pub const MAP_SESSIONS: &str = "SESSIONS";
pub const MAP_PEERS: &str = "PEERS";
pub const MAP_RX_INDEX: &str = "RX_INDEX";
pub const MAP_ALLOWED_V4: &str = "ALLOWED_V4";
pub const MAP_ALLOWED_V6: &str = "ALLOWED_V6";
pub const MAP_CONFIG: &str = "CONFIG";
pub const MAP_STATS: &str = "STATS";
pub const MAP_REDIRECT_IFACES: &str = "REDIRECT_IFACES";
pub const MAP_SCRATCH: &str = "SCRATCH";
pub const MAP_UNDERLAYS: &str = "UNDERLAYS";
pub const MAP_ENTRY_PORTS: &str = "ENTRY_PORTS";
pub const MAP_ENTRY_FORWARDS: &str = "ENTRY_FORWARDS";
pub const MAP_ENTRY_FLOWS: &str = "ENTRY_FLOWS";
pub const MAP_PROXY_FLOWS: &str = "PROXY_FLOWS";
pub const MAP_REPLY_TO: &str = "REPLY_TO";
pub const MAP_ENTRY_PROGRAMS: &str = "ENTRY_PROGRAMS";
pub const MAP_ENTRY_TRAFFIC: &str = "ENTRY_TRAFFIC";
pub const MAP_MASQUERADE: &str = "MASQUERADE";
pub const MAP_MASQ_OUT: &str = "MASQ_OUT";
pub const MAP_MASQ_IN: &str = "MASQ_IN";

/// `UNDERLAYS` value bits (key: ifindex).
/// The interface completes a CHECKSUM_PARTIAL skb as `csum_start`/`csum_offset` say,
/// whatever the protocol: in software (no checksum offload) or with NETIF_F_HW_CSUM. The
/// TUN egress program then sends locally generated TCP through it (see gateway-ebpf's
/// `partial`); without the bit, such packets go to the daemon.
pub const UNDERLAY_GENERIC_CHECKSUM: u32 = 1 << 0;

/// Default capacities; the loader may resize before loading.
pub const DEFAULT_MAX_SESSIONS: u32 = 4096;
pub const DEFAULT_MAX_PEERS: u32 = 16384;
pub const DEFAULT_MAX_ALLOWED_IPS: u32 = 262_144;

/// `Session::state` bits.
pub const SESSION_RECV_VALID: u32 = 1 << 0;
pub const SESSION_SEND_VALID: u32 = 1 << 1;
/// This side sent the handshake initiation that created the session.
pub const SESSION_INITIATOR: u32 = 1 << 2;

/// One keypair (a WireGuard session): `SESSIONS[slot]`. `RX_INDEX` maps our receiver index to
/// the slot; `Peer::tx_session` names the slot a peer sends with.
#[repr(C, align(8))]
pub struct Session {
    /// `SESSION_*` bits; 0 when the slot is unused.
    pub state: u32,
    /// Index into `PEERS`.
    pub peer: u32,
    /// Our receiver index for this session, as it appears on the wire (little-endian value).
    pub local_index: u32,
    /// The peer's receiver index: goes into every transport packet we send.
    pub remote_index: u32,
    /// CLOCK_MONOTONIC time of the handshake that derived the keys (`bpf_ktime_get_ns`).
    pub created_ns: u64,
    /// ChaCha20-Poly1305 keys as little-endian words, the form `aead` works on.
    pub send_key: [u32; 8],
    pub recv_key: [u32; 8],
    pub counters: SessionCounters,
}

/// The parts of a session both paths update per packet.
#[repr(C, align(8))]
pub struct SessionCounters {
    /// The next nonce to send with; allocated with fetch-add.
    pub send_nonce: SharedU64,
    pub replay: ReplayWindow,
}

/// `Endpoint::family` values (the kernel's address families).
pub const AF_NONE: u16 = 0;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Where a peer's packets go, and which of our addresses they came to (the kernel's
/// `endpoint.src`, used as the source of replies). Addresses are in network byte order; an
/// IPv4 address takes the first 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Endpoint {
    pub family: u16,
    /// Network byte order.
    pub port: u16,
    /// The underlay interface the peer was last heard on (0: unknown; let the FIB decide).
    pub ifindex: u32,
    pub addr: [u8; 16],
    pub local: [u8; 16],
}

/// `Peer::state` bits.
pub const PEER_ACTIVE: u32 = 1 << 0;
/// An entry point (a VPS forwarding public traffic to us): its packets may carry any inner
/// source that no ordinary peer owns (the AllowedIPs lookup finds no peer, or another entry
/// point), and the flows it brings in are remembered in `REPLY_TO` so that their replies go
/// back to it whatever the routes say (pf's reply-to). Set for peers whose AllowedIPs hold a
/// default route and for peers the operator names.
pub const PEER_ENTRY: u32 = 1 << 1;

/// One configured peer: `PEERS[slot]`; `ALLOWED_V4`/`ALLOWED_V6` map inner addresses to slots.
#[repr(C, align(8))]
pub struct Peer {
    pub state: u32,
    /// Slot + 1 of the session to send with (the current keypair); 0: none, so packets to this
    /// peer go to the daemon, which queues them and starts a handshake.
    pub tx_session: u32,
    /// Bumped (fetch-add, after the new endpoint is written) by the programs each time they
    /// roam the endpoint, so the daemon notices. Read it before and after reading `endpoint`
    /// and retry if it moved: the endpoint is several words and is not written atomically.
    pub endpoint_generation: SharedU64,
    pub endpoint: Endpoint,
    pub activity: PeerActivity,
}

/// Per-peer counters and timestamps kept by the programs (the daemon keeps its own for what
/// it carries and adds the two). Byte counts are WireGuard message bytes (UDP payload), as
/// the kernel counts them. Times are CLOCK_MONOTONIC nanoseconds, 0 for never.
#[repr(C, align(8))]
#[derive(Default)]
pub struct PeerActivity {
    pub rx_bytes: SharedU64,
    pub rx_packets: SharedU64,
    pub tx_bytes: SharedU64,
    pub tx_packets: SharedU64,
    /// Any authenticated packet (data or keepalive).
    pub last_rx_ns: SharedU64,
    pub last_tx_ns: SharedU64,
    /// Data packets only (a non-empty plaintext).
    pub last_data_rx_ns: SharedU64,
    pub last_data_tx_ns: SharedU64,
}

/// `Config::flags` bits.
/// Decrypted packets for another peer are re-encrypted and sent on without the stack.
pub const CONFIG_HUB_FORWARD: u32 = 1 << 0;
/// Decrypted packets routed out of an interface in `REDIRECT_IFACES` are redirected there.
pub const CONFIG_LAN_REDIRECT: u32 = 1 << 1;
/// This host is an entry point: the underlay's XDP program hands packets that are not
/// WireGuard to `ENTRY_PROGRAMS[ENTRY_PROGRAM_FORWARD]`, and decrypted packets are looked up
/// in `ENTRY_FLOWS` and `PROXY_FLOWS` (replies of forwarded and proxied connections).
pub const CONFIG_ENTRY: u32 = 1 << 2;
/// Some peer is `PEER_ENTRY`: LAN XDP looks up `REPLY_TO` before routing.
pub const CONFIG_REPLY_TO: u32 = 1 << 3;

/// `CONFIG[0]`: the tunnel the programs serve.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Config {
    /// The TUN interface: decrypted packets are delivered as if received on it.
    pub tun_ifindex: u32,
    /// The tunnel's path MTU: the TUN's MTU, lowered to what the narrowest peer's underlay
    /// carries (the daemon learns it; see docs/ARCHITECTURE.md, "MTU"). Larger packets go to
    /// the daemon, which answers them with ICMP; SYNs are clamped to it.
    pub tun_mtu: u32,
    /// Our UDP listen port, network byte order.
    pub listen_port: u16,
    pub _pad: u16,
    pub flags: u32,
    /// Set on packets we send (the kernel's fwmark), 0 for none.
    pub fwmark: u32,
    pub _pad2: u32,
}

// ---------------------------------------------------------------------------------------
// The public entry point (`gateway forward`).
//
// On the entry host (the VPS), tcp and udp forwards are translated per packet: the
// underlay's XDP program tail-calls `ENTRY_PROGRAMS[ENTRY_PROGRAM_FORWARD]` for packets that
// are not WireGuard; that program finds the forward by `ENTRY_PORTS[transport][port]`,
// rewrites the destination to the backend, remembers the flow in `ENTRY_FLOWS` and seals the
// packet to the peer whose AllowedIPs hold the backend. Decrypted replies found in
// `ENTRY_FLOWS` get the public address and port back as their source.
//
// tls and http forwards are proxied by the daemon, which connects to the backend from its
// tunnel address and asks the programs to make that connection look like the client's:
// `PROXY_FLOWS` holds, per proxied connection, the rewrite of its packets into the tunnel
// (source: tunnel address and port → client's, at the TUN's egress) and of the replies
// (destination: client's → tunnel address and port, after decryption).
//
// On the host behind it (the home), flows an entry peer brings in are remembered in
// `REPLY_TO`, and the LAN's XDP program sends their replies back to that peer.

/// Index of the forward program in `ENTRY_PROGRAMS` (a program array).
pub const ENTRY_PROGRAM_FORWARD: u32 = 0;
/// `ENTRY_PORTS` is indexed by `transport * ENTRY_PORTS_PER_TRANSPORT + port` (host order).
pub const ENTRY_PORTS_PER_TRANSPORT: u32 = 65536;
pub const ENTRY_TRANSPORT_TCP: u32 = 0;
pub const ENTRY_TRANSPORT_UDP: u32 = 1;
/// `ENTRY_PORTS` entries: 2 transports × 65536 ports, each 0 (no forward) or slot + 1 in
/// `ENTRY_FORWARDS`.
pub const ENTRY_PORTS_LEN: u32 = 2 * ENTRY_PORTS_PER_TRANSPORT;
/// `ENTRY_FORWARDS` capacity (matches the daemon's forward table limit).
pub const MAX_ENTRY_FORWARDS: u32 = 4096;
/// Forwards of one port on different listen addresses are chained through
/// `EntryForward::next`; the program follows at most this many links.
pub const MAX_ENTRY_CHAIN: u32 = 4;
/// Capacity of the flow maps (LRU: the least recently used flow goes first when full).
pub const MAX_ENTRY_FLOWS: u32 = 262_144;
pub const MAX_PROXY_FLOWS: u32 = 65_536;

/// Flow timeouts, as conntrack's for established flows: a flow not seen for this long is
/// forgotten (its entry ignored, then evicted).
pub const FLOW_TIMEOUT_TCP_NS: u64 = 432_000 * 1_000_000_000;
pub const FLOW_TIMEOUT_UDP_NS: u64 = 180 * 1_000_000_000;
pub const FLOW_TIMEOUT_OTHER_NS: u64 = 600 * 1_000_000_000;

/// One tcp or udp forward: `ENTRY_FORWARDS[slot]`.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct EntryForward {
    /// `AF_INET`/`AF_INET6` of the backend (and of the listen address, if any); `AF_NONE`:
    /// unused slot.
    pub family: u16,
    /// Family of `listen`, `AF_NONE`: every local address takes the port.
    pub listen_family: u16,
    /// The range's first public port, host order.
    pub first_port: u16,
    /// The backend port for `first_port`, host order; a public port `p` goes to
    /// `to_port + (p - first_port)`. Equal to `first_port` when the forward keeps ports.
    pub to_port: u16,
    /// Slot + 1 of the next forward of the same ports on another listen address; 0: none.
    pub next: u32,
    /// The backend, network byte order (IPv4: first 4 bytes).
    pub to_addr: [u8; 16],
    /// The only local address the forward takes when `listen_family` is set.
    pub listen: [u8; 16],
}

/// A flow as one direction of it appears in a packet: `REPLY_TO`, `ENTRY_FLOWS` and
/// `PROXY_FLOWS` keys. All padding must be zero (hash keys compare bytes).
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Debug)]
pub struct FlowKey {
    /// `AF_INET`/`AF_INET6`.
    pub family: u16,
    /// IPPROTO_TCP / IPPROTO_UDP.
    pub proto: u8,
    pub _pad: u8,
    /// Network byte order.
    pub src_port: u16,
    pub dst_port: u16,
    /// Network byte order (IPv4: first 4 bytes, the rest zero).
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// `FlowNat::rewrite` values.
/// Replace the packet's source address and port.
pub const NAT_SOURCE: u16 = 1;
/// Replace the packet's destination address and port.
pub const NAT_DESTINATION: u16 = 2;

/// What to do to a packet of a translated flow: `ENTRY_FLOWS` and `PROXY_FLOWS` values.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct FlowNat {
    /// `NAT_SOURCE` or `NAT_DESTINATION`.
    pub rewrite: u16,
    /// Network byte order.
    pub port: u16,
    /// `ENTRY_FLOWS`: slot + 1 of the `ENTRY_FORWARDS` piece the flow came in by, whose
    /// `ENTRY_TRAFFIC` its replies are counted in (0: none). 0 in `PROXY_FLOWS`.
    pub forward: u32,
    /// Network byte order, same family as the key.
    pub addr: [u8; 16],
    /// CLOCK_MONOTONIC time the flow was last seen (`ENTRY_FLOWS`; the programs refresh it
    /// at most once a second). 0 in `PROXY_FLOWS`: the daemon removes those entries itself.
    pub last_seen_ns: u64,
}

/// What the tcp and udp forward in one `ENTRY_FORWARDS` slot carried: `ENTRY_TRAFFIC[slot]`,
/// per CPU. The daemon zeroes a slot's counters when it gives the slot a new piece; the
/// programs only add. Bytes are IP packet bytes (headers included), as they left the programs.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct EntryTraffic {
    /// Flows the programs started remembering (`ENTRY_FLOWS` entries created).
    pub flows: u64,
    pub packets_to_backend: u64,
    pub bytes_to_backend: u64,
    pub packets_to_client: u64,
    pub bytes_to_client: u64,
}

/// Sums: over CPUs, and over the pieces of one forward.
impl core::ops::Add for EntryTraffic {
    type Output = EntryTraffic;

    fn add(self, other: EntryTraffic) -> EntryTraffic {
        EntryTraffic {
            flows: self.flows + other.flows,
            packets_to_backend: self.packets_to_backend + other.packets_to_backend,
            bytes_to_backend: self.bytes_to_backend + other.bytes_to_backend,
            packets_to_client: self.packets_to_client + other.packets_to_client,
            bytes_to_client: self.bytes_to_client + other.bytes_to_client,
        }
    }
}

/// `REPLY_TO` value: key = the reply's flow (source: the backend, destination: the client).
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct ReplyTo {
    /// The entry peer's slot the flow came from.
    pub peer: u32,
    pub _pad: u32,
    pub last_seen_ns: u64,
}

/// Handed from the XDP receive program to the TC ingress program in the frame's metadata
/// area: "this frame is a decrypted inner packet from `peer`; deliver it on the tunnel".
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct XdpHandoff {
    pub magic: u32,
    pub peer: u32,
}
pub const XDP_HANDOFF_MAGIC: u32 = 0x5747_4457; // "WDGW"

/// Indexes into the per-CPU `STATS` array: what the programs did with packets, so tests and
/// `gateway status` can tell which path carried traffic. Every packet a program sees is
/// counted exactly once (the TC handoff program counts nothing: XDP counted the packet).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Decrypted and delivered to the stack as received on the tunnel interface.
    RxDeliveredLocal = 0,
    /// Decrypted and re-encrypted to another peer (hub forwarding).
    RxHubForwarded,
    /// Decrypted and redirected out of a LAN interface.
    RxLanRedirected,
    /// Authenticated keepalives (empty plaintext), consumed.
    RxKeepalive,
    RxDropAuth,
    RxDropReplay,
    /// The inner source address is not in the sending peer's AllowedIPs.
    RxDropSource,
    /// Not a well-formed IP packet inside, or otherwise unusable.
    RxDropMalformed,
    /// Session expired (REJECT_AFTER_TIME / REJECT_AFTER_MESSAGES) or not valid for receiving.
    RxDropExpired,
    /// Transport data the programs left to the daemon (session not valid for receiving, too
    /// large, no metadata support in the driver, ...).
    RxPassToDaemon,
    /// Handshakes and cookies, passed to the daemon.
    RxPassHandshake,
    /// Not ours: not UDP to our port, not WireGuard.
    RxPassOther,
    /// Encrypted and sent straight out of the underlay.
    TxEncrypted,
    /// No valid session, no endpoint, nonce exhausted...: left to the daemon.
    TxPassToDaemon,
    /// Larger than the tunnel MTU: left to the stack (ICMP, fragmentation).
    TxPassTooBig,
    /// No peer has the destination in its AllowedIPs: left to the daemon (ICMP unreachable).
    TxPassNoPeer,
    /// A transport-data message shorter than header + tag: dropped, as the kernel does.
    RxDropTruncated,
    /// IPv4 fragments and IPv6 packets with extension headers on the underlay: passed
    /// untouched (the stack reassembles; the daemon's socket gets the datagram).
    RxPassFragment,
    /// A transport-data message whose receiver index is not (or no longer) ours.
    RxPassUnknownIndex,
    /// The outer route to the peer's endpoint is not usable from a program (no neighbour
    /// entry yet, forwarding disabled, needs fragmentation, ...): left to the daemon.
    TxPassNoRoute,
    /// GSO packets and packets whose checksum the stack has yet to complete
    /// (CHECKSUM_PARTIAL): left to the daemon, which gets them complete through the TUN fd.
    TxPassOffload,
    /// LAN XDP: left to the stack: not routed into the tunnel (ordinary forwarding, local
    /// traffic), TTL about to expire, not IP.
    TxPassToStack,
    /// Entry point: a packet to a tcp/udp forward, rewritten to its backend and sealed.
    EntryForwarded,
    /// Entry point: a packet to a forward rewritten to its backend but not sealed here (no
    /// session yet, no endpoint, no outer route from XDP, too big, ...): handed to the TUN's
    /// egress, where the send program seals it or the daemon queues it.
    EntryToTunnel,
    /// Entry point: not WireGuard and no forward takes it: to the stack.
    EntryPassNoForward,
    /// Entry point: a decrypted reply of a forwarded flow, its source restored to the
    /// public address and port.
    EntryReplyTranslated,
    /// Entry point: a packet of a proxied connection translated (either direction).
    ProxyTranslated,
    /// Behind an entry point: a LAN packet sent back to the entry peer its flow came from.
    ReplyToSent,
    /// Behind an entry point: a reply of an entry peer's flow LAN XDP could not seal (no
    /// tailroom in the frame, no session at that moment, larger than the tunnel's MTU, ...):
    /// handed to the TUN's egress (the stack would route it out of the default route).
    ReplyToTunnel,
    /// As `ReplyToTunnel`, but the driver keeps no XDP metadata to hand it over with: dropped.
    ReplyToDropped,
    /// Masquerade: a packet from a tunnel peer leaving the masquerade interface, its source
    /// now the interface's address and an allocated port (or ICMP echo identifier).
    MasqueradeOut,
    /// Masquerade: a reply to a masqueraded flow, its destination restored to the peer's
    /// address and port, handed to the tunnel's egress.
    MasqueradeIn,
    /// Masquerade: every probed port for a new flow was taken: left untranslated (the
    /// internet drops a private source; the peer's stack retries).
    MasqueradeNoPort,
    /// Masquerade: a packet from a tunnel peer the program cannot translate (a fragment, IP
    /// options, IPv6, neither TCP, UDP nor ICMP echo): left to the stack untouched.
    MasqueradeUntranslated,
    /// A TCP SYN on its way into the tunnel announcing an MSS larger than the tunnel's path
    /// MTU carries: left to the daemon (LAN XDP: to the stack, then the TUN's egress, then
    /// the daemon), which clamps it to the peer's path MTU.
    TxPassSyn,
    /// A decrypted SYN whose MSS was lowered to the tunnel's path MTU (`CONFIG.tun_mtu`).
    RxMssClamped,
    /// A program hit an error it could not attribute (a helper failed).
    Error,
}
pub const STAT_COUNT: u32 = Stat::Error as u32 + 1;

// ---------------------------------------------------------------------------------------
// Masquerade: the host as an exit node (`gatewayd --masquerade OUTIF`).
//
// IPv4 from a tunnel peer (its source in a peer's AllowedIPs) that the stack routes out of
// OUTIF gets OUTIF's address and a port of `Masquerade`'s range as its source at OUTIF's TC
// egress (`masq_out`); the mapping is remembered both ways: `MASQ_OUT` keyed by the inside
// flow (peer → remote), `MASQ_IN` keyed by the reply as it arrives (remote → public
// address:port). Replies arriving on OUTIF are found in `MASQ_IN` at its TC ingress
// (`masq_in`), get the peer's address and port back as destination, and are handed to the
// tunnel's egress, where the send program seals them. ICMP echo is mapped by its identifier
// (in the key's source port for requests, destination port for replies; the other 0).

/// `MASQUERADE[0]`: where and as what the programs masquerade. `ifindex` 0: off.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Masquerade {
    /// OUTIF: packets leaving through it are translated, replies arriving on it restored.
    pub ifindex: u32,
    /// OUTIF's IPv4 address, network byte order: the source the internet sees.
    pub addr: [u8; 4],
    /// The ports (and echo identifiers) mappings take: `first_port..first_port + port_count`,
    /// host order; the daemon reserves them from the kernel (`ip_local_reserved_ports`).
    pub first_port: u16,
    pub port_count: u16,
    pub _pad: u32,
}

/// `MASQ_OUT` and `MASQ_IN` values: the address and port that replace the packet's (out: its
/// source, in: its destination) and, in `MASQ_OUT`, what decides the mapping's timeout.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct MasqFlow {
    /// Network byte order.
    pub addr: [u8; 4],
    /// Network byte order.
    pub port: u16,
    /// `MASQ_STATE_*` (`MASQ_OUT` only; the in direction updates the `MASQ_OUT` entry).
    pub state: u16,
    /// CLOCK_MONOTONIC time the flow was last seen in either direction (`MASQ_OUT`; refreshed
    /// at most once a second). In `MASQ_IN`: when the mapping was made.
    pub last_seen_ns: u64,
}

/// A TCP connection whose SYN went out but whose peer has not answered, or one that has
/// seen a FIN or RST: RFC 5382's transitory state.
pub const MASQ_STATE_TRANSITORY: u16 = 0;
/// A TCP connection the remote end answered; for UDP and ICMP: a reply came back.
pub const MASQ_STATE_ESTABLISHED: u16 = 1;
/// A TCP connection after a FIN or RST in either direction.
pub const MASQ_STATE_CLOSING: u16 = 2;

/// The port range mappings take by default, above Linux's default ephemeral range
/// (32768–60999), so the host's own connections never pick them even before the daemon
/// reserves them.
pub const MASQ_DEFAULT_FIRST_PORT: u16 = 61000;
pub const MASQ_DEFAULT_PORT_COUNT: u16 = 4536;
/// Capacity of `MASQ_OUT` and `MASQ_IN` (LRU: the least recently used mapping goes first).
pub const MAX_MASQ_FLOWS: u32 = 65_536;
/// Ports a new flow probes (from a hash of its inside flow) before giving up.
pub const MASQ_PROBES: u32 = 8;

/// IP protocol numbers the masquerade translates besides TCP and UDP.
pub const IPPROTO_ICMP: u8 = 1;

/// How long a mapping lives unused, by protocol and state, after the RFCs on NAT behaviour:
/// TCP established 2 h 4 min and transitory (opening, closing) 4 min (RFC 5382, REQ-5), UDP
/// 2 min (RFC 4787, REQ-5), ICMP echo 60 s (RFC 5508, REQ-1).
pub const fn masq_timeout_ns(proto: u8, state: u16) -> u64 {
    const S: u64 = 1_000_000_000;
    match (proto, state) {
        (6, MASQ_STATE_ESTABLISHED) => 7440 * S,
        (6, _) => 240 * S,
        (17, _) => 120 * S,
        _ => 60 * S,
    }
}

/// Whether a mapping last seen at `last_seen` is gone at `now` (both CLOCK_MONOTONIC ns).
pub const fn masq_expired(proto: u8, state: u16, last_seen: u64, now: u64) -> bool {
    now > last_seen && now - last_seen >= masq_timeout_ns(proto, state)
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data repr(C) structs with explicit padding fields and no invalid
    // bit patterns; the daemon writes them with bpf_map_update_elem.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::Endpoint {}
    unsafe impl aya::Pod for super::XdpHandoff {}
    unsafe impl aya::Pod for super::EntryForward {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowNat {}
    unsafe impl aya::Pod for super::EntryTraffic {}
    unsafe impl aya::Pod for super::ReplyTo {}
    unsafe impl aya::Pod for super::Masquerade {}
    unsafe impl aya::Pod for super::MasqFlow {}
}
