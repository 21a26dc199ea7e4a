//! Plain UDP sockets made inside a namespace by the test itself: exact payloads out, exactly
//! what arrived back, for comparisons byte by byte and for sending malformed datagrams.

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::Netns;

/// A socket bound inside `netns` (it stays there; the test thread does not).
pub fn udp_socket(netns: &Netns, bind: SocketAddr) -> Result<UdpSocket> {
    let _inside = netns.enter()?;
    UdpSocket::bind(bind).with_context(|| format!("cannot bind UDP {bind} in {}", netns.name()))
}

/// Sends every payload from `socket` to `to`, `gap` apart (so a receiver's buffer never
/// overflows: what is compared is what the path delivered).
pub fn send_all(
    socket: &UdpSocket,
    to: SocketAddr,
    payloads: &[Vec<u8>],
    gap: Duration,
) -> Result<()> {
    for (index, payload) in payloads.iter().enumerate() {
        socket.send_to(payload, to).with_context(|| {
            format!("sending datagram {index} ({} bytes) to {to}", payload.len())
        })?;
        if !gap.is_zero() {
            thread::sleep(gap);
        }
    }
    Ok(())
}

/// Receives until `count` datagrams came or `timeout` passed. Returns what came, in arrival
/// order.
pub fn receive_all(socket: &UdpSocket, count: usize, timeout: Duration) -> Result<Vec<Vec<u8>>> {
    let deadline = Instant::now() + timeout;
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 65536];
    while received.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv_from(&mut buffer) {
            Ok((length, _)) => received.push(buffer[..length].to_vec()),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(error) => return Err(error).context("receiving UDP"),
        }
    }
    Ok(received)
}
