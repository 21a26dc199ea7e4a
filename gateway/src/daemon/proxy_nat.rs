//! Proxied connections translated by the daemon (`entry::translate`), and the rule that says
//! which plane translates which of their packets.
//!
//! Every packet of a steered connection is translated once, by the plane that carries it:
//!
//! - Into the tunnel (the proxy's packets, from our tunnel address and port; they leave with
//!   the client's): by `entry_proxy_tun` when it runs on the TUN's egress. It sees every
//!   packet the stack sends there, before the send program seals it or passes it on to the
//!   daemon (GSO batches, packets of a peer without a session yet...), so what the daemon
//!   then reads from the TUN is translated already and the daemon leaves it. When no program
//!   sends from the TUN (no eBPF, or `wg_tx_tun` not attached), every packet reaches the
//!   daemon, which translates it as it reads it, before `Device::handle_tun_packet` stages and
//!   seals it. When programs send from the TUN but none translates (the steering program was
//!   refused), neither plane can translate every packet, and translating only some would
//!   break the connection: it is not steered, and the backend sees the tunnel address.
//! - Out of the tunnel (the backend's replies, to the client; they reach the proxy's socket):
//!   by the plane that decrypts them. The receive programs translate what they decrypt by
//!   `PROXY_FLOWS`; what they leave to the daemon still encrypted (a session not yet valid
//!   for receiving, a driver without XDP metadata, an underlay without the programs...) the
//!   daemon decrypts, and translates before writing it to the TUN. A packet is decrypted
//!   once, so it is translated once, whichever plane carries it.
//!
//! So the entries of a steered connection (`mirror::proxy_flows::ProxyFlowEntries`) are: both
//! in `PROXY_FLOWS` whenever the eBPF data plane runs; the reply's in the daemon's inbound
//! table always; the outbound one in the daemon's outbound table only when the daemon is the
//! one that translates into the tunnel — with the steering program, that table stays empty.
//! The reply's entry goes in first and comes out last, in both planes, as in the map.
//!
//! Per packet the cost is an atomic load per direction and batch while a table is empty; a
//! table with entries is read under a read lock, once per batch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use gateway_common::maps::{FlowKey, FlowNat};

use crate::entry::translate::FlowTable;
use crate::mirror::proxy_flows::{ProxiedAddrs, ProxyFlowEntries, SteerError};

/// Which plane translates the packets proxied connections send into the tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboundTranslation {
    /// The steering program on the TUN's egress (`entry_proxy_tun`).
    Dataplane,
    /// The daemon: no program sends from the TUN, every packet reaches it.
    Daemon,
    /// Neither: programs send from the TUN and none translates.
    Untranslated,
}

/// The daemon's two tables, one per direction.
#[derive(Default)]
pub struct ProxyNat {
    outbound: Direction,
    inbound: Direction,
}

#[derive(Default)]
struct Direction {
    table: RwLock<FlowTable>,
    /// The table's length, read without the lock: most packets find it 0.
    entries: AtomicUsize,
}

impl Direction {
    fn read(&self) -> Option<RwLockReadGuard<'_, FlowTable>> {
        if self.entries.load(Ordering::Acquire) == 0 {
            return None;
        }
        Some(self.table.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn insert(&self, (key, nat): (FlowKey, FlowNat)) -> bool {
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        let inserted = table.insert(key, nat);
        self.entries.store(table.len(), Ordering::Release);
        inserted
    }

    fn remove(&self, (key, nat): (FlowKey, FlowNat)) {
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        table.remove(&key, &nat);
        self.entries.store(table.len(), Ordering::Release);
    }

    fn len(&self) -> usize {
        self.entries.load(Ordering::Acquire)
    }
}

impl ProxyNat {
    /// The table of packets read from the TUN, None while it is empty.
    pub fn outbound(&self) -> Option<RwLockReadGuard<'_, FlowTable>> {
        self.outbound.read()
    }

    /// The table of packets the daemon decrypted, None while it is empty.
    pub fn inbound(&self) -> Option<RwLockReadGuard<'_, FlowTable>> {
        self.inbound.read()
    }

    /// Translates a connection's replies, and with `outbound` its packets into the tunnel.
    /// Refused, and nothing changed, when another connection has one of its entries.
    pub fn steer(&self, addrs: ProxiedAddrs, outbound: bool) -> Result<(), SteerError> {
        let entries = ProxyFlowEntries::of(addrs)?;
        if !self.inbound.insert(entries.inbound) {
            return Err(SteerError::InUse(addrs));
        }
        if outbound && !self.outbound.insert(entries.outbound) {
            self.inbound.remove(entries.inbound);
            return Err(SteerError::InUse(addrs));
        }
        Ok(())
    }

    /// Forgets a connection's entries (those it has; a later connection's are left).
    pub fn release(&self, addrs: ProxiedAddrs) {
        let Ok(entries) = ProxyFlowEntries::of(addrs) else { return };
        self.outbound.remove(entries.outbound);
        self.inbound.remove(entries.inbound);
    }

    /// Connections whose replies the daemon translates.
    pub fn connections(&self) -> usize {
        self.inbound.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::forward::Transport;

    fn addrs(client: &str, local: &str) -> ProxiedAddrs {
        ProxiedAddrs {
            transport: Transport::Tcp,
            client: client.parse().unwrap(),
            local: local.parse().unwrap(),
            backend: "10.8.0.2:443".parse().unwrap(),
        }
    }

    #[test]
    fn tables_are_skipped_while_empty() {
        let nat = ProxyNat::default();
        assert!(nat.outbound().is_none() && nat.inbound().is_none());
        let one = addrs("203.0.113.7:50000", "10.8.0.1:40000");
        nat.steer(one, false).unwrap();
        assert!(nat.outbound().is_none(), "the programs translate into the tunnel");
        assert_eq!(nat.inbound().map(|t| t.len()), Some(1));
        nat.release(one);
        assert!(nat.inbound().is_none());
        assert_eq!(nat.connections(), 0);
    }

    #[test]
    fn a_connection_is_steered_whole_or_not_at_all() {
        let nat = ProxyNat::default();
        let first = addrs("203.0.113.7:50000", "10.8.0.1:40000");
        nat.steer(first, true).unwrap();
        // The same local port for another client: its outbound entry is taken.
        let same_local = addrs("198.51.100.9:1234", "10.8.0.1:40000");
        assert_eq!(nat.steer(same_local, true), Err(SteerError::InUse(same_local)));
        assert_eq!(nat.connections(), 1, "its reply's entry was taken back");
        // Releasing the refused one leaves the first in place.
        nat.release(same_local);
        assert_eq!(nat.outbound().map(|t| t.len()), Some(1));
        assert_eq!(nat.inbound().map(|t| t.len()), Some(1));
        nat.release(first);
        assert!(nat.outbound().is_none() && nat.inbound().is_none());
    }

    #[test]
    fn bridged_families_are_not_entered() {
        let nat = ProxyNat::default();
        let bridged = addrs("[2001:db8::7]:50000", "10.8.0.1:40000");
        assert!(matches!(nat.steer(bridged, true), Err(SteerError::Families(_))));
        assert!(nat.outbound().is_none() && nat.inbound().is_none());
    }
}
