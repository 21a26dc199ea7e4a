//! What a network role changes on its interface: the peers the network manages (through the
//! same device path `wg set` takes, never written into the configuration file: they are the
//! network's, not the operator's), the interface's network addresses, and kernel routes for
//! the prefixes the network carries beyond its own.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

use crate::daemon::control::Control;
use crate::network::controller::Tunnel;
use crate::network::peers::{WantedPeer, plan};
use crate::quick::system;
use crate::uapi::{AllowedIpChange, DeviceUpdate, Key, PeerUpdate, UapiHandler as _};

pub struct Interface {
    pub name: String,
    pub control: Arc<Control>,
    /// The peers the network put there.
    managed: Mutex<BTreeSet<[u8; 32]>>,
    /// The routes the network put there.
    routes: Mutex<BTreeSet<IpNet>>,
}

impl Interface {
    pub fn new(name: String, control: Arc<Control>) -> Interface {
        Interface { name, control, managed: Mutex::default(), routes: Mutex::default() }
    }

    /// Makes the network's peers exactly `wanted`, touching only those that differ.
    pub fn sync_peers(&self, wanted: &[WantedPeer]) -> Result<(), String> {
        let mut managed = self.managed.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.control.get().peers;
        let (update, now_managed) = plan(&current, &managed, wanted);
        if !update.peers.is_empty() {
            self.control.apply(&update).map_err(|e| e.to_string())?;
        }
        *managed = now_managed;
        Ok(())
    }

    /// Counts `public_key`'s peer, which the network put there by other means (an
    /// enrollment's), among the network's.
    pub fn adopt(&self, public_key: [u8; 32]) {
        self.managed.lock().unwrap_or_else(|p| p.into_inner()).insert(public_key);
    }

    /// Applies `update` (the interface's own key, an enrollment's peer) as `wg set` would.
    pub fn apply(&self, update: &DeviceUpdate) -> Result<(), String> {
        self.control.apply(update).map_err(|e| e.to_string())
    }

    pub fn private_key(&self) -> Option<Key> {
        self.control.get().private_key
    }

    /// Gives the interface `address` (if it lacks it) and brings it up. IPv6 addresses skip
    /// duplicate address detection: the network allocated them, and a tentative address
    /// cannot be bound for the seconds DAD takes.
    pub fn ensure_address(&self, address: IpNet) -> Result<(), String> {
        let present = crate::quick::network::addresses(&self.name);
        if !present.contains(&address) {
            let text = address.to_string();
            let mut args = vec!["address", "add", text.as_str(), "dev", self.name.as_str()];
            if address.addr().is_ipv6() {
                args.push("nodad");
            }
            system::query("ip", &args)
                .map_err(|e| format!("cannot give {} the address {address}: {e}", self.name))?;
        }
        system::query("ip", &["link", "set", "dev", &self.name, "up"])
            .map(drop)
            .map_err(|e| format!("cannot bring {} up: {e}", self.name))
    }

    /// Lets the kernel forward what arrives on the interface (a controller carries its
    /// members' traffic to each other): IPv4 forwarding and IPv6 `force_forwarding` (Linux
    /// 6.17) of this interface alone, which go with it; the host-wide IPv6 switch only where
    /// the per-interface one does not exist.
    pub fn enable_forwarding(&self) -> Result<(), String> {
        let write = |path: String| {
            std::fs::write(&path, "1").map_err(|e| format!("cannot write {path}: {e}"))
        };
        write(format!("/proc/sys/net/ipv4/conf/{}/forwarding", self.name))?;
        let force = format!("/proc/sys/net/ipv6/conf/{}/force_forwarding", self.name);
        if std::path::Path::new(&force).exists() {
            write(force)
        } else {
            tracing::info!(
                "network: IPv6 forwarding turned on for the whole host (this kernel has no per-interface switch)"
            );
            write("/proc/sys/net/ipv6/conf/all/forwarding".to_string())
        }
    }

    pub fn remove_address(&self, address: IpNet) {
        let _ = system::query("ip", &["address", "del", &address.to_string(), "dev", &self.name]);
    }

    /// Routes exactly `wanted` (of those the network manages) into the interface.
    pub fn sync_routes(&self, wanted: &BTreeSet<IpNet>) -> Result<(), String> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        for stale in routes.difference(wanted) {
            let _ = system::query("ip", &["route", "del", &stale.to_string(), "dev", &self.name]);
        }
        for prefix in wanted.difference(&routes) {
            system::query("ip", &["route", "replace", &prefix.to_string(), "dev", &self.name])
                .map_err(|e| format!("cannot route {prefix} into {}: {e}", self.name))?;
        }
        *routes = wanted.clone();
        Ok(())
    }
}

/// The controller's hands on its interface: each change at once (the periodic sync would get
/// there too, but an enrollment's peer must exist before its token is printed). Removals of
/// enrollment peers are held back by [`Lingering`] so that the answer to a join still reaches
/// the member through its enrollment peer.
pub struct ControllerTunnel<'a> {
    pub interface: &'a Interface,
    pub lingering: &'a Lingering,
}

impl Tunnel for ControllerTunnel<'_> {
    fn set_peer(&mut self, public_key: [u8; 32], allowed_ips: &[IpNet]) -> Result<(), String> {
        self.interface.managed.lock().unwrap_or_else(|p| p.into_inner()).insert(public_key);
        let mut peer = PeerUpdate::new(Key(public_key));
        peer.allowed_ips.push(AllowedIpChange::RemoveAll);
        peer.allowed_ips.extend(allowed_ips.iter().copied().map(AllowedIpChange::Add));
        self.interface.apply(&DeviceUpdate { peers: vec![peer], ..DeviceUpdate::default() })
    }

    fn remove_peer(&mut self, public_key: [u8; 32]) -> Result<(), String> {
        if self.lingering.holds(public_key) {
            return Ok(());
        }
        let mut peer = PeerUpdate::new(Key(public_key));
        peer.remove = true;
        self.interface.apply(&DeviceUpdate { peers: vec![peer], ..DeviceUpdate::default() })
    }
}

/// Enrollment peers kept for a few seconds after their invitation is used up, so that the
/// controller's answer reaches the member the way its request came.
#[derive(Default)]
pub struct Lingering {
    peers: Mutex<Vec<(WantedPeer, std::time::Instant)>>,
}

impl Lingering {
    pub const TIME: std::time::Duration = std::time::Duration::from_secs(10);

    pub fn keep(&self, public_key: [u8; 32], address: IpAddr) {
        let peer = WantedPeer {
            public_key,
            allowed_ips: vec![IpNet::from(address)],
            endpoint: None,
            persistent_keepalive: 0,
        };
        let until = std::time::Instant::now() + Self::TIME;
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).push((peer, until));
    }

    fn holds(&self, public_key: [u8; 32]) -> bool {
        self.current().iter().any(|peer| peer.public_key == public_key)
    }

    /// The peers still kept (expired ones forgotten).
    pub fn current(&self) -> Vec<WantedPeer> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        peers.retain(|(_, until)| *until > now);
        peers.iter().map(|(peer, _)| peer.clone()).collect()
    }
}
