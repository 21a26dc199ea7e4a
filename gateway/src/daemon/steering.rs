//! The proxy (`entry::proxy`) in the daemon: started with the interface's forwards, and told
//! how to make each connection it relays look like the client's to the backend. The entries
//! go to the data plane through the mirror (`PROXY_FLOWS`, for the programs) and to the
//! daemon's own tables (`proxy_nat`, for the packets the daemon carries); which plane
//! translates which packet is `proxy_nat`'s rule.
//!
//! Where that cannot be done the connection goes ahead from our tunnel address, and the
//! backend sees that address instead of the client's; said once in the log, per reason:
//! - programs send from the TUN and the steering program is not among them;
//! - a tls or http forward that bridges address families (an IPv6 client to an IPv4
//!   backend): no packet rewrite can carry an address across families.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::core::Shared;
use super::proxy_nat::OutboundTranslation;
use crate::entry::proxy::{FlowSteering, ProxiedFlow, ProxyHandle, ProxyLimits};
use crate::entry::table::ForwardTable;
use crate::entry::traffic::ForwardTraffic;
use crate::mirror::proxy_flows::{ProxiedAddrs, ProxyFlowEntries, SteerError};

/// Steers proxied connections through the daemon's data plane.
pub struct DataplaneSteering {
    shared: Arc<Shared>,
    said_unsteered: AtomicBool,
    said_bridged: AtomicBool,
}

impl DataplaneSteering {
    pub fn new(shared: Arc<Shared>) -> DataplaneSteering {
        DataplaneSteering {
            shared,
            said_unsteered: AtomicBool::new(false),
            said_bridged: AtomicBool::new(false),
        }
    }
}

fn addrs(flow: &ProxiedFlow) -> ProxiedAddrs {
    ProxiedAddrs {
        transport: flow.transport,
        client: flow.client,
        local: flow.local,
        backend: flow.backend,
    }
}

/// Logs `message` the first time `said` is found unset.
fn say_once(said: &AtomicBool, message: std::fmt::Arguments<'_>) {
    if !said.swap(true, Ordering::Relaxed) {
        tracing::warn!("{message}");
    }
}

impl FlowSteering for DataplaneSteering {
    fn steer(&self, flow: &ProxiedFlow) -> Result<(), String> {
        let addrs = addrs(flow);
        if let Err(SteerError::Families(_)) = ProxyFlowEntries::of(addrs) {
            say_once(
                &self.said_bridged,
                format_args!(
                    "proxy: client {} and backend {} are of different address families: such \
                     backends see this host's tunnel address, not the client's",
                    flow.client, flow.backend
                ),
            );
            return Ok(());
        }
        let translation = match self.shared.lock().sink.as_mut() {
            Some(sink) => sink.steer_proxied(addrs)?,
            None => OutboundTranslation::Daemon,
        };
        if translation == OutboundTranslation::Untranslated {
            say_once(
                &self.said_unsteered,
                format_args!(
                    "proxy: the programs send from the tunnel but none translates proxied \
                     connections (no steering program): backends see this host's tunnel \
                     address, not the client's"
                ),
            );
            return Ok(());
        }
        let daemon_sends = translation == OutboundTranslation::Daemon;
        if let Err(e) = self.shared.proxy_nat.steer(addrs, daemon_sends) {
            if let Some(sink) = self.shared.lock().sink.as_mut() {
                sink.release_proxied(addrs);
            }
            return Err(e.to_string());
        }
        Ok(())
    }

    /// The daemon's entries first: the map's reply entry is the last to go.
    fn release(&self, flow: &ProxiedFlow) {
        let addrs = addrs(flow);
        self.shared.proxy_nat.release(addrs);
        if let Some(sink) = self.shared.lock().sink.as_mut() {
            sink.release_proxied(addrs);
        }
    }
}

/// Starts the proxy on the current runtime, following `forwards`. It carries the tcp and udp
/// forwards too when the programs do not translate them.
pub fn start_proxy(
    shared: &Arc<Shared>,
    forwards: tokio::sync::watch::Receiver<Arc<ForwardTable>>,
    traffic: Arc<ForwardTraffic>,
) -> ProxyHandle {
    let in_ebpf = shared.lock().sink.as_ref().is_some_and(|sink| sink.forwards_in_ebpf());
    let limits = ProxyLimits {
        carry_tcp_forwards: !in_ebpf,
        carry_udp_forwards: !in_ebpf,
        ..ProxyLimits::default()
    };
    let steering = Arc::new(DataplaneSteering::new(Arc::clone(shared)));
    crate::entry::proxy::spawn(
        &tokio::runtime::Handle::current(),
        forwards,
        steering,
        limits,
        traffic,
    )
}
