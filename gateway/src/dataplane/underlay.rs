//! Choosing underlay interfaces: the ones the kernel routes given endpoint addresses
//! through (`ip route get` over rtnetlink, answered from the routing tables and rules of this
//! network namespace).

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{RouteAddress, RouteAttribute, RouteMessage},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::error::{DataplaneError, Result};

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
    let mut req = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetRoute(msg)),
    );
    req.header.flags = NLM_F_REQUEST;
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut buf);

    let mut socket =
        Socket::new(NETLINK_ROUTE).map_err(|e| DataplaneError::kernel_chain(what(), &e))?;
    socket.bind_auto().map_err(|e| DataplaneError::kernel_chain(what(), &e))?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(|e| DataplaneError::kernel_chain(what(), &e))?;
    socket.send(&buf, 0).map_err(|e| DataplaneError::kernel_chain(what(), &e))?;
    let mut reply = vec![0u8; 16384];
    let n = socket
        .recv(&mut &mut reply[..], 0)
        .map_err(|e| DataplaneError::kernel_chain(what(), &e))?;
    let mut offset = 0;
    while offset < n {
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[offset..n])
            .map_err(|e| DataplaneError::kernel_chain(what(), &e))?;
        let len = msg.header.length as usize;
        match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(route)) => {
                for attr in route.attributes {
                    if let RouteAttribute::Oif(index) = attr {
                        return Ok(index);
                    }
                }
            }
            NetlinkPayload::Error(e) => {
                return Err(DataplaneError::kernel(what(), e.to_io()));
            }
            _ => {}
        }
        if len == 0 {
            break;
        }
        offset += len;
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
