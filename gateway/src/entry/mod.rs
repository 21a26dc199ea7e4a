//! The public entry point: forwards from the host's public addresses to hosts behind the
//! tunnel, the clients' own addresses preserved.
//!
//! This layer is the model and the parsers, without I/O besides the store's one file:
//!
//! - [`name`]: host names and the patterns tls and http forwards select by (exact,
//!   `*.suffix`, the default).
//! - [`forward`]: one forward, parsed from `gateway forward add`/`remove` arguments, with one
//!   line naming the problem when they are wrong.
//! - [`table`]: an interface's forwards: adding without overlaps, removing, listing, and the
//!   lookups the data paths need (a port to its tcp/udp forward; a tls/http connection's name
//!   to its backend).

pub mod forward;
pub mod http;
pub mod name;
pub mod table;
pub mod tls;
