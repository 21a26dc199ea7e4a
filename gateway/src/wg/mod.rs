//! WireGuard as a sans-IO state machine: datagrams, TUN packets and time in; datagrams, TUN
//! packets and events out. Nothing here touches a socket or reads a clock.

pub mod allowed_ips;
pub mod cookie;
pub mod crypto;
pub mod device;
pub mod index_table;
pub mod ip;
pub mod keypair;
pub mod messages;
pub mod mss;
pub mod noise;
pub mod peer;
pub mod projection;
pub mod ratelimiter;
pub mod session_memory;
pub mod tai64n;
pub mod timers;

#[cfg(test)]
mod interop_tests;

/// A peer's handle: also its slot in the data plane's `PEERS` map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);
