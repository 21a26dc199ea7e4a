//! The cross-platform userspace API that `wg` and `wg-quick` speak to userspace WireGuard
//! implementations over `/var/run/wireguard/<ifname>.sock` (wireguard.com/xplatform).
//!
//! - [`protocol`]: the text protocol, sans I/O (parse requests, format replies).
//! - [`server`]: the unix-socket server that drives a [`UapiHandler`].
//! - [`client`]: what `wg` does on the other end (`get`, `set`).

pub mod client;
pub mod error;
pub mod key;
mod listener;
pub mod protocol;
pub mod server;
mod values;

pub use error::{Section, UapiError, errno};
pub use key::{Key, KeyParseError};
pub use listener::{BindError, SOCKET_DIRECTORY, SocketFile, bind as bind_listener, socket_path};
pub use protocol::{
    AllowedIpChange, DeviceSnapshot, DeviceUpdate, PeerSnapshot, PeerUpdate, Request,
};
pub use server::{ServeEnd, UapiHandler, UapiServer};
