//! Batches of datagram buffers for sendmmsg/recvmmsg: the buffers, one iovec each, and the
//! message headers pointing at them, built once and reused for every call.

use std::io;
use std::os::fd::RawFd;

pub struct Batch {
    buffers: Vec<Vec<u8>>,
    // The kernel reads these through the raw pointers in `headers`: they must live (and stay
    // where they are) as long as the batch.
    _iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

impl Batch {
    /// `count` buffers of `len` bytes each.
    pub fn new(count: usize, len: usize) -> Batch {
        let mut buffers: Vec<Vec<u8>> = (0..count).map(|_| vec![0u8; len]).collect();
        let mut iovecs: Vec<libc::iovec> = buffers
            .iter_mut()
            .map(|buffer| libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: len })
            .collect();
        let headers = iovecs
            .iter_mut()
            .map(|iovec| {
                // SAFETY: mmsghdr is plain data; all-zero is a valid value (no address, no
                // control data).
                let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
                header.msg_hdr.msg_iov = iovec;
                header.msg_hdr.msg_iovlen = 1;
                header
            })
            .collect();
        Batch { buffers, _iovecs: iovecs, headers }
    }

    pub fn buffer_mut(&mut self, index: usize) -> &mut [u8] {
        &mut self.buffers[index]
    }

    /// The first `received` bytes of buffer `index` after [`Batch::receive`] (never more than
    /// the buffer: a truncated datagram shows what fitted).
    pub fn received(&self, index: usize) -> &[u8] {
        let len = (self.headers[index].msg_len as usize).min(self.buffers[index].len());
        &self.buffers[index][..len]
    }

    /// The datagram's length as sent, even if it was truncated to the buffer.
    pub fn received_len(&self, index: usize) -> usize {
        self.headers[index].msg_len as usize
    }

    /// Sends the first `count` buffers on the connected socket `fd`; returns how many left.
    pub fn send(&mut self, fd: RawFd, count: usize) -> io::Result<usize> {
        let count = count.min(self.headers.len());
        // SAFETY: `headers` points at live iovecs over live buffers; `count` is within them.
        let sent =
            unsafe { libc::sendmmsg(fd, self.headers.as_mut_ptr(), count as libc::c_uint, 0) };
        if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(sent as usize) }
    }

    /// Receives up to the batch's size of datagrams (blocking for the first, per the socket's
    /// receive timeout); returns how many arrived.
    pub fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        for header in &mut self.headers {
            header.msg_len = 0;
            header.msg_hdr.msg_flags = 0;
        }
        // SAFETY: as for `send`; MSG_TRUNC reports lengths of datagrams larger than a buffer,
        // MSG_WAITFORONE returns as soon as one datagram is there and no more are queued.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                self.headers.len() as libc::c_uint,
                libc::MSG_TRUNC | libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if received < 0 { Err(io::Error::last_os_error()) } else { Ok(received as usize) }
    }
}

/// Sets a socket buffer size as root may (`SO_SNDBUFFORCE`/`SO_RCVBUFFORCE` ignore the sysctl
/// limits), falling back to the limited option.
pub fn set_buffer(fd: RawFd, send: bool, bytes: usize) -> io::Result<()> {
    let (forced, limited) = if send {
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)
    } else {
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF)
    };
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for option in [forced, limited] {
        // SAFETY: setsockopt with a c_int value of the right size.
        let result = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if result == 0 {
            return Ok(());
        }
    }
    Err(io::Error::last_os_error())
}
