//! The reusable network shapes, built from namespaces and veth pairs. Each exposes its
//! namespaces, interface names and addresses as fields, so tests never repeat the address plan.
//!
//! - [`Direct`]: client — router — server, one routed underlay hop.
//! - [`Hub`]: phone — internet — VPS, and home-LAN host — home — carrier NAT — internet: the VPS
//!   relays between phone and home, and the home reaches it only through a masquerade.
//! - [`Entry`]: client — internet — two VPSes, and a home behind carrier NAT with a NAS and a
//!   second host on its LAN: services on the home LAN exposed on the VPSes' addresses.
//! - [`Exit`]: phone — internet — VPS: the phone's traffic leaves through the VPS
//!   (`--masquerade`) to a site on the internet.
//! - [`Narrow`]: LAN host — home — (an underlay of MTU 1280) — VPS — client.

mod direct;
mod entry;
mod exit;
mod hub;
mod narrow;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::{Context as _, Result};

pub use direct::Direct;
pub use entry::Entry;
pub use exit::Exit;
pub use hub::Hub;
pub use narrow::Narrow;

use crate::Netns;
use crate::traffic::wait_for_ping;

/// Every IPv4 link is a /24, every IPv6 link a /64.
pub const V4_PREFIX_LEN: u8 = 24;
pub const V6_PREFIX_LEN: u8 = 64;

/// How long the underlay may take to answer its first ping (neighbour resolution).
const UNDERLAY_PING_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct TopologyOptions {
    /// Also give every underlay link an IPv6 address (and IPv6 routes).
    pub ipv6: bool,
    /// MTU of every underlay link.
    pub mtu: u32,
}

impl Default for TopologyOptions {
    fn default() -> TopologyOptions {
        TopologyOptions { ipv6: false, mtu: 1500 }
    }
}

/// One end of a link: its name inside its namespace and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub v4: Ipv4Addr,
    /// Present when the topology was built with IPv6.
    pub v6: Option<Ipv6Addr>,
}

impl Iface {
    fn new(name: &str, v4: Ipv4Addr, v6: Ipv6Addr, options: &TopologyOptions) -> Iface {
        Iface { name: name.to_string(), v4, v6: options.ipv6.then_some(v6) }
    }

    /// The IPv6 address, or an error saying the topology was built without IPv6.
    pub fn v6(&self) -> Result<Ipv6Addr> {
        self.v6
            .with_context(|| format!("{} has no IPv6 address: build with `ipv6: true`", self.name))
    }
}

/// A veth pair between `a` and `b` with their addresses and MTU.
fn link(
    a_netns: &Netns,
    a: &Iface,
    b_netns: &Netns,
    b: &Iface,
    options: &TopologyOptions,
) -> Result<()> {
    a_netns.add_veth(&a.name, b_netns, &b.name)?;
    for (netns, iface) in [(a_netns, a), (b_netns, b)] {
        netns.set_mtu(&iface.name, options.mtu)?;
        netns.add_address(&iface.name, IpAddr::V4(iface.v4), V4_PREFIX_LEN)?;
        if let Some(v6) = iface.v6 {
            netns.add_address(&iface.name, IpAddr::V6(v6), V6_PREFIX_LEN)?;
        }
    }
    Ok(())
}

/// Routes `destination_v4` / `destination_v6` (prefixes or `default`) via `gateway`'s addresses.
fn route_via(
    netns: &Netns,
    destination_v4: &str,
    destination_v6: &str,
    gateway: &Iface,
) -> Result<()> {
    netns.add_route_via(destination_v4, IpAddr::V4(gateway.v4))?;
    if let Some(v6) = gateway.v6 {
        netns.add_route_via(destination_v6, IpAddr::V6(v6))?;
    }
    Ok(())
}

/// The first reply over a path, IPv4 and (if present) IPv6: a broken underlay fails here, with
/// a message naming the path, rather than later as a mysterious tunnel failure.
fn check_path(from: &Netns, to: &Iface, path: &str) -> Result<()> {
    wait_for_ping(from, IpAddr::V4(to.v4), UNDERLAY_PING_TIMEOUT)
        .with_context(|| format!("underlay path {path} (IPv4) is broken"))?;
    if let Some(v6) = to.v6 {
        wait_for_ping(from, IpAddr::V6(v6), UNDERLAY_PING_TIMEOUT)
            .with_context(|| format!("underlay path {path} (IPv6) is broken"))?;
    }
    Ok(())
}
