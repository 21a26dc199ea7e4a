//! One network, run from the VPS: the controller's model of it.
//!
//! - [`name`]: member and network names (DNS labels).
//! - [`addressing`]: the network's addresses (a ULA /40, a /56 per controller, member
//!   addresses derived from names and collision-checked, an IPv4 pool).
//! - [`controller`]: the controller: invitations, enrollment, removal, the signed map, its
//!   interface's peers.
//! - [`dns`]: the network's names (`member.network`), served with Hickory DNS.
//! - [`invite`]: invitations (the token `invite` prints and `join` reads).
//! - [`map`]: the network map (signed, versioned) and the peers it gives each machine.
//! - [`membership`]: what a member keeps of its network (saved: it restarts without a
//!   controller).
//! - [`peers`]: an interface's network-managed peers kept in step, as one `wg set` update.
//! - [`store`]: the controller's state in SQLite, behind one interface, with migrations.

pub mod addressing;
pub mod api;
pub mod controller;
pub mod dns;
pub mod invite;
pub mod map;
pub mod membership;
pub mod name;
pub mod peers;
pub mod store;
