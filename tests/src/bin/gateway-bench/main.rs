//! `gateway-bench`: the load generators `cargo xtask bench` runs inside its namespaces, each
//! printing one JSON document on stdout.
//!
//! - `udp-send` / `udp-recv`: a paced, batched UDP generator (sendmmsg) and a counting receiver
//!   (recvmmsg): packet rates iperf3 cannot offer on a small machine.
//! - `peers`: `[Peer]` config sections with keys derived from a seed (and blocks of /32s), for
//!   scale tests and for the handshake flood's responder.
//! - `handshakes`: the flood: valid initiations built with the gateway's own protocol modules
//!   as the `peers` of a seed, responses counted.
//! - `ebpf-micro`: nanoseconds per packet of the eBPF programs through BPF_PROG_TEST_RUN.
//! - `verifier`: the instructions the kernel's verifier processed for each program.
//! - `xdp-pass`: keeps a pass-through XDP program on veth ends that must receive XDP_TX frames.
//! - `connect`: new TCP connections from several clients at once (a line or a ClientHello as
//!   the request), their rate and time to first byte, through the entry point's forwards.

mod connect;
mod ebpf_micro;
mod handshakes;
mod peer_sockets;
mod peers;
mod udp_batch;
mod udp_payload;
mod udp_recv;
mod udp_send;
mod verifier;
mod xdp_pass;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "gateway-bench", about = "Load generators for `cargo xtask bench`")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send UDP datagrams at a paced rate (or as fast as possible) for a while.
    UdpSend(udp_send::Options),
    /// Count the generator's datagrams until the flow stops.
    UdpRecv(udp_recv::Options),
    /// Print `[Peer]` sections (seeded keys, optional allowed IPs) in wg(8) config format.
    Peers(peers::Options),
    /// Send handshake initiations from many peers and count the responses.
    Handshakes(handshakes::Options),
    /// Nanoseconds per packet of the eBPF programs (BPF_PROG_TEST_RUN).
    EbpfMicro(ebpf_micro::Options),
    /// Instructions the kernel's verifier processed per program (loads the data plane).
    Verifier(verifier::Options),
    /// Attach a pass-through XDP program to interfaces until killed.
    XdpPass(xdp_pass::Options),
    /// Open, use and close TCP connections for a while; report their rate and first-byte times.
    Connect(connect::Options),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::UdpSend(options) => udp_send::run(&options),
        Command::UdpRecv(options) => udp_recv::run(&options),
        Command::Peers(options) => peers::print_config(&options),
        Command::Handshakes(options) => handshakes::run(&options),
        Command::EbpfMicro(options) => ebpf_micro::run(&options),
        Command::Verifier(options) => verifier::run(&options),
        Command::XdpPass(options) => xdp_pass::run(&options),
        Command::Connect(options) => connect::run(&options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gateway-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
