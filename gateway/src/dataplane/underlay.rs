//! Choosing underlay interfaces: the ones the kernel routes given endpoint addresses
//! through (`ip route get` over rtnetlink, answered from the routing tables and rules of this
//! network namespace).

use std::net::IpAddr;

use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{RouteAddress, RouteAttribute, RouteMessage},
};

use super::error::{DataplaneError, Result};
use super::netlink;

/// The output interface of the route to `dst`.
pub fn route_interface(dst: IpAddr) -> Result<u32> {
    let what = || format!("looking up the route to {dst}");
    let mut msg = RouteMessage::default();
    let (family, len, addr) = match dst {
        IpAddr::V4(a) => (AddressFamily::Inet, 32, RouteAddress::Inet(a)),
        IpAddr::V6(a) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(a)),
    };
    msg.header.address_family = family;
    msg.header.destination_prefix_length = len;
    msg.attributes.push(RouteAttribute::Destination(addr));
    let answers = netlink::request(RouteNetlinkMessage::GetRoute(msg), false)
        .map_err(|e| DataplaneError::kernel(what(), e))?;
    for answer in answers {
        if let RouteNetlinkMessage::NewRoute(route) = answer {
            for attr in route.attributes {
                if let RouteAttribute::Oif(index) = attr {
                    return Ok(index);
                }
            }
        }
    }
    Err(DataplaneError::kernel(what(), "no route"))
}

/// The interfaces routes to `endpoints` leave through, each once, in first-seen order:
/// where to attach the receive path when no underlay is configured.
pub fn underlay_interfaces(endpoints: &[IpAddr]) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for &e in endpoints {
        let i = route_interface(e)?;
        if !out.contains(&i) {
            out.push(i);
        }
    }
    Ok(out)
}
