//! The TUN interface: created with the kernel's tun driver, one file descriptor per queue.
//!
//! The device lives exactly as long as its descriptors (it is not made persistent), so a
//! crash can never leave an interface behind.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;

const IFNAMSIZ: usize = 16;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// wireguard-go's default; what the kernel's wg-quick would also pick on a 1500-byte link.
pub const DEFAULT_MTU: u32 = 1420;

#[derive(Debug)]
pub enum TunError {
    InvalidName(String),
    AlreadyExists(String),
    PermissionDenied,
    NoTunDriver(io::Error),
    Io(&'static str, io::Error),
}

impl std::fmt::Display for TunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TunError::InvalidName(n) => write!(
                f,
                "invalid interface name {n:?}: 1 to 15 characters, no '/', ':' or whitespace"
            ),
            TunError::AlreadyExists(n) => write!(f, "interface {n} already exists"),
            TunError::PermissionDenied => {
                write!(f, "creating a TUN interface needs CAP_NET_ADMIN (run as root)")
            }
            TunError::NoTunDriver(e) => write!(f, "cannot open /dev/net/tun: {e}"),
            TunError::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for TunError {}

/// Validates an interface name the way the kernel's `dev_valid_name` does.
pub fn validate_name(name: &str) -> Result<(), TunError> {
    let ok = !name.is_empty()
        && name.len() < IFNAMSIZ
        && name != "."
        && name != ".."
        && !name.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if ok { Ok(()) } else { Err(TunError::InvalidName(name.to_string())) }
}

/// The index of an existing interface, if there is one by that name.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

pub struct Tun {
    name: String,
    queues: Vec<File>,
    ifindex: u32,
}

#[repr(C)]
struct IfReqFlags {
    name: [u8; IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

#[repr(C)]
struct IfReqMtu {
    name: [u8; IFNAMSIZ],
    mtu: libc::c_int,
    _pad: [u8; 20],
}

fn ifname_bytes(name: &str) -> [u8; IFNAMSIZ] {
    let mut out = [0u8; IFNAMSIZ];
    out[..name.len()].copy_from_slice(name.as_bytes());
    out
}

impl Tun {
    /// Creates interface `name` with `queues` queues (at least one). Fails if any interface by
    /// that name already exists: attaching to someone else's TUN would hijack it.
    pub fn create(name: &str, queues: usize) -> Result<Tun, TunError> {
        validate_name(name)?;
        if ifindex(name).is_some() {
            return Err(TunError::AlreadyExists(name.to_string()));
        }
        let mut files = Vec::new();
        for _ in 0..queues.max(1) {
            files.push(Self::open_queue(name)?);
        }
        let ifindex = ifindex(name).ok_or_else(|| {
            TunError::Io("interface vanished after creation", io::ErrorKind::NotFound.into())
        })?;
        Ok(Tun { name: name.to_string(), queues: files, ifindex })
    }

    fn open_queue(name: &str) -> Result<File, TunError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| match e.kind() {
                io::ErrorKind::PermissionDenied => TunError::PermissionDenied,
                _ => TunError::NoTunDriver(e),
            })?;
        let mut req = IfReqFlags {
            name: ifname_bytes(name),
            flags: IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE,
            _pad: [0; 22],
        };
        // SAFETY: TUNSETIFF reads and writes a struct ifreq, which IfReqFlags lays out.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => TunError::PermissionDenied,
                Some(libc::EBUSY) | Some(libc::EEXIST) => TunError::AlreadyExists(name.to_string()),
                _ => TunError::Io("TUNSETIFF", e),
            });
        }
        Ok(file)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn queues(&self) -> &[File] {
        &self.queues
    }

    pub fn set_mtu(&self, mtu: u32) -> io::Result<()> {
        let sock = control_socket()?;
        let mut req =
            IfReqMtu { name: ifname_bytes(&self.name), mtu: mtu as libc::c_int, _pad: [0; 20] };
        // SAFETY: SIOCSIFMTU takes a struct ifreq with ifr_mtu, which IfReqMtu lays out.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFMTU, &mut req) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    pub fn mtu(&self) -> io::Result<u32> {
        let sock = control_socket()?;
        let mut req = IfReqMtu { name: ifname_bytes(&self.name), mtu: 0, _pad: [0; 20] };
        // SAFETY: as in set_mtu.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(req.mtu as u32) }
    }
}

fn control_socket() -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked and owned.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// One queue's descriptor, usable from a dedicated thread with blocking reads and writes.
pub struct TunQueue<'a>(pub &'a File);

impl TunQueue<'_> {
    pub fn read_packet(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }

    pub fn write_packet(&mut self, packet: &[u8]) -> io::Result<()> {
        let n = (&*self.0).write(packet)?;
        if n != packet.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short write to TUN"));
        }
        Ok(())
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Reads return `WouldBlock` when no packet is queued (writes to a TUN never wait).
    pub fn set_nonblocking(&self) -> io::Result<()> {
        let fd = self.0.as_raw_fd();
        // SAFETY: fcntl on a descriptor we hold, reading then setting its status flags.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Waits until a packet can be read; an error once the interface is gone.
    pub fn wait_readable(&self) -> io::Result<()> {
        let mut pfd = libc::pollfd { fd: self.0.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        loop {
            // SAFETY: one pollfd for a descriptor we hold.
            let rc = unsafe { libc::poll(&mut pfd, 1, -1) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // POLLERR or POLLHUP with nothing to read: the next read says why.
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated_like_the_kernel() {
        assert!(validate_name("wg0").is_ok());
        assert!(validate_name("a-very-long-nm1").is_ok());
        for bad in ["", ".", "..", "a-very-long-name", "a/b", "a b", "a:b", "a\tb"] {
            assert!(matches!(validate_name(bad), Err(TunError::InvalidName(_))), "{bad:?}");
        }
    }

    #[test]
    fn existing_interfaces_are_refused() {
        assert!(matches!(Tun::create("lo", 1), Err(TunError::AlreadyExists(_))));
    }
}
