//! Passing bytes both ways between a client and its backend once the backend is chosen.
//!
//! Each direction runs until its source ends; then the other side's write half is shut down
//! (so a client that half-closes after its request still gets the whole answer) and the
//! other direction carries on. The relay ends when both directions have ended, when either
//! fails (a reset, an error: both sockets are then dropped), or when neither direction has
//! moved a byte for the idle timeout.
//!
//! The bytes move with splice(2) through a pipe per direction: socket → pipe → socket, never
//! through userspace. tokio's readiness drives it: a direction waits until its source is
//! readable, splices what is there into its (empty) pipe, then waits until its destination
//! is writable and splices the pipe out. A pipe starts empty and is filled only when empty,
//! so EAGAIN from the first splice means "the socket has nothing" and never "the pipe is
//! full", and readiness is cleared only when it is true.
//!
//! Measured on loopback against `tokio::io::copy_bidirectional` (one relay on one thread, 4 GiB one
//! way, 1 or 8 connections): up to twice the throughput, for a third to a half of the CPU time per
//! byte (0.25-0.50 s/GiB against 0.60-0.94 with 64 KiB buffers and 0.82-1.23 with the default
//! 8 KiB); a 64-byte ping-pong costs about the same (some 10% more). The price is four more
//! descriptors per connection (see [`super::limits`]), and pipe pages: beyond
//! `fs.pipe-user-pages-soft` (16384 pages, some 500 connections) a process without CAP_SYS_RESOURCE
//! or CAP_SYS_ADMIN gets 2-page pipes, which still work, in smaller steps.
//!
//! A splice into a socket whose peer is gone raises SIGPIPE, like a send without
//! MSG_NOSIGNAL: Rust programs ignore SIGPIPE from the start, so it comes back as EPIPE.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::activity::Activity;
use crate::entry::traffic::ForwardCounters;

/// What a pipe holds at most (the kernel's default): the bound on bytes in flight in one
/// direction inside the proxy.
const PIPE_CAPACITY: usize = 64 * 1024;

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both sides closed their sending halves.
    Closed { to_backend: u64, to_client: u64 },
    /// Neither side sent anything for the idle timeout.
    Idle,
    /// A side failed (a reset, mostly).
    Failed(io::Error),
}

/// Writes `first` (the bytes read to choose the backend) to `backend`, then relays until the
/// connection ends, adding the bytes to the forward's `counters` as they pass.
pub async fn relay(
    client: &mut TcpStream,
    backend: &mut TcpStream,
    first: &[u8],
    idle_timeout: Duration,
    counters: &ForwardCounters,
) -> RelayEnd {
    let activity = Activity::new();
    let passing = async {
        backend.write_all(first).await?;
        counters.to_backend(first.len() as u64);
        activity.touch();
        let mut to_backend = Pipe::new()?;
        let mut to_client = Pipe::new()?;
        let (up_counted, down_counted) = (|n| counters.to_backend(n), |n| counters.to_client(n));
        let (up, down) = tokio::try_join!(
            one_way(&*client, &*backend, &mut to_backend, &activity, &up_counted),
            one_way(&*backend, &*client, &mut to_client, &activity, &down_counted),
        )?;
        Ok::<_, io::Error>((up + first.len() as u64, down))
    };
    tokio::select! {
        result = passing => match result {
            Ok((to_backend, to_client)) => RelayEnd::Closed { to_backend, to_client },
            Err(error) => RelayEnd::Failed(error),
        },
        () = activity.idle_for(idle_timeout) => RelayEnd::Idle,
    }
}

/// Moves bytes from `from` to `to` through `pipe` until `from` ends, then shuts `to`'s
/// write half; the count of bytes moved, each write's also told to `moved_now`.
async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &mut Pipe,
    activity: &Activity,
    moved_now: &(dyn Fn(u64) + Sync),
) -> io::Result<u64> {
    let mut moved = 0u64;
    loop {
        let filled = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || pipe.fill_from(from.as_raw_fd())) {
                Ok(count) => break count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Err(error),
            }
        };
        if filled == 0 {
            shutdown_write(to)?;
            return Ok(moved);
        }
        activity.touch();
        while pipe.held > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || pipe.drain_to(to.as_raw_fd())) {
                Ok(count) => {
                    moved += count as u64;
                    moved_now(count as u64);
                    activity.touch();
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Err(error),
            }
        }
    }
}

/// Sends a FIN after what was written: the peer reads the end of the stream, and may still
/// send.
fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    // SAFETY: the descriptor is the stream's own, open for as long as `stream` is borrowed.
    if unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR) } == 0 {
        return Ok(());
    }
    match io::Error::last_os_error() {
        // The peer is gone already: nothing is left to tell it.
        error if error.raw_os_error() == Some(libc::ENOTCONN) => Ok(()),
        error => Err(error),
    }
}

/// A non-blocking pipe and how many bytes it holds.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    held: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Pipe { read, write, held: 0 })
    }

    /// Splices what `socket` has (up to the pipe's capacity) into the empty pipe; 0 at the
    /// end of the stream.
    fn fill_from(&mut self, socket: RawFd) -> io::Result<usize> {
        debug_assert_eq!(self.held, 0);
        let count = splice(socket, self.write.as_raw_fd(), PIPE_CAPACITY)?;
        self.held = count;
        Ok(count)
    }

    /// Splices what the pipe holds into `socket`, as much as its send buffer takes.
    fn drain_to(&mut self, socket: RawFd) -> io::Result<usize> {
        let count = splice(self.read.as_raw_fd(), socket, self.held)?;
        self.held -= count;
        Ok(count)
    }
}

fn splice(from: RawFd, to: RawFd, length: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    loop {
        // SAFETY: null offsets (both descriptors are streams); the descriptors stay open for
        // the call, borrowed from their owners.
        let count = unsafe {
            libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), length, flags)
        };
        if let Ok(count) = usize::try_from(count) {
            return Ok(count);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}
