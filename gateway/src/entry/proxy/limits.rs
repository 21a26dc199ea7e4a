//! What the proxy lets connections cost, and the admission of new ones under those bounds.
//!
//! Every accepted connection holds one of [`ProxyLimits::max_connections`] permits until it
//! ends; beyond that, new connections are closed as soon as they are accepted, so a flood
//! costs an accept and a close each and never touches established relays. Connections still
//! choosing a backend (their first bytes not all in yet) are also counted apart, at most
//! [`ProxyLimits::max_choosing`]: when a new one would exceed that, the *oldest* one is
//! closed. A slowloris client holds its place for at most the first-bytes timeout, and a
//! flood of silent connections pushes out its own oldest members, while a real client, which
//! sends its hello at once, is through long before it would become the oldest.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// The proxy's bounds and options. `Default` gives values for a public host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyLimits {
    /// Connections open at once, relayed or still choosing; more are closed on accept.
    pub max_connections: usize,
    /// Connections whose first bytes are not all in; a new one beyond this closes the oldest.
    pub max_choosing: usize,
    /// How long a tls or http client has, from its accept, to send its whole ClientHello or
    /// header block.
    pub first_bytes_timeout: Duration,
    /// How long connecting to a backend may take.
    pub connect_timeout: Duration,
    /// A relay in which neither side has sent a byte for this long is closed.
    pub idle_timeout: Duration,
    /// How long after a connection's sockets are closed its steering is released: the
    /// closing handshake's last segments (a FIN's ACK, a retransmitted FIN) still need it.
    pub release_grace: Duration,
    /// Whether tcp forwards are relayed here too (when the eBPF forward program that
    /// translates them per packet is not available): a plain relay to
    /// [`Forward::target_port`](crate::entry::forward::Forward::target_port).
    pub carry_tcp_forwards: bool,
    /// Whether udp forwards are relayed here too (same reason): per client, a socket towards
    /// the backend, closed after [`ProxyLimits::udp_idle_timeout`] without traffic.
    pub carry_udp_forwards: bool,
    /// A udp client that has sent nothing and received nothing for this long is forgotten.
    pub udp_idle_timeout: Duration,
    /// udp clients relayed at once, over all udp forwards; a new one beyond this forgets the
    /// one idle the longest.
    pub max_udp_clients: usize,
}

impl Default for ProxyLimits {
    fn default() -> ProxyLimits {
        ProxyLimits {
            max_connections: 4096,
            max_choosing: 256,
            first_bytes_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(3600),
            release_grace: Duration::from_secs(5),
            carry_tcp_forwards: false,
            carry_udp_forwards: false,
            // conntrack's timeout for udp flows that saw replies.
            udp_idle_timeout: Duration::from_secs(180),
            max_udp_clients: 4096,
        }
    }
}

/// Descriptors one relayed tcp connection holds: its two sockets and a pipe (two ends) per
/// direction.
const DESCRIPTORS_PER_CONNECTION: u64 = 6;
/// Descriptors left for the rest of the daemon.
const DESCRIPTORS_SPARE: u64 = 1024;

/// Raises this process's soft limit on open descriptors, up to its hard limit, to what
/// `limits` may use: services start with a soft limit of 1024, which would stop the proxy at
/// some 170 connections. Says so in one line when the hard limit is lower than needed.
pub(super) fn raise_descriptor_limit(limits: &ProxyLimits) {
    let connections = u64::try_from(limits.max_connections).unwrap_or(u64::MAX);
    let udp = if limits.carry_udp_forwards {
        u64::try_from(limits.max_udp_clients).unwrap_or(u64::MAX)
    } else {
        0
    };
    let needed = connections
        .saturating_mul(DESCRIPTORS_PER_CONNECTION)
        .saturating_add(udp)
        .saturating_add(DESCRIPTORS_SPARE);
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit, which `limit` is.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur >= needed {
        return;
    }
    let raised = libc::rlimit { rlim_cur: needed.min(limit.rlim_max), rlim_max: limit.rlim_max };
    // SAFETY: setrlimit reads one rlimit, which `raised` is.
    if raised.rlim_cur > limit.rlim_cur
        && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0
    {
        return;
    }
    if raised.rlim_cur < needed {
        tracing::warn!(
            "proxy: open descriptors are limited to {} ({needed} wanted for {} connections): \
             raise LimitNOFILE",
            raised.rlim_cur,
            limits.max_connections
        );
    }
}

/// The permits of open connections and the list of those still choosing.
pub(super) struct Admission {
    connections: Arc<Semaphore>,
    choosing: Arc<Mutex<Choosing>>,
}

struct Choosing {
    max: usize,
    next_id: u64,
    /// By admission order: the first entry is the oldest. Sending closes that connection.
    waiting: BTreeMap<u64, oneshot::Sender<()>>,
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    AtConnectionLimit,
}

/// An admitted connection's place; dropping it frees the place.
pub(super) struct Admitted {
    pub(super) permit: OwnedSemaphorePermit,
    pub(super) choosing: ChoosingTicket,
}

/// A connection's place among those choosing, until it is dropped (its backend is chosen,
/// or it failed).
pub(super) struct ChoosingTicket {
    id: u64,
    closed: oneshot::Receiver<()>,
    choosing: Arc<Mutex<Choosing>>,
    /// Whether admitting this one closed the oldest (for the caller's log).
    pub(super) pushed_out_another: bool,
}

impl Admission {
    pub(super) fn new(limits: &ProxyLimits) -> Admission {
        Admission {
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            choosing: Arc::new(Mutex::new(Choosing {
                max: limits.max_choosing.max(1),
                next_id: 0,
                waiting: BTreeMap::new(),
            })),
        }
    }

    /// A place for a new connection, or why there is none.
    pub(super) fn admit(&self) -> Result<Admitted, Refused> {
        let permit = Arc::clone(&self.connections)
            .try_acquire_owned()
            .map_err(|_| Refused::AtConnectionLimit)?;
        let (close, closed) = oneshot::channel();
        let mut choosing = lock(&self.choosing);
        let mut pushed_out_another = false;
        if choosing.waiting.len() >= choosing.max
            && let Some((_, oldest)) = choosing.waiting.pop_first()
        {
            // It may have finished choosing meanwhile and be dropping its ticket: then the
            // send fails and nothing is lost.
            pushed_out_another = oldest.send(()).is_ok();
        }
        let id = choosing.next_id;
        choosing.next_id += 1;
        choosing.waiting.insert(id, close);
        drop(choosing);
        let choosing =
            ChoosingTicket { id, closed, choosing: Arc::clone(&self.choosing), pushed_out_another };
        Ok(Admitted { permit, choosing })
    }
}

impl ChoosingTicket {
    /// Resolves when a newer connection pushed this one out.
    pub(super) async fn pushed_out(&mut self) {
        // A dropped sender also means "no longer waiting": it was taken off the list.
        let _ = (&mut self.closed).await;
    }
}

impl Drop for ChoosingTicket {
    fn drop(&mut self) {
        lock(&self.choosing).waiting.remove(&self.id);
    }
}

/// The list is only ever changed in place by short critical sections that cannot panic, so a
/// poisoned lock still holds a consistent list.
fn lock(choosing: &Mutex<Choosing>) -> std::sync::MutexGuard<'_, Choosing> {
    choosing.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Waker};

    fn limits(max_connections: usize, max_choosing: usize) -> ProxyLimits {
        ProxyLimits { max_connections, max_choosing, ..ProxyLimits::default() }
    }

    fn is_pushed_out(ticket: &mut ChoosingTicket) -> bool {
        let mut future = pin!(ticket.pushed_out());
        future.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_ready()
    }

    #[test]
    fn connections_beyond_the_limit_are_refused_until_one_ends() {
        let admission = Admission::new(&limits(2, 10));
        let first = admission.admit().unwrap();
        let _second = admission.admit().unwrap();
        assert_eq!(admission.admit().err(), Some(Refused::AtConnectionLimit));
        drop(first);
        assert!(admission.admit().is_ok());
    }

    #[test]
    fn a_choosing_connection_beyond_the_limit_pushes_out_the_oldest() {
        let admission = Admission::new(&limits(10, 2));
        let mut oldest = admission.admit().unwrap();
        let mut middle = admission.admit().unwrap();
        assert!(!oldest.choosing.pushed_out_another);
        assert!(!is_pushed_out(&mut oldest.choosing));
        let mut newest = admission.admit().unwrap();
        assert!(newest.choosing.pushed_out_another);
        assert!(is_pushed_out(&mut oldest.choosing));
        assert!(!is_pushed_out(&mut middle.choosing));
        assert!(!is_pushed_out(&mut newest.choosing));
    }

    #[test]
    fn a_connection_done_choosing_leaves_room_and_is_never_pushed_out() {
        let admission = Admission::new(&limits(10, 2));
        let done = admission.admit().unwrap();
        let Admitted { permit: still_open, choosing } = done;
        drop(choosing); // its backend is chosen: it is relaying
        let mut second = admission.admit().unwrap();
        let third = admission.admit().unwrap();
        assert!(!third.choosing.pushed_out_another);
        assert!(!is_pushed_out(&mut second.choosing));
        drop(still_open);
    }
}
