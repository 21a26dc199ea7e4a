//! gatewayd: a WireGuard interface whose data path runs in eBPF, driven by the standard `wg`
//! and `wg-quick` tools like any userspace WireGuard implementation.

use std::process::ExitCode;

use clap::Parser;
use gateway::daemon::{self, Options};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(version, about = "WireGuard gateway daemon (eBPF data path, wg-compatible UAPI)")]
struct Args {
    /// Stay in the foreground instead of daemonizing (also: WG_PROCESS_FOREGROUND=1).
    #[arg(short, long)]
    foreground: bool,
    /// Shorten every protocol timer by this factor. For interoperability tests only.
    #[arg(long, hide = true, default_value_t = 1)]
    test_timer_divisor: u32,
    /// Name of the interface to create (at most 15 characters).
    interface: String,
}

/// wireguard-go's LOG_LEVEL (verbose, error, silent) maps onto tracing levels; RUST_LOG,
/// when set, takes precedence.
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

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    let foreground =
        args.foreground || std::env::var("WG_PROCESS_FOREGROUND").is_ok_and(|v| v == "1");
    let keep_output = std::env::var("LOG_LEVEL").is_ok_and(|v| v != "silent");
    let options = Options {
        interface: args.interface,
        foreground,
        keep_output,
        timer_divisor: args.test_timer_divisor,
    };
    match daemon::run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatewayd: {e}");
            ExitCode::FAILURE
        }
    }
}
