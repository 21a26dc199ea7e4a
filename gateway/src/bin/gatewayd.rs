//! gatewayd: a WireGuard interface whose data path runs in eBPF, driven by the standard `wg`
//! and `wg-quick` tools like any userspace WireGuard implementation.

use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use gateway::config::load::GatewayConfig;
use gateway::config::values::XdpMode as FileXdpMode;
use gateway::daemon::config_file::StartConfig;
use gateway::daemon::ebpf::EbpfOptions;
use gateway::daemon::{self, Options};
use gateway::dataplane::{AttachPreference, Capacities, TunnelSends};
use gateway::uapi::Key;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "gatewayd",
    version,
    about = "WireGuard gateway daemon (eBPF data path, wg-compatible UAPI)"
)]
struct Args {
    /// Stay in the foreground instead of daemonizing (also: WG_PROCESS_FOREGROUND=1).
    #[arg(short, long)]
    foreground: bool,
    /// Run the data path in userspace only (no eBPF programs).
    #[arg(long)]
    no_ebpf: bool,
    /// Underlay interface to attach the receive programs to (repeatable). Without it, the
    /// interfaces peers' endpoints route through are found and attached automatically.
    #[arg(long = "xdp-iface", value_name = "IFACE")]
    xdp_ifaces: Vec<String>,
    /// LAN interface whose traffic to the tunnel is encrypted in XDP, and to which decrypted
    /// packets for the LAN are redirected (repeatable).
    #[arg(long = "lan-iface", value_name = "IFACE")]
    lan_ifaces: Vec<String>,
    /// How to attach to underlays: native XDP, generic XDP or TC (each falls back to the next)
    /// [default: native].
    #[arg(long, value_enum)]
    xdp_mode: Option<XdpMode>,
    /// Send hub and LAN traffic through the stack (nftables FORWARD rules apply) instead of
    /// re-encrypting or redirecting it in XDP.
    #[arg(long)]
    no_fast_forward: bool,
    /// Turn GSO off on the tunnel interface, so that the eBPF send path encrypts every TCP
    /// segment this host sends. By default bulk sends reach the daemon in GSO batches, which
    /// it seals with SIMD and sends in one call: faster for bulk, where a program has no SIMD.
    #[arg(long)]
    no_tun_gso: bool,
    /// Sessions (keypairs) the eBPF maps hold at once (three per peer at most)
    /// [default: 4096].
    #[arg(long)]
    max_sessions: Option<u32>,
    /// Peers the eBPF maps hold [default: 16384].
    #[arg(long)]
    max_peers: Option<u32>,
    /// A peer (its base64 public key) that brings in traffic from the internet, with the
    /// clients' addresses as sources: a VPS forwarding its public ports here (repeatable).
    /// Peers whose AllowedIPs hold 0.0.0.0/0 or ::/0 are entry points without it; name the
    /// others, e.g. a second VPS in front of the same host.
    #[arg(long = "entry-peer", value_name = "PUBKEY")]
    entry_peers: Vec<String>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics. Without a value: loopback,
    /// 127.0.0.1:9586; a port alone: 127.0.0.1:PORT; an address alone: port 9586. Put a bare
    /// --metrics after the interface name (or write --metrics=), or it takes the name as its
    /// value.
    #[arg(long, value_name = "ADDR[:PORT]", num_args = 0..=1, default_missing_value = "")]
    metrics: Option<String>,
    /// Make this host an exit node: IPv4 from the tunnel's peers routed out of OUTIF leaves
    /// with OUTIF's address (source NAT of TCP, UDP and ICMP echo, in eBPF; the kernel's
    /// nftables NAT with --no-ebpf).
    #[arg(long, value_name = "OUTIF")]
    masquerade: Option<String>,
    /// Where the interface's state (its forwards) is kept [default: /var/lib/gatewayd/<ifname>].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// Shorten every protocol timer by this factor. For interoperability tests only.
    #[arg(long, hide = true, default_value_t = 1)]
    test_timer_divisor: u32,
    /// The interface's configuration file (TOML, see docs/CONFIG.md), applied at start and kept
    /// up to date with changes made while running. Options given here override the file's.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Only check the --config file (keys, addresses, peers, forwards) and exit: 0 if it is
    /// good, 1 with one line naming file, line and field if not.
    #[arg(long, requires = "config")]
    check: bool,
    /// Name of the interface to create (at most 15 characters).
    #[arg(required_unless_present = "check")]
    interface: Option<String>,
}

/// wireguard-go's LOG_LEVEL (verbose, error, silent) maps onto tracing levels; RUST_LOG,
/// when set, takes precedence.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum XdpMode {
    Native,
    Generic,
    Tc,
}

fn init_logging() {
    let level = match std::env::var("LOG_LEVEL").as_deref() {
        Ok("verbose" | "debug") => "debug",
        Ok("error") => "error",
        Ok("silent") => "off",
        _ => "info",
    };
    // netlink-packet-route warns about every attribute newer than itself: noise, not news.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},netlink_packet_route=error")));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

/// The `--entry-peer` keys, or one line naming the first that is not a key.
fn entry_peers(keys: &[String]) -> Result<Vec<[u8; 32]>, String> {
    keys.iter()
        .map(|text| {
            Key::from_base64(text.trim())
                .map(|key| key.0)
                .map_err(|e| format!("--entry-peer '{text}' is not a public key: {e}"))
        })
        .collect()
}

impl From<FileXdpMode> for XdpMode {
    fn from(mode: FileXdpMode) -> XdpMode {
        match mode {
            FileXdpMode::Native => XdpMode::Native,
            FileXdpMode::Generic => XdpMode::Generic,
            FileXdpMode::Tc => XdpMode::Tc,
        }
    }
}

/// The command line with the file's settings under it: an option given overrides the file's,
/// a flag that turns something off wins over the file turning it on.
fn merge_file(args: &mut Args, file: &GatewayConfig) {
    let dataplane = &file.dataplane;
    args.no_ebpf |= !dataplane.ebpf;
    args.no_fast_forward |= !dataplane.fast_forward;
    args.no_tun_gso |= !dataplane.tun_gso;
    args.xdp_mode = args.xdp_mode.or(Some(dataplane.xdp_mode.into()));
    args.max_sessions = args.max_sessions.or(dataplane.max_sessions);
    args.max_peers = args.max_peers.or(dataplane.max_peers);
    if args.xdp_ifaces.is_empty() {
        args.xdp_ifaces = dataplane.underlays.iter().map(|name| name.0.clone()).collect();
    }
    if args.lan_ifaces.is_empty() {
        args.lan_ifaces = dataplane.lan.iter().map(|name| name.0.clone()).collect();
    }
    if args.entry_peers.is_empty() {
        args.entry_peers = dataplane.entry_peers.iter().map(|key| key.0.to_base64()).collect();
    }
    if args.metrics.is_none() {
        args.metrics = file.metrics.map(|address| address.to_string());
    }
    if args.masquerade.is_none() {
        args.masquerade = dataplane.masquerade.as_ref().map(|name| name.0.clone());
    }
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    init_logging();
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("gatewayd: {e}");
        ExitCode::FAILURE
    };
    let file = match args.config.as_deref().map(gateway::config::load::load).transpose() {
        Ok(file) => file,
        Err(e) => return fail(&e),
    };
    if args.check {
        if let Some(file) = &file {
            println!("{}: good", file.path.display());
        }
        return ExitCode::SUCCESS;
    }
    let Some(interface) = args.interface.clone() else {
        return fail(&"no interface named");
    };
    let start = match &file {
        Some(file) => {
            merge_file(&mut args, file);
            match StartConfig::prepare(file) {
                Ok(start) => Some(start),
                Err(e) => return fail(&e),
            }
        }
        None => None,
    };
    let entry_peers = match entry_peers(&args.entry_peers) {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("gatewayd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let metrics = match args.metrics.as_deref().map(gateway::metrics::address::parse).transpose() {
        Ok(address) => address,
        Err(e) => {
            eprintln!("gatewayd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let state_directory = args
        .state_dir
        .clone()
        .unwrap_or_else(|| daemon::forwards::default_state_directory(&interface));
    let foreground =
        args.foreground || std::env::var("WG_PROCESS_FOREGROUND").is_ok_and(|v| v == "1");
    let keep_output = std::env::var("LOG_LEVEL").is_ok_and(|v| v != "silent");
    let options = Options {
        interface,
        foreground,
        keep_output,
        timer_divisor: args.test_timer_divisor,
        ebpf: (!args.no_ebpf).then_some(EbpfOptions {
            prefer: match args.xdp_mode.unwrap_or(XdpMode::Native) {
                XdpMode::Native => AttachPreference::Native,
                XdpMode::Generic => AttachPreference::Generic,
                XdpMode::Tc => AttachPreference::Tc,
            },
            underlays: args.xdp_ifaces,
            lan: args.lan_ifaces,
            fast_forward: !args.no_fast_forward,
            tunnel_sends: if args.no_tun_gso {
                TunnelSends::PerSegment
            } else {
                TunnelSends::Batched
            },
        }),
        capacities: Capacities {
            sessions: args.max_sessions.unwrap_or(gateway_common::maps::DEFAULT_MAX_SESSIONS),
            peers: args.max_peers.unwrap_or(gateway_common::maps::DEFAULT_MAX_PEERS),
            ..Capacities::default()
        },
        state_directory,
        entry_peers,
        metrics,
        masquerade: args.masquerade,
        config: start,
    };
    match daemon::run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatewayd: {e}");
            ExitCode::FAILURE
        }
    }
}
