//! The flows the proxy has told the steering about: live ones, and closed ones in their
//! release grace.
//!
//! A closed flow stays steered for [`ProxyLimits::release_grace`](super::ProxyLimits) so the
//! last segments of its closing handshake are still rewritten. Meanwhile the kernel may give
//! its local port to a new connection, or its client may come back from the same port to the
//! same backend: the new flow then has the same map keys as the old one, and a late release
//! of the old one would remove the new one's steering. So every steer goes through here, and
//! before a new flow is steered, any flow in its grace that shares a key with it is released
//! first: per key, the steering sees steer, release, steer, release, in that order.
//!
//! Any flow that shares a key with a new one is released first, live or not: a flow whose
//! socket has just closed but whose [`SteeredFlow`] is not dropped yet (another thread may
//! bind the port in between) is live here, and its release must come first all the same; its
//! [`SteeredFlow`] then finds nothing left to do. Dropping the [`SteeredFlow`] before the
//! sockets keeps the grace whole.
//!
//! A live flow with the same client and backend as a new one cannot be told apart from it
//! by the backend (one 4-tuple, two connections): the new one is refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{FlowSteering, ProxiedFlow};
use crate::entry::forward::Transport;

pub(super) struct Flows {
    steering: Arc<dyn FlowSteering>,
    grace: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    entries: HashMap<u64, Entry>,
    /// The proxy's side of each flow.
    by_local: HashMap<(Transport, SocketAddr), u64>,
    /// Each flow's client and backend.
    by_pair: HashMap<(Transport, SocketAddr, SocketAddr), u64>,
}

struct Entry {
    release: Release,
    live: bool,
}

/// The release itself, in its own drop: wherever an entry ends (removed, or dropped with the
/// registry when the runtime that would have ended its grace is gone), its flow is released,
/// and only once.
struct Release {
    flow: ProxiedFlow,
    steering: Arc<dyn FlowSteering>,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.steering.release(&self.flow);
    }
}

/// Why a flow was not steered.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SteerError {
    /// A live flow has the same client and backend.
    SamePair,
    /// The steering refused it, saying why.
    Refused(String),
}

impl std::fmt::Display for SteerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SteerError::SamePair => {
                f.write_str("the client has a connection from the same port to it already")
            }
            SteerError::Refused(why) => write!(f, "its flow cannot be steered: {why}"),
        }
    }
}

/// A live steered flow; dropping it starts its grace (drop it before its sockets: the grace
/// is for what they send while closing).
pub(super) struct SteeredFlow {
    id: u64,
    flows: Arc<Flows>,
}

impl Drop for SteeredFlow {
    fn drop(&mut self) {
        self.flows.end(self.id);
    }
}

impl Flows {
    pub(super) fn new(steering: Arc<dyn FlowSteering>, grace: Duration) -> Flows {
        Flows { steering, grace, inner: Mutex::new(Inner::default()) }
    }

    /// Steers `flow`, after releasing the flows in their grace it shares a key with.
    pub(super) fn steer(self: &Arc<Self>, flow: ProxiedFlow) -> Result<SteeredFlow, SteerError> {
        let (local, pair) = keys(&flow);
        let mut inner = self.lock();
        if let Some(id) = inner.by_pair.get(&pair)
            && inner.entries.get(id).is_some_and(|entry| entry.live)
        {
            return Err(SteerError::SamePair);
        }
        for key in [inner.by_local.get(&local).copied(), inner.by_pair.get(&pair).copied()] {
            drop(key.and_then(|id| inner.remove(id)));
        }
        self.steering.steer(&flow).map_err(SteerError::Refused)?;
        let id = inner.next_id;
        inner.next_id += 1;
        let release = Release { flow, steering: Arc::clone(&self.steering) };
        inner.entries.insert(id, Entry { release, live: true });
        inner.by_local.insert(local, id);
        inner.by_pair.insert(pair, id);
        Ok(SteeredFlow { id, flows: Arc::clone(self) })
    }

    /// Starts flow `id`'s grace; it is released when the grace ends.
    fn end(self: &Arc<Self>, id: u64) {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(&id) else {
            return; // released already, for a newer flow sharing a key with it
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if !self.grace.is_zero() => {
                entry.live = false;
                drop(inner);
                let (flows, grace) = (Arc::clone(self), self.grace);
                runtime.spawn(async move {
                    tokio::time::sleep(grace).await;
                    let released = flows.lock().remove(id);
                    drop(released);
                });
            }
            _ => drop(inner.remove(id)),
        }
    }

    /// The entries stay consistent through any panic (each change is one insert or remove),
    /// so a poisoned lock is still good.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    /// Forgets flow `id`; its release, to drop (which releases it), if it was there.
    fn remove(&mut self, id: u64) -> Option<Release> {
        let entry = self.entries.remove(&id)?;
        let (local, pair) = keys(&entry.release.flow);
        if self.by_local.get(&local) == Some(&id) {
            self.by_local.remove(&local);
        }
        if self.by_pair.get(&pair) == Some(&id) {
            self.by_pair.remove(&pair);
        }
        Some(entry.release)
    }
}

type LocalKey = (Transport, SocketAddr);
type PairKey = (Transport, SocketAddr, SocketAddr);

fn keys(flow: &ProxiedFlow) -> (LocalKey, PairKey) {
    ((flow.transport, flow.local), (flow.transport, flow.client, flow.backend))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Log {
        events: Mutex<Vec<String>>,
        refuse: bool,
    }

    impl FlowSteering for Log {
        fn steer(&self, flow: &ProxiedFlow) -> Result<(), String> {
            self.events.lock().unwrap().push(format!("steer {}", flow.local));
            if self.refuse { Err("no room".to_string()) } else { Ok(()) }
        }

        fn release(&self, flow: &ProxiedFlow) {
            self.events.lock().unwrap().push(format!("release {}", flow.local));
        }
    }

    impl Log {
        fn events(&self) -> Vec<String> {
            self.events.lock().unwrap().clone()
        }
    }

    fn flow(client: &str, local: &str) -> ProxiedFlow {
        ProxiedFlow {
            client: client.parse().unwrap(),
            local: local.parse().unwrap(),
            backend: "10.0.0.2:443".parse().unwrap(),
            transport: Transport::Tcp,
        }
    }

    fn flows(grace: Duration) -> (Arc<Log>, Arc<Flows>) {
        let log = Arc::new(Log::default());
        (Arc::clone(&log), Arc::new(Flows::new(log, grace)))
    }

    #[test]
    fn without_grace_a_flow_is_released_once_when_dropped() {
        let (log, flows) = flows(Duration::ZERO);
        let steered = flows.steer(flow("192.0.2.7:40000", "10.0.0.1:50000")).unwrap();
        assert_eq!(log.events(), ["steer 10.0.0.1:50000"]);
        drop(steered);
        assert_eq!(log.events(), ["steer 10.0.0.1:50000", "release 10.0.0.1:50000"]);
        drop(flows);
        assert_eq!(log.events().len(), 2);
    }

    #[tokio::test]
    async fn a_flow_in_its_grace_is_released_before_a_new_one_on_its_port_is_steered() {
        let (log, flows) = flows(Duration::from_secs(3600));
        drop(flows.steer(flow("192.0.2.7:40000", "10.0.0.1:50000")).unwrap());
        assert_eq!(log.events(), ["steer 10.0.0.1:50000"], "released before its grace");
        let _new = flows.steer(flow("192.0.2.8:40000", "10.0.0.1:50000")).unwrap();
        assert_eq!(
            log.events(),
            ["steer 10.0.0.1:50000", "release 10.0.0.1:50000", "steer 10.0.0.1:50000"]
        );
    }

    #[tokio::test]
    async fn a_client_back_from_the_same_port_ends_the_grace_of_its_old_flow() {
        let (log, flows) = flows(Duration::from_secs(3600));
        drop(flows.steer(flow("192.0.2.7:40000", "10.0.0.1:50000")).unwrap());
        let _again = flows.steer(flow("192.0.2.7:40000", "10.0.0.1:50001")).unwrap();
        assert_eq!(
            log.events(),
            ["steer 10.0.0.1:50000", "release 10.0.0.1:50000", "steer 10.0.0.1:50001"]
        );
    }

    #[test]
    fn a_live_flow_of_the_same_client_and_backend_refuses_a_new_one() {
        let (log, flows) = flows(Duration::ZERO);
        let _live = flows.steer(flow("192.0.2.7:40000", "10.0.0.1:50000")).unwrap();
        let second = flows.steer(flow("192.0.2.7:40000", "10.0.0.1:50001"));
        assert_eq!(second.err(), Some(SteerError::SamePair));
        assert_eq!(log.events(), ["steer 10.0.0.1:50000"]);
    }

    #[test]
    fn a_refused_flow_is_never_released() {
        let log = Arc::new(Log { refuse: true, ..Log::default() });
        let flows = Arc::new(Flows::new(Arc::clone(&log) as Arc<dyn FlowSteering>, Duration::ZERO));
        let refused = flows.steer(flow("192.0.2.7:40000", "10.0.0.1:50000"));
        assert_eq!(refused.err(), Some(SteerError::Refused("no room".to_string())));
        drop(flows);
        assert_eq!(log.events(), ["steer 10.0.0.1:50000"]);
    }

    #[tokio::test]
    async fn the_grace_ends_with_one_release() {
        let (log, flows) = flows(Duration::from_millis(50));
        drop(flows.steer(flow("192.0.2.7:40000", "10.0.0.1:50000")).unwrap());
        tokio::time::timeout(Duration::from_secs(10), async {
            while log.events().len() < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(log.events(), ["steer 10.0.0.1:50000", "release 10.0.0.1:50000"]);
    }

    #[test]
    fn a_grace_pending_when_the_runtime_stops_still_releases_once() {
        let (log, flows) = flows(Duration::from_secs(3600));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            drop(flows.steer(flow("192.0.2.7:40000", "10.0.0.1:50000")).unwrap());
        });
        drop(runtime);
        assert_eq!(log.events().len(), 1, "released before its grace");
        drop(flows);
        assert_eq!(log.events(), ["steer 10.0.0.1:50000", "release 10.0.0.1:50000"]);
    }
}
