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
use super::limits::Admitted;
use super::relay::{RelayEnd, relay};
use super::warnings::left_out;
use crate::entry::forward::Transport;

/// Serves `client`, accepted on `local` from `peer` (both canonical: no v4-mapped v6).
pub(super) async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    admitted: Admitted,
    shared: Arc<Shared>,
) {
    let Admitted { permit, mut choosing } = admitted;
    let table = Arc::clone(&shared.forwards.borrow());
    let (backend, first) = match table.name_routed(local.ip(), local.port()) {
        Some(protocol) => {
            let limits = &shared.limits;
            let reading = tokio::time::timeout(
                limits.first_bytes_timeout,
                read_first_bytes(&mut client, protocol),
            );
            let first = tokio::select! {
                read = reading => match read {
                    Ok(Ok(first)) => first,
                    Ok(Err(why)) => {
                        tracing::debug!(%peer, %local, "{protocol} connection closed: {why}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, %local, "{protocol} connection closed: its first bytes took longer than {:?}", limits.first_bytes_timeout);
                        return;
                    }
                },
                () = choosing.pushed_out() => {
                    tracing::debug!(%peer, %local, "{protocol} connection closed while sending its first bytes: too many others were");
                    return;
                }
            };
            // The table may have changed while the bytes came: the newest one decides.
            let table = Arc::clone(&shared.forwards.borrow());
            let Some(backend) = named_backend(&table, protocol, local, first.name.as_ref()) else {
                let name = first.name.as_ref().map_or("no name", |name| name.as_str());
                tracing::debug!(%peer, %local, "{protocol} connection closed: no forward takes {name}");
                return;
            };
            (backend, first.bytes)
        }
        None if shared.limits.carry_tcp_forwards => {
            match port_backend(&table, Transport::Tcp, local) {
                Some(backend) => (backend, Vec::new()),
                None => {
                    tracing::debug!(%peer, %local, "connection closed: no forward takes its port any more");
                    return;
                }
            }
        }
        None => {
            tracing::debug!(%peer, %local, "connection closed: no forward takes its port any more");
            return;
        }
    };
    drop(choosing);
    drop(table);

    let limits = &shared.limits;
    let connecting = connect_as_client(peer, backend, &shared.flows, limits.connect_timeout);
    let (mut upstream, steered) = match connecting.await {
        Ok(connected) => connected,
        Err(error) => {
            if let ConnectError::Steering(SteerError::Refused(_)) = error
                && let Some(count) = shared.warnings.steering_failed.allow()
            {
                tracing::warn!(%peer, "connection to {backend} closed: {error}{}", left_out(count));
            } else {
                tracing::debug!(%peer, %local, "connection to {backend} closed: {error}");
            }
            return;
        }
    };
    // Bytes go on as they come: batching them is the endpoints' business, not the relay's.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    match relay(&mut client, &mut upstream, &first, limits.idle_timeout).await {
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
