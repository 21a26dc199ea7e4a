//! Where the daemon learns the underlay's MTU toward a peer's endpoint: from the kernel's
//! route to it, as a connected UDP socket sees it (`IP_MTU` / `IPV6_MTU`: the route's MTU,
//! or the path MTU the kernel learned from an ICMP error since). Connecting sends nothing.
//! The device turns it into the peer's path MTU (`wg/device/mtu.rs`).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use super::core::Core;
use crate::wg::PeerId;

/// The MTU of the route to `endpoint` for packets marked `fwmark` (0: none), as our own
/// datagrams to it would take.
pub fn underlay_mtu(endpoint: SocketAddr, fwmark: u32) -> io::Result<usize> {
    let unspecified: SocketAddr = if endpoint.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(unspecified)?;
    let fd = socket.as_raw_fd();
    if fwmark != 0 {
        let mark = fwmark as libc::c_int;
        // SAFETY: a pointer to a live c_int and its size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_MARK,
                &mark as *const libc::c_int as *const libc::c_void,
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    socket.connect(endpoint)?;
    let (level, name) = if endpoint.is_ipv4() {
        (libc::IPPROTO_IP, libc::IP_MTU)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU)
    };
    let mut mtu: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a pointer to a live c_int and its size, as getsockopt expects.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            &mut mtu as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    usize::try_from(mtu).map_err(|_| io::Error::other("negative MTU"))
}

/// Learns the underlay MTU of each of `peers` (those whose endpoint changed, or all of them
/// when an interface changed) and tells the device. A peer without a route gets None: the
/// tunnel MTU alone applies until one appears.
pub fn refresh(core: &mut Core, peers: impl IntoIterator<Item = PeerId>) {
    let fwmark = core.device.fwmark();
    for id in peers {
        let Some(endpoint) = core.device.peer(id).and_then(|p| p.endpoint()) else { continue };
        let mtu = match underlay_mtu(endpoint.addr, fwmark) {
            Ok(mtu) => Some(mtu),
            Err(e) => {
                tracing::debug!(peer = id.0, endpoint = %endpoint.addr, "no underlay MTU: {e}");
                None
            }
        };
        core.device.set_underlay_mtu(id, mtu);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_route_has_the_loopback_mtu() {
        // Every Linux host routes 127.0.0.1 over `lo` (MTU 65536 by default; whatever it
        // is, more than any Ethernet).
        let mtu = underlay_mtu("127.0.0.1:9".parse().unwrap(), 0).unwrap();
        assert!(mtu >= 1500, "{mtu}");
    }
}
