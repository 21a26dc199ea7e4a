//! Watching our interface: up/down (timers run only while it is up), deletion (we exit, as
//! wireguard-go does), and its addresses (the source of the ICMP errors we generate); and
//! changes to other interfaces, for the data plane's view of its underlays.
//! rtnetlink notifies; the state itself is read back with plain ioctls and getifaddrs.

use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use futures::StreamExt;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::AsyncSocket;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEvent {
    /// The link changed: whether it is administratively up, and its MTU.
    Changed {
        up: bool,
        mtu: Option<u32>,
    },
    Deleted,
    AddressesChanged,
    /// Another interface changed (its flags, MTU, features...): an underlay, perhaps.
    OtherLinkChanged(u32),
}

const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;

/// Calls `on_event` for every change to interface `ifindex` until the interface is deleted
/// or the netlink socket fails.
pub async fn watch(ifindex: u32, mut on_event: impl FnMut(LinkEvent)) -> io::Result<()> {
    let (mut connection, _handle, mut messages) = rtnetlink::new_connection()?;
    let groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
    connection.socket_mut().socket_mut().bind(&netlink_sys::SocketAddr::new(0, groups))?;
    tokio::spawn(connection);
    while let Some((message, _)) = messages.next().await {
        let NetlinkPayload::InnerMessage(message) = message.payload else { continue };
        match message {
            RouteNetlinkMessage::NewLink(link) if link.header.index == ifindex => {
                use netlink_packet_route::link::{LinkAttribute, LinkFlag};
                let up = link.header.flags.contains(&LinkFlag::Up);
                let mtu = link.attributes.iter().find_map(|a| match a {
                    LinkAttribute::Mtu(m) => Some(*m),
                    _ => None,
                });
                on_event(LinkEvent::Changed { up, mtu });
            }
            RouteNetlinkMessage::NewLink(link) => {
                on_event(LinkEvent::OtherLinkChanged(link.header.index));
            }
            RouteNetlinkMessage::DelLink(link) if link.header.index == ifindex => {
                on_event(LinkEvent::Deleted);
                return Ok(());
            }
            RouteNetlinkMessage::NewAddress(addr) | RouteNetlinkMessage::DelAddress(addr)
                if addr.header.index == ifindex =>
            {
                on_event(LinkEvent::AddressesChanged);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether the interface is administratively up.
pub fn is_up(name: &str) -> io::Result<bool> {
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReq { name: [0; 16], flags: 0, _pad: [0; 22] };
    req.name[..name.len().min(15)].copy_from_slice(&name.as_bytes()[..name.len().min(15)]);
    // SAFETY: socket(2); checked below and closed when `sock` drops.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is ours.
    let sock: std::os::fd::OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    // SAFETY: SIOCGIFFLAGS fills ifr_flags of the struct ifreq IfReq lays out.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(req.flags & libc::IFF_UP as libc::c_short != 0)
}

/// The interface's first IPv4 address and its first IPv6 address (global scope preferred):
/// what the kernel would pick as the source of an ICMP error sent from it.
pub fn addresses(name: &str) -> io::Result<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
    let (mut v4, mut v6) = (None, None);
    for_each_address(|interface, address| {
        if interface.to_bytes() != name.as_bytes() {
            return;
        }
        match address {
            IpAddr::V4(a) if v4.is_none() => v4 = Some(a),
            IpAddr::V4(_) => {}
            IpAddr::V6(a) => {
                if v6.is_none()
                    || (v6.is_some_and(|o: Ipv6Addr| o.is_unicast_link_local())
                        && !a.is_unicast_link_local())
                {
                    v6 = Some(a);
                }
            }
        }
    })?;
    Ok((v4, v6))
}

/// Every address of every interface of the host (its network namespace).
pub fn local_addresses() -> io::Result<Vec<IpAddr>> {
    let mut all = Vec::new();
    for_each_address(|_, address| all.push(address))?;
    Ok(all)
}

/// Calls `f` with each interface's name and IP address, in getifaddrs(3)'s order.
fn for_each_address(mut f: impl FnMut(&CStr, IpAddr)) -> io::Result<()> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below.
    if unsafe { libc::getifaddrs(&mut list) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: walking the list getifaddrs returned; every node is valid until freeifaddrs.
        let entry = unsafe { &*cur };
        cur = entry.ifa_next;
        if entry.ifa_addr.is_null() || entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string.
        let name = unsafe { CStr::from_ptr(entry.ifa_name) };
        // SAFETY: ifa_addr points to a sockaddr whose family field says which one.
        match i32::from(unsafe { (*entry.ifa_addr).sa_family }) {
            libc::AF_INET => {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
                f(name, IpAddr::V4(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes())));
            }
            libc::AF_INET6 => {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let sin6 = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in6) };
                f(name, IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
            _ => {}
        }
    }
    // SAFETY: list came from getifaddrs.
    unsafe { libc::freeifaddrs(list) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_up_and_has_its_addresses() {
        assert!(is_up("lo").unwrap());
        let (v4, _) = addresses("lo").unwrap();
        assert_eq!(v4, Some(Ipv4Addr::LOCALHOST));
        assert!(is_up("no-such-if0").is_err());
    }
}
