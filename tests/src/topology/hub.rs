//! The hub: a phone and a home LAN joined through a VPS, the home behind carrier-grade NAT.
//!
//! ```text
//!  phone                 internet (router)            vps
//!  eth0 198.51.100.10 ── phone0 198.51.100.254
//!                        vps0   192.0.2.254    ────── eth0 192.0.2.1   (the public address)
//!                        cgn0   203.0.113.254  ─┐
//!                                               │  cgnat
//!                                               └──── wan0  203.0.113.1 (masquerade out of here)
//!                                                     home0 100.64.0.1
//!  lan host              home                           │
//!  eth0 192.168.50.2 ─── lan0 192.168.50.1              │
//!                        wan0 100.64.0.2  ──────────────┘
//! ```
//! IPv6 (optional) is routed natively, without NAT, as carriers usually do: phone
//! 2001:db8:100::10, VPS 2001:db8:2::1, carrier 2001:db8:203::1, home 2001:db8:64::2 (the
//! internet routes 2001:db8:64::/64 to the carrier); the home LAN is fd50::/64, reachable only
//! through a tunnel. The internet knows no route to 100.64.0.0/10 or the home LAN: home traffic
//! reaches the VPS only masqueraded as 203.0.113.1, and nothing reaches the home unsolicited.
//!
//! The VPS forwards (it relays phone ↔ home through its tunnel) without ICMP redirects; the home
//! forwards between its tunnel and its LAN. The topology builds only the underlay: tunnels are
//! the tests' business.

use std::net::Ipv6Addr;

use anyhow::{Context as _, Result};

use super::{Iface, TopologyOptions, check_path, link, route_via};
use crate::Netns;

#[derive(Debug)]
pub struct Hub {
    pub phone: Netns,
    pub internet: Netns,
    pub vps: Netns,
    pub cgnat: Netns,
    pub home: Netns,
    pub lan_host: Netns,

    pub phone_wan: Iface,
    pub internet_phone: Iface,
    pub internet_vps: Iface,
    pub internet_cgnat: Iface,
    /// The VPS's public address: the endpoint both phone and home dial.
    pub vps_wan: Iface,
    /// The carrier's public side: the source address home traffic appears with on the internet.
    pub cgnat_wan: Iface,
    pub cgnat_home: Iface,
    pub home_wan: Iface,
    pub home_lan: Iface,
    pub lan_host_if: Iface,
}

impl Hub {
    /// The home LAN behind the home gateway.
    pub const HOME_LAN_V4: &'static str = "192.168.50.0/24";
    pub const HOME_LAN_V6: &'static str = "fd50::/64";

    pub fn build(options: &TopologyOptions) -> Result<Hub> {
        let doc = |net: u16, host: u16| Ipv6Addr::new(0x2001, 0xdb8, net, 0, 0, 0, 0, host);
        let ula = |host: u16| Ipv6Addr::new(0xfd50, 0, 0, 0, 0, 0, 0, host);
        let iface =
            |name: &str, v4: [u8; 4], v6: Ipv6Addr| Iface::new(name, v4.into(), v6, options);
        let hub = Hub {
            phone: Netns::new("ph")?,
            internet: Netns::new("net")?,
            vps: Netns::new("vps")?,
            cgnat: Netns::new("cgn")?,
            home: Netns::new("hom")?,
            lan_host: Netns::new("lan")?,
            phone_wan: iface("eth0", [198, 51, 100, 10], doc(0x100, 0x10)),
            internet_phone: iface("phone0", [198, 51, 100, 254], doc(0x100, 0xfe)),
            internet_vps: iface("vps0", [192, 0, 2, 254], doc(0x2, 0xfe)),
            internet_cgnat: iface("cgn0", [203, 0, 113, 254], doc(0x203, 0xfe)),
            vps_wan: iface("eth0", [192, 0, 2, 1], doc(0x2, 0x1)),
            cgnat_wan: iface("wan0", [203, 0, 113, 1], doc(0x203, 0x1)),
            cgnat_home: iface("home0", [100, 64, 0, 1], doc(0x64, 0x1)),
            home_wan: iface("wan0", [100, 64, 0, 2], doc(0x64, 0x2)),
            home_lan: iface("lan0", [192, 168, 50, 1], ula(1)),
            lan_host_if: iface("eth0", [192, 168, 50, 2], ula(2)),
        };
        hub.wire(options).context("building the hub topology")?;
        Ok(hub)
    }

    fn wire(&self, options: &TopologyOptions) -> Result<()> {
        link(&self.phone, &self.phone_wan, &self.internet, &self.internet_phone, options)?;
        link(&self.vps, &self.vps_wan, &self.internet, &self.internet_vps, options)?;
        link(&self.cgnat, &self.cgnat_wan, &self.internet, &self.internet_cgnat, options)?;
        link(&self.home, &self.home_wan, &self.cgnat, &self.cgnat_home, options)?;
        link(&self.lan_host, &self.lan_host_if, &self.home, &self.home_lan, options)?;

        for router in [&self.internet, &self.cgnat, &self.home, &self.vps] {
            router.enable_forwarding()?;
        }
        // The VPS sends relayed packets back out of the interface they came in on: not a reason
        // to tell the sender about a shorter path.
        self.vps.set_sysctl("net.ipv4.conf.all.send_redirects", "0")?;
        self.vps.set_sysctl("net.ipv4.conf.default.send_redirects", "0")?;

        route_via(&self.phone, "default", "default", &self.internet_phone)?;
        route_via(&self.vps, "default", "default", &self.internet_vps)?;
        route_via(&self.cgnat, "default", "default", &self.internet_cgnat)?;
        route_via(&self.home, "default", "default", &self.cgnat_home)?;
        route_via(&self.lan_host, "default", "default", &self.home_lan)?;
        if let Some(carrier_v6) = self.cgnat_wan.v6 {
            // Native IPv6 for the home; its IPv4 stays behind the NAT below.
            let home_prefix = format!("{}/64", Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 0));
            self.internet.add_route_via(&home_prefix, carrier_v6.into())?;
        }
        self.cgnat.load_nftables(&masquerade_rules(&self.cgnat_wan.name))?;

        check_path(&self.phone, &self.vps_wan, "phone → internet → VPS")?;
        check_path(&self.home, &self.vps_wan, "home → carrier NAT → internet → VPS")?;
        check_path(&self.lan_host, &self.home_lan, "home LAN host → home")
    }

    /// Every namespace's name (to check they are gone after a test).
    pub fn namespace_names(&self) -> Vec<String> {
        [&self.phone, &self.internet, &self.vps, &self.cgnat, &self.home, &self.lan_host]
            .iter()
            .map(|ns| ns.name().to_string())
            .collect()
    }
}

/// Carrier-grade NAT: IPv4 leaving through `wan` takes the carrier's address.
fn masquerade_rules(wan: &str) -> String {
    format!(
        "table ip cgnat {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\toifname \"{wan}\" masquerade\n\
         \t}}\n\
         }}\n"
    )
}
