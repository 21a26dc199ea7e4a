//! TCP throughput with iperf3 (1 or more streams, source → destination), and what carrying it
//! cost in CPU, per GB (10^9 bytes) the receiver got:
//!
//! - whole machine: every busy tick of /proc/stat (user, nice, system, irq, softirq), iperf3
//!   and the router namespaces included: the same endpoints and routers for every
//!   implementation, so differences are the tunnels'. The figure to compare;
//! - tunnel daemons: user + system time of the implementation's processes (/proc/<pid>/stat,
//!   all threads, every tunnel endpoint). With tick-based accounting (no
//!   IRQ_TIME_ACCOUNTING), this includes the softirq work the kernel did inside their system
//!   calls, which on veth is most of the path downstream of a send;
//! - softirq: the machine's softirq ticks, where XDP programs, veth and the stack's receive
//!   path run; partly the same time as the daemons' (see above), so the two do not add up.
//!
//! gatewayd's TC send program runs in the sending process's context (iperf3's system time):
//! it appears only in the whole-machine figure.

use std::process::Stdio;

use anyhow::{Context as _, Result, bail};
use gateway_tests::traffic::IperfReport;

use crate::bench::child::die_with_parent;
use crate::run;

use crate::bench::procfs::{CpuTimes, TICKS_PER_SECOND, process_ticks};
use crate::bench::tunnel::status::PathPackets;
use crate::bench::tunnel::{TrafficPath, Tunnel};

pub const IPERF_PORT: u16 = 5201;

pub struct TcpRun {
    pub gbit_per_s: f64,
    pub machine_cpu_per_gb: f64,
    pub daemon_cpu_per_gb: f64,
    pub softirq_per_gb: f64,
    /// gatewayd-ebpf: per role, the share of data packets its eBPF programs carried.
    pub ebpf_shares: Vec<(&'static str, Option<f64>)>,
}

impl TcpRun {
    pub fn describe(&self) -> String {
        format!(
            "{:.2} Gbit/s, CPU per GB: machine {:.2} s, daemons {:.2} s, softirq {:.2} s",
            self.gbit_per_s, self.machine_cpu_per_gb, self.daemon_cpu_per_gb, self.softirq_per_gb
        )
    }
}

pub fn measure(
    path: &TrafficPath<'_>,
    tunnel: &mut Tunnel,
    streams: u32,
    seconds: u64,
) -> Result<TcpRun> {
    let pids = tunnel.pids();
    let gatewayd_before = packets_by_role(tunnel)?;
    let process_before: u64 = pids.iter().filter_map(|pid| process_ticks(*pid)).sum();
    let machine_before = CpuTimes::read()?;
    let report = iperf3(path, streams, seconds)?;
    let machine = CpuTimes::read()?.since(&machine_before);
    let process_after: u64 = pids.iter().filter_map(|pid| process_ticks(*pid)).sum();
    tunnel.check_running()?;
    if report.received_bytes == 0 {
        bail!("iperf3 moved no data");
    }
    let gigabytes = report.received_bytes as f64 / 1e9;
    let seconds_per_gb = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / gigabytes;
    let gatewayd_after = packets_by_role(tunnel)?;
    let ebpf_shares = gatewayd_after
        .iter()
        .map(|(role, after)| {
            let before = gatewayd_before.iter().find(|(earlier, _)| earlier == role);
            (*role, before.and_then(|(_, before)| after.ebpf_share_since(before)))
        })
        .collect();
    Ok(TcpRun {
        gbit_per_s: report.received_bits_per_second / 1e9,
        machine_cpu_per_gb: seconds_per_gb(machine.busy()),
        daemon_cpu_per_gb: seconds_per_gb(process_after.saturating_sub(process_before)),
        softirq_per_gb: seconds_per_gb(machine.softirq),
        ebpf_shares,
    })
}

/// `iperf3 --client` from the path's source (the harness's report parser; a command of our
/// own so it dies with this process, see `child`).
fn iperf3(path: &TrafficPath<'_>, streams: u32, seconds: u64) -> Result<IperfReport> {
    let mut command = path.source.command("iperf3");
    die_with_parent(&mut command).stdin(Stdio::null()).args([
        "--client",
        &path.address.to_string(),
        "--port",
        &IPERF_PORT.to_string(),
        "--json",
        "--time",
        &seconds.to_string(),
    ]);
    if streams > 1 {
        command.args(["--parallel", &streams.to_string()]);
    }
    let described = run::describe(&command);
    let output = command.output().with_context(|| format!("cannot start `{described}`"))?;
    // iperf3 reports its errors in the JSON too, with either exit status.
    IperfReport::parse(&String::from_utf8_lossy(&output.stdout)).with_context(|| {
        format!(
            "`{described}` ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })
}

fn packets_by_role(tunnel: &Tunnel) -> Result<Vec<(&'static str, PathPackets)>> {
    if !tunnel.implementation.is_ebpf() {
        return Ok(Vec::new());
    }
    Ok(tunnel.gatewayd_status()?.into_iter().map(|(role, status)| (role, status.packets)).collect())
}
