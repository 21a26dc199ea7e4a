//! Configuration: keys, peers, endpoints, AllowedIPs, interface up/down, with the kernel's
//! side effects (`netlink.c: set_device/set_peer`, `device.c: wg_open/wg_stop`).

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use ipnet::IpNet;

use super::{Device, Event};
use crate::wg::PeerId;
use crate::wg::noise::StaticIdentity;
use crate::wg::peer::{Endpoint, Peer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// More peers than the device (or its eBPF maps) can hold.
    TooManyPeers,
    UnknownPeer,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::TooManyPeers => f.write_str("too many peers"),
            ConfigError::UnknownPeer => f.write_str("no such peer"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A peer as `wg show` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSnapshot {
    pub id: PeerId,
    pub public_key: [u8; 32],
    pub preshared_key: Option<[u8; 32]>,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: u16,
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub allowed_ips: Vec<IpNet>,
}

impl Device {
    pub fn private_key(&self) -> Option<[u8; 32]> {
        self.identity.private_key().map(|k| k.0)
    }

    /// Sets (or, with `None` or all zeros, removes) the private key. A peer with our own new
    /// public key is removed; every peer's session stops sending so the next packet
    /// handshakes with the new identity.
    pub fn set_private_key(&mut self, key: Option<[u8; 32]>) {
        let identity = StaticIdentity::from_private_key(key.unwrap_or([0; 32]));
        if identity.public_key() == self.identity.public_key() {
            return;
        }
        if let Some(public) = identity.public_key()
            && let Some(id) = self.by_public_key.get(&public).copied()
        {
            self.remove_peer(id);
        }
        self.identity = identity;
        self.cookie_checker.set_local_public(self.identity.public_key().as_ref());
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.handshake.set_local_static(&self.identity);
            }
            self.expire_current_keypairs(id);
        }
    }

    /// The kernel's `wg_noise_expire_current_peer_keypairs`.
    fn expire_current_keypairs(&mut self, id: PeerId) {
        self.clear_handshake(id);
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.reset_last_sent_handshake();
            peer.keypairs.expire_sending();
            self.events.push_back(Event::KeypairsChanged(id));
        }
    }

    pub fn set_listen_port(&mut self, port: u16) {
        if port != self.listen_port {
            self.listen_port = port;
            let ids: Vec<PeerId> = self.peers.keys().copied().collect();
            for id in ids {
                self.clear_endpoint_source(id);
            }
            self.events.push_back(Event::ListenPortChanged(port));
        }
    }

    pub fn set_fwmark(&mut self, mark: u32) {
        if mark != self.fwmark {
            self.fwmark = mark;
            self.events.push_back(Event::FwmarkChanged(mark));
        }
    }

    /// The peer with this public key, created if missing (unless `update_only`). `Ok(None)`
    /// when nothing is to be done: `update_only` for an unknown key, or our own public key
    /// (silently ignored, as the kernel does, so one config can serve every peer).
    pub fn upsert_peer(
        &mut self,
        public_key: [u8; 32],
        update_only: bool,
    ) -> Result<Option<PeerId>, ConfigError> {
        if self.identity.public_key() == Some(public_key) {
            return Ok(None);
        }
        if let Some(id) = self.by_public_key.get(&public_key) {
            return Ok(Some(*id));
        }
        if update_only {
            return Ok(None);
        }
        let raw = match self.free_peer_ids.pop() {
            Some(raw) => raw,
            None if (self.next_peer_id as usize) < gateway_common::wire::MAX_PEERS_PER_DEVICE => {
                self.next_peer_id += 1;
                self.next_peer_id - 1
            }
            None => return Err(ConfigError::TooManyPeers),
        };
        let id = PeerId(raw);
        let mut peer = Peer::new(id, public_key, &self.identity, None, self.options.timer_scale);
        peer.timers.set_running(self.up);
        self.peers.insert(id, peer);
        self.by_public_key.insert(public_key, id);
        self.events.push_back(Event::PeerAdded(id));
        Ok(Some(id))
    }

    pub fn remove_peer(&mut self, id: PeerId) {
        self.clear_handshake(id);
        self.clear_keypairs(id);
        let Some(mut peer) = self.peers.remove(&id) else { return };
        peer.timers.stop();
        self.by_public_key.remove(&peer.public_key);
        self.allowed_ips.remove_by_value(&id);
        self.free_peer_ids.push(id.0);
        self.events.push_back(Event::PeerRemoved(id));
        self.publish_path_mtu();
    }

    pub fn remove_all_peers(&mut self) {
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.remove_peer(id);
        }
    }

    pub fn set_preshared_key(&mut self, id: PeerId, key: Option<[u8; 32]>) {
        if let Some(peer) = self.peers.get_mut(&id) {
            let key = key.filter(|k| k.iter().any(|&b| b != 0));
            peer.handshake.set_preshared_key(key);
        }
    }

    pub fn set_endpoint(&mut self, id: PeerId, addr: SocketAddr) {
        if let Some(peer) = self.peers.get_mut(&id) {
            let endpoint = Endpoint::new(addr);
            if peer.endpoint != Some(endpoint) {
                peer.endpoint = Some(endpoint);
                self.events.push_back(Event::EndpointChanged(id));
            }
        }
    }

    /// Sets the persistent keepalive interval (0: off). Turning it on while the interface is
    /// up sends a keepalive at once, as the kernel does.
    pub fn set_persistent_keepalive(&mut self, now: Instant, id: PeerId, secs: u16) {
        let Some(peer) = self.peers.get_mut(&id) else { return };
        let send_now = peer.persistent_keepalive == 0 && secs != 0 && self.up;
        peer.persistent_keepalive = secs;
        peer.timers.set_persistent_keepalive_interval(secs);
        if send_now {
            self.send_keepalive(id, now);
        }
        self.schedule(id);
    }

    pub fn clear_allowed_ips(&mut self, id: PeerId) {
        if self.allowed_ips.remove_by_value(&id) > 0 {
            self.events.push_back(Event::AllowedIpsChanged(id));
        }
    }

    /// Adds a prefix to a peer's AllowedIPs, taking it away from any other peer that had it.
    pub fn add_allowed_ip(&mut self, id: PeerId, net: IpNet) {
        if !self.peers.contains_key(&id) {
            return;
        }
        if let Some(previous) = self.allowed_ips.insert(net, id)
            && previous != id
        {
            self.events.push_back(Event::AllowedIpsChanged(previous));
        }
        self.events.push_back(Event::AllowedIpsChanged(id));
    }

    /// Removes a prefix from a peer's AllowedIPs, if that peer holds it.
    pub fn remove_allowed_ip(&mut self, id: PeerId, net: IpNet) {
        if self.allowed_ips.remove_if_owned_by(&net, &id) {
            self.events.push_back(Event::AllowedIpsChanged(id));
        }
    }

    /// Called after a batch of changes to a peer: a new or changed peer gets its staged
    /// packets flushed, as the kernel does at the end of `set_peer`.
    pub fn peer_configured(&mut self, now: Instant, id: PeerId) {
        if self.up {
            self.send_staged(id, now);
        }
        self.schedule(id);
    }

    /// The interface went up or down (the kernel's `wg_open` / `wg_stop`).
    pub fn set_up(&mut self, now: Instant, up: bool) {
        if up == self.up {
            return;
        }
        self.up = up;
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.timers.set_running(up);
            }
            if up {
                self.send_staged(id, now);
                if self.peers.get(&id).is_some_and(|p| p.persistent_keepalive != 0) {
                    self.send_keepalive(id, now);
                }
            } else {
                if let Some(peer) = self.peers.get_mut(&id) {
                    peer.staged.clear();
                    peer.reset_last_sent_handshake();
                }
                self.clear_handshake(id);
                self.clear_keypairs(id);
            }
            self.schedule(id);
        }
    }

    pub fn snapshot_peer(&self, id: PeerId) -> Option<PeerSnapshot> {
        let peer = self.peers.get(&id)?;
        let psk = *peer.handshake.preshared_key();
        Some(PeerSnapshot {
            id,
            public_key: peer.public_key,
            preshared_key: psk.iter().any(|&b| b != 0).then_some(psk),
            endpoint: peer.endpoint.map(|e| e.addr),
            persistent_keepalive: peer.persistent_keepalive,
            last_handshake: peer.last_handshake,
            rx_bytes: peer.rx_bytes,
            tx_bytes: peer.tx_bytes,
            rx_packets: peer.rx_packets,
            tx_packets: peer.tx_packets,
            allowed_ips: self.allowed_ips.prefixes_of(&id).collect(),
        })
    }
}
