//! gatewayd and a reference peer (wireguard-go or boringtun) joined by one tunnel across the
//! [`Direct`] topology: gatewayd in `client`, the peer in `server`, one routed hop between.
//!
//! ```text
//!  client: gatewayd  10.77.0.1/24 fd77::1/64  ══ tunnel ══  server: peer  10.77.0.2 fd77::2
//!          listens on 51820                                         listens on 51821
//! ```
//! Only the initiator knows the other side's endpoint, so the side a test names really is the
//! one that starts the handshake; the other learns the endpoint from it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::gatewayd::{DataPath, Gatewayd, GatewaydOptions};
use crate::topology::{Direct, Iface, TopologyOptions};
use crate::traffic::wait_for_ping;
use crate::wg::{Implementation, KeyPair, WgPeer};
use crate::{Netns, TestDir, unique_ifname};

pub const GATEWAYD_PORT: u16 = 51820;
pub const PEER_PORT: u16 = 51821;
pub const TUNNEL_MTU: u32 = 1420;
/// The overlay: 10.77.0.0/24 and fd77::/64, gatewayd .1, the peer .2.
pub const GATEWAYD_TUNNEL: (Ipv4Addr, Ipv6Addr) = tunnel_addresses(1);
pub const PEER_TUNNEL: (Ipv4Addr, Ipv6Addr) = tunnel_addresses(2);

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

pub const fn tunnel_addresses(host: u8) -> (Ipv4Addr, Ipv6Addr) {
    (Ipv4Addr::new(10, 77, 0, host), Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, host as u16))
}

/// Both addresses of a host in the overlay, with their prefix lengths.
pub fn tunnel_cidrs((v4, v6): (Ipv4Addr, Ipv6Addr)) -> [(IpAddr, u8); 2] {
    [(IpAddr::V4(v4), 24), (IpAddr::V6(v6), 64)]
}

/// Who sends the first handshake initiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    Gatewayd,
    Peer,
}

/// An address family (of the underlay, or of traffic in the tunnel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl fmt::Display for Family {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

#[derive(Debug, Clone)]
pub struct PairSpec {
    pub peer: Implementation,
    pub initiator: Initiator,
    pub underlay: Family,
    pub gatewayd: GatewaydOptions,
}

impl PairSpec {
    /// The plainest pair: a wireguard-go peer, gatewayd initiating, an IPv4 underlay.
    pub fn with_wireguard_go(data_path: DataPath) -> PairSpec {
        PairSpec {
            peer: Implementation::WireguardGo,
            initiator: Initiator::Gatewayd,
            underlay: Family::V4,
            gatewayd: GatewaydOptions::new(data_path),
        }
    }
}

/// Fields drop in order: the daemons before the namespaces they run in.
#[derive(Debug)]
pub struct Pair {
    pub gatewayd: Gatewayd,
    pub peer: WgPeer,
    pub gatewayd_keys: KeyPair,
    pub peer_keys: KeyPair,
    pub spec: PairSpec,
    pub direct: Direct,
}

impl Pair {
    /// Builds the underlay, starts and configures both daemons and brings their interfaces
    /// up; no packet has crossed the tunnel yet (see [`Pair::establish`]).
    pub fn build(dir: &TestDir, spec: &PairSpec) -> Result<Pair> {
        let direct = Direct::build(&TopologyOptions {
            ipv6: spec.underlay == Family::V6,
            ..TopologyOptions::default()
        })?;
        // Forwarding stays off on gatewayd's host, as on a laptop: bpf_fib_lookup refuses
        // every lookup there, and the TUN egress program sends with bpf_redirect_neigh. Its
        // underlay checksums in software, so what the programs leave to the device is
        // computed, and checked at the far end.
        direct.client.checksum_in_software(&direct.client_if.name)?;
        let gatewayd = Gatewayd::start(&direct.client, dir, &unique_ifname("gw")?, &spec.gatewayd)?;
        let peer = WgPeer::start(spec.peer, &direct.server, dir, &unique_ifname("wg")?)?;
        let (gatewayd_keys, peer_keys) = (KeyPair::generate()?, KeyPair::generate()?);
        let pair = Pair { gatewayd, peer, gatewayd_keys, peer_keys, spec: spec.clone(), direct };
        pair.configure().context("configuring the tunnel")?;
        Ok(pair)
    }

    fn configure(&self) -> Result<()> {
        let peer_endpoint = (self.spec.initiator == Initiator::Gatewayd)
            .then(|| self.peer_endpoint())
            .transpose()?;
        let gatewayd_endpoint = (self.spec.initiator == Initiator::Peer)
            .then(|| self.gatewayd_endpoint())
            .transpose()?;
        self.gatewayd.setconf(&wg_config(
            &self.gatewayd_keys,
            GATEWAYD_PORT,
            &self.peer_keys,
            PEER_TUNNEL,
            peer_endpoint,
        ))?;
        self.peer.setconf(&wg_config(
            &self.peer_keys,
            PEER_PORT,
            &self.gatewayd_keys,
            GATEWAYD_TUNNEL,
            gatewayd_endpoint,
        ))?;
        self.gatewayd.bring_up(&tunnel_cidrs(GATEWAYD_TUNNEL), TUNNEL_MTU)?;
        self.peer.bring_up(&tunnel_cidrs(PEER_TUNNEL), TUNNEL_MTU)
    }

    pub fn gatewayd_ns(&self) -> &Netns {
        &self.direct.client
    }

    pub fn peer_ns(&self) -> &Netns {
        &self.direct.server
    }

    /// The underlay interface gatewayd's traffic leaves through.
    pub fn gatewayd_underlay(&self) -> &Iface {
        &self.direct.client_if
    }

    pub fn gatewayd_endpoint(&self) -> Result<SocketAddr> {
        Ok(SocketAddr::new(
            underlay_address(&self.direct.client_if, self.spec.underlay)?,
            GATEWAYD_PORT,
        ))
    }

    pub fn peer_endpoint(&self) -> Result<SocketAddr> {
        Ok(SocketAddr::new(
            underlay_address(&self.direct.server_if, self.spec.underlay)?,
            PEER_PORT,
        ))
    }

    /// The initiator pings the other side through the tunnel until it answers: the first
    /// handshake is done, both directions work.
    pub fn establish(&self, dir: &TestDir) -> Result<()> {
        let (from, to) = match self.spec.initiator {
            Initiator::Gatewayd => (self.gatewayd_ns(), PEER_TUNNEL.0),
            Initiator::Peer => (self.peer_ns(), GATEWAYD_TUNNEL.0),
        };
        wait_for_ping(from, IpAddr::V4(to), HANDSHAKE_TIMEOUT)
            .with_context(|| format!("the first handshake ({:?} initiating)", self.spec.initiator))
            .map_err(|error| dir.attach_logs(error))
    }
}

/// A wg(8) config: our key and port, one peer with its tunnel addresses and maybe an endpoint.
pub fn wg_config(
    own: &KeyPair,
    port: u16,
    peer: &KeyPair,
    (peer_v4, peer_v6): (Ipv4Addr, Ipv6Addr),
    endpoint: Option<SocketAddr>,
) -> String {
    let mut config = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = {port}\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = {peer_v4}/32, {peer_v6}/128\n",
        own.private_key, peer.public_key
    );
    if let Some(endpoint) = endpoint {
        config.push_str(&format!("Endpoint = {endpoint}\n"));
    }
    config
}

/// The interface's address in `family`.
pub fn underlay_address(iface: &Iface, family: Family) -> Result<IpAddr> {
    Ok(match family {
        Family::V4 => IpAddr::V4(iface.v4),
        Family::V6 => IpAddr::V6(iface.v6()?),
    })
}
