//! The proxy of tls and http forwards (and of tcp and udp forwards when the eBPF forward
//! program is not there to translate them): it listens on their public ports, picks each
//! connection's backend from its first bytes, connects to the backend *as the client*, and
//! passes the bytes through unchanged.
//!
//! - [`listeners`]: the listening sockets, kept in step with the forward table.
//! - [`connection`]: one connection from its accept to its end.
//! - [`choose`]: the first bytes (a whole ClientHello or header block) and the backend they
//!   choose.
//! - [`backend`]: the connection to the backend from the tunnel-side address, steered before
//!   its SYN leaves.
//! - [`flows`]: the steered flows, released once each after a grace, in an order that never
//!   removes a newer flow's steering.
//! - [`relay`]: splice(2) both ways, half-closes passed on, an idle timeout.
//! - [`udp`]: udp forwards, per client a socket towards the backend.
//! - [`limits`]: the bounds ([`ProxyLimits`]) and the admission of connections under them.
//!
//! How the backend comes to see the client's address is the [`FlowSteering`]'s business (the
//! daemon's: entries in `PROXY_FLOWS` that the TUN's programs rewrite packets by); the proxy
//! only tells it each flow before the flow's first packet and releases it after its last.

mod activity;
mod backend;
mod choose;
mod connection;
mod flows;
mod limits;
mod listeners;
mod relay;
mod udp;
mod warnings;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use self::flows::Flows;
use self::limits::Admission;
pub use self::limits::ProxyLimits;
use self::listeners::{Listeners, RETRY_BINDS, wanted};
use self::warnings::RateLimited;
use crate::entry::forward::Transport;
use crate::entry::table::ForwardTable;
use crate::entry::traffic::ForwardTraffic;

/// One connection (or udp client) the proxy relays, as the steering needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProxiedFlow {
    /// The internet client, as it reached the public port (never a v4-mapped v6 address).
    pub client: SocketAddr,
    /// The tunnel-side address and port the proxy's socket towards the backend is bound to.
    /// Of the backend's family, which may not be the client's: a tls or http forward may
    /// bridge families, and then the client's address cannot be carried to the backend.
    pub local: SocketAddr,
    pub backend: SocketAddr,
    pub transport: Transport,
}

/// What makes a proxied flow look like the client's to the backend.
pub trait FlowSteering: Send + Sync + 'static {
    /// Called before the flow's first packet leaves (before the connect). An error closes the
    /// connection (it is logged as a rate-limited warning) and `release` is not called.
    fn steer(&self, flow: &ProxiedFlow) -> Result<(), String>;
    /// Called once for every flow `steer` accepted, [`ProxyLimits::release_grace`] after it
    /// closed, or sooner when a new flow would share its `local` or its `client` and `backend`:
    /// then always before that flow's `steer`. So insert on `steer`, remove on `release`, and
    /// no entry of a live flow is ever removed. Both are called with the proxy's registry
    /// locked: keep them short (a map update).
    fn release(&self, flow: &ProxiedFlow);
}

/// The running proxy. Dropping it (or [`ProxyHandle::stop`]) closes the listening sockets;
/// connections already relayed run on until they end.
pub struct ProxyHandle {
    supervisor: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl ProxyHandle {
    pub fn stop(self) {}

    /// Where the proxy listens now (a wildcard socket shows as `[::]` or `0.0.0.0`).
    pub fn listening(&self) -> Vec<(Transport, SocketAddr)> {
        self.shared.listening.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

/// Starts the proxy on `handle`: it listens where `forwards` asks, now and after each of its
/// changes, and counts what each forward carries in `traffic`. Raises the process's soft limit on open descriptors to what `limits` may use.
pub fn spawn(
    handle: &tokio::runtime::Handle,
    forwards: watch::Receiver<Arc<ForwardTable>>,
    steering: Arc<dyn FlowSteering>,
    limits: ProxyLimits,
    traffic: Arc<ForwardTraffic>,
) -> ProxyHandle {
    limits::raise_descriptor_limit(&limits);
    let shared = Arc::new(Shared {
        forwards: forwards.clone(),
        flows: Arc::new(Flows::new(steering, limits.release_grace)),
        admission: Admission::new(&limits),
        udp_clients: Arc::new(Semaphore::new(limits.max_udp_clients)),
        limits,
        traffic,
        warnings: Warnings::default(),
        listening: Mutex::new(Vec::new()),
    });
    let supervisor = handle.spawn(supervise(forwards, Arc::clone(&shared)));
    ProxyHandle { supervisor, shared }
}

/// What every task of the proxy shares.
struct Shared {
    /// The newest table: connections look their backend up in it.
    forwards: watch::Receiver<Arc<ForwardTable>>,
    flows: Arc<Flows>,
    limits: ProxyLimits,
    admission: Admission,
    /// Permits of the udp clients relayed, over all udp sockets.
    udp_clients: Arc<Semaphore>,
    /// Each forward's connections and bytes.
    traffic: Arc<ForwardTraffic>,
    warnings: Warnings,
    listening: Mutex<Vec<(Transport, SocketAddr)>>,
}

/// The warnings a flood could repeat.
#[derive(Default)]
struct Warnings {
    at_limit: RateLimited,
    pushed_out: RateLimited,
    accept_failed: RateLimited,
    steering_failed: RateLimited,
    udp_full: RateLimited,
}

/// Keeps the listening sockets in step with the table until aborted (which closes them all).
async fn supervise(mut forwards: watch::Receiver<Arc<ForwardTable>>, shared: Arc<Shared>) {
    let mut listeners = Listeners::default();
    let mut table_gone = false;
    loop {
        let table = Arc::clone(&forwards.borrow_and_update());
        listeners.reconcile(&wanted(&table, &shared.limits), &shared);
        *shared.listening.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            listeners.addresses();
        let retry = async {
            if listeners.any_failed() {
                tokio::time::sleep(RETRY_BINDS).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            changed = forwards.changed(), if !table_gone => {
                // The sender gone: the last table stays in force until the handle is dropped.
                table_gone = changed.is_err();
            }
            () = retry => {}
        }
    }
}
