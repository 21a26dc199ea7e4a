//! A home and a VPS joined by an underlay narrower than the tunnel MTU expects (1280 bytes,
//! where 1420 + 60 would be needed), each with a host behind it: the shape of "MTU trouble".
//!
//! ```text
//!  lan host            home                               vps                client
//!  eth0 192.168.70.2 ─ lan0 192.168.70.1
//!                      wan0 10.202.0.1 ══ MTU 1280 ══ wan0 10.202.0.2
//!                                                     lan0 192.168.71.1 ─ eth0 192.168.71.2
//! ```
//! Only the links' own prefixes are routed, and the hosts' default routes lead to their
//! gateways: each gateway's tunnel is the tests' business, and so are the routes of the far
//! side's LAN into it. Both gateways forward.

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result};

use super::{Iface, TopologyOptions, check_path, link, route_via};
use crate::Netns;

#[derive(Debug)]
pub struct Narrow {
    pub lan_host: Netns,
    pub home: Netns,
    pub vps: Netns,
    pub client: Netns,

    pub lan_host_if: Iface,
    pub home_lan: Iface,
    pub home_wan: Iface,
    pub vps_wan: Iface,
    pub vps_lan: Iface,
    pub client_if: Iface,
}

impl Narrow {
    pub const HOME_LAN_V4: &'static str = "192.168.70.0/24";
    pub const VPS_LAN_V4: &'static str = "192.168.71.0/24";
    /// The MTU of the home ↔ VPS link.
    pub const UNDERLAY_MTU: u32 = 1280;

    /// IPv4 only; `options.mtu` is the LAN links' MTU.
    pub fn build(options: &TopologyOptions) -> Result<Narrow> {
        let options = TopologyOptions { ipv6: false, ..options.clone() };
        let unused = std::net::Ipv6Addr::UNSPECIFIED;
        let iface =
            |name: &str, v4: [u8; 4]| Iface::new(name, Ipv4Addr::from(v4), unused, &options);
        let narrow = Narrow {
            lan_host: Netns::new("lan")?,
            home: Netns::new("hom")?,
            vps: Netns::new("vps")?,
            client: Netns::new("cli")?,
            lan_host_if: iface("eth0", [192, 168, 70, 2]),
            home_lan: iface("lan0", [192, 168, 70, 1]),
            home_wan: iface("wan0", [10, 202, 0, 1]),
            vps_wan: iface("wan0", [10, 202, 0, 2]),
            vps_lan: iface("lan0", [192, 168, 71, 1]),
            client_if: iface("eth0", [192, 168, 71, 2]),
        };
        narrow.wire(&options).context("building the narrow topology")?;
        Ok(narrow)
    }

    fn wire(&self, options: &TopologyOptions) -> Result<()> {
        let underlay = TopologyOptions { mtu: Self::UNDERLAY_MTU, ..options.clone() };
        link(&self.lan_host, &self.lan_host_if, &self.home, &self.home_lan, options)?;
        link(&self.home, &self.home_wan, &self.vps, &self.vps_wan, &underlay)?;
        link(&self.vps, &self.vps_lan, &self.client, &self.client_if, options)?;
        self.home.enable_forwarding()?;
        self.vps.enable_forwarding()?;
        route_via(&self.lan_host, "default", "default", &self.home_lan)?;
        route_via(&self.client, "default", "default", &self.vps_lan)?;
        check_path(&self.lan_host, &self.home_lan, "LAN host → home")?;
        check_path(&self.home, &self.vps_wan, "home → VPS")?;
        check_path(&self.client, &self.vps_lan, "client → VPS")
    }

    /// Every namespace's name (to check they are gone after a test).
    pub fn namespace_names(&self) -> Vec<String> {
        [&self.lan_host, &self.home, &self.vps, &self.client]
            .iter()
            .map(|ns| ns.name().to_string())
            .collect()
    }
}
