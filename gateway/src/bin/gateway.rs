//! gateway: the operator's command line for a running gatewayd.
//!
//! - `gateway status wg0` — which data path carries what, per peer, and the eBPF counters;
//! - `gateway add-peer wg0 --address 10.0.0.7/32 --endpoint vps.example:51820` — creates a key
//!   pair for a new device (a phone, a laptop), adds it to the running interface, and prints
//!   its wg-quick configuration and a QR code for the WireGuard mobile apps;
//! - `gateway genkey` / `gateway pubkey` — like `wg genkey` / `wg pubkey`;
//! - `gateway up wg0` / `gateway down wg0` — wg-quick's `up`/`down` with gatewayd as the
//!   interface, from the same configuration file (`/etc/wireguard/wg0.conf`, or a path).

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gateway::daemon::status::{self, Status};
use gateway::uapi::client::{get, set};
use gateway::uapi::{AllowedIpChange, DeviceUpdate, Key, PeerUpdate};
use ipnet::IpNet;
use rand_core::{OsRng, RngCore};

#[derive(Parser)]
#[command(
    version,
    about = "Operate gatewayd: bring interfaces up and down, inspect them, add peers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show data paths, per-peer counters and eBPF statistics of an interface.
    Status {
        interface: String,
        /// Print the daemon's JSON document as is.
        #[arg(long)]
        json: bool,
    },
    /// Add a road-warrior peer: new keys, added to the interface, client config printed.
    AddPeer {
        interface: String,
        /// The tunnel address(es) the new device gets (its AllowedIPs on this side).
        #[arg(long = "address", required = true)]
        addresses: Vec<IpNet>,
        /// How the device reaches this gateway: public host or address and port.
        #[arg(long)]
        endpoint: String,
        /// What the device routes into the tunnel (default: everything).
        #[arg(long = "route", default_values_t = vec!["0.0.0.0/0".parse::<IpNet>().unwrap(), "::/0".parse().unwrap()])]
        routes: Vec<IpNet>,
        /// DNS server(s) for the device's config.
        #[arg(long)]
        dns: Vec<String>,
        /// Keepalive interval the device uses (seconds; 0 for none). Phones behind NAT want one.
        #[arg(long, default_value_t = 25)]
        keepalive: u16,
        /// Also print the configuration as a QR code (for the WireGuard mobile apps).
        #[arg(long)]
        qr: bool,
    },
    /// Bring an interface up from a wg-quick configuration, with gatewayd (like `wg-quick up`).
    Up {
        /// A configuration file `<interface>.conf`, or an interface name for
        /// /etc/wireguard/<interface>.conf.
        config: String,
        /// Options for gatewayd, after `--` (e.g. `-- --no-ebpf`, `-- --lan-iface eth1`).
        #[arg(last = true)]
        daemon_args: Vec<String>,
    },
    /// Take an interface brought up with `gateway up` down again (like `wg-quick down`).
    Down {
        /// The same configuration file or interface name as for `up`.
        config: String,
    },
    /// Print a new private key (base64).
    Genkey,
    /// Read a private key on stdin, print its public key.
    Pubkey,
}

fn new_private_key() -> Key {
    let mut k = [0u8; 32];
    OsRng.fill_bytes(&mut k);
    Key(k).clamped()
}

fn public_of(private: &Key) -> Key {
    Key(x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(private.0)).to_bytes())
}

fn status(interface: &str, json: bool) -> Result<(), String> {
    let path = status::socket_path(interface);
    let mut stream = UnixStream::connect(&path)
        .map_err(|e| format!("no gatewayd status for {interface} at {}: {e}", path.display()))?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(|e| e.to_string())?;
    if json {
        println!("{text}");
        return Ok(());
    }
    let s: Status = serde_json::from_str(&text).map_err(|e| format!("bad status document: {e}"))?;
    println!(
        "interface {}  listen port {}  data path: {}",
        s.interface, s.listen_port, s.data_path
    );
    for p in &s.programs {
        println!("  program: {p}");
    }
    for a in &s.attachments {
        println!("  attached: {a}");
    }
    for p in &s.peers {
        println!("peer {}  endpoint {}", p.public_key, p.endpoint.as_deref().unwrap_or("(none)"));
        for (name, c) in [("userspace", p.userspace), ("ebpf", p.ebpf)] {
            println!(
                "  {name:<9}  rx {:>12} B {:>9} pkts   tx {:>12} B {:>9} pkts",
                c.rx_bytes, c.rx_packets, c.tx_bytes, c.tx_packets
            );
        }
    }
    if !s.ebpf_stats.is_empty() {
        println!("eBPF programs:");
        for (k, v) in s.ebpf_stats.iter().filter(|(_, v)| **v != 0) {
            println!("  {k:<20} {v}");
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn add_peer(
    interface: &str,
    addresses: &[IpNet],
    endpoint: &str,
    routes: &[IpNet],
    dns: &[String],
    keepalive: u16,
    qr: bool,
) -> Result<(), String> {
    let server = get(interface)?;
    let server_public = server
        .private_key
        .as_ref()
        .map(public_of)
        .ok_or_else(|| format!("{interface} has no private key yet"))?;
    if endpoint.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
        return Err(format!("endpoint {endpoint:?} must be host:port"));
    }
    let private = new_private_key();
    let public = public_of(&private);
    let mut peer = PeerUpdate::new(public);
    peer.allowed_ips = addresses.iter().map(|a| AllowedIpChange::Add(a.trunc())).collect();
    set(interface, &DeviceUpdate { peers: vec![peer], ..Default::default() })?;

    let mut conf = String::from("[Interface]\n");
    conf += &format!("PrivateKey = {}\n", private.to_base64());
    let addrs: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
    conf += &format!("Address = {}\n", addrs.join(", "));
    if !dns.is_empty() {
        conf += &format!("DNS = {}\n", dns.join(", "));
    }
    conf += "\n[Peer]\n";
    conf += &format!("PublicKey = {}\n", server_public.to_base64());
    let routes: Vec<String> = routes.iter().map(|r| r.to_string()).collect();
    conf += &format!("AllowedIPs = {}\n", routes.join(", "));
    conf += &format!("Endpoint = {endpoint}\n");
    if keepalive != 0 {
        conf += &format!("PersistentKeepalive = {keepalive}\n");
    }
    print!("{conf}");
    if qr {
        let code = qrcode::QrCode::new(conf.as_bytes()).map_err(|e| format!("QR code: {e}"))?;
        let image = code
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build();
        println!("\n{image}");
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Status { interface, json } => status(&interface, json),
        Command::AddPeer { interface, addresses, endpoint, routes, dns, keepalive, qr } => {
            add_peer(&interface, &addresses, &endpoint, &routes, &dns, keepalive, qr)
        }
        Command::Up { config, daemon_args } => gateway::quick::up(&config, &daemon_args),
        Command::Down { config } => gateway::quick::down(&config),
        Command::Genkey => {
            println!("{}", new_private_key().to_base64());
            Ok(())
        }
        Command::Pubkey => {
            let mut input = String::new();
            std::io::stdin().read_to_string(&mut input).map_err(|e| e.to_string())?;
            let key =
                Key::from_base64(input.trim()).map_err(|e| format!("bad private key: {e}"))?;
            println!("{}", public_of(&key.clamped()).to_base64());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
