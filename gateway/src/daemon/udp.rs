//! The UDP sockets: one IPv4 and one IPv6 socket on the same port (as wireguard-go binds
//! them), receiving with the local address each datagram arrived on and sending from the
//! local address the peer last reached us at (the kernel's endpoint source caching).

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::wg::peer::{Endpoint, LocalAddr};

/// A datagram that has arrived, with where it came from, where it arrived, and its IP
/// header's DS field (for ECN).
pub struct Arrival {
    pub len: usize,
    pub from: Endpoint,
    pub ds: u8,
}

pub struct Sockets {
    pub v4: Option<UdpSocket>,
    pub v6: Option<UdpSocket>,
    pub port: u16,
    /// Whether sending several datagrams in one call works (UDP GSO): it needs an egress
    /// device with checksum offload, so the first refusal turns it off.
    segmentation: AtomicBool,
}

/// The `UDP_SEGMENT` control message / socket option (linux/udp.h).
const UDP_SEGMENT: i32 = 103;
/// The most datagrams one UDP GSO send may carry (the kernel's UDP_MAX_SEGMENTS).
pub const MAX_SEGMENTS: usize = 64;
/// The most bytes one UDP GSO send may carry (an IP packet's length field, less headers).
pub const MAX_SEGMENTED_BYTES: usize = 65000;

#[derive(Debug)]
pub enum BindError {
    PortInUse(u16),
    Io(&'static str, io::Error),
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindError::PortInUse(p) => write!(f, "UDP port {p} is already in use"),
            BindError::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for BindError {}

const SOCKET_BUFFER_BYTES: i32 = 7 << 20;

fn setsockopt<T>(fd: i32, level: i32, name: i32, value: T) -> io::Result<()> {
    // SAFETY: passes a pointer to a live T and its size, as setsockopt expects.
    let rc = unsafe {
        libc::setsockopt(fd, level, name, &value as *const T as *const _, size_of::<T>() as u32)
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn raw_socket(domain: i32) -> io::Result<UdpSocket> {
    // SAFETY: plain socket(2); the descriptor is checked and then owned by UdpSocket.
    let fd = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh UDP socket we own.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

fn bind_one(addr: SocketAddr, fwmark: u32) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let sock = raw_socket(domain)?;
    let fd = sock.as_raw_fd();
    if addr.is_ipv4() {
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1i32)?;
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_RECVTOS, 1i32)?;
    } else {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1i32)?;
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1i32)?;
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 1i32)?;
    }
    if fwmark != 0 {
        setsockopt(fd, libc::SOL_SOCKET, libc::SO_MARK, fwmark)?;
    }
    // Bursts at line rate overflow the default buffers long before the CPU is the limit;
    // wireguard-go asks for the same. The FORCE variants pass rmem_max as root; otherwise the
    // plain ones get what the sysctl allows.
    for (forced, plain) in
        [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)]
    {
        if setsockopt(fd, libc::SOL_SOCKET, forced, SOCKET_BUFFER_BYTES).is_err() {
            let _ = setsockopt(fd, libc::SOL_SOCKET, plain, SOCKET_BUFFER_BYTES);
        }
    }
    let (storage, len) = sockaddr_from(&addr);
    // SAFETY: storage holds a valid sockaddr of length len.
    let rc = unsafe { libc::bind(fd, &storage as *const _ as *const libc::sockaddr, len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

fn local_port(sock: &UdpSocket) -> io::Result<u16> {
    Ok(sock.local_addr()?.port())
}

impl Sockets {
    fn new(v4: Option<UdpSocket>, v6: Option<UdpSocket>, port: u16) -> Sockets {
        Sockets { v4, v6, port, segmentation: AtomicBool::new(true) }
    }

    /// Binds both families on `port` (0: a free port, the same for both). IPv6 may be
    /// unavailable on the host; IPv4 alone is then used, as wireguard-go does.
    pub fn bind(port: u16, fwmark: u32) -> Result<Sockets, BindError> {
        let in_use = |e: io::Error, p: u16| {
            if e.raw_os_error() == Some(libc::EADDRINUSE) {
                BindError::PortInUse(p)
            } else {
                BindError::Io("bind the UDP socket", e)
            }
        };
        // With port 0 the IPv6 bind may collide with someone else on the port IPv4 got:
        // try again with a new one (wireguard-go retries the same way).
        for _ in 0..100 {
            let v4 = bind_one(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port), fwmark)
                .map_err(|e| in_use(e, port))?;
            let chosen = local_port(&v4).map_err(|e| BindError::Io("read the bound port", e))?;
            match bind_one(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), chosen), fwmark) {
                Ok(v6) => return Ok(Sockets::new(Some(v4), Some(v6), chosen)),
                Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) && port == 0 => continue,
                Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
                    return Err(BindError::PortInUse(port));
                }
                Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                    return Ok(Sockets::new(Some(v4), None, chosen));
                }
                Err(e) => return Err(BindError::Io("bind the IPv6 UDP socket", e)),
            }
        }
        Err(BindError::PortInUse(port))
    }

    pub fn set_fwmark(&self, fwmark: u32) -> io::Result<()> {
        for s in self.v4.iter().chain(self.v6.iter()) {
            setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_MARK, fwmark)?;
        }
        Ok(())
    }

    fn for_family(&self, addr: &SocketAddr) -> Option<&UdpSocket> {
        if addr.is_ipv4() { self.v4.as_ref() } else { self.v6.as_ref() }
    }

    /// Sends from `to.local` if set, with `ecn` in the IP header's ECN bits. If the kernel
    /// refuses that source (the address went away), the source is dropped and the send
    /// retried; the caller learns of it through the returned flag so the peer's cached source
    /// can be cleared, as the kernel clears it.
    pub fn send(&self, to: &Endpoint, data: &[u8], ecn: u8) -> io::Result<bool> {
        self.send_segmented(to, data, ecn, None)
    }

    /// Sends `data` as datagrams of `segment` bytes each (the last may be shorter) in one
    /// call, as [`Sockets::send`] does one. Where the kernel cannot (no checksum offload on the
    /// way out), they are sent one by one, and from then on always.
    pub fn send_segments(
        &self,
        to: &Endpoint,
        data: &[u8],
        ecn: u8,
        segment: usize,
    ) -> io::Result<bool> {
        let one_call = self.segmentation.load(Ordering::Relaxed)
            && data.len() > segment
            && data.len() <= MAX_SEGMENTED_BYTES
            && data.len().div_ceil(segment) <= MAX_SEGMENTS;
        if one_call {
            match self.send_segmented(to, data, ecn, Some(segment as u16)) {
                Err(e) if segmentation_refused(&e) => {
                    tracing::debug!("UDP segmentation offload refused ({e}): sending one by one");
                    self.segmentation.store(false, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        let mut source_dropped = false;
        for datagram in data.chunks(segment) {
            source_dropped |= self.send_segmented(to, datagram, ecn, None)?;
        }
        Ok(source_dropped)
    }

    fn send_segmented(
        &self,
        to: &Endpoint,
        data: &[u8],
        ecn: u8,
        segment: Option<u16>,
    ) -> io::Result<bool> {
        let Some(sock) = self.for_family(&to.addr) else {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "no socket for that family"));
        };
        match send_from(sock, to, data, ecn, segment) {
            Err(e) if to.local.is_some() && source_refused(&e) => {
                send_from(sock, &Endpoint::new(to.addr), data, ecn, segment)?;
                Ok(true)
            }
            other => other.map(|_| false),
        }
    }

    /// Unblocks any thread blocked in `receive` on these sockets: they return an error.
    pub fn shutdown(&self) {
        for s in self.v4.iter().chain(self.v6.iter()) {
            // SAFETY: shutdown(2) on a descriptor we own.
            unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }
}

/// The errors a send fails with when its fixed source address is no longer usable.
/// What the kernel answers a UDP GSO send it cannot do: EIO without checksum offload on the
/// route's device, EINVAL for sizes it will not take, ENOPROTOOPT/EOPNOTSUPP before Linux 4.18.
fn segmentation_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

fn source_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EADDRNOTAVAIL | libc::ENETUNREACH | libc::EHOSTUNREACH)
    )
}

fn sockaddr_from(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as u16;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn sockaddr_to(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(
                SocketAddrV6::new(
                    ip,
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )
                .into(),
            )
        }
        _ => None,
    }
}

/// Room for a pktinfo, a TOS / traffic class and a UDP_SEGMENT control message of either
/// family.
const CMSG_SPACE: usize = 128;

#[repr(C, align(8))]
struct ControlBuffer([u8; CMSG_SPACE]);

/// Appends one control message after `previous` (null: the first) and returns it.
///
/// # Safety
/// `msg.msg_control` is a buffer with room for everything appended; `msg.msg_controllen`
/// covers what was appended before.
unsafe fn append_cmsg<T>(
    msg: &mut libc::msghdr,
    previous: *mut libc::cmsghdr,
    level: i32,
    kind: i32,
    value: T,
) -> *mut libc::cmsghdr {
    // SAFETY: as the caller promises; the new message is within the buffer once
    // msg_controllen is extended by its space.
    unsafe {
        let used = msg.msg_controllen;
        msg.msg_controllen = (used + libc::CMSG_SPACE(size_of::<T>() as u32) as usize) as _;
        let cmsg = if previous.is_null() {
            libc::CMSG_FIRSTHDR(msg)
        } else {
            libc::CMSG_NXTHDR(msg, previous)
        };
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<T>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut T, value);
        cmsg
    }
}

fn send_from(
    sock: &UdpSocket,
    to: &Endpoint,
    data: &[u8],
    ecn: u8,
    segment: Option<u16>,
) -> io::Result<usize> {
    let (mut dst, dst_len) = sockaddr_from(&to.addr);
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() };
    let mut control = ControlBuffer([0; CMSG_SPACE]);
    // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = &mut dst as *mut _ as *mut _;
    msg.msg_namelen = dst_len;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr() as *mut _;
    let mut last = std::ptr::null_mut();
    // SAFETY: the control buffer holds a pktinfo and a TOS message of either family.
    unsafe {
        if let Some(local) = to.local {
            last = match local.ip {
                IpAddr::V4(src) => {
                    // SAFETY: an all-zero in_pktinfo is valid.
                    let mut info: libc::in_pktinfo = zeroed();
                    info.ipi_spec_dst.s_addr = u32::from_ne_bytes(src.octets());
                    append_cmsg(&mut msg, last, libc::IPPROTO_IP, libc::IP_PKTINFO, info)
                }
                IpAddr::V6(src) => {
                    let info = libc::in6_pktinfo {
                        ipi6_addr: libc::in6_addr { s6_addr: src.octets() },
                        ipi6_ifindex: if src.is_unicast_link_local() { local.ifindex } else { 0 },
                    };
                    append_cmsg(&mut msg, last, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, info)
                }
            };
        }
        if ecn != 0 {
            let (level, kind) = match to.addr {
                SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_TOS),
                SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_TCLASS),
            };
            last = append_cmsg(&mut msg, last, level, kind, i32::from(ecn));
        }
        if let Some(size) = segment {
            append_cmsg(&mut msg, last, libc::SOL_UDP, UDP_SEGMENT, size);
        }
    }
    if msg.msg_controllen == 0 {
        msg.msg_control = std::ptr::null_mut();
    }
    // SAFETY: msg is fully initialised above.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, 0) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// The local address a datagram arrived at (IP_PKTINFO / IPV6_PKTINFO) and its DS field
/// (IP_TOS / IPV6_TCLASS), from its control messages.
fn control_messages(msg: &libc::msghdr) -> (Option<LocalAddr>, u8) {
    let mut local = None;
    let mut ds = 0;
    // SAFETY: walks the control messages the kernel wrote into the message's buffer.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data as *const libc::in_pktinfo);
                    local = Some(LocalAddr {
                        ip: Ipv4Addr::from(info.ipi_addr.s_addr.to_ne_bytes()).into(),
                        ifindex: info.ipi_ifindex as u32,
                    });
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data as *const libc::in6_pktinfo);
                    local = Some(LocalAddr {
                        ip: Ipv6Addr::from(info.ipi6_addr.s6_addr).into(),
                        ifindex: info.ipi6_ifindex,
                    });
                }
                (libc::IPPROTO_IP, libc::IP_TOS) => ds = *data,
                (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => {
                    ds = std::ptr::read_unaligned(data as *const i32) as u8;
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    (local, ds)
}

/// Datagrams per `recvmmsg`: under load the queue holds many, and taking them in one call
/// (and one lock of the device) is what keeps up with it.
pub const BATCH: usize = 32;
/// Large enough for any datagram, jumbo frames included.
const DATAGRAM_MAX: usize = 65536;

/// Buffers for receiving up to [`BATCH`] datagrams at once.
pub struct ReceiveBatch {
    buffers: Vec<Vec<u8>>,
    sources: Vec<libc::sockaddr_storage>,
    controls: Vec<ControlBuffer>,
    arrivals: Vec<Arrival>,
}

impl Default for ReceiveBatch {
    fn default() -> Self {
        ReceiveBatch {
            buffers: (0..BATCH).map(|_| vec![0u8; DATAGRAM_MAX]).collect(),
            // SAFETY: an all-zero sockaddr_storage is valid.
            sources: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            controls: (0..BATCH).map(|_| ControlBuffer([0; CMSG_SPACE])).collect(),
            arrivals: Vec::with_capacity(BATCH),
        }
    }
}

impl ReceiveBatch {
    /// Blocks until at least one datagram is there, then takes all that are (up to
    /// [`BATCH`]). Returns how many; each is `datagram(i)` from `arrival(i)`.
    pub fn receive(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        let mut iovs: Vec<libc::iovec> = self
            .buffers
            .iter_mut()
            .map(|b| libc::iovec { iov_base: b.as_mut_ptr() as *mut _, iov_len: b.len() })
            .collect();
        let mut headers: Vec<libc::mmsghdr> = (0..BATCH)
            .map(|i| {
                // SAFETY: an all-zero mmsghdr is valid; the pointers set below outlive the call.
                let mut m: libc::mmsghdr = unsafe { zeroed() };
                m.msg_hdr.msg_name = &mut self.sources[i] as *mut _ as *mut _;
                m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
                m.msg_hdr.msg_iov = &mut iovs[i];
                m.msg_hdr.msg_iovlen = 1;
                m.msg_hdr.msg_control = self.controls[i].0.as_mut_ptr() as *mut _;
                m.msg_hdr.msg_controllen = CMSG_SPACE as _;
                m
            })
            .collect();
        // SAFETY: `headers` describes BATCH valid buffers owned by `self`.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.arrivals.clear();
        for m in &headers[..n as usize] {
            if m.msg_len == 0 && m.msg_hdr.msg_namelen == 0 {
                return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "socket shut down"));
            }
            // SAFETY: msg_name points at our sockaddr_storage, which the kernel filled in.
            let source = unsafe { &*(m.msg_hdr.msg_name as *const libc::sockaddr_storage) };
            let addr = sockaddr_to(source).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "unknown address family")
            })?;
            let (local, ds) = control_messages(&m.msg_hdr);
            self.arrivals.push(Arrival {
                len: m.msg_len as usize,
                from: Endpoint { addr, local },
                ds,
            });
        }
        Ok(self.arrivals.len())
    }

    pub fn arrival(&self, i: usize) -> &Arrival {
        &self.arrivals[i]
    }

    pub fn datagram_mut(&mut self, i: usize) -> &mut [u8] {
        let len = self.arrivals[i].len;
        &mut self.buffers[i][..len]
    }

    pub fn datagram(&self, i: usize) -> &[u8] {
        &self.buffers[i][..self.arrivals[i].len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_round_trip_reports_the_local_address_and_sends_from_it() {
        let a = Sockets::bind(0, 0).unwrap();
        let b = Sockets::bind(0, 0).unwrap();
        assert_ne!(a.port, 0);
        let to_b = Endpoint::new(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), b.port));
        assert!(!a.send(&to_b, b"hello", 0).unwrap());
        let mut batch = ReceiveBatch::default();
        assert_eq!(batch.receive(b.v4.as_ref().unwrap()).unwrap(), 1);
        assert_eq!(batch.datagram(0), b"hello");
        let got = batch.arrival(0);
        assert_eq!(got.from.addr.port(), a.port);
        let local = got.from.local.unwrap();
        assert_eq!(local.ip, IpAddr::from(Ipv4Addr::LOCALHOST));
        // reply from the address it arrived on
        let back = Endpoint {
            addr: got.from.addr,
            local: Some(LocalAddr { ip: Ipv4Addr::new(127, 0, 0, 1).into(), ifindex: 0 }),
        };
        assert!(!b.send(&back, b"world", 0).unwrap());
        assert!(!b.send(&back, b"again", 0).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(batch.receive(a.v4.as_ref().unwrap()).unwrap(), 2, "both queued, one call");
        assert_eq!((batch.datagram(0), batch.datagram(1)), (&b"world"[..], &b"again"[..]));
    }

    #[test]
    fn ecn_bits_are_sent_and_received_in_both_families() {
        let a = Sockets::bind(0, 0).unwrap();
        let b = Sockets::bind(0, 0).unwrap();
        let mut batch = ReceiveBatch::default();
        let loopbacks: [(IpAddr, &UdpSocket); 2] = [
            (Ipv4Addr::LOCALHOST.into(), b.v4.as_ref().unwrap()),
            (Ipv6Addr::LOCALHOST.into(), b.v6.as_ref().unwrap()),
        ];
        for (ip, socket) in loopbacks {
            for ecn in [0, 1, 2, 3] {
                let local = LocalAddr { ip, ifindex: 0 };
                let to_b = Endpoint { addr: SocketAddr::new(ip, b.port), local: Some(local) };
                assert!(!a.send(&to_b, b"marked", ecn).unwrap());
                assert_eq!(batch.receive(socket).unwrap(), 1);
                assert_eq!(batch.arrival(0).ds, ecn, "ECN {ecn} over {ip}");
                let arrived_at = batch.arrival(0).from.local.map(|l| l.ip);
                assert_eq!(arrived_at, Some(ip), "pktinfo still read");
            }
        }
    }

    #[test]
    fn segments_leave_in_one_call_and_arrive_as_datagrams() {
        let a = Sockets::bind(0, 0).unwrap();
        let b = Sockets::bind(0, 0).unwrap();
        let to_b = Endpoint::new(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), b.port));
        let data: Vec<u8> = (0..5 * 300 + 120).map(|i| i as u8).collect();
        assert!(!a.send_segments(&to_b, &data, 2, 300).unwrap());
        assert!(a.segmentation.load(Ordering::Relaxed), "loopback takes UDP GSO");
        let mut batch = ReceiveBatch::default();
        let mut got = Vec::new();
        while got.len() < 6 {
            let n = batch.receive(b.v4.as_ref().unwrap()).unwrap();
            for i in 0..n {
                assert_eq!(batch.arrival(i).ds, 2, "ECN on every segment");
                got.push(batch.datagram(i).to_vec());
            }
        }
        let lengths: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(lengths, [300, 300, 300, 300, 300, 120]);
        assert_eq!(got.concat(), data);
    }

    #[test]
    fn a_vanished_source_address_is_dropped_and_reported() {
        let a = Sockets::bind(0, 0).unwrap();
        let b = Sockets::bind(0, 0).unwrap();
        let to_b = Endpoint {
            addr: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), b.port),
            local: Some(LocalAddr { ip: Ipv4Addr::new(192, 0, 2, 77).into(), ifindex: 0 }),
        };
        assert!(a.send(&to_b, b"x", 0).unwrap(), "source was refused and dropped");
        let mut batch = ReceiveBatch::default();
        assert_eq!(batch.receive(b.v4.as_ref().unwrap()).unwrap(), 1);
        assert_eq!(batch.datagram(0), b"x");
    }

    #[test]
    fn a_taken_port_is_reported_as_such() {
        let a = Sockets::bind(0, 0).unwrap();
        match Sockets::bind(a.port, 0) {
            Err(BindError::PortInUse(p)) => assert_eq!(p, a.port),
            other => panic!("expected PortInUse, got {:?}", other.map(|s| s.port)),
        }
    }

    #[test]
    fn shutdown_unblocks_a_receiver() {
        let a = std::sync::Arc::new(Sockets::bind(0, 0).unwrap());
        let a2 = a.clone();
        let t = std::thread::spawn(move || {
            ReceiveBatch::default().receive(a2.v4.as_ref().unwrap()).is_err()
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        a.shutdown();
        assert!(t.join().unwrap());
    }
}
