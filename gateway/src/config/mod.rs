//! Configuration files the operator writes, read and written without I/O.
//!
//! - [`file`], [`values`], [`load`]: gatewayd's own TOML file (`gatewayd --config`), one per
//!   interface: its schema, its checked values, and reading it into a [`load::GatewayConfig`]
//!   with errors naming file, line and field; [`write_back`] and [`atomic`]: the daemon's
//!   changes edited into it, keeping the operator's comments, replaced atomically.
//! - [`wg_quick`]: the wg-quick(8) INI format behind `gateway up` / `gateway down`: the keys
//!   wg-quick consumes itself (Address, DNS, MTU, Table, the hooks, SaveConfig) and the ones it
//!   hands to `wg setconf`, as one validated [`wg_quick::QuickConfig`].
//! - [`showconf`]: a device's live configuration in the `wg showconf` format (what SaveConfig
//!   writes back).
//! - [`routes`]: which routes, policy rules and firewall rules bringing an interface up needs,
//!   planned from its Table setting and its peers' AllowedIPs.

pub mod atomic;
pub mod file;
pub mod load;
pub mod routes;
pub mod showconf;
pub mod values;
pub mod wg_quick;
pub mod write_back;
