//! One connected UDP socket per flood peer (each its own source port, as real peers have their
//! own endpoints: boringtun, for one, answers a peer from a socket connected to that peer's
//! address, which swallows the next peer's packets if they share it), and an epoll set that
//! says which of them have datagrams waiting.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

pub struct PeerSockets {
    sockets: Vec<UdpSocket>,
    epoll: OwnedFd,
}

impl PeerSockets {
    pub fn open(count: usize, target: SocketAddr) -> Result<PeerSockets> {
        raise_open_files_limit(count + 64)?;
        // SAFETY: epoll_create1 has no memory arguments; the result is checked.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error()).context("epoll_create1");
        }
        // SAFETY: a fresh descriptor we own.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        let bind = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let mut sockets = Vec::with_capacity(count);
        for index in 0..count {
            let socket = UdpSocket::bind(bind).context("binding a peer's socket")?;
            socket.connect(target).with_context(|| format!("connecting to {target}"))?;
            socket.set_nonblocking(true)?;
            let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: index as u64 };
            // SAFETY: both descriptors are open; `event` outlives the call.
            let added = unsafe {
                libc::epoll_ctl(
                    epoll.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    socket.as_raw_fd(),
                    &mut event,
                )
            };
            if added < 0 {
                return Err(io::Error::last_os_error()).context("epoll_ctl");
            }
            sockets.push(socket);
        }
        Ok(PeerSockets { sockets, epoll })
    }

    pub fn socket(&self, peer: usize) -> &UdpSocket {
        &self.sockets[peer]
    }

    /// The peers whose sockets have datagrams, waiting up to `timeout` for one.
    pub fn ready(&self, timeout: Duration, ready: &mut Vec<usize>) -> Result<()> {
        const MAX_EVENTS: usize = 64;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
        let timeout_ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `events` has room for MAX_EVENTS entries.
        let count = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                MAX_EVENTS as libc::c_int,
                timeout_ms,
            )
        };
        ready.clear();
        if count < 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EINTR) {
                return Ok(());
            }
            return Err(error).context("epoll_wait");
        }
        ready.extend(events[..count as usize].iter().map(|event| event.u64 as usize));
        Ok(())
    }
}

/// Makes room for `needed` open files (the soft limit up to the hard one).
fn raise_open_files_limit(needed: usize) -> Result<()> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into `limit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } < 0 {
        return Err(io::Error::last_os_error()).context("getrlimit");
    }
    let needed = needed as libc::rlim_t;
    if limit.rlim_cur >= needed {
        return Ok(());
    }
    if limit.rlim_max < needed {
        bail!(
            "{needed} open files are needed (a socket per peer) but the hard limit is {}: use \
             fewer --peers or raise it (ulimit -Hn)",
            limit.rlim_max
        );
    }
    limit.rlim_cur = needed;
    // SAFETY: setrlimit reads `limit`.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } < 0 {
        return Err(io::Error::last_os_error()).context("setrlimit");
    }
    Ok(())
}
