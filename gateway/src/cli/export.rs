//! A stock WireGuard client's configuration (wg-quick INI, what the mobile apps import) for a
//! peer of this gateway: as text, a QR code in the terminal, or a PNG.
//!
//! The server never has a peer's private key: `add-peer` prints the one it made once and keeps
//! nothing. So `export` writes everything the server knows (the peer's tunnel addresses, this
//! gateway's key, the preshared key) and takes the private key from the file the operator
//! kept (`--private-key FILE`, checked against the peer's public key). Without it the text
//! says where the key goes, and no QR code is made: one without a key would not import.

use std::fs::File;
use std::io::{BufWriter, Read as _};
use std::path::Path;

use ipnet::IpNet;

use super::human::short_key;
use super::keys::{parse_private, public_of};
use super::source::Daemon;
use crate::uapi::Key;

/// What the client's side needs besides keys.
#[derive(Debug, Clone)]
pub struct ClientOptions<'a> {
    /// Its tunnel addresses (`Address`).
    pub addresses: &'a [IpNet],
    /// How it reaches this gateway: host:port.
    pub endpoint: &'a str,
    /// What it routes into the tunnel (`AllowedIPs` on its side).
    pub routes: &'a [IpNet],
    pub dns: &'a [String],
    /// Seconds; 0 for none.
    pub keepalive: u16,
}

/// Where the QR code goes, if anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Qr<'a> {
    None,
    Terminal,
    Png(&'a Path),
}

/// `host:port`, as wg-quick's Endpoint wants it.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    match endpoint.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!("endpoint {endpoint:?} must be host:port")),
    }
}

/// The client's wg-quick configuration. Without `private`, a comment stands where the
/// PrivateKey line goes.
pub fn client_config(
    private: Option<&Key>,
    server_public: &Key,
    preshared: Option<&Key>,
    options: &ClientOptions<'_>,
) -> String {
    let mut conf = String::from("[Interface]\n");
    match private {
        Some(private) => conf += &format!("PrivateKey = {}\n", private.to_base64()),
        None => conf += "# PrivateKey = <the device's private key: this gateway never had it>\n",
    }
    let addrs: Vec<String> = options.addresses.iter().map(|a| a.to_string()).collect();
    conf += &format!("Address = {}\n", addrs.join(", "));
    if !options.dns.is_empty() {
        conf += &format!("DNS = {}\n", options.dns.join(", "));
    }
    conf += "\n[Peer]\n";
    conf += &format!("PublicKey = {}\n", server_public.to_base64());
    if let Some(preshared) = preshared.filter(|k| !k.is_zero()) {
        conf += &format!("PresharedKey = {}\n", preshared.to_base64());
    }
    let routes: Vec<String> = options.routes.iter().map(|r| r.to_string()).collect();
    conf += &format!("AllowedIPs = {}\n", routes.join(", "));
    conf += &format!("Endpoint = {}\n", options.endpoint);
    if options.keepalive != 0 {
        conf += &format!("PersistentKeepalive = {}\n", options.keepalive);
    }
    conf
}

/// `text` as a QR code of Unicode half blocks, light on dark as the apps' scanners want it.
pub fn terminal_qr(text: &str) -> Result<String, String> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| format!("QR code: {e}"))?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .build())
}

/// Pixels per QR module, and modules of white border (the standard's quiet zone).
const MODULE_PIXELS: usize = 8;
const QUIET_MODULES: usize = 4;

/// `text` as a QR code in an 8-bit grayscale PNG, written to `out`.
pub fn write_png(text: &str, out: impl std::io::Write) -> Result<(), String> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| format!("QR code: {e}"))?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET_MODULES) * MODULE_PIXELS;
    let mut pixels = vec![0xffu8; side * side];
    for (index, color) in colors.iter().enumerate() {
        if *color != qrcode::Color::Dark {
            continue;
        }
        let (x, y) = (index % modules + QUIET_MODULES, index / modules + QUIET_MODULES);
        for row in y * MODULE_PIXELS..(y + 1) * MODULE_PIXELS {
            let start = row * side + x * MODULE_PIXELS;
            pixels[start..start + MODULE_PIXELS].fill(0);
        }
    }
    let side = u32::try_from(side).map_err(|_| "QR code too large".to_string())?;
    let mut encoder = png::Encoder::new(out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(&pixels).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())
}

/// The private key in `path` (`-`: standard input).
fn read_private_key(path: &Path) -> Result<Key, String> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).map_err(|e| format!("reading stdin: {e}"))?;
    } else {
        text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    }
    parse_private(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// What `export` needs from the command line.
#[derive(Debug, Clone)]
pub struct Export<'a> {
    pub interface: &'a str,
    pub peer: &'a str,
    pub private_key: Option<&'a Path>,
    /// The client's addresses; empty: the peer's AllowedIPs on this gateway.
    pub addresses: &'a [IpNet],
    pub endpoint: &'a str,
    pub routes: &'a [IpNet],
    pub dns: &'a [String],
    pub keepalive: u16,
    pub qr: Qr<'a>,
}

pub fn export(request: &Export<'_>) -> Result<(), String> {
    check_endpoint(request.endpoint)?;
    if request.qr != Qr::None && request.private_key.is_none() {
        return Err("a QR code without the device's private key would not import: \
                    give it with --private-key FILE"
            .into());
    }
    let daemon = Daemon::read(request.interface)?;
    let server_public = daemon.public_key()?;
    let peer = daemon.peer(request.peer)?;
    let key = peer.public_key.to_base64();
    let named =
        daemon.status.peers.iter().find(|p| p.public_key == key).and_then(|p| p.name.clone());
    let name = named.unwrap_or_else(|| short_key(&key));
    let private = match request.private_key {
        Some(path) => {
            let private = read_private_key(path)?;
            if public_of(&private) != peer.public_key {
                return Err(format!(
                    "the private key in {} is not peer {name}'s (its public key is {})",
                    path.display(),
                    short_key(&public_of(&private).to_base64())
                ));
            }
            Some(private)
        }
        None => None,
    };
    let addresses =
        if request.addresses.is_empty() { &peer.allowed_ips[..] } else { request.addresses };
    if addresses.is_empty() {
        return Err(format!(
            "peer {name} has no allowed IPs on {}: give its address with --address",
            request.interface
        ));
    }
    // Opened before anything is printed: an unwritable path fails alone.
    let png = match request.qr {
        Qr::Png(path) => Some((
            path,
            File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?,
        )),
        _ => None,
    };
    let options = ClientOptions {
        addresses,
        endpoint: request.endpoint,
        routes: request.routes,
        dns: request.dns,
        keepalive: request.keepalive,
    };
    let conf =
        client_config(private.as_ref(), &server_public, peer.preshared_key.as_ref(), &options);
    if let Some((path, file)) = png {
        let mut out = BufWriter::new(file);
        write_png(&conf, &mut out)
            .and_then(|()| std::io::Write::flush(&mut out).map_err(|e| e.to_string()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    print!("{conf}");
    if request.qr == Qr::Terminal {
        println!("\n{}", terminal_qr(&conf)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options<'a>(
        addresses: &'a [IpNet],
        routes: &'a [IpNet],
        dns: &'a [String],
    ) -> ClientOptions<'a> {
        ClientOptions { addresses, endpoint: "vps.example:51820", routes, dns, keepalive: 25 }
    }

    #[test]
    fn the_client_config_is_what_wg_quick_reads() {
        let private = Key([1; 32]).clamped();
        let server = public_of(&Key([2; 32]).clamped());
        let psk = Key([3; 32]);
        let addresses = ["10.0.0.7/32".parse().unwrap()];
        let routes = ["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
        let dns = ["10.0.0.1".to_string()];
        let conf =
            client_config(Some(&private), &server, Some(&psk), &options(&addresses, &routes, &dns));
        assert_eq!(
            conf,
            format!(
                "[Interface]\nPrivateKey = {}\nAddress = 10.0.0.7/32\nDNS = 10.0.0.1\n\n[Peer]\n\
                 PublicKey = {}\nPresharedKey = {}\nAllowedIPs = 0.0.0.0/0, ::/0\n\
                 Endpoint = vps.example:51820\nPersistentKeepalive = 25\n",
                private.to_base64(),
                server.to_base64(),
                psk.to_base64()
            )
        );
        let without =
            client_config(None, &server, Some(&Key([0; 32])), &options(&addresses, &routes, &[]));
        assert!(without.starts_with("[Interface]\n# PrivateKey = <the device's private key"));
        assert!(!without.contains("PresharedKey") && !without.contains("DNS"));
    }

    #[test]
    fn the_png_is_a_png_of_the_whole_code() {
        let mut out = Vec::new();
        write_png("[Interface]\nPrivateKey = x\n", &mut out).unwrap();
        assert_eq!(&out[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = png::Decoder::new(std::io::Cursor::new(&out));
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        let modules = qrcode::QrCode::new(b"[Interface]\nPrivateKey = x\n").unwrap().width();
        assert_eq!(info.width as usize, (modules + 2 * QUIET_MODULES) * MODULE_PIXELS);
        assert_eq!(info.width, info.height);
    }

    #[test]
    fn endpoints_need_a_port() {
        assert!(check_endpoint("vps.example:51820").is_ok());
        assert!(check_endpoint("[2001:db8::1]:51820").is_ok());
        for bad in ["vps.example", ":51820", "vps:port", "vps:70000"] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }
}
