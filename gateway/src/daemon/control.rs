//! The UAPI handler: `wg get`/`wg set` applied to the device, sockets rebound when the listen
//! port or fwmark changes.

use std::sync::Arc;
use std::time::Instant;

use super::core::Shared;
use super::udp::{BindError, Sockets};
use crate::uapi::{
    AllowedIpChange, DeviceSnapshot, DeviceUpdate, Key, PeerSnapshot, UapiError, UapiHandler,
};
use crate::wg::device::ConfigError;

/// Starts receiving on freshly bound sockets (the daemon passes its UDP-reader spawner).
pub type Rebinder = Box<dyn Fn(&Arc<Shared>, &Arc<Sockets>) + Send + Sync>;

pub struct Control {
    pub shared: Arc<Shared>,
    pub rebind: Rebinder,
    /// The configuration file every successful change is written back to (`--config`).
    pub config_file: Option<std::path::PathBuf>,
}

impl Control {
    /// Binds the new port before anything else changes, so a port in use fails the whole
    /// request with EADDRINUSE and leaves the device as it was.
    fn prepare_sockets(&self, update: &DeviceUpdate) -> Result<Option<Sockets>, UapiError> {
        let current = self.shared.sockets();
        let fwmark = update.fwmark.unwrap_or_else(|| self.shared.lock().device.fwmark());
        match update.listen_port {
            Some(port) if port != current.port || port == 0 => match Sockets::bind(port, fwmark) {
                Ok(s) => Ok(Some(s)),
                Err(BindError::PortInUse(p)) => {
                    Err(UapiError::PortInUse(format!("UDP port {p} is already in use")))
                }
                Err(e) => Err(UapiError::PortInUse(e.to_string())),
            },
            _ => Ok(None),
        }
    }

    /// Applies `update` as a `wg set` would, without writing it back into the configuration
    /// file: for changes that come from the file (a reload).
    pub fn apply(&self, update: &DeviceUpdate) -> Result<(), UapiError> {
        let new_sockets = self.prepare_sockets(update)?;
        if let Some(mark) = update.fwmark
            && new_sockets.is_none()
        {
            self.shared
                .sockets()
                .set_fwmark(mark)
                .map_err(|e| UapiError::PortInUse(format!("cannot set fwmark: {e}")))?;
        }
        let port = new_sockets.as_ref().map(|s| s.port);
        let result = self.shared.step(|core| apply(&mut core.device, update, port));
        if let Some(sockets) = new_sockets {
            self.swap_sockets(sockets);
        }
        result.map_err(|e| UapiError::Rejected(e.to_string()))
    }

    fn swap_sockets(&self, new: Sockets) {
        let new = Arc::new(new);
        let old = self.shared.replace_sockets(Arc::clone(&new));
        old.shutdown();
        (self.rebind)(&self.shared, &new);
    }
}

impl UapiHandler for Control {
    fn get(&self) -> DeviceSnapshot {
        let core = self.shared.lock();
        let device = &core.device;
        let mut peers: Vec<_> =
            device.peer_ids().filter_map(|id| device.snapshot_peer(id)).collect();
        peers.sort_by_key(|p| p.id);
        DeviceSnapshot {
            private_key: device.private_key().map(Key),
            listen_port: device.listen_port(),
            fwmark: device.fwmark(),
            peers: peers
                .into_iter()
                .map(|p| {
                    let extra =
                        core.sink.as_ref().map(|s| s.path_counters(p.id)).unwrap_or_default();
                    PeerSnapshot {
                        public_key: Key(p.public_key),
                        preshared_key: p.preshared_key.map(Key),
                        endpoint: p.endpoint,
                        last_handshake: p.last_handshake,
                        rx_bytes: p.rx_bytes + extra.rx_bytes,
                        tx_bytes: p.tx_bytes + extra.tx_bytes,
                        persistent_keepalive_interval: p.persistent_keepalive,
                        allowed_ips: p.allowed_ips,
                    }
                })
                .collect(),
        }
    }

    fn set(&self, update: DeviceUpdate) -> Result<(), UapiError> {
        self.apply(&update)?;
        if let Some(path) = &self.config_file {
            // The device has changed whatever happens to the file: a failed write is the
            // operator's to know about, not a reason to report the change as refused.
            let snapshot = self.get();
            match crate::config::write_back::save_device(path, &update, &snapshot) {
                Ok(()) => tracing::debug!("{} updated", path.display()),
                Err(e) => tracing::error!("the change is applied but not saved: {e}"),
            }
        }
        Ok(())
    }
}

fn apply(
    device: &mut crate::wg::device::Device,
    update: &DeviceUpdate,
    bound_port: Option<u16>,
) -> Result<(), ConfigError> {
    let now = Instant::now();
    if let Some(key) = update.private_key {
        device.set_private_key((!key.is_zero()).then_some(key.0));
    }
    if let Some(port) = bound_port {
        device.set_listen_port(port);
    }
    if let Some(mark) = update.fwmark {
        device.set_fwmark(mark);
    }
    if update.replace_peers {
        device.remove_all_peers();
    }
    for p in &update.peers {
        if p.remove {
            if let Some(id) = device.peer_by_public_key(&p.public_key.0) {
                device.remove_peer(id);
            }
            continue;
        }
        let Some(id) = device.upsert_peer(p.public_key.0, p.update_only)? else { continue };
        if let Some(psk) = p.preshared_key {
            device.set_preshared_key(id, Some(psk.0));
        }
        if let Some(endpoint) = p.endpoint {
            device.set_endpoint(id, endpoint);
        }
        for change in &p.allowed_ips {
            match *change {
                AllowedIpChange::RemoveAll => device.clear_allowed_ips(id),
                AllowedIpChange::Add(net) => device.add_allowed_ip(id, net),
                AllowedIpChange::Remove(net) => device.remove_allowed_ip(id, net),
            }
        }
        if let Some(secs) = p.persistent_keepalive_interval {
            device.set_persistent_keepalive(now, id, secs);
        }
        device.peer_configured(now, id);
    }
    Ok(())
}
