//! Watching an interface from the test: an AF_PACKET socket (cooked, IP packets without the
//! link header) opened inside a namespace, for picking real WireGuard messages off the wire
//! (to replay or tamper with them).

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::Netns;

pub struct PacketCapture {
    socket: OwnedFd,
}

/// One UDP datagram seen on the wire.
#[derive(Debug, Clone)]
pub struct CapturedUdp {
    pub source_port: u16,
    pub destination_port: u16,
    pub payload: Vec<u8>,
}

impl PacketCapture {
    /// Sees every IPv4 and IPv6 packet `device` in `netns` sends or receives from now on.
    pub fn open(netns: &Netns, device: &str) -> Result<PacketCapture> {
        let ifindex = {
            let _inside = netns.enter()?;
            let name = std::ffi::CString::new(device)?;
            // SAFETY: a valid NUL-terminated name.
            unsafe { libc::if_nametoindex(name.as_ptr()) }
        };
        if ifindex == 0 {
            bail!("no interface {device} in {}", netns.name());
        }
        let all = (libc::ETH_P_ALL as u16).to_be();
        let socket = {
            let _inside = netns.enter()?;
            // SAFETY: socket(2) with constant arguments; the result is checked.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(all)) };
            if fd < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            // SAFETY: a descriptor we just created and own.
            unsafe { OwnedFd::from_raw_fd(fd) }
        };
        // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = all;
        address.sll_ifindex = ifindex as i32;
        // SAFETY: binding our socket to a sockaddr_ll of the right size.
        let bound = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                (&raw const address).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if bound != 0 {
            bail!("binding AF_PACKET to {device}: {}", std::io::Error::last_os_error());
        }
        let timeout = libc::timeval { tv_sec: 0, tv_usec: 50_000 };
        // SAFETY: SO_RCVTIMEO with a timeval, on our socket.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                size_of::<libc::timeval>() as u32,
            )
        };
        Ok(PacketCapture { socket })
    }

    /// The next UDP datagram (either direction) that `accept` takes, within `timeout`.
    pub fn next_udp(
        &self,
        timeout: Duration,
        mut accept: impl FnMut(&CapturedUdp) -> bool,
    ) -> Option<CapturedUdp> {
        let deadline = Instant::now() + timeout;
        let mut buffer = vec![0u8; 65536];
        while Instant::now() < deadline {
            // SAFETY: receiving into our buffer.
            let length = unsafe {
                libc::recv(self.socket.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0)
            };
            let Ok(length) = usize::try_from(length) else { continue };
            if let Some(udp) = parse_udp(&buffer[..length])
                && accept(&udp)
            {
                return Some(udp);
            }
        }
        None
    }
}

/// The UDP datagram in an IPv4 (no fragments) or IPv6 (no extension headers) packet.
fn parse_udp(packet: &[u8]) -> Option<CapturedUdp> {
    let version = packet.first()? >> 4;
    let udp = match version {
        4 => {
            let header = usize::from(packet[0] & 0x0f) * 4;
            let fragment = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x3fff;
            if *packet.get(9)? != 17 || fragment != 0 {
                return None;
            }
            let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
            packet.get(header..total.min(packet.len()))?
        }
        6 => {
            if *packet.get(6)? != 17 {
                return None;
            }
            let payload = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
            packet.get(40..(40 + payload).min(packet.len()))?
        }
        _ => return None,
    };
    let length = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    Some(CapturedUdp {
        source_port: u16::from_be_bytes([udp[0], udp[1]]),
        destination_port: u16::from_be_bytes([udp[2], udp[3]]),
        payload: udp.get(8..length.min(udp.len()))?.to_vec(),
    })
}
