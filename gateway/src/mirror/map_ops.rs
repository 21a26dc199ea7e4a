//! The writes the mirror makes, one per map word or entry that matters to the programs. The
//! data plane implements them on the real maps; the unit tests record them.
//!
//! [`MapOps`] follows the protocol (peers, sessions, AllowedIPs, CONFIG); [`ForwardOps`] the
//! entry point's forwards; [`ProxyFlowOps`] the connections the daemon's proxy makes.

use gateway_common::maps::{EntryForward, FlowKey, FlowNat};
use ipnet::IpNet;

use crate::dataplane::{
    EntryTransport, ForwardSlot, PeerSlot, Result, SessionEntry, SessionSlot, SessionState,
    TunnelConfig,
};
use crate::wg::peer::Endpoint;

pub trait MapOps {
    /// `CONFIG[0]`.
    fn set_config(&mut self, config: &TunnelConfig) -> Result<()>;

    /// A fresh `PEERS` slot: no endpoint, no session, zeroed activity.
    fn add_peer(&mut self) -> Result<PeerSlot>;
    /// Frees a `PEERS` slot; its prefixes and sessions are gone by then.
    fn remove_peer(&mut self, peer: PeerSlot) -> Result<()>;
    /// Where the peer's packets go (None: to the daemon). Returns the slot's roaming
    /// generation after the write: our own write is not a roam.
    fn set_peer_endpoint(&mut self, peer: PeerSlot, endpoint: Option<&Endpoint>) -> Result<u64>;
    /// The session the programs send the peer's packets with (None: the daemon sends).
    fn set_peer_tx(&mut self, peer: PeerSlot, session: Option<SessionSlot>) -> Result<()>;
    /// Marks the peer an entry point (`PEER_ENTRY`) or clears the mark.
    fn set_peer_entry(&mut self, peer: PeerSlot, entry: bool) -> Result<()>;

    /// A session's keys and indexes, written with its state cleared (programs ignore it).
    fn write_session(&mut self, slot: SessionSlot, entry: &SessionEntry) -> Result<()>;
    /// A session's state word; the default state retires it.
    fn set_session_state(&mut self, slot: SessionSlot, state: SessionState) -> Result<()>;
    /// `RX_INDEX[local_index] = slot`.
    fn index_session(&mut self, local_index: u32, slot: SessionSlot) -> Result<()>;
    /// Removes `RX_INDEX[local_index]` if it still leads to `slot`.
    fn unindex_session(&mut self, local_index: u32, slot: SessionSlot) -> Result<()>;

    /// Maps a prefix to the peer (taking it from any other).
    fn insert_allowed_ip(&mut self, peer: PeerSlot, net: IpNet) -> Result<()>;
    /// Unmaps a prefix of the peer.
    fn remove_allowed_ip(&mut self, peer: PeerSlot, net: IpNet) -> Result<()>;
}

pub trait ForwardOps {
    /// `ENTRY_FORWARDS[slot]`; None clears it.
    fn set_entry_forward(
        &mut self,
        slot: ForwardSlot,
        forward: Option<&EntryForward>,
    ) -> Result<()>;
    /// Points `ENTRY_PORTS` of the ports `first..=last` of `transport` at a slot (None: none).
    fn set_entry_ports(
        &mut self,
        transport: EntryTransport,
        first: u16,
        last: u16,
        slot: Option<ForwardSlot>,
    ) -> Result<()>;
}

pub trait ProxyFlowOps {
    /// `PROXY_FLOWS[key] = nat`.
    fn add_proxy_flow(&mut self, key: &FlowKey, nat: &FlowNat) -> Result<()>;
    /// Removes `PROXY_FLOWS[key]`; one already gone is not an error.
    fn remove_proxy_flow(&mut self, key: &FlowKey) -> Result<()>;
}
