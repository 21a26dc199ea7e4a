//! WireGuard as a sans-IO state machine: datagrams, TUN packets and time in; datagrams, TUN
//! packets and events out. Nothing here touches a socket or reads a clock.

pub mod cookie;
pub mod crypto;
pub mod messages;
pub mod noise;
pub mod ratelimiter;
pub mod tai64n;

#[cfg(test)]
mod interop_tests;
