//! What each forward carried through the proxy: connections (for a udp forward, clients) and
//! bytes each way, by forward. The metrics endpoint exports them
//! (`gateway_forward_connections_total`, `gateway_forward_bytes_total`).
//!
//! Each forward's counters are atomics the proxy's tasks add to as bytes pass, looked up once
//! per connection; counts outlive their forward until the daemon stops, so that counters never
//! go backwards while it runs (a forward added again with the same selector goes on from its
//! old counts).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::forward::Selector;

/// One forward's counters, shared by the connections it carries.
#[derive(Debug, Default)]
pub struct ForwardCounters {
    connections: AtomicU64,
    bytes_to_backend: AtomicU64,
    bytes_to_client: AtomicU64,
}

impl ForwardCounters {
    /// A connection accepted and connected to its backend; for udp, a client given a flow.
    pub fn connected(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes (transport payload) passed from a client to the backend.
    pub fn to_backend(&self, bytes: u64) {
        self.bytes_to_backend.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes (transport payload) passed from the backend back to a client.
    pub fn to_client(&self, bytes: u64) {
        self.bytes_to_client.fetch_add(bytes, Ordering::Relaxed);
    }

    fn count(&self) -> TrafficCount {
        TrafficCount {
            connections: self.connections.load(Ordering::Relaxed),
            bytes_to_backend: self.bytes_to_backend.load(Ordering::Relaxed),
            bytes_to_client: self.bytes_to_client.load(Ordering::Relaxed),
        }
    }
}

/// One forward's traffic at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficCount {
    pub connections: u64,
    pub bytes_to_backend: u64,
    pub bytes_to_client: u64,
}

/// Every forward's counters, shared by the proxy and the status snapshot.
#[derive(Debug, Default)]
pub struct ForwardTraffic {
    by_forward: Mutex<HashMap<Selector, Arc<ForwardCounters>>>,
}

impl ForwardTraffic {
    /// The counters of `forward`, created at its first connection.
    pub fn of(&self, forward: &Selector) -> Arc<ForwardCounters> {
        let mut by_forward = self.by_forward.lock().unwrap_or_else(|poison| poison.into_inner());
        if let Some(counters) = by_forward.get(forward) {
            return Arc::clone(counters);
        }
        Arc::clone(by_forward.entry(forward.clone()).or_default())
    }

    /// Every forward that has had a connection, in the order of their selectors' text.
    pub fn snapshot(&self) -> Vec<(Selector, TrafficCount)> {
        let by_forward = self.by_forward.lock().unwrap_or_else(|poison| poison.into_inner());
        let mut all: Vec<_> = by_forward.iter().map(|(k, v)| (k.clone(), v.count())).collect();
        all.sort_by_cached_key(|(selector, _)| selector.to_string());
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::forward::SelectorArgs;

    fn selector(words: &str) -> Selector {
        Selector::parse(&SelectorArgs::from_words(words)).unwrap()
    }

    #[test]
    fn counts_add_up_per_forward_across_lookups() {
        let traffic = ForwardTraffic::default();
        let (web, ssh) = (selector("tls 443 --sni a.example"), selector("tcp 2222"));
        let first = traffic.of(&web);
        first.connected();
        first.to_backend(100);
        let second = traffic.of(&web);
        second.connected();
        second.to_client(2000);
        traffic.of(&ssh).connected();
        let snapshot = traffic.snapshot();
        assert_eq!(snapshot.len(), 2);
        let count = |s: &Selector| snapshot.iter().find(|(k, _)| k == s).unwrap().1;
        assert_eq!(
            count(&web),
            TrafficCount { connections: 2, bytes_to_backend: 100, bytes_to_client: 2000 }
        );
        assert_eq!(count(&ssh), TrafficCount { connections: 1, ..TrafficCount::default() });
    }
}
