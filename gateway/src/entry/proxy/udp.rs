//! udp forwards, relayed here when the eBPF forward program is not there to translate them.
//!
//! Per client (address and port), a socket bound to the tunnel-side address towards the
//! backend and connected to it, its flow steered like a tcp connection's; what the backend
//! sends on it goes back to the client from the public socket. A client that has neither
//! sent nor received for [`ProxyLimits::udp_idle_timeout`](super::ProxyLimits) is forgotten.
//! At most [`ProxyLimits::max_udp_clients`](super::ProxyLimits) over all public sockets: a new
//! client beyond that takes the place of this socket's idlest, or its datagram is dropped.
//!
//! Datagrams are never queued: what a socket cannot take at once is dropped, as a router would. So
//! they are sent straight on the sockets (through [`SockRef`]), not through tokio's write
//! readiness, which a new socket lacks until the reactor has seen it. They pass through one buffer
//! per worker thread, so a thousand public ports cost no thousand 64 KiB buffers.
//!
//! Limits, by design: a client's flow ends with its public socket (removing the forward ends
//! its clients' flows, unlike tcp connections, whose replies do not need that socket). A
//! socket listening on every address replies from the address the kernel picks towards the
//! client, which on a host with several public addresses may not be the one the client sent
//! to: `--listen` avoids that.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;

use socket2::SockRef;
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::ProxiedFlow;
use super::Shared;
use super::activity::Activity;
use super::backend::route_source;
use super::choose::port_backend;
use super::flows::SteeredFlow;
use super::listeners::AbortOnDrop;
use super::warnings::left_out;
use crate::entry::forward::Transport;
use crate::entry::traffic::ForwardCounters;

/// The largest datagram.
const DATAGRAM: usize = 65_535;
/// Datagrams handled per readiness before yielding to other tasks.
const BATCH: usize = 64;

thread_local! {
    static BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; DATAGRAM].into_boxed_slice());
}

/// One client's flow. Dropping it starts its steering's grace, aborts its reply task (which
/// closes the socket) and frees its place.
struct Flow {
    /// First: the grace starts before the socket closes.
    _steered: SteeredFlow,
    upstream: Arc<UdpSocket>,
    activity: Arc<Activity>,
    /// The forward's: what this client sends and receives is added to them.
    counters: Arc<ForwardCounters>,
    generation: u64,
    _replies: AbortOnDrop,
    _place: OwnedSemaphorePermit,
}

/// A flow's reply task telling the public socket's task that it went idle.
struct IdleNotice {
    client: SocketAddr,
    generation: u64,
}

/// Relays the clients of the public socket `public` until the task is aborted.
pub(super) async fn serve(public: UdpSocket, shared: Arc<Shared>) {
    let public = Arc::new(public);
    let local = match public.local_addr() {
        Ok(local) => SocketAddr::new(local.ip().to_canonical(), local.port()),
        Err(error) => {
            tracing::warn!("proxy: a udp socket lost its address: {error}");
            return;
        }
    };
    let mut clients = Clients {
        flows: HashMap::new(),
        next_generation: 0,
        local,
        public: Arc::clone(&public),
        idle: mpsc::unbounded_channel(),
        shared,
    };
    loop {
        tokio::select! {
            readable = public.readable() => {
                if let Err(error) = readable {
                    tracing::warn!("proxy: udp socket {local} failed: {error}");
                    return;
                }
                clients.take_datagrams();
            }
            Some(notice) = clients.idle.1.recv() => clients.forget_if_idle(notice),
        }
    }
}

struct Clients {
    /// By the client's address as the public socket sees it (v4-mapped on a wildcard socket).
    flows: HashMap<SocketAddr, Flow>,
    next_generation: u64,
    local: SocketAddr,
    public: Arc<UdpSocket>,
    idle: (mpsc::UnboundedSender<IdleNotice>, mpsc::UnboundedReceiver<IdleNotice>),
    shared: Arc<Shared>,
}

impl Clients {
    fn take_datagrams(&mut self) {
        for _ in 0..BATCH {
            let taken = BUFFER.with_borrow_mut(|buffer| {
                let (length, client) = self.public.try_recv_from(buffer)?;
                self.pass_up(client, &buffer[..length]);
                Ok::<_, io::Error>(())
            });
            match taken {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                // An ICMP error about an earlier reply, mostly: the client's problem.
                Err(error) => tracing::debug!("proxy: udp {}: {error}", self.local),
            }
        }
    }

    /// Sends `datagram` from `client` on to its backend, opening its flow if it has none.
    fn pass_up(&mut self, client: SocketAddr, datagram: &[u8]) {
        if !self.flows.contains_key(&client) {
            match self.open(client) {
                Ok(flow) => {
                    self.flows.insert(client, flow);
                }
                Err(why) => {
                    tracing::debug!("proxy: udp {} from {client} dropped: {why}", self.local);
                    return;
                }
            }
        }
        let Some(flow) = self.flows.get(&client) else {
            return;
        };
        flow.activity.touch();
        match SockRef::from(&*flow.upstream).send(datagram) {
            Ok(sent) => flow.counters.to_backend(sent as u64),
            Err(error) => {
                tracing::debug!("proxy: udp {} from {client} dropped: {error}", self.local)
            }
        }
    }

    fn open(&mut self, client: SocketAddr) -> Result<Flow, String> {
        let shared = Arc::clone(&self.shared);
        let table = Arc::clone(&shared.forwards.borrow());
        let (backend, forward) = port_backend(&table, Transport::Udp, self.local)
            .ok_or("no forward takes its port any more")?;
        let place = match Arc::clone(&shared.udp_clients).try_acquire_owned() {
            Ok(place) => place,
            Err(_) => {
                self.forget_idlest()?;
                Arc::clone(&shared.udp_clients)
                    .try_acquire_owned()
                    .map_err(|_| "too many udp clients".to_string())?
            }
        };
        let failed = |error: io::Error| format!("no socket towards {backend}: {error}");
        let source = route_source(backend).map_err(failed)?;
        let upstream = StdUdpSocket::bind(SocketAddr::new(source, 0)).map_err(failed)?;
        let flow = ProxiedFlow {
            client: SocketAddr::new(client.ip().to_canonical(), client.port()),
            local: upstream.local_addr().map_err(failed)?,
            backend,
            transport: Transport::Udp,
        };
        let steered = shared.flows.steer(flow).map_err(|error| error.to_string())?;
        upstream.connect(backend).map_err(failed)?;
        upstream.set_nonblocking(true).map_err(failed)?;
        let upstream = Arc::new(UdpSocket::from_std(upstream).map_err(failed)?);
        let activity = Arc::new(Activity::new());
        let counters = shared.traffic.of(&forward);
        counters.connected();
        let generation = self.next_generation;
        self.next_generation += 1;
        let way_back = WayBack {
            upstream: Arc::clone(&upstream),
            public: Arc::clone(&self.public),
            client,
            activity: Arc::clone(&activity),
            counters: Arc::clone(&counters),
        };
        let replies = tokio::spawn(pass_down(way_back, self.idle.0.clone(), generation, shared));
        Ok(Flow {
            _steered: steered,
            upstream,
            activity,
            counters,
            generation,
            _replies: AbortOnDrop(replies),
            _place: place,
        })
    }

    /// Forgets this socket's idlest client to make room; an error if it has none.
    fn forget_idlest(&mut self) -> Result<(), String> {
        let idlest = self.flows.iter().min_by_key(|(_, flow)| flow.activity.last());
        let Some((&client, _)) = idlest else {
            if let Some(count) = self.shared.warnings.udp_full.allow() {
                tracing::warn!(
                    "proxy: {} udp clients relayed, the most allowed: dropping new ones{}",
                    self.shared.limits.max_udp_clients,
                    left_out(count)
                );
            }
            return Err("too many udp clients".to_string());
        };
        self.flows.remove(&client);
        Ok(())
    }

    fn forget_if_idle(&mut self, notice: IdleNotice) {
        // The client may have been forgotten already, and come back as a new flow.
        if self.flows.get(&notice.client).is_some_and(|flow| flow.generation == notice.generation) {
            self.flows.remove(&notice.client);
        }
    }
}

/// How a client's replies go back: from the backend on `upstream`, to `client` from `public`.
struct WayBack {
    upstream: Arc<UdpSocket>,
    public: Arc<UdpSocket>,
    client: SocketAddr,
    activity: Arc<Activity>,
    counters: Arc<ForwardCounters>,
}

/// Sends what the backend sends back to the client, until the flow has been idle for the
/// timeout; then says so.
async fn pass_down(
    way_back: WayBack,
    idle: mpsc::UnboundedSender<IdleNotice>,
    generation: u64,
    shared: Arc<Shared>,
) {
    let WayBack { upstream, public, client, activity, counters } = way_back;
    let passing = async {
        loop {
            upstream.readable().await?;
            for _ in 0..BATCH {
                let passed = BUFFER.with_borrow_mut(|buffer| {
                    let length = upstream.try_recv(buffer)?;
                    activity.touch();
                    match SockRef::from(&*public).send_to(&buffer[..length], &client.into()) {
                        Ok(sent) => counters.to_client(sent as u64),
                        Err(error) => {
                            tracing::debug!("proxy: udp reply to {client} dropped: {error}")
                        }
                    }
                    Ok::<_, io::Error>(())
                });
                match passed {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    // The backend's port unreachable, for an earlier datagram: it may listen
                    // again later; the idle timeout ends the flow if it does not.
                    Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => break,
                    Err(error) => return Err::<(), _>(error),
                }
            }
        }
    };
    tokio::select! {
        result = passing => {
            if let Err(error) = result {
                tracing::debug!("proxy: udp flow of {client} ended: {error}");
            }
        }
        () = activity.idle_for(shared.limits.udp_idle_timeout) => {}
    }
    let _ = idle.send(IdleNotice { client, generation });
}
