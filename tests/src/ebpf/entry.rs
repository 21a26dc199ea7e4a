//! The entry point's map values as the tests write and read them: forwards, flow keys and
//! translations from socket addresses.

use std::net::{IpAddr, SocketAddr};

use gateway_common::maps::{AF_INET, AF_INET6, AF_NONE, EntryForward, FlowKey, FlowNat};

fn family(addr: IpAddr) -> u16 {
    if addr.is_ipv4() { AF_INET } else { AF_INET6 }
}

/// An address as the maps hold it: network order, IPv4 in the first 4 bytes.
pub fn address(addr: IpAddr) -> [u8; 16] {
    let mut a = [0u8; 16];
    match addr {
        IpAddr::V4(v4) => a[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => a = v6.octets(),
    }
    a
}

/// A tcp/udp forward of the public ports from `first_port` to `to` (`to`'s port for
/// `first_port`, shifted alike for the rest of the range), on `listen` only if given.
pub fn forward(first_port: u16, to: SocketAddr, listen: Option<IpAddr>) -> EntryForward {
    EntryForward {
        family: family(to.ip()),
        listen_family: listen.map_or(AF_NONE, family),
        first_port,
        to_port: to.port(),
        next: 0,
        to_addr: address(to.ip()),
        listen: listen.map_or([0; 16], address),
    }
}

/// The key of one direction of a flow.
pub fn flow_key(proto: u8, src: SocketAddr, dst: SocketAddr) -> FlowKey {
    FlowKey {
        family: family(src.ip()),
        proto,
        _pad: 0,
        src_port: src.port().to_be(),
        dst_port: dst.port().to_be(),
        src: address(src.ip()),
        dst: address(dst.ip()),
    }
}

/// A translation (`NAT_SOURCE` / `NAT_DESTINATION`) to `to`.
pub fn flow_nat(rewrite: u16, to: SocketAddr) -> FlowNat {
    FlowNat {
        rewrite,
        port: to.port().to_be(),
        forward: 0,
        addr: address(to.ip()),
        last_seen_ns: 0,
    }
}

/// The socket address a `FlowNat` translates to.
pub fn nat_target(nat: &FlowNat, ipv4: bool) -> SocketAddr {
    let ip: IpAddr =
        if ipv4 { <[u8; 4]>::try_from(&nat.addr[..4]).unwrap().into() } else { nat.addr.into() };
    SocketAddr::new(ip, u16::from_be(nat.port))
}
