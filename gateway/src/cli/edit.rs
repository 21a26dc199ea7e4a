//! `add-peer` and `remove-peer`: changing the running interface's peers through its UAPI.

use super::export::{ClientOptions, check_endpoint, client_config, terminal_qr};
use super::keys::{new_private_key, public_of};
use super::source::{Daemon, device, select_peer};
use crate::uapi::client::set;
use crate::uapi::{AllowedIpChange, DeviceUpdate, PeerUpdate};

/// `add-peer`: a new key pair for a device, added to the interface with `addresses` as its
/// AllowedIPs; prints the device's configuration (and a QR code), the only time its private
/// key is shown (the gateway keeps none: see `export`).
pub fn add_peer(interface: &str, options: &ClientOptions<'_>, qr: bool) -> Result<(), String> {
    let server = device(interface)?;
    let server_public = server
        .private_key
        .as_ref()
        .map(public_of)
        .ok_or_else(|| format!("{interface} has no private key yet"))?;
    check_endpoint(options.endpoint)?;
    let private = new_private_key();
    let mut peer = PeerUpdate::new(public_of(&private));
    peer.allowed_ips = options.addresses.iter().map(|a| AllowedIpChange::Add(a.trunc())).collect();
    set(interface, &DeviceUpdate { peers: vec![peer], ..Default::default() })?;
    let conf = client_config(Some(&private), &server_public, None, options);
    print!("{conf}");
    if qr {
        println!("\n{}", terminal_qr(&conf)?);
    }
    Ok(())
}

/// `remove-peer`: the peer named by its key or a unique prefix of it; returns its whole key.
pub fn remove_peer(interface: &str, selector: &str) -> Result<String, String> {
    let daemon = Daemon::read(interface)?;
    let key = select_peer(&daemon.device.peers, interface, selector)?.public_key;
    let mut peer = PeerUpdate::new(key);
    peer.remove = true;
    set(interface, &DeviceUpdate { peers: vec![peer], ..Default::default() })?;
    Ok(key.to_base64())
}
