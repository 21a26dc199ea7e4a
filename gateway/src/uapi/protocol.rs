//! The UAPI text protocol, sans I/O: what `wg` sends to a userspace WireGuard over
//! `/var/run/wireguard/<ifname>.sock` and what it expects back.
//!
//! A request is `get=1` or `set=1` on its own line, then (for `set`) `key=value` lines, then a
//! blank line. A `get` reply lists the device and its peers as `key=value` lines; every reply
//! ends with `errno=N` and a blank line.
//!
//! A `set` is parsed and validated whole before anything is applied: the result is a
//! [`DeviceUpdate`] that keeps the order of operations, and a bad line yields the errno
//! wireguard-go would reply with and no update at all.

mod request;
mod response;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::SystemTime;

use ipnet::IpNet;

use super::key::Key;

pub use request::{Operation, SetParser, SetProgress, parse_request};
pub use response::{
    format_errno, format_get_response, format_set_request, parse_errno_reply, parse_get_response,
};

/// The value `protocol_version` has in both directions.
pub const PROTOCOL_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Get,
    Set(DeviceUpdate),
}

/// A validated `set` request. Apply it in this order: device fields (`replace_peers` removes
/// every peer before the peers below are applied), then each peer update in turn. As on the
/// kernel and wireguard-go, a new private key also removes any peer whose public key is the
/// device's new public key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceUpdate {
    /// Already clamped; the zero key means "remove the private key".
    pub private_key: Option<Key>,
    /// 0 means "choose a random port".
    pub listen_port: Option<u16>,
    /// 0 means "no fwmark".
    pub fwmark: Option<u32>,
    pub replace_peers: bool,
    /// In request order; the same public key may appear more than once.
    pub peers: Vec<PeerUpdate>,
}

/// The changes to one peer, from its `public_key` line to the next one.
///
/// Semantics (the kernel's, which wireguard-go reaches line by line):
/// - a peer whose public key is the device's own public key is ignored entirely;
/// - `remove`: the peer is removed (if it exists) and nothing else here applies;
/// - `update_only`: if the peer does not exist, nothing here applies (it is not created);
/// - otherwise the peer is created if needed, then the fields below are set and the allowed-IP
///   changes applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUpdate {
    pub public_key: Key,
    pub remove: bool,
    pub update_only: bool,
    /// The zero key means "no preshared key".
    pub preshared_key: Option<Key>,
    pub endpoint: Option<SocketAddr>,
    /// Seconds; 0 turns persistent keepalives off.
    pub persistent_keepalive_interval: Option<u16>,
    /// In request order. `replace_allowed_ips=true` is [`AllowedIpChange::RemoveAll`] at the
    /// position it appeared in, so that anything before it is undone exactly as on wireguard-go.
    pub allowed_ips: Vec<AllowedIpChange>,
}

impl PeerUpdate {
    pub fn new(public_key: Key) -> Self {
        PeerUpdate {
            public_key,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive_interval: None,
            allowed_ips: Vec::new(),
        }
    }

    /// Whether the request replaces (rather than adds to) the peer's allowed IPs.
    pub fn replaces_allowed_ips(&self) -> bool {
        self.allowed_ips.contains(&AllowedIpChange::RemoveAll)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedIpChange {
    /// `replace_allowed_ips=true`: remove every allowed IP of this peer.
    RemoveAll,
    /// `allowed_ip=prefix`: map the prefix (host bits masked) to this peer, taking it over
    /// from any other peer.
    Add(IpNet),
    /// `allowed_ip=-prefix` (wireguard-tools newer than 1.0.20210914): remove the prefix if,
    /// and only if, this peer owns it.
    Remove(IpNet),
}

/// What a `get` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceSnapshot {
    /// Not reported when absent or zero.
    pub private_key: Option<Key>,
    /// Not reported when 0 (not bound).
    pub listen_port: u16,
    /// Not reported when 0.
    pub fwmark: u32,
    pub peers: Vec<PeerSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSnapshot {
    pub public_key: Key,
    /// Reported as the zero key when absent, as wireguard-go does.
    pub preshared_key: Option<Key>,
    pub endpoint: Option<SocketAddr>,
    /// Reported as seconds and nanoseconds since the Unix epoch; `None` (never) as 0 and 0.
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub persistent_keepalive_interval: u16,
    /// In the order they are listed (the order they were added, for the kernel).
    pub allowed_ips: Vec<IpNet>,
}

impl PeerSnapshot {
    pub fn new(public_key: Key) -> Self {
        PeerSnapshot {
            public_key,
            preshared_key: None,
            endpoint: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            persistent_keepalive_interval: 0,
            allowed_ips: Vec::new(),
        }
    }
}
