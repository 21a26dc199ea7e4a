//! `gateway reload IFACE` and SIGHUP: the configuration file (`--config`) read again and
//! applied as a difference, so that what did not change keeps running: a peer whose settings
//! are the same is not touched (its sessions survive), the private key and port are set only
//! if they changed.
//!
//! The whole new file is read, checked, its endpoints resolved and a new metrics address bound
//! before anything changes; any failure there leaves everything as it was, with one line naming
//! file, line and field. Then, in order: the device (one `DeviceUpdate`, which itself fails
//! whole, e.g. on a port in use), the forwards, the interface's addresses, MTU and routes, and
//! the metrics endpoint moved. Options that cannot change while the daemon runs (the
//! `[dataplane]` section) refuse the reload, naming the field and saying to restart.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

use super::config_file::StartConfig;
use super::control::Control;
use super::forwards::{EntryHost, EntryPoint};
use crate::config::file::DataplaneSection;
use crate::config::load::{self, GatewayConfig};
use crate::config::routes;
use crate::config::wg_quick::PeerConfig;
use crate::entry::table::ForwardTable;
use crate::quick::network;
use crate::uapi::{AllowedIpChange, DeviceSnapshot, DeviceUpdate, Key, PeerUpdate, UapiHandler};

/// Starts serving metrics on a bound listener; returns what stops it.
pub type MetricsStarter =
    Box<dyn Fn(std::net::TcpListener) -> tokio::task::AbortHandle + Send + Sync>;

/// What the file said when it was last applied, and the metrics endpoint serving.
struct Applied {
    start: StartConfig,
    metrics_task: Option<tokio::task::AbortHandle>,
}

/// The parts of the running daemon a reload changes.
pub struct Targets {
    pub interface: String,
    pub control: Arc<Control>,
    pub entry: Arc<EntryPoint>,
    pub host: Arc<dyn EntryHost>,
    pub start_metrics: MetricsStarter,
    pub names: super::config_file::PeerNames,
}

pub struct Reloader {
    path: PathBuf,
    targets: Targets,
    /// Held for the whole of a reload: reloads are made one at a time.
    applied: Mutex<Applied>,
}

impl Reloader {
    /// The reloader of a daemon started from `start`, whose metrics, if any, are served by
    /// `metrics_task`.
    pub fn new(
        targets: Targets,
        start: StartConfig,
        metrics_task: Option<tokio::task::AbortHandle>,
    ) -> Reloader {
        Reloader {
            path: start.path.clone(),
            targets,
            applied: Mutex::new(Applied { start, metrics_task }),
        }
    }

    /// Reads the file again and applies what changed: one line saying what did, or why
    /// nothing did.
    pub fn reload(&self) -> Result<String, String> {
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let config = load::load(&self.path).map_err(|e| e.to_string())?;
        if let Some(field) = changed_dataplane_field(&applied.start.dataplane, &config.dataplane) {
            return Err(format!(
                "{}: dataplane.{field} cannot change while gatewayd runs: restart it to apply \
                 the file",
                self.path.display()
            ));
        }
        let start = StartConfig::prepare(&config)?;
        // Bound before anything changes: an address in use fails the reload, the old stays.
        let metrics_listener = match config.metrics {
            Some(address) if config.metrics != applied.start.metrics => Some(
                crate::metrics::server::bind(address)
                    .map_err(|e| format!("{}: metrics.listen: {e}", self.path.display()))?,
            ),
            _ => None,
        };

        let snapshot = self.targets.control.get();
        let (update, peers) = peer_changes(&snapshot, &applied, &config, &start);
        self.targets.control.apply(&update).map_err(|e| format!("{}: {e}", self.path.display()))?;
        let forwards = forward_changes(&self.targets.entry.table(), &start.forwards);
        if forwards != (0, 0) {
            self.targets.entry.replace(&*self.targets.host, start.forwards.clone())?;
        }
        let link = self.apply_link(&applied.start, &start)?;
        let mut summary = vec![
            format!("peers +{} -{} ~{}", peers.0, peers.1, peers.2),
            format!("forwards +{} -{}", forwards.0, forwards.1),
        ];
        summary.extend(link);
        if config.metrics != applied.start.metrics {
            if let Some(task) = applied.metrics_task.take() {
                task.abort();
            }
            applied.metrics_task =
                metrics_listener.map(|listener| (self.targets.start_metrics)(listener));
            summary.push(match config.metrics {
                Some(address) => format!("metrics at {address}"),
                None => "metrics off".to_string(),
            });
        }
        *self.targets.names.write().unwrap_or_else(|e| e.into_inner()) = start.peer_names.clone();
        applied.start = start;
        Ok(format!("{}: {}", self.path.display(), summary.join(", ")))
    }

    /// Addresses, MTU and routes brought from `old` to `new`; what changed, in words.
    fn apply_link(&self, old: &StartConfig, new: &StartConfig) -> Result<Vec<String>, String> {
        let interface = &self.targets.interface;
        let mut changed = Vec::new();
        for address in new.addresses.iter().filter(|a| !old.addresses.contains(a)) {
            network::add_address(interface, address)?;
            changed.push(format!("address {address} added"));
        }
        for address in old.addresses.iter().filter(|a| !new.addresses.contains(a)) {
            network::remove_address(interface, address)?;
            changed.push(format!("address {address} removed"));
        }
        if new.mtu != old.mtu {
            network::set_mtu_and_up(interface, new.mtu)?;
            changed.push(format!("MTU {}", new.mtu));
        }
        let old_routes = routes::plan(&old.table, old.allowed_ips()).routes;
        let new_routes = routes::plan(&new.table, new.allowed_ips()).routes;
        for route in old_routes.iter().filter(|r| !new_routes.contains(r)) {
            network::remove_route(interface, route)?;
        }
        for route in new_routes.iter().filter(|r| !old_routes.contains(r)) {
            network::add_route(interface, route)?;
        }
        if old_routes != new_routes {
            changed.push("routes".to_string());
        }
        Ok(changed)
    }
}

/// Says in the log what a reload did, or why it did nothing; `cause`: what asked for it.
pub fn log(result: &Result<String, String>, cause: &str) {
    match result {
        Ok(changes) => tracing::info!("{cause}: reloaded {changes}"),
        Err(e) => tracing::error!("{cause}: reload refused, nothing changed: {e}"),
    }
}

/// The first `[dataplane]` field that differs, by its name in the file.
fn changed_dataplane_field(old: &DataplaneSection, new: &DataplaneSection) -> Option<&'static str> {
    let fields = [
        ("ebpf", old.ebpf != new.ebpf),
        ("xdp_mode", old.xdp_mode != new.xdp_mode),
        ("underlays", old.underlays != new.underlays),
        ("lan", old.lan != new.lan),
        ("fast_forward", old.fast_forward != new.fast_forward),
        ("tun_gso", old.tun_gso != new.tun_gso),
        ("max_sessions", old.max_sessions != new.max_sessions),
        ("max_peers", old.max_peers != new.max_peers),
        ("entry_peers", old.entry_peers != new.entry_peers),
    ];
    fields.iter().find(|(_, differs)| *differs).map(|(name, _)| *name)
}

/// The one update that takes the device from `snapshot` to `config`, touching only what
/// differs, and how many peers it adds, removes and changes.
fn peer_changes(
    snapshot: &DeviceSnapshot,
    applied: &Applied,
    config: &GatewayConfig,
    start: &StartConfig,
) -> (DeviceUpdate, (usize, usize, usize)) {
    let mut update = DeviceUpdate::default();
    let wanted_key = config.device.private_key;
    if wanted_key.is_some() && wanted_key != snapshot.private_key {
        update.private_key = wanted_key;
    }
    if start.listen_port != 0 && start.listen_port != snapshot.listen_port {
        update.listen_port = Some(start.listen_port);
    }
    if start.fwmark != snapshot.fwmark {
        update.fwmark = Some(start.fwmark);
    }
    let (mut added, mut removed, mut changed) = (0, 0, 0);
    for peer in &snapshot.peers {
        if !config.device.peers.iter().any(|p| p.public_key == peer.public_key) {
            let mut remove = PeerUpdate::new(peer.public_key);
            remove.remove = true;
            update.peers.push(remove);
            removed += 1;
        }
    }
    for (wanted, resolved) in config.device.peers.iter().zip(&start.update.peers) {
        let Some(current) = snapshot.peers.iter().find(|p| p.public_key == wanted.public_key)
        else {
            update.peers.push(resolved.clone());
            added += 1;
            continue;
        };
        let mut change = PeerUpdate::new(wanted.public_key);
        change.update_only = true;
        if let Some(psk) = differing_psk(wanted, current.preshared_key) {
            change.preshared_key = Some(psk);
        }
        let old_endpoint = applied.start.endpoints.get(&wanted.public_key).cloned().flatten();
        if wanted.endpoint.is_some() && wanted.endpoint != old_endpoint {
            change.endpoint = resolved.endpoint;
        }
        if wanted.persistent_keepalive.unwrap_or(0) != current.persistent_keepalive_interval {
            change.persistent_keepalive_interval = Some(wanted.persistent_keepalive.unwrap_or(0));
        }
        if !same_prefixes(&wanted.allowed_ips, &current.allowed_ips) {
            change.allowed_ips = std::iter::once(AllowedIpChange::RemoveAll)
                .chain(wanted.allowed_ips.iter().map(|p| AllowedIpChange::Add(*p)))
                .collect();
        }
        let unchanged = change.preshared_key.is_none()
            && change.endpoint.is_none()
            && change.persistent_keepalive_interval.is_none()
            && change.allowed_ips.is_empty();
        if !unchanged {
            update.peers.push(change);
            changed += 1;
        }
    }
    (update, (added, removed, changed))
}

/// The preshared key to set if the file's differs from the device's (the zero key: none).
fn differing_psk(wanted: &PeerConfig, current: Option<Key>) -> Option<Key> {
    let current = current.filter(|key| !key.is_zero());
    (wanted.preshared_key != current).then(|| wanted.preshared_key.unwrap_or(Key([0; 32])))
}

fn same_prefixes(a: &[IpNet], b: &[IpNet]) -> bool {
    let normalize = |list: &[IpNet]| {
        let mut list: Vec<IpNet> = list.iter().map(IpNet::trunc).collect();
        list.sort();
        list.dedup();
        list
    };
    normalize(a) == normalize(b)
}

/// How many forwards a reload adds and removes.
fn forward_changes(old: &ForwardTable, new: &ForwardTable) -> (usize, usize) {
    let (old, new) = (old.forwards(), new.forwards());
    let added = new.iter().filter(|f| !old.contains(f)).count();
    let removed = old.iter().filter(|f| !new.contains(f)).count();
    (added, removed)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::uapi::PeerSnapshot;

    const KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    const PHONE: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
    const HOME: &str = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";

    /// A file whose MTU is given: preparing it runs no `ip route get`.
    fn file(extra: &str) -> String {
        format!(
            "[interface]\nprivate_key = \"{KEY}\"\nmtu = 1420\nlisten_port = 51820\n\
             [[peer]]\npublic_key = \"{PHONE}\"\nallowed_ips = [\"10.8.0.2/32\"]\n\
             persistent_keepalive = 25\nendpoint = \"192.0.2.2:51820\"\n{extra}"
        )
    }

    fn prepared(text: &str) -> (GatewayConfig, StartConfig) {
        let config = load::parse(Path::new("wg0.toml"), text).unwrap();
        let start = StartConfig::prepare(&config).unwrap();
        (config, start)
    }

    /// The device as the file `text` left it, the phone roamed to another endpoint.
    fn device(text: &str) -> DeviceSnapshot {
        let (config, start) = prepared(text);
        DeviceSnapshot {
            private_key: config.device.private_key,
            listen_port: start.listen_port,
            fwmark: start.fwmark,
            peers: config
                .device
                .peers
                .iter()
                .map(|peer| PeerSnapshot {
                    public_key: peer.public_key,
                    preshared_key: None,
                    endpoint: Some("198.51.100.9:4444".parse().unwrap()),
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                    persistent_keepalive_interval: peer.persistent_keepalive.unwrap_or(0),
                    allowed_ips: peer.allowed_ips.clone(),
                })
                .collect(),
        }
    }

    fn diff(old: &str, new: &str) -> (DeviceUpdate, (usize, usize, usize)) {
        let applied = Applied { start: prepared(old).1, metrics_task: None };
        let (config, start) = prepared(new);
        peer_changes(&device(old), &applied, &config, &start)
    }

    #[test]
    fn an_unchanged_file_changes_nothing_not_even_a_roamed_endpoint() {
        let (update, counts) = diff(&file(""), &file("# a comment\n"));
        assert_eq!(update, DeviceUpdate::default());
        assert_eq!(counts, (0, 0, 0));
    }

    #[test]
    fn only_what_differs_is_in_the_update() {
        let home = format!("[[peer]]\npublic_key = \"{HOME}\"\nallowed_ips = [\"10.8.0.3/32\"]\n");
        let changed = file(&home).replace("persistent_keepalive = 25", "persistent_keepalive = 15");
        let (update, counts) = diff(&file(""), &changed);
        assert_eq!(counts, (1, 0, 1));
        assert_eq!((update.private_key, update.listen_port, update.fwmark), (None, None, None));
        assert!(!update.replace_peers);
        let phone = &update.peers[0];
        assert_eq!(phone.public_key, Key::from_base64(PHONE).unwrap());
        assert!(phone.update_only && !phone.remove);
        assert_eq!(phone.persistent_keepalive_interval, Some(15));
        assert!(phone.endpoint.is_none() && phone.allowed_ips.is_empty());
        assert!(phone.preshared_key.is_none());
        assert_eq!(update.peers[1].public_key, Key::from_base64(HOME).unwrap());
        assert!(!update.peers[1].update_only);

        let (update, counts) =
            diff(&file(&home), &file("").replace("51820\n[[peer]]", "51821\n[[peer]]"));
        assert_eq!(counts, (0, 1, 0));
        assert_eq!(update.listen_port, Some(51821));
        assert!(update.peers[0].remove);
        assert_eq!(update.peers[0].public_key, Key::from_base64(HOME).unwrap());

        let moved = file("").replace("192.0.2.2:51820", "192.0.2.3:51820");
        let (update, counts) = diff(&file(""), &moved);
        assert_eq!(counts, (0, 0, 1));
        assert_eq!(update.peers[0].endpoint, Some("192.0.2.3:51820".parse().unwrap()));
    }

    #[test]
    fn a_dataplane_change_is_named() {
        let old = DataplaneSection::default();
        let new = DataplaneSection { max_peers: Some(8), ..DataplaneSection::default() };
        assert_eq!(changed_dataplane_field(&old, &new), Some("max_peers"));
        assert_eq!(changed_dataplane_field(&old, &old.clone()), None);
    }
}
