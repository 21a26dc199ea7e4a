//! gateway: the operator's command line for a running gatewayd. Every read takes `--json`.
//!
//! - `gateway status wg0` — the interface, its data path and programs, each peer (endpoint,
//!   latest handshake, what each path carried), the programs' counters and the entry point;
//! - `gateway peers wg0` — one aligned line per peer; `gateway routes wg0` — which peer each
//!   AllowedIPs prefix goes to, and the kernel's routes into the interface;
//! - `gateway add-peer wg0 --address 10.0.0.7/32 --endpoint vps.example:51820` — creates a key
//!   pair for a new device (a phone, a laptop), adds it to the running interface, and prints
//!   its wg-quick configuration and a QR code for the WireGuard mobile apps;
//! - `gateway export wg0 PEER --endpoint vps.example:51820 --private-key FILE [--qr | --png
//!   FILE]` — that configuration again for an existing peer; `gateway remove-peer wg0 PEER`
//!   (a peer is named by its public key or a prefix only its key has);
//! - `gateway genkey` / `gateway pubkey` — like `wg genkey` / `wg pubkey`;
//! - `gateway up wg0` / `gateway down wg0` — wg-quick's `up`/`down` with gatewayd as the
//!   interface, from the same configuration file (`/etc/wireguard/wg0.conf`, or a path);
//! - `gateway forward add/list/remove wg0 ...` (and `gateway forwards wg0`) — the public entry
//!   point: ports and names of this host's public addresses forwarded to hosts behind the
//!   tunnel, the clients' own addresses kept (see `gateway::entry::forward` for the syntax);
//! - `gateway network create/invite/join/members/remove/status wg0 ...` and `gateway route
//!   advertise/list/approve/reject wg0 ...` — one network run from the VPS: members enrolled
//!   with a token, addresses and names given by the controller, routes it approves;
//! - `gateway completions bash|zsh|fish` — a completion script for the shell.
//!
//! The pieces live in `gateway::cli`; this file is the command tree.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use gateway::cli::export::{ClientOptions, Export, Qr};
use gateway::cli::peers::PeersView;
use gateway::cli::routes::RoutesView;
use gateway::cli::source::{Daemon, status_document};
use gateway::cli::{edit, export, forwards, keys, status};
use gateway::entry::forward::SelectorArgs;
use ipnet::IpNet;

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "Operate gatewayd: bring interfaces up and down, inspect them, add and remove peers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the interface, its data path and programs, each peer and the eBPF counters.
    Status {
        interface: String,
        /// Print the daemon's status document (JSON) as is.
        #[arg(long)]
        json: bool,
    },
    /// List the peers: endpoint, data path, latest handshake, rx/tx per path, allowed IPs.
    Peers {
        interface: String,
        #[arg(long)]
        json: bool,
    },
    /// Show which peer each AllowedIPs prefix goes to, and the kernel's routes into the
    /// interface.
    Routes {
        interface: String,
        #[arg(long)]
        json: bool,
    },
    /// List the forwards (the same as `forward list`).
    Forwards {
        interface: String,
        #[arg(long)]
        json: bool,
    },
    /// Add a road-warrior peer: new keys, added to the interface, client config printed.
    AddPeer {
        interface: String,
        /// The tunnel address(es) the new device gets (its AllowedIPs on this side).
        #[arg(long = "address", required = true)]
        addresses: Vec<IpNet>,
        #[command(flatten)]
        client: ClientArgs,
        /// Also print the configuration as a QR code (for the WireGuard mobile apps).
        #[arg(long)]
        qr: bool,
    },
    /// Print a stock WireGuard client's configuration for an existing peer.
    Export {
        interface: String,
        /// The peer: its public key, or a prefix of it no other peer's key has.
        peer: String,
        /// The device's private key (a file as `gateway genkey` writes it; `-` for stdin). The
        /// gateway never has it: without it the configuration says where it goes.
        #[arg(long, value_name = "FILE")]
        private_key: Option<PathBuf>,
        /// The device's tunnel address(es) (default: its AllowedIPs on this side).
        #[arg(long = "address")]
        addresses: Vec<IpNet>,
        #[command(flatten)]
        client: ClientArgs,
        /// Also print the configuration as a QR code in the terminal.
        #[arg(long, conflicts_with = "png")]
        qr: bool,
        /// Write the configuration as a QR code into this PNG file.
        #[arg(long, value_name = "FILE")]
        png: Option<PathBuf>,
    },
    /// Remove a peer, named by its public key or a prefix of it no other peer's key has.
    RemovePeer { interface: String, peer: String },
    /// Bring an interface up from a wg-quick configuration, with gatewayd (like `wg-quick up`),
    /// or from a gateway configuration file (`<interface>.toml`, applied by gatewayd itself).
    Up {
        /// A configuration file `<interface>.conf` or `<interface>.toml`, or an interface name
        /// for /etc/gateway/<interface>.toml if it exists, else /etc/wireguard/<interface>.conf.
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
    /// Apply an edited configuration file to the running gatewayd (started with --config):
    /// what changed only, established sessions kept. Same as `systemctl reload gatewayd@IFACE`.
    Reload { interface: String },
    /// Forward this host's public ports (or TLS/HTTP names) to hosts behind the tunnel.
    Forward {
        #[command(subcommand)]
        command: ForwardCommand,
    },
    /// One network run from the VPS: create it, invite and enroll members, list and remove
    /// them (see docs/NETWORK.md).
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// Routes members advertise into the network, approved or rejected on the controller.
    Route {
        #[command(subcommand)]
        command: RouteCommand,
    },
    /// Print a new private key (base64).
    Genkey,
    /// Read a private key on stdin, print its public key.
    Pubkey,
    /// Print a completion script for the shell (e.g. `gateway completions bash >
    /// /etc/bash_completion.d/gateway`).
    Completions { shell: Shell },
}

/// How a client reaches this gateway, as its configuration says.
#[derive(Args)]
struct ClientArgs {
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
}

impl ClientArgs {
    fn options<'a>(&'a self, addresses: &'a [IpNet]) -> ClientOptions<'a> {
        ClientOptions {
            addresses,
            endpoint: &self.endpoint,
            routes: &self.routes,
            dns: &self.dns,
            keepalive: self.keepalive,
        }
    }
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

#[derive(Subcommand)]
enum NetworkCommand {
    /// Make the interface the controller of a new network NETWORK (also its DNS domain).
    Create {
        interface: String,
        network: String,
        /// Where members reach this host's WireGuard port (host:port; the interface's listen
        /// port).
        #[arg(long)]
        endpoint: String,
        /// This controller's name in the network.
        #[arg(long)]
        name: String,
        /// The pool members' IPv4 addresses come from [default: 100.64.0.0/10].
        #[arg(long, value_name = "CIDR")]
        ipv4_pool: Option<ipnet::Ipv4Net>,
    },
    /// Print a join token (single-use unless --reusable).
    Invite {
        interface: String,
        #[arg(long)]
        reusable: bool,
        /// How long the token holds: 90s, 10m, 1h, 2d.
        #[arg(long, default_value = "1h")]
        expires: String,
    },
    /// Enroll the interface with a token from `network invite`; its own key never leaves it.
    Join {
        interface: String,
        token: String,
        /// The member's name in the network (`NAME.NETWORK` resolves to it).
        #[arg(long)]
        name: String,
    },
    /// List the members (controller).
    Members {
        interface: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a member: its peer goes at once, the others learn it from the next map.
    Remove { interface: String, name: String },
    /// The interface's role in its network.
    Status {
        interface: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RouteCommand {
    /// Ask the controller to route PREFIX (a LAN behind this member, or 0.0.0.0/0 and ::/0 for
    /// an exit node) to this member.
    Advertise { interface: String, prefix: IpNet },
    /// Every advertised route and its state (controller).
    List {
        interface: String,
        #[arg(long)]
        json: bool,
    },
    /// Approve a member's advertised route: the other members route PREFIX to it.
    Approve { interface: String, member: String, prefix: IpNet },
    /// Reject a member's advertised route (or withdraw an approval).
    Reject { interface: String, member: String, prefix: IpNet },
}

fn network(command: NetworkCommand) -> Result<(), String> {
    use gateway::cli::network::{self as cli, ask};
    use gateway::daemon::network::NetworkRequest as Ask;
    match command {
        NetworkCommand::Create { interface, network, endpoint, name, ipv4_pool } => {
            let created = ask(&interface, Ask::Create { network, name, endpoint, ipv4_pool })?;
            print!("{}", cli::created(&created));
        }
        NetworkCommand::Invite { interface, reusable, expires } => {
            let expires_seconds = cli::parse_duration(&expires)?.as_secs();
            let invitation = ask(&interface, Ask::Invite { reusable, expires_seconds })?;
            println!("{}", invitation["token"].as_str().unwrap_or_default());
        }
        NetworkCommand::Join { interface, token, name } => {
            print!("{}", cli::joined(&ask(&interface, Ask::Join { token, name })?));
        }
        NetworkCommand::Members { interface, json } => {
            gateway::cli::print(json, &ask(&interface, Ask::Members)?, cli::members_table)?;
        }
        NetworkCommand::Remove { interface, name } => {
            let removed = ask(&interface, Ask::Remove { name })?;
            println!("removed {}", removed["removed"].as_str().unwrap_or_default());
        }
        NetworkCommand::Status { interface, json } => {
            gateway::cli::print(json, &ask(&interface, Ask::Status)?, cli::status_text)?;
        }
    }
    Ok(())
}

fn route(command: RouteCommand) -> Result<(), String> {
    use gateway::cli::network::{ask, routes_table};
    use gateway::daemon::network::NetworkRequest as Ask;
    let decide = |interface: &str, member: String, prefix: IpNet, approve: bool| {
        let route = ask(interface, Ask::DecideRoute { member, prefix, approve })?;
        print!("{}", routes_table(&serde_json::Value::Array(vec![route])));
        Ok(())
    };
    match command {
        RouteCommand::Advertise { interface, prefix } => {
            let route = ask(&interface, Ask::Advertise { prefix })?;
            print!("{}", routes_table(&serde_json::Value::Array(vec![route])));
            Ok(())
        }
        RouteCommand::List { interface, json } => {
            gateway::cli::print(json, &ask(&interface, Ask::Routes)?, routes_table)
        }
        RouteCommand::Approve { interface, member, prefix } => {
            decide(&interface, member, prefix, true)
        }
        RouteCommand::Reject { interface, member, prefix } => {
            decide(&interface, member, prefix, false)
        }
    }
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
            forwards::add(&interface, &select.args(&protocol, &ports), &to)
        }
        ForwardCommand::Remove { interface, protocol, ports, select } => {
            forwards::remove(&interface, &select.args(&protocol, &ports))
        }
        ForwardCommand::List { interface, json } => forwards::list(&interface, json),
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Status { interface, json: true } => {
            println!("{}", status_document(&interface)?);
            Ok(())
        }
        Command::Status { interface, json: false } => {
            print!("{}", status::render(&Daemon::read(&interface)?, SystemTime::now()));
            Ok(())
        }
        Command::Peers { interface, json } => {
            let peers = PeersView::new(&Daemon::read(&interface)?, SystemTime::now());
            gateway::cli::print(json, &peers, PeersView::table)
        }
        Command::Routes { interface, json } => {
            let routes = RoutesView::new(&Daemon::read(&interface)?);
            gateway::cli::print(json, &routes, RoutesView::render)
        }
        Command::Forwards { interface, json } => forwards::list(&interface, json),
        Command::AddPeer { interface, addresses, client, qr } => {
            edit::add_peer(&interface, &client.options(&addresses), qr)
        }
        Command::Export { interface, peer, private_key, addresses, client, qr, png } => {
            let qr = match (&png, qr) {
                (Some(path), _) => Qr::Png(path),
                (None, true) => Qr::Terminal,
                (None, false) => Qr::None,
            };
            export::export(&Export {
                interface: &interface,
                peer: &peer,
                private_key: private_key.as_deref(),
                addresses: &addresses,
                endpoint: &client.endpoint,
                routes: &client.routes,
                dns: &client.dns,
                keepalive: client.keepalive,
                qr,
            })
        }
        Command::RemovePeer { interface, peer } => {
            let key = edit::remove_peer(&interface, &peer)?;
            println!("removed peer {key} from {interface}");
            Ok(())
        }
        Command::Up { config, daemon_args } => gateway::quick::up(&config, &daemon_args),
        Command::Down { config } => gateway::quick::down(&config),
        Command::Forward { command } => forward(command),
        Command::Network { command } => network(command),
        Command::Route { command } => route(command),
        Command::Reload { interface } => gateway::cli::reload::reload(&interface),
        Command::Genkey => {
            println!("{}", keys::new_private_key().to_base64());
            Ok(())
        }
        Command::Pubkey => {
            let mut input = String::new();
            std::io::stdin().read_to_string(&mut input).map_err(|e| e.to_string())?;
            println!("{}", keys::pubkey(&input)?);
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "gateway", &mut std::io::stdout());
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

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
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
        let both = Cli::try_parse_from([
            "gateway",
            "export",
            "wg0",
            "abc",
            "--endpoint",
            "h:1",
            "--qr",
            "--png",
            "x.png",
        ]);
        let line = one_line(&both.err().unwrap());
        assert!(line.starts_with("the argument '--qr' cannot be used with"), "{line}");
        let shell = Cli::try_parse_from(["gateway", "completions", "tcsh"]);
        let line = one_line(&shell.err().unwrap());
        assert!(line.starts_with("invalid value 'tcsh' for '<SHELL>'"), "{line}");
    }
}
