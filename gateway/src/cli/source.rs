//! What a running gatewayd tells: its status document (data path, per-path counters, programs,
//! forwards) and its UAPI (`get=1`: keys, endpoints, handshakes, allowed IPs). The status
//! socket is read first: it is gatewayd's own, so an interface that has none is "no gatewayd
//! runs on wg9" even where wireguard-go or the kernel run a WireGuard interface of that name.

use std::io::Read as _;

use crate::daemon::status::{self, Status};
use crate::uapi::{DeviceSnapshot, Key, PeerSnapshot};

/// One read of a daemon: its status document (as sent, and parsed) and its device.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub interface: String,
    pub raw_status: String,
    pub status: Status,
    pub device: DeviceSnapshot,
}

impl Daemon {
    pub fn read(interface: &str) -> Result<Daemon, String> {
        let raw_status = status_document(interface)?;
        let status = serde_json::from_str(&raw_status)
            .map_err(|e| format!("gatewayd on {interface} sent a bad status document: {e}"))?;
        let device = device(interface)?;
        Ok(Daemon { interface: interface.to_string(), raw_status, status, device })
    }

    /// The interface's public key (from its private key).
    pub fn public_key(&self) -> Result<Key, String> {
        self.device
            .private_key
            .as_ref()
            .map(crate::cli::keys::public_of)
            .ok_or_else(|| format!("{} has no private key yet", self.interface))
    }

    /// The peer `selector` names: its whole public key, or a prefix only one peer's key has.
    pub fn peer(&self, selector: &str) -> Result<&PeerSnapshot, String> {
        select_peer(&self.device.peers, &self.interface, selector)
    }
}

/// The status socket's document, as the daemon sent it.
pub fn status_document(interface: &str) -> Result<String, String> {
    crate::tun::validate_name(interface).map_err(|e| e.to_string())?;
    let path = status::socket_path(interface);
    let mut stream = crate::daemon::forward_socket::connect(&path, interface)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| format!("reading gatewayd's status on {interface}: {e}"))?;
    Ok(text)
}

/// The device as `wg show` sees it.
pub fn device(interface: &str) -> Result<DeviceSnapshot, String> {
    crate::uapi::client::get(interface)
}

/// The one peer whose public key is `selector` or starts with it.
pub fn select_peer<'a>(
    peers: &'a [PeerSnapshot],
    interface: &str,
    selector: &str,
) -> Result<&'a PeerSnapshot, String> {
    let selector = selector.trim();
    if selector.is_empty() {
        return Err("an empty peer name: give a public key or its first characters".into());
    }
    if let Some(peer) = peers.iter().find(|p| p.public_key.to_base64() == selector) {
        return Ok(peer);
    }
    let matching: Vec<&PeerSnapshot> =
        peers.iter().filter(|p| p.public_key.to_base64().starts_with(selector)).collect();
    match matching.as_slice() {
        [] => Err(format!("no peer {selector} on {interface}")),
        [peer] => Ok(peer),
        several => {
            let keys: Vec<String> = several
                .iter()
                .map(|p| crate::cli::human::short_key(&p.public_key.to_base64()))
                .collect();
            Err(format!(
                "peer {selector} is ambiguous on {interface}: {} peers' keys start with it ({})",
                several.len(),
                keys.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(first: u8, second: u8) -> PeerSnapshot {
        let mut key = [7u8; 32];
        key[0] = first;
        key[1] = second;
        PeerSnapshot::new(Key(key))
    }

    #[test]
    fn peers_are_named_by_key_or_unique_prefix() {
        // The first base64 characters come from the first bytes: 0x00 0x00 → "AAA", 0x00 0x10 →
        // "ABA", 0x04 0x00 → "BAA".
        let peers = [peer(0, 0), peer(0, 0x10), peer(4, 0)];
        let key = |i: usize| peers[i].public_key.to_base64();
        assert_eq!(select_peer(&peers, "wg0", &key(1)).unwrap(), &peers[1]);
        assert_eq!(select_peer(&peers, "wg0", "B").unwrap(), &peers[2]);
        assert_eq!(select_peer(&peers, "wg0", "AB").unwrap(), &peers[1]);
        let ambiguous = select_peer(&peers, "wg0", "A").unwrap_err();
        assert!(ambiguous.starts_with("peer A is ambiguous on wg0: 2 peers' keys"), "{ambiguous}");
        assert_eq!(select_peer(&peers, "wg0", "Z").unwrap_err(), "no peer Z on wg0");
        assert!(select_peer(&peers, "wg0", "").is_err());
    }
}
