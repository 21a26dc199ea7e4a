//! Raw frames on an interface: an AF_PACKET socket to see what leaves the gateway, and to
//! inject frames as a peer would.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

pub struct Capture {
    fd: OwnedFd,
    ifindex: u32,
}

impl Capture {
    /// Opens on `ifindex` of the calling thread's namespace.
    pub fn open(ifindex: u32) -> Capture {
        let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
        // SAFETY: plain socket calls with checked results.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto);
            assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
            let fd = OwnedFd::from_raw_fd(fd);
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto as u16;
            sll.sll_ifindex = ifindex as i32;
            let rc = libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
            let tv = libc::timeval { tv_sec: 0, tv_usec: 50_000 };
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                size_of::<libc::timeval>() as u32,
            );
            Capture { fd, ifindex }
        }
    }

    /// The next incoming frame that `accept` takes, within `timeout`.
    pub fn next(
        &self,
        timeout: Duration,
        mut accept: impl FnMut(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            // SAFETY: receiving into our buffer with a sockaddr_ll out-parameter.
            let (n, outgoing) = unsafe {
                let mut from: libc::sockaddr_ll = std::mem::zeroed();
                let mut len = size_of::<libc::sockaddr_ll>() as u32;
                let n = libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                    &mut from as *mut _ as *mut libc::sockaddr,
                    &mut len,
                );
                (n, from.sll_pkttype == libc::PACKET_OUTGOING)
            };
            if n < 0 || outgoing {
                continue;
            }
            let frame = &buf[..n as usize];
            if accept(frame) {
                return Some(frame.to_vec());
            }
        }
        None
    }

    /// Sends a whole frame out of the interface.
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: sending our buffer on the bound socket.
        let n = unsafe {
            libc::send(self.fd.as_raw_fd(), frame.as_ptr() as *const libc::c_void, frame.len(), 0)
        };
        assert_eq!(
            n,
            frame.len() as isize,
            "send on {}: {}",
            self.ifindex,
            std::io::Error::last_os_error()
        );
    }
}
