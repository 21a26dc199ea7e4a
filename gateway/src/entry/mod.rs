//! The public entry point: forwards from the host's public addresses to hosts behind the
//! tunnel (`gateway forward add/list/remove`), the clients' own addresses preserved.
//!
//! This layer is the model and the parsers, without I/O besides the store's one file:
//!
//! - [`name`]: host names and the patterns tls and http forwards select by (exact,
//!   `*.suffix`, the default).
//! - [`forward`]: one forward, parsed from `forward add`/`remove` arguments, with one line
//!   naming the problem when they are wrong. Its module documentation is the syntax.
//! - [`table`]: an interface's forwards: adding without overlaps, removing, listing, and the
//!   lookups traffic needs (a port to its tcp/udp forward; a tls/http connection's name to
//!   its backend).
//! - [`store`]: the table as a versioned JSON document, written atomically.
//! - [`tls`]: the server name of a ClientHello, from the first bytes of a connection.
//! - [`http`]: the host of an HTTP/1.x request, from the first bytes of a connection.
//! - [`traffic`]: what each forward carried through the proxy (connections, bytes).
//! - [`translate`]: the rewrite of proxied connections' packets (`PROXY_FLOWS` entries), for
//!   the packets the daemon carries itself.
//!
//! What comes next builds on these and changes none of them: the daemon keeps one table per
//! interface (loaded from its state directory at start, saved after every change the CLI asks
//! for over its control socket); tcp and udp forwards are translated per packet in XDP from
//! the table's port lookups, so the backend sees the client's address; a proxy listens on
//! the tls and http ports, feeds what it receives to [`tls::read_client_hello`] or
//! [`http::read_host`] under a timeout, asks [`table::ForwardTable::backend`] where to go,
//! and passes the connection through unchanged (the bytes read included).

pub mod forward;
pub mod http;
pub mod name;
pub mod proxy;
pub mod store;
pub mod table;
pub mod tls;
pub mod traffic;
pub mod translate;
