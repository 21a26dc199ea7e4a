//! Folding in what the eBPF data plane did on a peer's behalf, so the timers, rekeying and
//! counters are what they would be had the daemon carried every packet itself.

use std::net::SocketAddr;
use std::time::Instant;

use super::Device;
use crate::wg::PeerId;

/// What the data plane observed for one peer since the last report. Times are when it
/// happened (converted from the programs' monotonic nanoseconds), only those newer than the
/// previous report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ObservedActivity {
    /// Last authenticated packet of any kind, each direction.
    pub received: Option<Instant>,
    pub sent: Option<Instant>,
    /// Last data packet (non-empty plaintext), each direction.
    pub data_received: Option<Instant>,
    pub data_sent: Option<Instant>,
    /// The endpoint the programs roamed to, if they did.
    pub roamed_to: Option<SocketAddr>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    // Within one instant: what was received is processed before what was sent in reply.
    Received,
    DataReceived,
    Sent,
    DataSent,
}

impl Device {
    /// Applies the timer hooks the kernel would have run for these packets, in time order,
    /// then its key-freshness checks.
    pub fn absorb_activity(&mut self, id: PeerId, seen: ObservedActivity, now: Instant) {
        if let Some(addr) = seen.roamed_to {
            let local = self.peers.get(&id).and_then(|p| p.endpoint).and_then(|e| e.local);
            self.set_endpoint_from_packet(id, crate::wg::peer::Endpoint { addr, local });
        }
        let mut steps: Vec<(Instant, Step)> = [
            seen.received.map(|t| (t, Step::Received)),
            seen.data_received.map(|t| (t, Step::DataReceived)),
            seen.sent.map(|t| (t, Step::Sent)),
            seen.data_sent.map(|t| (t, Step::DataSent)),
        ]
        .into_iter()
        .flatten()
        .collect();
        if steps.is_empty() {
            return;
        }
        steps.sort();
        for (at, step) in &steps {
            let Some(peer) = self.peers.get_mut(&id) else { return };
            match step {
                Step::Received => {
                    peer.timers.on_any_authenticated_packet_received();
                    peer.timers.on_any_authenticated_packet_traversal(*at);
                }
                Step::DataReceived => peer.timers.on_data_received(*at),
                Step::Sent => {
                    peer.timers.on_any_authenticated_packet_traversal(*at);
                    peer.timers.on_any_authenticated_packet_sent();
                }
                Step::DataSent => peer.timers.on_data_sent(*at, &mut *self.rng),
            }
        }
        if seen.sent.is_some() {
            self.keep_key_fresh_after_sending(id, now);
        }
        if seen.received.is_some() {
            self.keep_key_fresh_after_receiving(id, now);
        }
        self.schedule(id);
    }
}
