//! gateway: the operator's command line for a running gatewayd.
//!
//! - `gateway status wg0` — which data path carries what, per peer, and the eBPF counters;
//! - `gateway add-peer wg0 --address 10.0.0.7/32 --endpoint vps.example:51820` — creates a key
//!   pair for a new device (a phone, a laptop), adds it to the running interface, and prints
//!   its wg-quick configuration and a QR code for the WireGuard mobile apps;
//! - `gateway genkey` / `gateway pubkey` — like `wg genkey` / `wg pubkey`;
//! - `gateway up wg0` / `gateway down wg0` — wg-quick's `up`/`down` with gatewayd as the
//!   interface, from the same configuration file (`/etc/wireguard/wg0.conf`, or a path);
//! - `gateway forward add/list/remove wg0 ...` — the public entry point: ports and names of
//!   this host's public addresses forwarded to hosts behind the tunnel, the clients' own
//!   addresses kept (see `gateway::entry::forward` for the syntax).

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use gateway::daemon::forward_socket::{self, Request, Response, SelectorRecord};
use gateway::daemon::status::{self, Status};
use gateway::entry::forward::{Forward, SelectorArgs};
use gateway::entry::store::ForwardRecord;
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
    /// Forward this host's public ports (or TLS/HTTP names) to hosts behind the tunnel.
    Forward {
        #[command(subcommand)]
        command: ForwardCommand,
    },
    /// Print a new private key (base64).
    Genkey,
    /// Read a private key on stdin, print its public key.
    Pubkey,
}

#[derive(Subcommand)]
enum ForwardCommand {
    /// Add a forward: `tcp|udp PORT[-PORT] --to IP[:PORT]`, `tls PORT --sni NAME --to IP:PORT`,
    /// `http PORT --host NAME --to IP:PORT` (`--default` instead of a name: the backend for
    /// names no other forward takes).
    Add {
        interface: String,
        /// tcp, udp, tls or http.
        protocol: String,
        /// PORT, or PORT-PORT for tcp and udp.
        ports: String,
        /// Where connections go: any address a peer's AllowedIPs route into the tunnel; with a
        /// port, a range maps onto it plus the offset into the range.
        #[arg(long, value_name = "IP[:PORT]")]
        to: String,
        #[command(flatten)]
        select: SelectOptions,
    },
    /// List the forwards, as a table or as JSON.
    List {
        interface: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a forward, named as it was added (without --to).
    Remove {
        interface: String,
        protocol: String,
        ports: String,
        #[command(flatten)]
        select: SelectOptions,
    },
}

/// What besides protocol and ports tells forwards apart.
#[derive(Args)]
struct SelectOptions {
    /// Only connections to this address of the host (default: every address).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// tls: the server name (SNI) the forward takes; `*.example.com` takes every name below.
    #[arg(long, value_name = "NAME", conflicts_with = "host")]
    sni: Option<String>,
    /// http: the Host the forward takes; `*.example.com` takes every name below.
    #[arg(long, value_name = "NAME")]
    host: Option<String>,
    /// tls/http: the forward for names no other forward on the port takes.
    #[arg(long)]
    default: bool,
}

impl SelectOptions {
    fn args<'a>(&'a self, protocol: &'a str, ports: &'a str) -> SelectorArgs<'a> {
        SelectorArgs {
            protocol,
            ports,
            listen: self.listen.as_deref(),
            sni: self.sni.as_deref(),
            host: self.host.as_deref(),
            default: self.default,
        }
    }
}

fn forward(command: ForwardCommand) -> Result<(), String> {
    match command {
        ForwardCommand::Add { interface, protocol, ports, to, select } => {
            // Checked here too, so that a typo is named without a daemon to ask.
            let forward =
                Forward::parse(&select.args(&protocol, &ports), &to).map_err(|e| e.to_string())?;
            match forward_socket::request(&interface, &Request::Add(ForwardRecord::from(&forward)))?
            {
                Response::Added(_) => Ok(()),
                other => Err(unexpected(other)),
            }
        }
        ForwardCommand::Remove { interface, protocol, ports, select } => {
            let args = select.args(&protocol, &ports);
            gateway::entry::forward::Selector::parse(&args).map_err(|e| e.to_string())?;
            let record = SelectorRecord {
                protocol,
                ports,
                listen: select.listen.clone(),
                sni: select.sni.clone(),
                host: select.host.clone(),
                default: select.default,
            };
            match forward_socket::request(&interface, &Request::Remove(record))? {
                Response::Removed(_) => Ok(()),
                other => Err(unexpected(other)),
            }
        }
        ForwardCommand::List { interface, json } => {
            match forward_socket::request(&interface, &Request::List)? {
                Response::Forwards(forwards) if json => {
                    let text =
                        serde_json::to_string_pretty(&forwards).map_err(|e| e.to_string())?;
                    println!("{text}");
                    Ok(())
                }
                Response::Forwards(forwards) => {
                    print!("{}", forward_table(&forwards, ""));
                    Ok(())
                }
                other => Err(unexpected(other)),
            }
        }
    }
}

/// The daemon's error line, or what it answered instead of what was asked.
fn unexpected(response: Response) -> String {
    match response {
        Response::Error(e) => e,
        other => format!("gatewayd answered {other:?}"),
    }
}

/// The forwards as an aligned table, each line after `indent`; nothing for none.
fn forward_table(forwards: &[ForwardRecord], indent: &str) -> String {
    if forwards.is_empty() {
        return String::new();
    }
    let header = ["PROTO", "PORTS", "LISTEN", "NAME", "TO"].map(String::from);
    let rows: Vec<[String; 5]> = forwards
        .iter()
        .map(|f| {
            let name = match (&f.sni, &f.host, f.default) {
                (Some(name), _, _) | (_, Some(name), _) => name.clone(),
                (_, _, true) => "(default)".into(),
                _ => "-".into(),
            };
            let listen = f.listen.clone().unwrap_or_else(|| "*".into());
            [f.protocol.clone(), f.ports.clone(), listen, name, f.to.clone()]
        })
        .collect();
    let mut widths = [0; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> =
            row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        text += indent;
        text += cells.join("  ").trim_end();
        text += "\n";
    }
    text
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
        let entry = if p.entry_point { "  (entry point)" } else { "" };
        println!(
            "peer {}  endpoint {}{entry}",
            p.public_key,
            p.endpoint.as_deref().unwrap_or("(none)")
        );
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
    print_entry(&s);
    Ok(())
}

/// The entry point: its forwards, what carries them, and its counters.
fn print_entry(s: &Status) {
    let entry = &s.entry;
    let is_entry_counter =
        |name: &str| ["Entry", "Proxy", "ReplyTo"].iter().any(|p| name.starts_with(p));
    let counters: Vec<(&String, &u64)> =
        s.ebpf_stats.iter().filter(|(name, _)| is_entry_counter(name)).collect();
    let behind_an_entry_point = s.peers.iter().any(|p| p.entry_point);
    if entry.forwards.is_empty() && !behind_an_entry_point {
        return;
    }
    println!("entry point:");
    if !entry.forwards.is_empty() {
        print!("{}", forward_table(&entry.forwards, "  "));
        let d = &entry.dataplane;
        let carried = |yes: bool, ebpf: &'static str, otherwise: &'static str| {
            if s.data_path == "ebpf" && yes { ebpf } else { otherwise }
        };
        println!(
            "  tcp/udp forwards: {}; tls/http: the proxy, backends see {}",
            carried(d.forwards_in_ebpf, "eBPF", "the proxy"),
            if d.proxy_steering { "the client's address" } else { "the tunnel address" }
        );
        println!(
            "  data plane: {} forward slots, {} forwarded flows, {} proxied connections",
            d.forward_slots, d.forwarded_flows, d.proxied_connections
        );
    }
    if behind_an_entry_point {
        println!("  replies sent back to entry peers: {} flows", entry.dataplane.reply_to_flows);
    }
    for (name, value) in counters {
        println!("  {name:<20} {value}");
    }
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
        Command::Forward { command } => forward(command),
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

/// A command-line mistake as one line: clap's message without its usage block.
fn one_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let message: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|line| !line.is_empty() && !line.starts_with("Usage:"))
        .collect();
    message.join(" ").trim_start_matches("error: ").to_string()
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            e.exit()
        }
        Err(e) => {
            eprintln!("gateway: {}", one_line(&e));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(protocol: &str, ports: &str, to: &str) -> ForwardRecord {
        ForwardRecord {
            protocol: protocol.into(),
            ports: ports.into(),
            listen: None,
            sni: None,
            host: None,
            default: false,
            to: to.into(),
        }
    }

    #[test]
    fn the_forwards_list_is_an_aligned_table() {
        let forwards = [
            record("tcp", "8000-8010", "10.0.0.2:9000"),
            ForwardRecord {
                listen: Some("192.0.2.1".into()),
                sni: Some("*.example.com".into()),
                ..record("tls", "443", "10.0.0.3:443")
            },
            ForwardRecord { default: true, ..record("http", "80", "[fd00::4]:80") },
        ];
        assert_eq!(
            forward_table(&forwards, ""),
            "PROTO  PORTS      LISTEN     NAME           TO\n\
             tcp    8000-8010  *          -              10.0.0.2:9000\n\
             tls    443        192.0.2.1  *.example.com  10.0.0.3:443\n\
             http   80         *          (default)      [fd00::4]:80\n"
        );
        assert_eq!(forward_table(&[], "  "), "");
    }

    #[test]
    fn command_line_mistakes_are_one_line() {
        let missing = Cli::try_parse_from(["gateway", "forward", "add", "wg0", "tcp", "80"]);
        let line = one_line(&missing.err().unwrap());
        assert_eq!(line, "the following required arguments were not provided: --to <IP[:PORT]>");
        let both = Cli::try_parse_from([
            "gateway", "forward", "remove", "wg0", "tls", "443", "--sni", "a", "--host", "b",
        ]);
        let line = one_line(&both.err().unwrap());
        assert!(line.starts_with("the argument '--sni <NAME>' cannot be used with"), "{line}");
        assert!(!line.contains('\n'));
    }
}
