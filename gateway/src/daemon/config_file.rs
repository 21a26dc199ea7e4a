//! `gatewayd --config FILE`: what the daemon applies from its configuration file when it
//! starts, so that one file brings the whole interface up, as `gateway up` does with a
//! wg-quick file: keys, port, fwmark and peers through the same device path `wg set` takes;
//! addresses, MTU, link up and the peers' routes with the same commands `gateway up` runs
//! (`quick::network`); the forwards, kept in the file from then on (`entry::store`).
//!
//! Everything that needs no interface is done before one exists ([`StartConfig::prepare`]:
//! the file is already checked, endpoints are resolved, the MTU derived); what needs it runs
//! before the daemon detaches ([`configure_link`]), so any failure is reported in one line and
//! the interface, taken down with the process, leaves nothing behind.

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;

use std::collections::HashMap;

use ipnet::IpNet;

use crate::config::file::DataplaneSection;

use crate::config::load::GatewayConfig;
use crate::config::routes;
use crate::config::wg_quick::Table;
use crate::entry::table::ForwardTable;
use crate::quick::network;
use crate::uapi::{DeviceUpdate, Key};

/// The operators' names for peers (`name` in the file), by public key: shown by the status
/// socket, replaced by a reload.
pub type PeerNames = std::sync::Arc<std::sync::RwLock<HashMap<Key, String>>>;

/// The part of a configuration file the daemon applies itself at start.
#[derive(Debug, Clone)]
pub struct StartConfig {
    pub path: PathBuf,
    /// Keys, fwmark and peers (endpoints resolved), every peer replaced. The listen port is in
    /// `listen_port`: the sockets are bound to it before the device exists.
    pub update: DeviceUpdate,
    pub listen_port: u16,
    pub fwmark: u32,
    pub addresses: Vec<IpNet>,
    pub mtu: u32,
    pub table: Table,
    pub forwards: ForwardTable,
    /// The file's data-path options: a reload may not change them.
    pub dataplane: DataplaneSection,
    /// Each peer's endpoint as the file writes it: a reload sets an endpoint only where the
    /// file's changed, not where the peer has roamed since.
    pub endpoints: HashMap<Key, Option<String>>,
    /// The file's metrics address (the command line's `--metrics` may have overridden it).
    pub metrics: Option<SocketAddr>,
    pub peer_names: HashMap<Key, String>,
}

impl StartConfig {
    /// Resolves the endpoints and derives the MTU (if the file has none) of `config`.
    pub fn prepare(config: &GatewayConfig) -> Result<StartConfig, String> {
        let file = config.path.display();
        let mut update =
            config.device.to_update(|text| resolve(text).map_err(|e| format!("{file}: {e}")))?;
        let listen_port = update.listen_port.take().unwrap_or(0);
        let fwmark = update.fwmark.unwrap_or(0);
        let mtu = config.mtu.unwrap_or_else(|| {
            let endpoints: Vec<SocketAddr> =
                update.peers.iter().filter_map(|p| p.endpoint).collect();
            network::derived_mtu(&endpoints)
        });
        Ok(StartConfig {
            path: config.path.clone(),
            update,
            listen_port,
            fwmark,
            addresses: config.addresses.clone(),
            mtu,
            table: config.table.clone(),
            forwards: config.forwards.clone(),
            dataplane: config.dataplane.clone(),
            endpoints: config
                .device
                .peers
                .iter()
                .map(|peer| (peer.public_key, peer.endpoint.clone()))
                .collect(),
            metrics: config.metrics,
            peer_names: config.peer_names.clone(),
        })
    }

    pub(crate) fn allowed_ips(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.update.peers.iter().flat_map(|peer| {
            peer.allowed_ips.iter().filter_map(|change| match change {
                crate::uapi::AllowedIpChange::Add(prefix) => Some(*prefix),
                _ => None,
            })
        })
    }
}

fn resolve(text: &str) -> Result<SocketAddr, String> {
    let mut addresses =
        text.to_socket_addrs().map_err(|e| format!("cannot resolve endpoint `{text}': {e}"))?;
    addresses.next().ok_or_else(|| format!("endpoint `{text}' resolves to no address"))
}

/// Gives the interface its addresses, MTU and routes and brings it up, as `gateway up` does.
/// The file refuses a default route with `table = "auto"` (`config::load`): the policy
/// routing that needs is `gateway up`'s, so every planned route is a plain one here.
pub fn configure_link(interface: &str, start: &StartConfig) -> Result<(), String> {
    let file = start.path.display();
    for address in &start.addresses {
        network::add_address(interface, address).map_err(|e| format!("{file}: {e}"))?;
    }
    network::set_mtu_and_up(interface, start.mtu).map_err(|e| format!("{file}: {e}"))?;
    let plan = routes::plan(&start.table, start.allowed_ips());
    for route in &plan.routes {
        network::add_route(interface, route).map_err(|e| format!("{file}: {e}"))?;
    }
    Ok(())
}
