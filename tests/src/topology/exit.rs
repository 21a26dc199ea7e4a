//! The exit node: a phone whose whole IPv4 traffic goes through a VPS, which masquerades it
//! onto the internet.
//!
//! ```text
//!  phone                 internet (router, and the host the phone talks to)    vps
//!  eth0 198.51.100.10 ── phone0 198.51.100.254
//!                        vps0   192.0.2.254   ───────────────────────────────── eth0 192.0.2.1
//!                               (the "web site")                                (public, OUTIF)
//! ```
//! The site is the internet host's address on the VPS's link: servers that answer UDP from a
//! wildcard socket pick the source address of the route back, and only that one matches
//! what was asked (as a NAT's reply lookup requires).
//! The internet knows no route to the tunnel's addresses (10.77.0.0/24): a packet that
//! reached it with the phone's tunnel address as its source could not be answered, so an
//! answer proves the VPS translated it. The phone reaches the VPS over its own default
//! route; the tests route the site through the tunnel. The topology builds only the
//! underlay: tunnels are the tests' business.

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result};

use super::{Iface, TopologyOptions, check_path, link, route_via};
use crate::Netns;

#[derive(Debug)]
pub struct Exit {
    pub phone: Netns,
    pub internet: Netns,
    pub vps: Netns,

    pub phone_wan: Iface,
    pub internet_phone: Iface,
    pub internet_vps: Iface,
    /// The VPS's public address: the phone's endpoint, and the source the site sees.
    pub vps_wan: Iface,
}

impl Exit {
    /// The site on the internet the phone reaches through the VPS (`internet_vps`).
    pub const SITE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);

    pub fn build() -> Result<Exit> {
        let options = TopologyOptions::default();
        let iface = |name: &str, v4: [u8; 4]| {
            Iface::new(name, v4.into(), std::net::Ipv6Addr::UNSPECIFIED, &options)
        };
        let exit = Exit {
            phone: Netns::new("ph")?,
            internet: Netns::new("net")?,
            vps: Netns::new("vps")?,
            phone_wan: iface("eth0", [198, 51, 100, 10]),
            internet_phone: iface("phone0", [198, 51, 100, 254]),
            internet_vps: iface("vps0", [192, 0, 2, 254]),
            vps_wan: iface("eth0", [192, 0, 2, 1]),
        };
        exit.wire(&options).context("building the exit-node topology")?;
        Ok(exit)
    }

    fn wire(&self, options: &TopologyOptions) -> Result<()> {
        link(&self.phone, &self.phone_wan, &self.internet, &self.internet_phone, options)?;
        link(&self.vps, &self.vps_wan, &self.internet, &self.internet_vps, options)?;
        // Every checksum completed before it leaves, as between machines: a CHECKSUM_PARTIAL
        // frame across a veth keeps a stale checksum offset after decapsulation (see
        // docs/ARCHITECTURE.md), which no frame from a real wire has.
        for (netns, iface) in [
            (&self.phone, &self.phone_wan),
            (&self.internet, &self.internet_phone),
            (&self.internet, &self.internet_vps),
            (&self.vps, &self.vps_wan),
        ] {
            netns.checksum_in_software(&iface.name)?;
        }
        self.internet.enable_forwarding()?;
        route_via(&self.phone, "default", "default", &self.internet_phone)?;
        route_via(&self.vps, "default", "default", &self.internet_vps)?;
        check_path(&self.phone, &self.vps_wan, "phone → internet → VPS")
    }

    /// Every namespace's name (to check they are gone after a test).
    pub fn namespace_names(&self) -> Vec<String> {
        [&self.phone, &self.internet, &self.vps].iter().map(|ns| ns.name().to_string()).collect()
    }
}
