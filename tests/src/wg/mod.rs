//! Reference WireGuard peers (wireguard-go, boringtun) driven through `wg`, keys, and `wg show
//! dump` parsed.

mod dump;
mod keys;
mod peer;

pub use dump::{PeerStatus, WgDump};
pub use keys::{KeyPair, generate_preshared_key};
pub use peer::{Implementation, UAPI_DIR, WgPeer};
