//! The eBPF data plane from userspace: loading the programs (gateway-ebpf, embedded at build
//! time), attaching them, and mirroring the control plane's sessions, peers and AllowedIPs
//! into their maps. The map layouts are the contract in `gateway_common::maps`.
//!
//! A daemon typically does:
//! 1. `Dataplane::load(Capacities::default())`
//! 2. `set_config(&TunnelConfig { tun_ifindex, tun_mtu, listen_port, .. })`
//! 3. `attach_tunnel(tun, TunnelSends::Batched)`, `attach_underlay(iface, AttachPreference::Native)` for each
//!    underlay (see `underlay_interfaces`), `attach_lan(iface)` for LAN interfaces
//! 4. per peer: `add_peer`, `set_allowed_ips`, `set_peer_endpoint`
//! 5. per handshake: `publish_session`, then `set_peer_tx_session` to send with it; when a
//!    keypair is dropped: `retire_session`
//! 6. on its timer tick: `peer_activity` and `peer_endpoint` (roaming), `stats`
//!
//! The daemon's own (userspace) path must take send nonces and accept received counters on
//! the shared words of `session_counters`, so each is used once whichever path carried it.

mod allowed_ips;
mod attach;
mod clock;
mod config;
mod error;
mod loader;
mod mirror_ops;
mod mmap;
mod netdev;
mod netlink;
mod peers;
mod programs;
mod session_pool;
mod sessions;
mod slots;
mod stats;
mod test_run;
mod underlay;
mod verifier;

pub use attach::{AttachMode, AttachPreference, Interface, TunnelSends};
pub use clock::{instant_to_monotonic_ns, monotonic_now_ns, monotonic_ns_to_instant};
pub use config::TunnelConfig;
pub use error::{DataplaneError, Result};
pub use loader::{Capacities, Dataplane};
pub use mmap::MappedArray;
pub use netdev::{TxChecksum, gso_max_segs, tx_checksum};
pub use peers::{PeerActivitySnapshot, PeerEndpoint, PeerSlot};
pub use programs::Program;
#[cfg(test)]
pub(crate) use session_pool::HeapRegion;
pub use session_pool::{SlotPool, SlotRegion};
pub use sessions::{SessionEntry, SessionParams, SessionSlot, SessionState, SessionUse};
pub use stats::Stats;
pub use test_run::{TestRunInput, TestRunOutput};
pub use underlay::{route_interface, underlay_interfaces};
pub use verifier::{INSTRUCTION_BUDGET, INSTRUCTION_LIMIT, ProgramReport, Verdict};
