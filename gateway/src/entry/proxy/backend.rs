//! Connecting to a backend *as the client*.
//!
//! The socket is bound, before it connects, to the address the kernel would send from
//! towards the backend (the tunnel-side address) and a port of its choosing; the steering is
//! told the flow (client, that address and port, backend) and only then is the SYN sent, so
//! that the data plane already rewrites it to leave with the client's address. When the
//! connection is over, the steering is released, once (see [`super::flows`]).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

use super::ProxiedFlow;
use super::flows::{Flows, SteerError, SteeredFlow};
use crate::entry::forward::Transport;

/// Why a backend could not be reached.
#[derive(Debug)]
pub(super) enum ConnectError {
    /// No route to the backend, or no socket: the error says which.
    Socket(io::Error),
    Steering(SteerError),
    Refused(io::Error),
    TimedOut,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Socket(error) => write!(f, "no socket towards it: {error}"),
            ConnectError::Steering(error) => write!(f, "{error}"),
            ConnectError::Refused(error) => write!(f, "connecting failed: {error}"),
            ConnectError::TimedOut => f.write_str("connecting timed out"),
        }
    }
}

/// Connects to `backend` for `client`'s connection; the stream and its steered flow (drop
/// the flow *before* the stream).
pub(super) async fn connect_as_client(
    client: SocketAddr,
    backend: SocketAddr,
    flows: &Arc<Flows>,
    timeout: Duration,
) -> Result<(TcpStream, SteeredFlow), ConnectError> {
    let source = route_source(backend).map_err(ConnectError::Socket)?;
    let socket = match backend {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(ConnectError::Socket)?;
    socket.bind(SocketAddr::new(source, 0)).map_err(ConnectError::Socket)?;
    let local = socket.local_addr().map_err(ConnectError::Socket)?;
    let flow = ProxiedFlow { client, local, backend, transport: Transport::Tcp };
    let steered = flows.steer(flow).map_err(ConnectError::Steering)?;
    match tokio::time::timeout(timeout, socket.connect(backend)).await {
        Ok(Ok(stream)) => Ok((stream, steered)),
        Ok(Err(error)) => Err(ConnectError::Refused(error)),
        Err(_) => Err(ConnectError::TimedOut),
    }
}

/// The source address the kernel picks for packets to `destination` (a connected UDP socket
/// sends nothing: connecting it only resolves the route).
pub(super) fn route_source(destination: SocketAddr) -> io::Result<IpAddr> {
    let unspecified = match destination {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let probe = UdpSocket::bind(SocketAddr::new(unspecified, 0))?;
    probe.connect(destination)?;
    Ok(probe.local_addr()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_source_towards_loopback_is_loopback() {
        let source = route_source("127.0.0.1:9".parse().unwrap()).unwrap();
        assert_eq!(source, IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
}
