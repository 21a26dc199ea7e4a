//! The network-namespace harness the integration tests (`tests/tests/*.rs`) are built on.
//!
//! - [`Netns`]: uniquely named namespaces, deleted on drop; links, addresses, routes, sysctls and
//!   nftables inside them. A process-wide guard removes them on Ctrl-C too ([`cleanup_stale`]
//!   covers SIGKILL).
//! - [`Process`] and [`TestDir`]: daemons inside namespaces with their output in a per-test
//!   folder, stopped on drop; [`wait_for`] with errors that say what was last seen.
//! - [`wg`]: wireguard-go and boringtun peers, keys, `wg show dump`.
//! - [`traffic`]: ping, iperf3, ncat echo, the test's own UDP sockets, packet capture.
//! - `gatewayd` (feature `dataplane`): our daemon with its options, its status socket parsed, eBPF counters, the
//!   BPF links it holds and what it left behind; `xdp_pass` for veth ends.
//! - `forward` (feature `dataplane`): `gateway forward` as the operator runs it on the VPS.
//! - `pair` (feature `dataplane`): gatewayd and a reference peer joined by one tunnel, either side initiating.
//! - [`topology`]: the shapes the tests share ([`topology::Direct`], [`topology::Hub`],
//!   [`topology::Entry`]).
//! - [`entry_baseline`]: the public entry point as people build it today (nftables DNAT,
//!   connmark policy routing, nginx `ssl_preread`), to test and benchmark gatewayd against.
//! - `ebpf` (feature `dataplane`, on by default): what the eBPF program tests and the
//!   per-program benchmark share.
//!
//! Everything here needs root and the tools `cargo xtask setup` installs; what is missing is
//! reported as an error naming it.
//!
//! The gatewayd tests (each eBPF on and with `--no-ebpf`; about two minutes together):
//! `interop` (wireguard-go and boringtun, either side initiating, IPv4/IPv6 underlays, ping,
//! TCP, UDP), `rekey` (by time under the test timer divisor, by private-key changes),
//! `endpoints` (roaming, persistent keepalive through an expiring NAT), `hub` (XDP, stack and
//! userspace forwarding), `differential` (eBPF and userspace indistinguishable from outside),
//! `wg_quick`, `gateway_up` (`gateway up`/`down` from a wg-quick file), `bad_input`,
//! `robustness` (malformed, replayed and forged datagrams) and `clean_exit`; `entry` (the
//! public entry point: `gateway forward` from an internet client to the home LAN, and the
//! same done with nftables and nginx).

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
pub mod entry_baseline;
#[cfg(feature = "dataplane")]
pub mod forward;
#[cfg(feature = "dataplane")]
pub mod gatewayd;
#[cfg(feature = "dataplane")]
pub mod pair;
pub mod topology;
pub mod traffic;
pub mod wg;

pub use guard::cleanup_stale;
pub use names::{IFNAME_MAX_LEN, NAME_PREFIX, unique_ifname};
pub use netns::{Entered, Netns, list_namespaces};
pub use process::Process;
pub use require::{find_binary, require_root, require_tools};
pub use test_dir::{KEEP_ENV, TestDir};
pub use wait::{Probe, wait_for};
