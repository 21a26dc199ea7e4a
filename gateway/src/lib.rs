//! gatewayd: a WireGuard gateway whose data path runs in eBPF. See docs/ARCHITECTURE.md.

pub mod daemon;
pub mod tun;
pub mod uapi;
pub mod wg;
