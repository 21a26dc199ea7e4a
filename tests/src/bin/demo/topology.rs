//! The demo's world, made of network namespaces joined by veth pairs:
//!
//! ```text
//!   internet client 203.0.113.10 ─┐
//!   phone (mobile) 198.51.102.1 ──┤
//!                                 isp (routes the "internet") ── VPS 198.51.100.1 (public)
//!   CGNAT 198.51.101.1 ───────────┘
//!     └── 100.64.0.0/24 ── home router 100.64.0.2 (no public address)
//!                            └── home LAN 192.168.1.0/24 ── nas 192.168.1.10 (web service)
//! ```
//!
//! Nothing reaches the home from outside except through the VPS: the CGNAT only masquerades
//! outgoing traffic, as a carrier's would.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::Result;
use gateway_tests::Netns;
use gateway_tests::gatewayd::XdpPass;

pub const VPS_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const CGNAT_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 101, 1);
pub const PHONE_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 102, 1);
pub const CLIENT_PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const HOME_WAN: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
pub const HOME_LAN_GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
pub const NAS: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);

/// Interface names inside the namespaces (per namespace, so they can be fixed).
pub const VPS_UPLINK: &str = "vps-up";
pub const HOME_WAN_IF: &str = "home-wan";
pub const HOME_LAN_IF: &str = "home-lan";

pub struct World {
    /// veth delivers frames an XDP program transmits or redirects only to a peer that runs
    /// an XDP program itself (a physical NIC has no such condition): the far ends of the links
    /// gatewayd forwards over in XDP get the object's do-nothing `xdp_pass`. Declared first:
    /// detached before the namespaces go.
    pub xdp_receivers: Vec<XdpPass>,
    pub isp: Netns,
    pub vps: Netns,
    pub cgnat: Netns,
    pub home: Netns,
    pub nas: Netns,
    pub phone: Netns,
    pub client: Netns,
}

fn ip(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

/// Joins `edge` to the ISP router on its own /24 (`edge_addr` and `.254` on the router side),
/// with a default route through the router.
fn attach_to_isp(
    isp: &Netns,
    edge: &Netns,
    edge_if: &str,
    isp_if: &str,
    edge_addr: Ipv4Addr,
) -> Result<()> {
    let [a, b, c, _] = edge_addr.octets();
    let router = Ipv4Addr::new(a, b, c, 254);
    cable(edge, edge_if, isp, isp_if)?;
    edge.add_address(edge_if, ip(edge_addr), 24)?;
    isp.add_address(isp_if, ip(router), 24)?;
    edge.add_route_via("default", ip(router))
}

/// A veth end hands its peer packets whose checksums are still to be computed
/// (CHECKSUM_PARTIAL): fine within one kernel, but nothing a wire would carry, and XDP
/// rewriting such a frame leaves the kernel believing the old offsets. Turn the offload off so
/// every link behaves like a cable between machines.
fn like_a_wire(netns: &Netns, device: &str) -> Result<()> {
    netns.checksum_in_software(device)
}

/// Creates a veth pair that behaves like a cable (see [`like_a_wire`]).
fn cable(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    a.add_veth(a_if, b, b_if)?;
    like_a_wire(a, a_if)?;
    like_a_wire(b, b_if)
}

impl World {
    pub fn build() -> Result<World> {
        let mut world = World {
            xdp_receivers: Vec::new(),
            isp: Netns::new("isp")?,
            vps: Netns::new("vps")?,
            cgnat: Netns::new("cgn")?,
            home: Netns::new("hom")?,
            nas: Netns::new("nas")?,
            phone: Netns::new("phn")?,
            client: Netns::new("cli")?,
        };
        let World { isp, vps, cgnat, home, nas, phone, client, .. } = &world;
        isp.enable_forwarding()?;
        attach_to_isp(isp, vps, VPS_UPLINK, "isp-vps", VPS_PUBLIC)?;
        attach_to_isp(isp, cgnat, "cgn-up", "isp-cgn", CGNAT_PUBLIC)?;
        attach_to_isp(isp, phone, "phone-up", "isp-phone", PHONE_PUBLIC)?;
        attach_to_isp(isp, client, "client-up", "isp-client", CLIENT_PUBLIC)?;

        cgnat.enable_forwarding()?;
        cable(cgnat, "cgn-in", home, HOME_WAN_IF)?;
        cgnat.add_address("cgn-in", ip(Ipv4Addr::new(100, 64, 0, 1)), 24)?;
        home.add_address(HOME_WAN_IF, ip(HOME_WAN), 24)?;
        home.add_route_via("default", ip(Ipv4Addr::new(100, 64, 0, 1)))?;
        cgnat.load_nftables(
            "table ip cgnat {\n\
             \tchain postrouting {\n\
             \t\ttype nat hook postrouting priority srcnat;\n\
             \t\toifname \"cgn-up\" masquerade\n\
             \t}\n\
             \tchain forward {\n\
             \t\ttype filter hook forward priority filter; policy drop;\n\
             \t\tiifname \"cgn-in\" accept\n\
             \t\tct state established,related accept\n\
             \t}\n\
             }\n",
        )?;

        home.enable_forwarding()?;
        cable(home, HOME_LAN_IF, nas, "nas-eth")?;
        home.add_address(HOME_LAN_IF, ip(HOME_LAN_GATEWAY), 24)?;
        nas.add_address("nas-eth", ip(NAS), 24)?;
        nas.add_route_via("default", ip(HOME_LAN_GATEWAY))?;
        // The VPS routes the home's traffic between peers and forwards port 8080 to the NAS.
        vps.enable_forwarding()?;
        let receivers = [(isp, "isp-vps"), (cgnat, "cgn-in"), (nas, "nas-eth")]
            .into_iter()
            .map(|(netns, device)| XdpPass::attach(netns, device))
            .collect::<Result<Vec<_>>>()?;
        world.xdp_receivers = receivers;
        Ok(world)
    }
}
