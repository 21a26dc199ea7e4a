//! The mirror's writes on the loaded maps (see `crate::mirror`).

use ipnet::IpNet;

use super::Dataplane;
use super::config::TunnelConfig;
use super::error::Result;
use super::peers::{PeerEndpoint, PeerSlot};
use super::sessions::{SessionEntry, SessionSlot, SessionState};
use super::underlay::route_interface;
use crate::mirror::MapOps;
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
