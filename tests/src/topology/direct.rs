//! client — router — server: two hosts one routed hop apart (the anchor benchmarks' shape).
//!
//! ```text
//!  client            router                    server
//!  eth0 10.201.1.1 ─ eth0 10.201.1.254
//!                    eth1 10.201.2.254 ─ eth0 10.201.2.1
//!  (IPv6: fd00:201:1::1, fd00:201:1::fe, fd00:201:2::fe, fd00:201:2::1)
//! ```
//! Only the underlay prefixes are routed (no default routes), so tunnel tests may route anything
//! else into their tunnels.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, Result};

use super::{Iface, TopologyOptions, check_path, link, route_via};
use crate::Netns;

#[derive(Debug)]
pub struct Direct {
    pub client: Netns,
    pub router: Netns,
    pub server: Netns,
    pub client_if: Iface,
    pub router_client_if: Iface,
    pub router_server_if: Iface,
    pub server_if: Iface,
}

impl Direct {
    /// The prefixes the underlay routes; everything else is free for tunnels.
    pub const UNDERLAY_V4: &'static str = "10.201.0.0/16";
    pub const UNDERLAY_V6: &'static str = "fd00:201::/32";

    pub fn build(options: &TopologyOptions) -> Result<Direct> {
        let v6 = |group: u16, host: u16| Ipv6Addr::new(0xfd00, 0x201, group, 0, 0, 0, 0, host);
        let direct = Direct {
            client: Netns::new("cli")?,
            router: Netns::new("rtr")?,
            server: Netns::new("srv")?,
            client_if: Iface::new("eth0", Ipv4Addr::new(10, 201, 1, 1), v6(1, 1), options),
            router_client_if: Iface::new(
                "eth0",
                Ipv4Addr::new(10, 201, 1, 254),
                v6(1, 0xfe),
                options,
            ),
            router_server_if: Iface::new(
                "eth1",
                Ipv4Addr::new(10, 201, 2, 254),
                v6(2, 0xfe),
                options,
            ),
            server_if: Iface::new("eth0", Ipv4Addr::new(10, 201, 2, 1), v6(2, 1), options),
        };
        direct.wire(options).context("building the direct topology")?;
        Ok(direct)
    }

    fn wire(&self, options: &TopologyOptions) -> Result<()> {
        link(&self.client, &self.client_if, &self.router, &self.router_client_if, options)?;
        link(&self.router, &self.router_server_if, &self.server, &self.server_if, options)?;
        self.router.enable_forwarding()?;
        route_via(&self.client, Self::UNDERLAY_V4, Self::UNDERLAY_V6, &self.router_client_if)?;
        route_via(&self.server, Self::UNDERLAY_V4, Self::UNDERLAY_V6, &self.router_server_if)?;
        check_path(&self.client, &self.server_if, "client → router → server")
    }

    /// Every namespace's name (to check they are gone after a test).
    pub fn namespace_names(&self) -> Vec<String> {
        [&self.client, &self.router, &self.server].iter().map(|ns| ns.name().to_string()).collect()
    }
}
