//! The network-namespace harness the integration tests (`tests/tests/*.rs`) are built on.
//!
//! - [`Netns`]: uniquely named namespaces, deleted on drop; links, addresses, routes, sysctls and
//!   nftables inside them. A process-wide guard removes them on Ctrl-C too ([`cleanup_stale`]
//!   covers SIGKILL).
//! - [`Process`] and [`TestDir`]: daemons inside namespaces with their output in a per-test
//!   folder, stopped on drop; [`wait_for`] with errors that say what was last seen.
//! - [`wg`]: wireguard-go and boringtun peers, keys, `wg show dump`.
//! - [`traffic`]: ping, iperf3, ncat echo.
//! - [`topology`]: the shapes the tests share ([`topology::Direct`], [`topology::Hub`]).
//! - `ebpf` (feature `dataplane`, on by default): what the eBPF program tests and the
//!   per-program benchmark share.
//!
//! Everything here needs root and the tools `cargo xtask setup` installs; what is missing is
//! reported as an error naming it.

mod command;
mod guard;
mod names;
mod netns;
mod process;
mod require;
mod test_dir;
mod wait;

#[cfg(feature = "dataplane")]
pub mod ebpf;
pub mod topology;
pub mod traffic;
pub mod wg;

pub use guard::cleanup_stale;
pub use names::{IFNAME_MAX_LEN, NAME_PREFIX, unique_ifname};
pub use netns::{Netns, list_namespaces};
pub use process::Process;
pub use require::{find_binary, require_root, require_tools};
pub use test_dir::{KEEP_ENV, TestDir};
pub use wait::{Probe, wait_for};
