//! `xdp-pass`: attaches the data plane's `xdp_pass` program to interfaces of the namespace it
//! runs in, says `ready`, and keeps them attached until it is killed.
//!
//! A veth hands frames an XDP program transmitted with XDP_TX to its peer, but only wakes the
//! peer up to receive them if the peer runs an XDP program itself (GRO alone is not enough for
//! XDP_TX; it is for redirects). The benchmark's hub puts this on the router port facing the
//! VPS, whose hub forwarding transmits with XDP_TX; a real NIC has no such requirement.

use std::io::Write as _;

use anyhow::{Context as _, Result, ensure};
use gateway::dataplane::{Capacities, Dataplane};

#[derive(clap::Args)]
pub struct Options {
    /// Interface to attach to (repeatable).
    #[arg(long = "iface", required = true)]
    interfaces: Vec<String>,
}

pub fn run(options: &Options) -> Result<()> {
    ensure!(!options.interfaces.is_empty(), "name at least one --iface");
    // Whoever started it may be interrupted before it can stop it: go with it.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    // SAFETY: getppid has no preconditions.
    ensure!(unsafe { libc::getppid() } != 1, "the process that started xdp-pass is gone");
    // The smallest maps: only the pass-through program is used.
    let capacities = Capacities { sessions: 8, peers: 8, allowed_ips: 8 };
    let mut dataplane = Dataplane::load(capacities).context("loading the eBPF object")?;
    for interface in &options.interfaces {
        dataplane
            .attach_xdp_pass(interface.as_str())
            .with_context(|| format!("attaching xdp_pass to {interface}"))?;
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready").and_then(|()| stdout.flush()).context("writing to stdout")?;
    // The attachments live as long as this process (and its `dataplane`): until it is killed,
    // or its parent exits.
    loop {
        std::thread::park();
    }
}
