//! gatewayd: a WireGuard gateway whose data path runs in eBPF. See docs/ARCHITECTURE.md.

pub mod dataplane;
pub mod wg;
