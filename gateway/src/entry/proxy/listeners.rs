//! The proxy's listening sockets, kept in step with the forward table.
//!
//! A table asks for one socket per (transport, listen address or every address, port) of its
//! tls and http forwards, and of its tcp and udp forwards when the proxy carries those. A
//! port some forward takes on every address gets one wildcard socket, which also serves the
//! forwards of that port restricted to one address (the connection's local address picks
//! among them): Linux refuses a specific address next to a listening wildcard anyway.
//!
//! On every change of the table, sockets no longer asked for are closed first (so a port
//! moving from one address to every address can be bound again), then the new ones are
//! bound. Closing a listening socket touches nothing accepted from it. A socket that cannot
//! be bound (port in use, address absent) is named in one warning and retried every
//! [`RETRY_BINDS`] without more warnings; the others are served meanwhile.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::Shared;
use super::connection::serve;
use super::limits::{ProxyLimits, Refused};
use super::udp;
use super::warnings::left_out;
use crate::entry::forward::{Protocol, Transport};
use crate::entry::table::ForwardTable;

/// How often sockets that could not be bound are tried again.
pub(super) const RETRY_BINDS: Duration = Duration::from_secs(30);
/// Pending connections the kernel keeps per listening socket before the proxy accepts them.
const BACKLOG: i32 = 1024;
/// Binding failures named one by one per change; the rest are counted in one line.
const FAILURES_NAMED: usize = 8;
/// The pause after an accept failed for want of descriptors or memory, doubling up to the
/// most while it keeps failing: the condition lasts, and retrying at once would spin.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(50);
const ACCEPT_BACKOFF_MOST: Duration = Duration::from_secs(1);

/// One listening socket a table asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct ListenKey {
    pub(super) transport: Transport,
    /// None: every address, both families.
    pub(super) address: Option<IpAddr>,
    pub(super) port: u16,
}

impl std::fmt::Display for ListenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let transport = match self.transport {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        };
        match self.address {
            None => write!(f, "{transport} port {} (every address)", self.port),
            Some(address) => write!(f, "{transport} {}", SocketAddr::new(address, self.port)),
        }
    }
}

/// The sockets `table` asks for.
pub(super) fn wanted(table: &ForwardTable, limits: &ProxyLimits) -> BTreeSet<ListenKey> {
    let mut keys = BTreeSet::new();
    for forward in table.forwards() {
        let selector = forward.selector();
        let carried = match selector.protocol() {
            Protocol::Tls | Protocol::Http => true,
            Protocol::Tcp => limits.carry_tcp_forwards,
            Protocol::Udp => limits.carry_udp_forwards,
        };
        if !carried {
            continue;
        }
        let (transport, address) = (selector.protocol().transport(), selector.listen());
        let ports = selector.ports();
        for port in ports.first()..=ports.last() {
            keys.insert(ListenKey { transport, address, port });
        }
    }
    let wildcards: BTreeSet<(Transport, u16)> = keys
        .iter()
        .filter(|key| key.address.is_none())
        .map(|key| (key.transport, key.port))
        .collect();
    keys.retain(|key| key.address.is_none() || !wildcards.contains(&(key.transport, key.port)));
    keys
}

/// The open sockets (each served by its own task, closed when the task is dropped) and those
/// that could not be bound, with why.
#[derive(Default)]
pub(super) struct Listeners {
    open: HashMap<ListenKey, (SocketAddr, AbortOnDrop)>,
    failed: HashMap<ListenKey, String>,
}

impl Listeners {
    /// Closes what `wanted` no longer has, binds what it has and is not open.
    pub(super) fn reconcile(&mut self, wanted: &BTreeSet<ListenKey>, shared: &Arc<Shared>) {
        // A socket whose task has ended (a udp socket that failed) is bound again.
        self.open.retain(|key, (_, task)| wanted.contains(key) && !task.0.is_finished());
        self.failed.retain(|key, _| wanted.contains(key));
        let mut new_failures = Vec::new();
        let missing: Vec<ListenKey> =
            wanted.iter().filter(|key| !self.open.contains_key(key)).copied().collect();
        for key in missing {
            match open(key, shared) {
                Ok(opened) => {
                    if self.failed.remove(&key).is_some() {
                        tracing::info!("proxy: now listening on {key}");
                    }
                    self.open.insert(key, opened);
                }
                Err(error) => {
                    let error = error.to_string();
                    if self.failed.get(&key) != Some(&error) {
                        new_failures.push(format!("cannot listen on {key}: {error}"));
                    }
                    self.failed.insert(key, error);
                }
            }
        }
        for failure in new_failures.iter().take(FAILURES_NAMED) {
            tracing::warn!("proxy: {failure} (retrying every {}s)", RETRY_BINDS.as_secs());
        }
        if new_failures.len() > FAILURES_NAMED {
            let more = new_failures.len() - FAILURES_NAMED;
            tracing::warn!("proxy: cannot listen on {more} more ports either (retrying)");
        }
    }

    pub(super) fn any_failed(&self) -> bool {
        !self.failed.is_empty()
    }

    /// Where the open sockets listen, sorted.
    pub(super) fn addresses(&self) -> Vec<(Transport, SocketAddr)> {
        let mut addresses: Vec<_> =
            self.open.iter().map(|(key, (address, _))| (key.transport, *address)).collect();
        addresses.sort();
        addresses
    }
}

/// A task aborted when this is dropped: a listener's socket closes with its task.
pub(super) struct AbortOnDrop(pub(super) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn open(key: ListenKey, shared: &Arc<Shared>) -> io::Result<(SocketAddr, AbortOnDrop)> {
    let socket = bind(key)?;
    let address = socket.local_addr()?.as_socket().unwrap_or(SocketAddr::new(
        key.address.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        key.port,
    ));
    let shared = Arc::clone(shared);
    let task = match key.transport {
        Transport::Tcp => {
            socket.listen(BACKLOG)?;
            let listener = TcpListener::from_std(socket.into())?;
            tokio::spawn(accept_loop(listener, key, shared))
        }
        Transport::Udp => {
            let socket = tokio::net::UdpSocket::from_std(socket.into())?;
            tokio::spawn(udp::serve(socket, shared))
        }
    };
    Ok((address, AbortOnDrop(task)))
}

/// A non-blocking socket bound for `key`: the wildcard as one dual-stack IPv6 socket, or
/// IPv4 alone on a host without IPv6.
fn bind(key: ListenKey) -> io::Result<Socket> {
    let specific = |address: IpAddr| bind_one(key.transport, SocketAddr::new(address, key.port));
    match key.address {
        Some(address) => specific(address),
        None => match specific(IpAddr::V6(Ipv6Addr::UNSPECIFIED)) {
            Err(error)
                if matches!(
                    error.raw_os_error(),
                    Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
                ) =>
            {
                specific(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            }
            other => other,
        },
    }
}

fn bind_one(transport: Transport, address: SocketAddr) -> io::Result<Socket> {
    let kind = match transport {
        Transport::Tcp => Type::STREAM,
        Transport::Udp => Type::DGRAM,
    };
    let socket = Socket::new(Domain::for_address(address), kind.cloexec(), None)?;
    if address.is_ipv6() && address.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    if transport == Transport::Tcp {
        // A restarted daemon must not wait for its old connections' TIME_WAIT to listen.
        socket.set_reuse_address(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    Ok(socket)
}

/// Accepts connections on `listener` until the task is aborted.
async fn accept_loop(listener: TcpListener, key: ListenKey, shared: Arc<Shared>) {
    let mut backoff = ACCEPT_BACKOFF_FIRST;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) if lacks_resources(&error) => {
                if let Some(count) = shared.warnings.accept_failed.allow() {
                    tracing::warn!(
                        "proxy: accepting on {key} failed: {error}; pausing{}",
                        left_out(count)
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MOST);
                continue;
            }
            Err(error) => {
                // A connection reset before it was accepted, mostly: its own problem.
                tracing::debug!("proxy: accepting on {key} failed: {error}");
                continue;
            }
        };
        backoff = ACCEPT_BACKOFF_FIRST;
        let admitted = match shared.admission.admit() {
            Ok(admitted) => admitted,
            Err(Refused::AtConnectionLimit) => {
                if let Some(count) = shared.warnings.at_limit.allow() {
                    tracing::warn!(
                        "proxy: {} connections open, the most allowed: refusing new ones{}",
                        shared.limits.max_connections,
                        left_out(count)
                    );
                }
                // A reset, not a FIN: nothing of it lingers here in TIME_WAIT.
                let _ = stream.set_zero_linger();
                continue;
            }
        };
        if admitted.choosing.pushed_out_another
            && let Some(count) = shared.warnings.pushed_out.allow()
        {
            tracing::warn!(
                "proxy: {} connections still sending their first bytes: closing the oldest{}",
                shared.limits.max_choosing,
                left_out(count)
            );
        }
        let canonical =
            |address: SocketAddr| SocketAddr::new(address.ip().to_canonical(), address.port());
        let local = match stream.local_addr() {
            Ok(local) => canonical(local),
            Err(error) => {
                tracing::debug!("proxy: a connection on {key} is gone already: {error}");
                continue;
            }
        };
        tokio::spawn(serve(stream, canonical(peer), local, admitted, Arc::clone(&shared)));
    }
}

/// Whether an accept failed for want of descriptors or memory, which lasts.
fn lacks_resources(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::forward::{Forward, SelectorArgs};

    fn forward(protocol: &str, ports: &str, listen: Option<&str>, name: Option<&str>) -> Forward {
        let args = SelectorArgs {
            protocol,
            ports,
            listen,
            sni: name.filter(|_| protocol == "tls"),
            host: name.filter(|_| protocol == "http"),
            default: name.is_none() && matches!(protocol, "tls" | "http"),
        };
        Forward::parse(&args, "10.0.0.2").unwrap()
    }

    fn key(transport: Transport, address: Option<&str>, port: u16) -> ListenKey {
        ListenKey { transport, address: address.map(|text| text.parse().unwrap()), port }
    }

    #[test]
    fn name_routed_ports_always_and_port_forwards_only_when_carried() {
        let table = ForwardTable::from_forwards([
            forward("tls", "443", None, Some("a.example")),
            forward("tls", "443", None, Some("b.example")),
            forward("http", "80", Some("192.0.2.1"), None),
            forward("tcp", "8000-8002", None, None),
            forward("udp", "53", Some("192.0.2.1"), None),
        ])
        .unwrap();
        let names_only = wanted(&table, &ProxyLimits::default());
        assert_eq!(
            names_only.into_iter().collect::<Vec<_>>(),
            [key(Transport::Tcp, None, 443), key(Transport::Tcp, Some("192.0.2.1"), 80)]
        );
        let carrying = ProxyLimits {
            carry_tcp_forwards: true,
            carry_udp_forwards: true,
            ..ProxyLimits::default()
        };
        let all: Vec<_> = wanted(&table, &carrying).into_iter().collect();
        assert_eq!(
            all,
            [
                key(Transport::Tcp, None, 443),
                key(Transport::Tcp, None, 8000),
                key(Transport::Tcp, None, 8001),
                key(Transport::Tcp, None, 8002),
                key(Transport::Tcp, Some("192.0.2.1"), 80),
                key(Transport::Udp, Some("192.0.2.1"), 53),
            ]
        );
    }

    #[test]
    fn a_wildcard_on_a_port_takes_over_its_specific_addresses() {
        let table = ForwardTable::from_forwards([
            forward("tls", "443", Some("192.0.2.1"), Some("a.example")),
            forward("tls", "443", Some("192.0.2.2"), Some("a.example")),
            forward("tls", "443", None, Some("b.example")),
            forward("tls", "8443", Some("192.0.2.1"), Some("a.example")),
        ])
        .unwrap();
        let keys: Vec<_> = wanted(&table, &ProxyLimits::default()).into_iter().collect();
        assert_eq!(
            keys,
            [key(Transport::Tcp, None, 443), key(Transport::Tcp, Some("192.0.2.1"), 8443)]
        );
    }
}
