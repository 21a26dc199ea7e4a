//! Connecting to a backend *as the client*.
//!
//! The socket is bound, before it connects, to the address the kernel would send from
//! towards the backend (the tunnel-side address) and a port of its choosing; the steering is
//! told the flow (client, that address and port, backend) and only then is the SYN sent, so
//! that the data plane already rewrites it to leave with the client's address. When the
//! connection is over, the steering is released, exactly once, by a guard.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

use super::{FlowSteering, ProxiedFlow};
use crate::entry::forward::Transport;

/// Why a backend could not be reached.
#[derive(Debug)]
pub(super) enum ConnectError {
    /// No route to the backend, or no socket: the error says which.
    Socket(io::Error),
    /// The steering refused the flow.
    Steering(String),
    Refused(io::Error),
    TimedOut,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Socket(error) => write!(f, "no socket towards it: {error}"),
            ConnectError::Steering(why) => write!(f, "its flow cannot be steered: {why}"),
            ConnectError::Refused(error) => write!(f, "connecting failed: {error}"),
            ConnectError::TimedOut => f.write_str("connecting timed out"),
        }
    }
}

/// Connects to `backend` for `client`'s connection; the stream and the guard that keeps the
/// flow steered (drop it after the stream).
pub(super) async fn connect_as_client(
    client: SocketAddr,
    backend: SocketAddr,
    steering: &Arc<dyn FlowSteering>,
    timeout: Duration,
    release_grace: Duration,
) -> Result<(TcpStream, SteeringGuard), ConnectError> {
    let source = route_source(backend).map_err(ConnectError::Socket)?;
    let socket = match backend {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(ConnectError::Socket)?;
    socket.bind(SocketAddr::new(source, 0)).map_err(ConnectError::Socket)?;
    let local = socket.local_addr().map_err(ConnectError::Socket)?;
    let flow = ProxiedFlow { client, local, backend, transport: Transport::Tcp };
    let guard = SteeringGuard::steer(flow, steering, release_grace)?;
    match tokio::time::timeout(timeout, socket.connect(backend)).await {
        Ok(Ok(stream)) => Ok((stream, guard)),
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

/// Keeps a flow steered while it lives; releases it when dropped, after the grace period
/// (on the runtime; at once if there is none or the grace is zero).
pub(super) struct SteeringGuard {
    release: Option<Release>,
    grace: Duration,
}

/// The release itself, in its own drop: wherever this value ends (dropped by the guard, by a
/// grace task that finished, or by a runtime shutting down with that task pending), the flow
/// is released, and only once.
struct Release {
    flow: ProxiedFlow,
    steering: Arc<dyn FlowSteering>,
}

impl SteeringGuard {
    /// Steers `flow`; the guard that releases it.
    pub(super) fn steer(
        flow: ProxiedFlow,
        steering: &Arc<dyn FlowSteering>,
        grace: Duration,
    ) -> Result<SteeringGuard, ConnectError> {
        steering.steer(&flow).map_err(ConnectError::Steering)?;
        let release = Release { flow, steering: Arc::clone(steering) };
        Ok(SteeringGuard { release: Some(release), grace })
    }
}

impl Drop for SteeringGuard {
    fn drop(&mut self) {
        let Some(release) = self.release.take() else {
            return;
        };
        if self.grace.is_zero() {
            return; // `release` is dropped here
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let grace = self.grace;
            runtime.spawn(async move {
                tokio::time::sleep(grace).await;
                drop(release);
            });
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        self.steering.release(&self.flow);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Counting {
        steered: Mutex<u32>,
        released: Mutex<u32>,
        refuse: bool,
    }

    impl FlowSteering for Counting {
        fn steer(&self, _: &ProxiedFlow) -> Result<(), String> {
            *self.steered.lock().unwrap() += 1;
            if self.refuse { Err("refused".to_string()) } else { Ok(()) }
        }

        fn release(&self, _: &ProxiedFlow) {
            *self.released.lock().unwrap() += 1;
        }
    }

    fn flow() -> ProxiedFlow {
        let address = |text: &str| text.parse().unwrap();
        ProxiedFlow {
            client: address("192.0.2.7:40000"),
            local: address("10.0.0.1:50000"),
            backend: address("10.0.0.2:443"),
            transport: Transport::Tcp,
        }
    }

    #[test]
    fn the_route_source_towards_loopback_is_loopback() {
        let source = route_source("127.0.0.1:9".parse().unwrap()).unwrap();
        assert_eq!(source, IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn a_guard_without_grace_releases_once_when_dropped() {
        let counting = Arc::new(Counting::default());
        let steering: Arc<dyn FlowSteering> = counting.clone();
        let guard = SteeringGuard::steer(flow(), &steering, Duration::ZERO).unwrap();
        assert_eq!((*counting.steered.lock().unwrap(), *counting.released.lock().unwrap()), (1, 0));
        drop(guard);
        assert_eq!(*counting.released.lock().unwrap(), 1);
    }

    #[test]
    fn a_refused_flow_is_never_released() {
        let counting = Arc::new(Counting { refuse: true, ..Counting::default() });
        let steering: Arc<dyn FlowSteering> = counting.clone();
        let refused = SteeringGuard::steer(flow(), &steering, Duration::ZERO);
        assert!(matches!(refused, Err(ConnectError::Steering(why)) if why == "refused"));
        assert_eq!(*counting.released.lock().unwrap(), 0);
    }

    #[test]
    fn a_grace_pending_when_the_runtime_stops_still_releases_once() {
        let counting = Arc::new(Counting::default());
        let steering: Arc<dyn FlowSteering> = counting.clone();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            let guard = SteeringGuard::steer(flow(), &steering, Duration::from_secs(3600)).unwrap();
            drop(guard);
        });
        assert_eq!(*counting.released.lock().unwrap(), 0, "released before its grace");
        drop(runtime);
        assert_eq!(*counting.released.lock().unwrap(), 1);
    }
}
