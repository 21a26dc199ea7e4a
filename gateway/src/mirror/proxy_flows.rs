//! Connections the daemon's proxy makes to backends (tls and http forwards; tcp and udp ones
//! too when the programs do not translate them), steered so that the backend sees the
//! client's address: two `PROXY_FLOWS` entries per connection (per udp client).
//!
//! The proxy connects from our tunnel address and a port of its own (`local`). Its packets
//! into the tunnel (source `local`, destination the backend) get the client's address and
//! port as their source at the TUN's egress; the backend's decrypted replies (source the
//! backend, destination the client) get `local` back as their destination, and reach the
//! proxy's socket.
//!
//! The reply's entry is written first and removed last: while packets leave with the client's
//! address, their replies always find their way back to the socket.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use gateway_common::maps::{AF_INET, AF_INET6, FlowKey, FlowNat, NAT_DESTINATION, NAT_SOURCE};

use super::map_ops::ProxyFlowOps;
use crate::dataplane::DataplaneError;
use crate::entry::forward::Transport;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// One proxied connection's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProxiedAddrs {
    pub transport: Transport,
    /// The internet client, as the proxy accepted it.
    pub client: SocketAddr,
    /// Our tunnel-side address and port the proxy's socket to the backend is bound to.
    pub local: SocketAddr,
    pub backend: SocketAddr,
}

/// The two entries of one connection: the rewrite of what we send, and of what comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyFlowEntries {
    /// Into the tunnel: source `local` → the client.
    pub outbound: (FlowKey, FlowNat),
    /// Decrypted replies: destination the client → `local`.
    pub inbound: (FlowKey, FlowNat),
}

/// Why a connection cannot be steered: one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SteerError {
    /// The client and the backend are of different families: a packet's addresses cannot
    /// be swapped across them.
    Families(ProxiedAddrs),
    /// Another connection already uses one of the entries.
    InUse(ProxiedAddrs),
    Dataplane(String),
}

impl fmt::Display for SteerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SteerError::Families(a) => write!(
                f,
                "client {} and backend {} (from {}) are of different address families",
                a.client, a.backend, a.local
            ),
            SteerError::InUse(a) => write!(
                f,
                "a proxied connection from {} to {} (or from {}) is steered already",
                a.client, a.backend, a.local
            ),
            SteerError::Dataplane(e) => write!(f, "data plane: {e}"),
        }
    }
}

impl std::error::Error for SteerError {}

impl From<DataplaneError> for SteerError {
    fn from(e: DataplaneError) -> Self {
        SteerError::Dataplane(e.to_string())
    }
}

/// An IPv4 client accepted on a dual-stack socket shows as `::ffff:a.b.c.d`; packets carry
/// the IPv4 address.
fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

fn family(address: IpAddr) -> u16 {
    match address {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

fn bytes(address: IpAddr) -> [u8; 16] {
    let mut bytes = [0; 16];
    match address {
        IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => bytes = v6.octets(),
    }
    bytes
}

fn key(transport: Transport, source: SocketAddr, destination: SocketAddr) -> FlowKey {
    FlowKey {
        family: family(source.ip()),
        proto: match transport {
            Transport::Tcp => IPPROTO_TCP,
            Transport::Udp => IPPROTO_UDP,
        },
        _pad: 0,
        src_port: source.port().to_be(),
        dst_port: destination.port().to_be(),
        src: bytes(source.ip()),
        dst: bytes(destination.ip()),
    }
}

fn nat(rewrite: u16, to: SocketAddr) -> FlowNat {
    FlowNat { rewrite, port: to.port().to_be(), forward: 0, addr: bytes(to.ip()), last_seen_ns: 0 }
}

impl ProxyFlowEntries {
    /// The entries of one connection (or udp client) the proxy relays.
    pub fn of(addrs: ProxiedAddrs) -> Result<ProxyFlowEntries, SteerError> {
        let (client, local, backend) =
            (canonical(addrs.client), canonical(addrs.local), canonical(addrs.backend));
        let same = |one: SocketAddr, other: SocketAddr| one.is_ipv4() == other.is_ipv4();
        if !same(client, backend) || !same(local, backend) {
            return Err(SteerError::Families(addrs));
        }
        let transport = addrs.transport;
        Ok(ProxyFlowEntries {
            outbound: (key(transport, local, backend), nat(NAT_SOURCE, client)),
            inbound: (key(transport, backend, client), nat(NAT_DESTINATION, local)),
        })
    }
}

/// The connections steered now, by their inbound key (the one two connections could share).
#[derive(Default)]
pub(super) struct ProxyFlows {
    steered: HashMap<FlowKey, FlowKey>,
}

impl ProxyFlows {
    pub(super) fn steer(
        &mut self,
        ops: &mut impl ProxyFlowOps,
        addrs: ProxiedAddrs,
    ) -> Result<(), SteerError> {
        let entries = ProxyFlowEntries::of(addrs)?;
        let (outbound, inbound) = (entries.outbound.0, entries.inbound.0);
        if self.steered.contains_key(&inbound) || self.steered.values().any(|o| *o == outbound) {
            return Err(SteerError::InUse(addrs));
        }
        ops.add_proxy_flow(&inbound, &entries.inbound.1)?;
        if let Err(e) = ops.add_proxy_flow(&outbound, &entries.outbound.1) {
            if let Err(undo) = ops.remove_proxy_flow(&inbound) {
                tracing::warn!("data plane: cannot remove a proxied reply's entry: {undo}");
            }
            return Err(e.into());
        }
        self.steered.insert(inbound, outbound);
        Ok(())
    }

    /// Forgets a steered connection; one never steered is ignored.
    pub(super) fn release(&mut self, ops: &mut impl ProxyFlowOps, addrs: ProxiedAddrs) {
        let Ok(entries) = ProxyFlowEntries::of(addrs) else { return };
        let (outbound, inbound) = (entries.outbound.0, entries.inbound.0);
        if self.steered.get(&inbound) != Some(&outbound) {
            return;
        }
        if let Err(e) = ops.remove_proxy_flow(&outbound) {
            // Left in place, it would rewrite a later connection from the same port.
            tracing::warn!("data plane: cannot remove a proxied connection's entry: {e}");
            return;
        }
        if let Err(e) = ops.remove_proxy_flow(&inbound) {
            tracing::warn!("data plane: cannot remove a proxied reply's entry: {e}");
            return;
        }
        self.steered.remove(&inbound);
    }

    pub(super) fn len(&self) -> usize {
        self.steered.len()
    }
}
