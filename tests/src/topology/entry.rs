//! The public entry point: internet clients reach services on a home LAN through the public
//! addresses of two VPSes; the home is behind carrier-grade NAT and dials both.
//!
//! ```text
//!  client                internet (router)              vps
//!  eth0 198.51.100.10 ── cli0 198.51.100.254
//!                        vps0 192.0.2.254    ────────── eth0 192.0.2.1   (public address)
//!                                                       vps2 (a second VPS)
//!                        vpsb0 198.18.2.254  ────────── eth0 198.18.2.1  (public address)
//!                        cgn0 203.0.113.254  ─┐
//!                                             │  cgnat
//!                                             └──────── wan0  203.0.113.1 (masquerade)
//!                                                       home0 100.64.0.1
//!                        home                             │
//!                        wan0 100.64.0.2  ────────────────┘
//!  nas                   │
//!  eth0 192.168.60.10 ── lan0 192.168.60.1
//!  host                  │
//!  eth0 192.168.60.20 ── lan1 192.168.60.1
//! ```
//!
//! The home LAN has two hosts, the NAS and a second host, each on a port (veth) of its own on
//! the home gateway, as on a router with several LAN ports: both ports carry the LAN's gateway
//! address, each host has a host route on its port and the home answers ARP for the other
//! host (proxy ARP), so the hosts reach each other through it. gatewayd serves both ports
//! (`--lan-iface lan0 --lan-iface lan1`). Both hosts' default route is the home gateway.
//! IPv4 only: the forwards under test are IPv4, and the carrier's NAT is what makes the home
//! unreachable unsolicited.
//!
//! The internet routes nothing to 100.64.0.0/10 or the home LAN: the home reaches the VPSes only
//! masqueraded as 203.0.113.1. Like every home router, the home masquerades its LAN out of its
//! WAN port (so the LAN's own traffic leaves as 100.64.0.2, then as 203.0.113.1); that NAT
//! would also take replies to forwarded flows if anything sent them out of the default route.
//! The home's default route points at the carrier and stays so; tunnels (the tests' business)
//! route only their own subnet.

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result};

use super::{Iface, TopologyOptions, check_path, link, route_via};
use crate::Netns;

#[derive(Debug)]
pub struct Entry {
    pub client: Netns,
    pub internet: Netns,
    pub vps: Netns,
    pub vps2: Netns,
    pub cgnat: Netns,
    pub home: Netns,
    pub nas: Netns,
    pub host: Netns,

    pub client_wan: Iface,
    pub internet_client: Iface,
    pub internet_vps: Iface,
    pub internet_vps2: Iface,
    pub internet_cgnat: Iface,
    /// The VPS's public address: where clients connect, and the endpoint the home dials.
    pub vps_wan: Iface,
    /// The second VPS's public address.
    pub vps2_wan: Iface,
    /// The carrier's public side: the source of the home's traffic on the internet.
    pub cgnat_wan: Iface,
    pub cgnat_home: Iface,
    pub home_wan: Iface,
    /// The home's LAN port facing the NAS (gatewayd's `--lan-iface`).
    pub home_lan: Iface,
    /// The home's LAN port facing the second host (same address as `home_lan`).
    pub home_lan_host: Iface,
    pub nas_if: Iface,
    pub host_if: Iface,
}

impl Entry {
    /// The home LAN behind the home gateway.
    pub const HOME_LAN: &'static str = "192.168.60.0/24";

    pub fn build(options: &TopologyOptions) -> Result<Entry> {
        anyhow::ensure!(!options.ipv6, "the entry topology is IPv4 only");
        // Addresses only: `Iface::new` wants an IPv6 address it drops without `ipv6`.
        let iface = |name: &str, v4: [u8; 4]| {
            Iface::new(name, Ipv4Addr::from(v4), std::net::Ipv6Addr::UNSPECIFIED, options)
        };
        let entry = Entry {
            client: Netns::new("cli")?,
            internet: Netns::new("net")?,
            vps: Netns::new("vps")?,
            vps2: Netns::new("vpb")?,
            cgnat: Netns::new("cgn")?,
            home: Netns::new("hom")?,
            nas: Netns::new("nas")?,
            host: Netns::new("lan")?,
            client_wan: iface("eth0", [198, 51, 100, 10]),
            internet_client: iface("cli0", [198, 51, 100, 254]),
            internet_vps: iface("vps0", [192, 0, 2, 254]),
            internet_vps2: iface("vpsb0", [198, 18, 2, 254]),
            internet_cgnat: iface("cgn0", [203, 0, 113, 254]),
            vps_wan: iface("eth0", [192, 0, 2, 1]),
            vps2_wan: iface("eth0", [198, 18, 2, 1]),
            cgnat_wan: iface("wan0", [203, 0, 113, 1]),
            cgnat_home: iface("home0", [100, 64, 0, 1]),
            home_wan: iface("wan0", [100, 64, 0, 2]),
            home_lan: iface("lan0", [192, 168, 60, 1]),
            home_lan_host: iface("lan1", [192, 168, 60, 1]),
            nas_if: iface("eth0", [192, 168, 60, 10]),
            host_if: iface("eth0", [192, 168, 60, 20]),
        };
        entry.wire(options).context("building the entry topology")?;
        Ok(entry)
    }

    fn wire(&self, options: &TopologyOptions) -> Result<()> {
        link(&self.client, &self.client_wan, &self.internet, &self.internet_client, options)?;
        link(&self.vps, &self.vps_wan, &self.internet, &self.internet_vps, options)?;
        link(&self.vps2, &self.vps2_wan, &self.internet, &self.internet_vps2, options)?;
        link(&self.cgnat, &self.cgnat_wan, &self.internet, &self.internet_cgnat, options)?;
        link(&self.home, &self.home_wan, &self.cgnat, &self.cgnat_home, options)?;
        self.lan_link(&self.nas, &self.nas_if, &self.home_lan, options)?;
        self.lan_link(&self.host, &self.host_if, &self.home_lan_host, options)?;
        self.like_wires()?;

        for router in [&self.internet, &self.cgnat, &self.home, &self.vps, &self.vps2] {
            router.enable_forwarding()?;
        }
        // A VPS sends forwarded packets back towards the internet out of the interface they
        // came in on (the tunnel's underlay): not a reason to tell the sender about a shorter
        // path.
        for vps in [&self.vps, &self.vps2] {
            vps.set_sysctl("net.ipv4.conf.all.send_redirects", "0")?;
            vps.set_sysctl("net.ipv4.conf.default.send_redirects", "0")?;
        }

        route_via(&self.client, "default", "default", &self.internet_client)?;
        route_via(&self.vps, "default", "default", &self.internet_vps)?;
        route_via(&self.vps2, "default", "default", &self.internet_vps2)?;
        route_via(&self.cgnat, "default", "default", &self.internet_cgnat)?;
        route_via(&self.home, "default", "default", &self.cgnat_home)?;
        route_via(&self.nas, "default", "default", &self.home_lan)?;
        route_via(&self.host, "default", "default", &self.home_lan_host)?;
        self.cgnat.load_nftables(&masquerade_rules("cgnat", &self.cgnat_wan.name))?;
        self.home.load_nftables(&masquerade_rules("home_nat", &self.home_wan.name))?;

        check_path(&self.client, &self.vps_wan, "client → internet → VPS")?;
        check_path(&self.client, &self.vps2_wan, "client → internet → second VPS")?;
        check_path(&self.home, &self.vps_wan, "home → carrier NAT → internet → VPS")?;
        check_path(&self.home, &self.vps2_wan, "home → carrier NAT → internet → second VPS")?;
        check_path(&self.nas, &self.home_lan, "NAS → home")?;
        check_path(&self.host, &self.home_lan_host, "second LAN host → home")?;
        check_path(&self.nas, &self.host_if, "NAS → home → second LAN host")
    }

    /// A LAN host on its own veth to the home: the home's end carries the LAN's gateway
    /// address without the LAN prefix (both ends would otherwise claim 192.168.60.0/24) and a
    /// host route to the host; the host has the LAN prefix, so it reaches the other host
    /// through the home.
    fn lan_link(
        &self,
        host: &Netns,
        host_if: &Iface,
        home_if: &Iface,
        options: &TopologyOptions,
    ) -> Result<()> {
        self.home.add_veth(&home_if.name, host, &host_if.name)?;
        for (netns, device) in [(&self.home, &home_if.name), (host, &host_if.name)] {
            netns.set_mtu(device, options.mtu)?;
        }
        host.add_address(&host_if.name, host_if.v4.into(), super::V4_PREFIX_LEN)?;
        self.home.add_address(&home_if.name, home_if.v4.into(), 32)?;
        self.home.add_route_dev(&format!("{}/32", host_if.v4), &home_if.name)?;
        // The home answers ARP for the LAN's gateway on both ports and for the other host
        // (proxy ARP), so the hosts talk to each other through it.
        self.home.set_sysctl(&format!("net.ipv4.conf.{}.proxy_arp", home_if.name), "1")
    }

    /// Every link behaves like a cable between machines: a veth end otherwise hands its peer
    /// packets whose checksums are still to be computed (CHECKSUM_PARTIAL), which no wire
    /// carries. The programs under test read such packets before the stack and, finding the
    /// checksum unfinished, do not seal them: the VPS's XDP hands a client's translated SYN to
    /// the daemon, and it reaches the NAS with a checksum the translation could not keep (an
    /// unfinished one is a seed, not a sum); the home's LAN XDP leaves the NAS's replies to
    /// the stack, which sends them out of the default route. With the offload off the
    /// sender's kernel completes every checksum, as a real client's or NAS's does before it
    /// reaches the wire.
    fn like_wires(&self) -> Result<()> {
        let ends = [
            (&self.client, &self.client_wan),
            (&self.internet, &self.internet_client),
            (&self.internet, &self.internet_vps),
            (&self.internet, &self.internet_vps2),
            (&self.internet, &self.internet_cgnat),
            (&self.vps, &self.vps_wan),
            (&self.vps2, &self.vps2_wan),
            (&self.cgnat, &self.cgnat_wan),
            (&self.cgnat, &self.cgnat_home),
            (&self.home, &self.home_wan),
            (&self.home, &self.home_lan),
            (&self.home, &self.home_lan_host),
            (&self.nas, &self.nas_if),
            (&self.host, &self.host_if),
        ];
        for (netns, iface) in ends {
            netns.checksum_in_software(&iface.name)?;
        }
        Ok(())
    }

    /// Every namespace's name (to check they are gone after a test).
    pub fn namespace_names(&self) -> Vec<String> {
        self.namespaces().iter().map(|ns| ns.name().to_string()).collect()
    }

    pub fn namespaces(&self) -> [&Netns; 8] {
        [
            &self.client,
            &self.internet,
            &self.vps,
            &self.vps2,
            &self.cgnat,
            &self.home,
            &self.nas,
            &self.host,
        ]
    }
}

/// IPv4 leaving through `wan` takes its address (the carrier's NAT, the home router's own).
fn masquerade_rules(table: &str, wan: &str) -> String {
    format!(
        "table ip {table} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\toifname \"{wan}\" masquerade\n\
         \t}}\n\
         }}\n"
    )
}
