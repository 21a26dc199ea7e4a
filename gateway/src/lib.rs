//! gatewayd: a WireGuard gateway whose data path runs in eBPF. See docs/ARCHITECTURE.md.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod entry;
pub mod metrics;
pub mod mirror;
pub mod network;
pub mod quick;
pub mod tun;
pub mod uapi;
pub mod wg;
