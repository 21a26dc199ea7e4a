//! One accepted connection, from its accept to its end: what its port carries, its backend
//! (from its first bytes for tls and http), the connection to that backend as the client,
//! and the relay.
//!
//! Every problem here is the connection's own and is logged at debug: a client that sends
//! garbage or nothing, a backend that refuses. Only what says something about the host (the
//! steering failing) is a warning, rate-limited.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::Shared;
use super::backend::{ConnectError, connect_as_client};
use super::choose::{named_backend, port_backend, read_first_bytes};
use super::flows::SteerError;
use super::limits::{Admitted, ChoosingTicket};
use super::relay::{RelayEnd, relay};
use super::warnings::left_out;
use crate::entry::forward::{Selector, Transport};

/// Serves `client`, accepted on `local` from `peer` (both canonical: no v4-mapped v6).
pub(super) async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    admitted: Admitted,
    shared: Arc<Shared>,
) {
    let Admitted { permit, choosing } = admitted;
    let chosen = choose_backend(&mut client, peer, local, choosing, &shared).await;
    let Some((backend, forward, first)) = chosen else {
        return;
    };
    let limits = &shared.limits;
    let connecting = connect_as_client(peer, backend, &shared.flows, limits.connect_timeout);
    let (mut upstream, steered) = match connecting.await {
        Ok(connected) => connected,
        Err(error) => {
            if let ConnectError::Steering(SteerError::Refused(_)) = error
                && let Some(count) = shared.warnings.steering_failed.allow()
            {
                let left_out = left_out(count);
                tracing::warn!(%peer, "proxy: connection to {backend} closed: {error}{left_out}");
            } else {
                tracing::debug!(%peer, %local, "connection to {backend} closed: {error}");
            }
            return;
        }
    };
    // Bytes go on as they come: batching them is the endpoints' business, not the relay's.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let counters = shared.traffic.of(&forward);
    counters.connected();
    match relay(&mut client, &mut upstream, &first, limits.idle_timeout, &counters).await {
        RelayEnd::Closed { to_backend, to_client } => tracing::debug!(
            %peer, %local, %backend,
            "connection ended: {to_backend} bytes to the backend, {to_client} back"
        ),
        RelayEnd::Idle => tracing::debug!(
            %peer, %local, %backend,
            "connection closed: idle for {:?}", limits.idle_timeout
        ),
        RelayEnd::Failed(error) => {
            tracing::debug!(%peer, %local, %backend, "connection ended: {error}")
        }
    }
    // The flow's grace starts before its socket closes (the grace is for what the socket
    // sends while closing), then the connection's place is freed.
    drop(steered);
    drop(upstream);
    drop(client);
    drop(permit);
}

/// The backend of a connection to `local`, the forward that chose it and the bytes read to
/// choose it (none for a plain tcp forward); None, logged, if it has none.
async fn choose_backend(
    client: &mut TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    mut choosing: ChoosingTicket,
    shared: &Shared,
) -> Option<(SocketAddr, Selector, Vec<u8>)> {
    let gone = "connection closed: no forward takes its port any more";
    let table = Arc::clone(&shared.forwards.borrow());
    let Some(protocol) = table.name_routed(local.ip(), local.port()) else {
        let backend = port_backend(&table, Transport::Tcp, local)
            .filter(|_| shared.limits.carry_tcp_forwards);
        if backend.is_none() {
            tracing::debug!(%peer, %local, "{gone}");
        }
        return backend.map(|(backend, forward)| (backend, forward, Vec::new()));
    };
    let timeout = shared.limits.first_bytes_timeout;
    let reading = tokio::time::timeout(timeout, read_first_bytes(client, protocol));
    let first = tokio::select! {
        read = reading => match read {
            Ok(Ok(first)) => first,
            Ok(Err(why)) => {
                tracing::debug!(%peer, %local, "{protocol} connection closed: {why}");
                return None;
            }
            Err(_) => {
                let why = format!("no first bytes in {timeout:?}");
                tracing::debug!(%peer, %local, "{protocol} connection closed: {why}");
                return None;
            }
        },
        () = choosing.pushed_out() => {
            let why = "pushed out by newer ones";
            tracing::debug!(%peer, %local, "{protocol} connection closed: {why}");
            return None;
        }
    };
    // The table may have changed while the bytes came: the newest one decides.
    let table = Arc::clone(&shared.forwards.borrow());
    let Some((backend, forward)) = named_backend(&table, protocol, local, first.name.as_ref())
    else {
        let name = first.name.as_ref().map_or("no name", |name| name.as_str());
        tracing::debug!(%peer, %local, "{protocol} connection closed: no forward takes {name}");
        return None;
    };
    Some((backend, forward, first.bytes))
}
