//! The gateway configuration file (`/etc/gateway/<ifname>.toml`): everything gatewayd owns
//! for one interface, as the operator writes it. `docs/CONFIG.md` describes every key.
//!
//! ```toml
//! [interface]
//! private_key_file = "/etc/gateway/wg0.key"
//! listen_port = 51820
//! addresses = ["10.8.0.1/24"]
//!
//! [dataplane]
//! xdp_mode = "native"
//!
//! [metrics]
//! listen = "127.0.0.1:9586"
//!
//! [[peer]]
//! name = "phone"
//! public_key = "…"
//! allowed_ips = ["10.8.0.2/32"]
//!
//! [[forward]]
//! protocol = "tcp"
//! ports = "2222"
//! to = "10.8.0.2:22"
//! ```
//!
//! Every table refuses keys it does not know (a misspelt key is an error, not a silent
//! default), and every value is checked as it is read (`values.rs`). What needs the whole
//! file (one private key, no peer twice, forwards that do not overlap, key files) is checked
//! by `load.rs`.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::values::{
    Base64Key, Endpoint, InterfaceName, MetricsAddress, Mtu, Prefix, RouteTable, XdpMode,
};
use crate::entry::store::ForwardRecord;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    pub interface: InterfaceSection,
    #[serde(default)]
    pub dataplane: DataplaneSection,
    /// Absent: no metrics endpoint.
    pub metrics: Option<MetricsSection>,
    #[serde(default, rename = "peer")]
    pub peers: Vec<Spanned<PeerSection>>,
    #[serde(default, rename = "forward")]
    pub forwards: Vec<Spanned<ForwardRecord>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSection {
    /// The private key itself; exclusive with `private_key_file`.
    pub private_key: Option<Spanned<Base64Key>>,
    /// A file holding the private key in base64 (as `wg genkey` writes it); relative paths are
    /// relative to the configuration file's folder.
    pub private_key_file: Option<Spanned<PathBuf>>,
    /// Absent or 0: a port of the kernel's choosing.
    pub listen_port: Option<u16>,
    pub fwmark: Option<u32>,
    #[serde(default)]
    pub addresses: Vec<Prefix>,
    /// Absent: derived from the route to the peers' endpoints, as wg-quick does.
    pub mtu: Option<Mtu>,
    /// Absent: `"auto"`.
    pub table: Option<Spanned<RouteTable>>,
    /// A wg-quick INI whose `[Interface]` PrivateKey/ListenPort/FwMark and `[Peer]`s are
    /// added to this file's.
    pub include: Option<Spanned<PathBuf>>,
}

/// The data-path options (gatewayd's command-line options of the same names).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneSection {
    /// false: the userspace data path only.
    pub ebpf: bool,
    pub xdp_mode: XdpMode,
    /// Underlay interfaces to attach the receive programs to; empty: found from the routes
    /// to the peers' endpoints.
    pub underlays: Vec<InterfaceName>,
    /// LAN interfaces whose traffic to the tunnel is encrypted in XDP.
    pub lan: Vec<InterfaceName>,
    pub fast_forward: bool,
    pub tun_gso: bool,
    pub max_sessions: Option<u32>,
    pub max_peers: Option<u32>,
    /// Peers that bring in traffic from the internet besides those routing a default route.
    pub entry_peers: Vec<Base64Key>,
    /// The interface peers' traffic to the internet leaves by, with its address (an exit
    /// node: `gatewayd --masquerade`).
    pub masquerade: Option<InterfaceName>,
}

impl Default for DataplaneSection {
    fn default() -> DataplaneSection {
        DataplaneSection {
            ebpf: true,
            xdp_mode: XdpMode::default(),
            underlays: Vec::new(),
            lan: Vec::new(),
            fast_forward: true,
            tun_gso: true,
            max_sessions: None,
            max_peers: None,
            entry_peers: Vec::new(),
            masquerade: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    pub listen: MetricsAddress,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// The operator's name for the peer, shown by `gateway peers` and `export`.
    pub name: Option<String>,
    pub public_key: Spanned<Base64Key>,
    pub preshared_key: Option<Base64Key>,
    pub preshared_key_file: Option<PathBuf>,
    pub endpoint: Option<Endpoint>,
    #[serde(default)]
    pub allowed_ips: Vec<Prefix>,
    /// Seconds; absent or 0: off.
    pub persistent_keepalive: Option<u16>,
}
