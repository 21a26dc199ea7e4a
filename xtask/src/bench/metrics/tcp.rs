//! TCP throughput with iperf3 (1 or more streams, source → destination), and what carrying it
//! cost in CPU:
//!
//! - tunnel CPU: the CPU time of the implementation's processes (all threads, both ends, from
//!   /proc/<pid>/stat) plus the softirq time of the whole machine (/proc/stat), where XDP
//!   programs, the veths and the stack's receive path run; the same count for every
//!   implementation (plain routing: softirq only). It does not include the senders' system
//!   time, where gatewayd's TC send program runs (in the sending process's context);
//! - machine CPU: every busy tick of the machine (user, system, irq, softirq), iperf3 included.
//!
//! Both per GB (10^9 bytes) the receiver got.

use std::time::Duration;

use anyhow::{Result, bail};
use gateway_tests::traffic::{IperfOptions, Protocol, iperf3_client};

use crate::bench::procfs::{CpuTimes, TICKS_PER_SECOND, process_ticks};
use crate::bench::tunnel::status::PathPackets;
use crate::bench::tunnel::{TrafficPath, Tunnel};

pub const IPERF_PORT: u16 = 5201;

pub struct TcpRun {
    pub gbit_per_s: f64,
    pub tunnel_cpu_per_gb: f64,
    pub machine_cpu_per_gb: f64,
    /// gatewayd-ebpf: per role, the share of data packets its eBPF programs carried.
    pub ebpf_shares: Vec<(&'static str, Option<f64>)>,
}

impl TcpRun {
    pub fn describe(&self) -> String {
        format!(
            "{:.2} Gbit/s, tunnel CPU {:.2} core-s/GB, machine {:.2}",
            self.gbit_per_s, self.tunnel_cpu_per_gb, self.machine_cpu_per_gb
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
    let options = IperfOptions {
        protocol: Protocol::Tcp,
        duration: Duration::from_secs(seconds),
        parallel_streams: (streams > 1).then_some(streams),
        ..IperfOptions::default()
    };
    let report = iperf3_client(path.source, path.address, IPERF_PORT, &options)?;
    let machine = CpuTimes::read()?.since(&machine_before);
    let process_after: u64 = pids.iter().filter_map(|pid| process_ticks(*pid)).sum();
    tunnel.check_running()?;
    if report.received_bytes == 0 {
        bail!("iperf3 moved no data");
    }
    let gigabytes = report.received_bytes as f64 / 1e9;
    let tunnel_ticks = process_after.saturating_sub(process_before) + machine.softirq;
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
        tunnel_cpu_per_gb: tunnel_ticks as f64 / TICKS_PER_SECOND / gigabytes,
        machine_cpu_per_gb: machine.busy() as f64 / TICKS_PER_SECOND / gigabytes,
        ebpf_shares,
    })
}

fn packets_by_role(tunnel: &Tunnel) -> Result<Vec<(&'static str, PathPackets)>> {
    if tunnel.implementation != crate::bench::plan::Implementation::GatewaydEbpf {
        return Ok(Vec::new());
    }
    Ok(tunnel.gatewayd_status()?.into_iter().map(|(role, status)| (role, status.packets)).collect())
}
