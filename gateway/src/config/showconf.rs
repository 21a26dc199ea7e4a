//! A device's live configuration as `wg showconf` prints it: what `wg setconf` (and the
//! `[Interface]`/`[Peer]` half of a wg-quick file) reads back to the same device.

use std::fmt::Write as _;

use crate::uapi::DeviceSnapshot;

/// `[Interface]` (ListenPort, FwMark, PrivateKey), then each peer: PublicKey, PresharedKey,
/// AllowedIPs, Endpoint, PersistentKeepalive. Absent or zero fields are left out.
/// `interface_lines` go right after `[Interface]` (wg-quick's own keys, for SaveConfig).
pub fn format(snapshot: &DeviceSnapshot, interface_lines: &str) -> String {
    let mut out = String::from("[Interface]\n");
    out += interface_lines;
    if snapshot.listen_port != 0 {
        let _ = writeln!(out, "ListenPort = {}", snapshot.listen_port);
    }
    if snapshot.fwmark != 0 {
        let _ = writeln!(out, "FwMark = {:#x}", snapshot.fwmark);
    }
    if let Some(key) = snapshot.private_key.filter(|key| !key.is_zero()) {
        let _ = writeln!(out, "PrivateKey = {}", key.to_base64());
    }
    for peer in &snapshot.peers {
        let _ = writeln!(out, "\n[Peer]\nPublicKey = {}", peer.public_key.to_base64());
        if let Some(key) = peer.preshared_key.filter(|key| !key.is_zero()) {
            let _ = writeln!(out, "PresharedKey = {}", key.to_base64());
        }
        if !peer.allowed_ips.is_empty() {
            let prefixes: Vec<String> = peer.allowed_ips.iter().map(|p| p.to_string()).collect();
            let _ = writeln!(out, "AllowedIPs = {}", prefixes.join(", "));
        }
        if let Some(endpoint) = peer.endpoint {
            let _ = writeln!(out, "Endpoint = {endpoint}");
        }
        if peer.persistent_keepalive_interval != 0 {
            let _ = writeln!(out, "PersistentKeepalive = {}", peer.persistent_keepalive_interval);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::wg_quick;
    use crate::uapi::{Key, PeerSnapshot};

    #[test]
    fn round_trips_through_the_parser() {
        let private = Key([7; 32]).clamped();
        let mut peer = PeerSnapshot::new(Key([9; 32]));
        peer.preshared_key = Some(Key([3; 32]));
        peer.endpoint = Some("[2001:db8::1]:51820".parse().unwrap());
        peer.persistent_keepalive_interval = 25;
        peer.allowed_ips = vec!["10.0.0.2/32".parse().unwrap(), "fd00::/64".parse().unwrap()];
        let mut bare = PeerSnapshot::new(Key([5; 32]));
        bare.preshared_key = Some(Key::ZERO);
        let snapshot = DeviceSnapshot {
            private_key: Some(private),
            listen_port: 51820,
            fwmark: 0xca6c,
            peers: vec![peer, bare],
        };
        let text = format(&snapshot, "Address = 10.0.0.1/24\n");
        assert!(text.starts_with("[Interface]\nAddress = 10.0.0.1/24\nListenPort = 51820\n"));
        assert!(text.contains("FwMark = 0xca6c\n"));
        let parsed = wg_quick::parse(&text).unwrap();
        assert_eq!(parsed.addresses, vec!["10.0.0.1/24".parse().unwrap()]);
        assert_eq!(parsed.device.private_key, Some(private));
        assert_eq!(parsed.device.listen_port, Some(51820));
        assert_eq!(parsed.device.fwmark, Some(0xca6c));
        let peers = &parsed.device.peers;
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0].preshared_key, Some(Key([3; 32])));
        assert_eq!(peers[0].endpoint.as_deref(), Some("[2001:db8::1]:51820"));
        assert_eq!(peers[0].persistent_keepalive, Some(25));
        assert_eq!(peers[0].allowed_ips, snapshot.peers[0].allowed_ips);
        // Zero fields are not written at all.
        assert_eq!(peers[1].preshared_key, None);
        assert_eq!(peers[1].persistent_keepalive, None);
        assert!(peers[1].allowed_ips.is_empty());
    }
}
