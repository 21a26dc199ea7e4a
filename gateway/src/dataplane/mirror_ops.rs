//! The mirror's writes on the loaded maps (see `crate::mirror`).

use gateway_common::maps::{EntryForward, FlowKey, FlowNat};
use ipnet::IpNet;

use super::Dataplane;
use super::config::TunnelConfig;
use super::entry::{EntryTransport, ForwardSlot};
use super::error::Result;
use super::peers::{PeerEndpoint, PeerSlot};
use super::sessions::{SessionEntry, SessionSlot, SessionState};
use super::underlay::route_interface;
use crate::mirror::{ForwardOps, MapOps, ProxyFlowOps};
use crate::wg::peer::Endpoint;

impl MapOps for Dataplane {
    fn set_config(&mut self, config: &TunnelConfig) -> Result<()> {
        Dataplane::set_config(self, config)
    }

    fn add_peer(&mut self) -> Result<PeerSlot> {
        Dataplane::add_peer(self)
    }

    /// The mirror has removed the peer's prefixes already.
    fn remove_peer(&mut self, peer: PeerSlot) -> Result<()> {
        self.release_peer(peer)
    }

    /// The interface is the one the peer was heard on, or else the one the route to it takes
    /// (the programs need one to send from the TUN).
    fn set_peer_endpoint(&mut self, peer: PeerSlot, endpoint: Option<&Endpoint>) -> Result<u64> {
        let endpoint = endpoint.map(|e| {
            let heard_on = e.local.map(|l| l.ifindex).filter(|&i| i != 0);
            PeerEndpoint {
                addr: e.addr,
                local: e.local.map(|l| l.ip),
                ifindex: heard_on.or_else(|| route_interface(e.addr.ip()).ok()).unwrap_or(0),
            }
        });
        Dataplane::set_peer_endpoint(self, peer, endpoint.as_ref())?;
        Ok(self.peer_endpoint(peer)?.1)
    }

    fn set_peer_tx(&mut self, peer: PeerSlot, session: Option<SessionSlot>) -> Result<()> {
        self.set_peer_tx_session(peer, session)
    }

    fn set_peer_entry(&mut self, peer: PeerSlot, entry: bool) -> Result<()> {
        Dataplane::set_peer_entry(self, peer, entry)
    }

    fn write_session(&mut self, slot: SessionSlot, entry: &SessionEntry) -> Result<()> {
        Dataplane::write_session(self, slot, entry)
    }

    fn set_session_state(&mut self, slot: SessionSlot, state: SessionState) -> Result<()> {
        Dataplane::set_session_state(self, slot, state)
    }

    fn index_session(&mut self, local_index: u32, slot: SessionSlot) -> Result<()> {
        Dataplane::index_session(self, local_index, slot)
    }

    fn unindex_session(&mut self, local_index: u32, slot: SessionSlot) -> Result<()> {
        Dataplane::unindex_session(self, local_index, slot)
    }

    fn insert_allowed_ip(&mut self, peer: PeerSlot, net: IpNet) -> Result<()> {
        self.add_allowed_ips(peer, [net]).map(drop)
    }

    fn remove_allowed_ip(&mut self, peer: PeerSlot, net: IpNet) -> Result<()> {
        Dataplane::remove_allowed_ip(self, peer, net).map(drop)
    }
}

impl ForwardOps for Dataplane {
    fn set_entry_forward(
        &mut self,
        slot: ForwardSlot,
        forward: Option<&EntryForward>,
    ) -> Result<()> {
        Dataplane::set_entry_forward(self, slot, forward)
    }

    fn set_entry_ports(
        &mut self,
        transport: EntryTransport,
        first: u16,
        last: u16,
        slot: Option<ForwardSlot>,
    ) -> Result<()> {
        Dataplane::set_entry_ports(self, transport, first, last, slot)
    }
}

impl ProxyFlowOps for Dataplane {
    fn add_proxy_flow(&mut self, key: &FlowKey, nat: &FlowNat) -> Result<()> {
        Dataplane::add_proxy_flow(self, key, nat)
    }

    fn remove_proxy_flow(&mut self, key: &FlowKey) -> Result<()> {
        Dataplane::remove_proxy_flow(self, key)
    }
}
