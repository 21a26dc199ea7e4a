//! Runs the scenarios: for each implementation a fresh topology and tunnel, then every metric
//! under the repeater; a failure is recorded and the run goes on with the next metric or
//! implementation.

use std::cell::Cell;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use gateway_tests::TestDir;
use gateway_tests::traffic::{IperfServer, PeerReportServer};

use super::metrics::connections::{self, ConnectionRun};
use super::metrics::scale::{self, Flood};
use super::metrics::tcp::{self, IPERF_PORT, TcpRun};
use super::metrics::udp_rate::{Generator, Search};
use super::metrics::{micro, ping, verifier};
use super::output::{Failure, Record, Results};
use super::plan::{self, Implementation, Metric, Profile, Scenario};
use super::procfs::netns_inode;
use super::repeat::{Measured, Repeater, progress, summarise};
use super::stats::Reps;
use super::topology::Topology;
use super::tunnel::{
    Binaries, ENTRY_CONNECT_PORT, ENTRY_SNI, ENTRY_TLS_BACKEND_PORT, ENTRY_TLS_PORT, LISTEN_PORT,
    Tunnel,
};

/// A metric and how to read it from one repetition's result.
type Figure<T> = (Metric, fn(&T) -> f64);

pub struct Runner {
    pub profile: Profile,
    /// What is left of the profile's retry budget.
    pub retry_budget: Rc<Cell<Duration>>,
    pub binaries: Binaries,
    /// Only these implementations (where a scenario applies to them).
    pub implementations: Vec<Implementation>,
    pub results: Results,
}

impl Runner {
    pub fn run(&mut self, scenarios: &[Scenario]) {
        for &scenario in scenarios {
            let implementations: Vec<Implementation> = scenario
                .implementations()
                .iter()
                .copied()
                .filter(|implementation| self.implementations.contains(implementation))
                .collect();
            for implementation in implementations {
                progress(&format!("{scenario} / {implementation}: starting"));
                let outcome = match scenario {
                    Scenario::Direct | Scenario::Hub => {
                        self.path_scenario(scenario, implementation)
                    }
                    Scenario::Scale => self.scale(implementation),
                    Scenario::Entry => self.entry(implementation),
                    Scenario::EbpfMicro => {
                        self.verifier();
                        self.micro()
                    }
                };
                if let Err(error) = outcome {
                    self.fail(scenario, implementation, "setup", &error);
                }
            }
        }
    }

    /// Direct and hub: throughput, CPU, packet rates and latency along the scenario's path.
    fn path_scenario(&mut self, scenario: Scenario, implementation: Implementation) -> Result<()> {
        let dir = TestDir::new(&format!("bench-{scenario}-{implementation}"))?;
        let topology = Topology::build(scenario, &self.binaries.tool)?;
        let mut tunnel = Tunnel::start(&topology, implementation, &self.binaries, &dir)?;
        let path = tunnel.path(&topology);
        let repeater = self.repeater(&topology)?;
        let _iperf = IperfServer::start(path.destination, &dir, IPERF_PORT)?;
        let label = |what: &str| format!("{scenario} / {implementation}: {what}");

        for streams in self.profile.tcp_streams.clone() {
            let what = if streams == 1 {
                "TCP 1 stream".to_string()
            } else {
                format!("TCP {streams} streams")
            };
            let seconds = self.profile.tcp_seconds;
            let measured = repeater.run(
                &label(&what),
                || tcp::measure(&path, &mut tunnel, streams, seconds),
                TcpRun::describe,
            );
            let measured = match measured {
                Ok(measured) => measured,
                Err(error) => {
                    self.fail(scenario, implementation, &what, &dir.attach_logs(error));
                    continue;
                }
            };
            let metric = if streams == 1 { plan::TCP_1 } else { plan::TCP_4 };
            self.record(
                scenario,
                implementation,
                metric,
                None,
                summarise(&measured, |run| Some(run.gbit_per_s), ""),
            );
            if streams == 1 {
                self.record_cpu(scenario, implementation, &measured);
            }
        }

        for size in self.profile.udp_sizes.clone() {
            let metric = if size == 64 { plan::UDP_64 } else { plan::UDP_1392 };
            let generator = Generator {
                tool: &self.binaries.tool,
                path: &path,
                size,
                probe_duration: self.profile.udp_probe,
            };
            let steps = self.profile.udp_search_steps;
            let what = format!("UDP {size} B rate search");
            match repeater.run(&label(&what), || generator.search(steps), Search::describe) {
                Ok(measured) => {
                    let mut reps = summarise(
                        &measured,
                        |search| search.rate_pps.map(|rate| rate / 1e3),
                        "no probe met ≤1% loss",
                    );
                    if let Some(reps) = &mut reps {
                        for (index, item) in measured.iter().enumerate() {
                            if item.value.sender_bound {
                                reps.flags.push(format!(
                                    "rep {}: sender-bound: the path carried all the sender \
                                     could offer (the generator, or a send path running in \
                                     the sender's context)",
                                    index + 1
                                ));
                            }
                        }
                    }
                    self.record(scenario, implementation, metric, None, reps);
                }
                Err(error) => self.fail(scenario, implementation, &what, &dir.attach_logs(error)),
            }
        }

        let (count, interval) = (self.profile.ping_count, self.profile.ping_interval);
        match repeater.run(
            &label("ping"),
            || ping::measure(&path, count, interval),
            ping::PingRun::describe,
        ) {
            Ok(measured) => {
                self.record(
                    scenario,
                    implementation,
                    plan::RTT_P50,
                    None,
                    summarise(&measured, |run| Some(run.p50_ms), ""),
                );
                self.record(
                    scenario,
                    implementation,
                    plan::RTT_P99,
                    None,
                    summarise(&measured, |run| Some(run.p99_ms), ""),
                );
            }
            Err(error) => self.fail(scenario, implementation, "ping", &dir.attach_logs(error)),
        }
        Ok(())
    }

    fn record_cpu(
        &mut self,
        scenario: Scenario,
        implementation: Implementation,
        measured: &[Measured<TcpRun>],
    ) {
        let figures: [Figure<TcpRun>; 3] = [
            (plan::MACHINE_CPU, |run| run.machine_cpu_per_gb),
            (plan::DAEMON_CPU, |run| run.daemon_cpu_per_gb),
            (plan::SOFTIRQ_CPU, |run| run.softirq_per_gb),
        ];
        for (metric, figure) in figures {
            let reps = summarise(measured, |run| Some(figure(run)), "");
            self.record(scenario, implementation, metric, None, reps);
        }
        let roles: Vec<&'static str> = measured
            .first()
            .map(|item| item.value.ebpf_shares.iter().map(|(role, _)| *role).collect())
            .unwrap_or_default();
        for role in roles {
            let share = |run: &TcpRun| {
                run.ebpf_shares
                    .iter()
                    .find(|(name, _)| *name == role)
                    .and_then(|(_, share)| *share)
                    .map(|share| share * 100.0)
            };
            let reps = summarise(measured, share, "no data packets counted");
            self.record(scenario, implementation, plan::EBPF_SHARE, Some(role.to_string()), reps);
        }
    }

    /// The public entry point: through its forwards, TCP throughput (and its CPU cost), the
    /// UDP rate at 64 B, and new connections per second with their time to first byte through
    /// a tcp forward and through a TLS forward routed by SNI.
    fn entry(&mut self, implementation: Implementation) -> Result<()> {
        let scenario = Scenario::Entry;
        let dir = TestDir::new(&format!("bench-entry-{implementation}"))?;
        let topology = Topology::build(scenario, &self.binaries.tool)?;
        let Topology::Entry { entry, .. } = &topology else {
            anyhow::bail!("the entry scenario runs on the entry topology");
        };
        let mut tunnel = Tunnel::start(&topology, implementation, &self.binaries, &dir)?;
        let path = tunnel.path(&topology);
        let repeater = self.repeater(&topology)?;
        let _iperf = IperfServer::start(path.destination, &dir, IPERF_PORT)?;
        let _backend = PeerReportServer::start_binary(
            &self.binaries.peer_report,
            path.destination,
            &dir,
            "nas",
            &[ENTRY_CONNECT_PORT, ENTRY_TLS_BACKEND_PORT],
            &[],
        )?;
        let label = |what: &str| format!("entry / {implementation}: {what}");

        let seconds = self.profile.tcp_seconds;
        let what = "TCP 1 stream";
        match repeater.run(
            &label(what),
            || tcp::measure(&path, &mut tunnel, 1, seconds),
            TcpRun::describe,
        ) {
            Ok(measured) => {
                self.record(
                    scenario,
                    implementation,
                    plan::TCP_1,
                    None,
                    summarise(&measured, |run| Some(run.gbit_per_s), ""),
                );
                self.record_cpu(scenario, implementation, &measured);
            }
            Err(error) => self.fail(scenario, implementation, what, &dir.attach_logs(error)),
        }

        let generator = Generator {
            tool: &self.binaries.tool,
            path: &path,
            size: 64,
            probe_duration: self.profile.udp_probe,
        };
        let steps = self.profile.udp_search_steps;
        let what = "UDP 64 B rate search";
        match repeater.run(&label(what), || generator.search(steps), Search::describe) {
            Ok(measured) => {
                let reps = summarise(
                    &measured,
                    |search| search.rate_pps.map(|rate| rate / 1e3),
                    "no probe met ≤1% loss",
                );
                self.record(scenario, implementation, plan::UDP_64, None, reps);
            }
            Err(error) => self.fail(scenario, implementation, what, &dir.attach_logs(error)),
        }

        let public = IpAddr::V4(entry.vps_wan.v4);
        let (duration, clients) =
            (self.profile.connection_duration, self.profile.connection_clients);
        let kinds = [
            ("tcp", ENTRY_CONNECT_PORT, None, plan::TCP_CONNECTIONS, plan::TCP_FIRST_BYTE_P99),
            (
                "tls (SNI)",
                ENTRY_TLS_PORT,
                Some(ENTRY_SNI),
                plan::TLS_CONNECTIONS,
                plan::TLS_FIRST_BYTE_P99,
            ),
        ];
        for (kind, port, sni, rate_metric, first_byte_metric) in kinds {
            let what = format!("new connections through the {kind} forward");
            let target = SocketAddr::new(public, port);
            let tool = &self.binaries.tool;
            match repeater.run(
                &label(&what),
                || connections::measure(tool, path.source, target, sni, duration, clients),
                ConnectionRun::describe,
            ) {
                Ok(measured) => {
                    let rate = summarise(&measured, |run| Some(run.per_second), "");
                    self.record(scenario, implementation, rate_metric, None, rate);
                    let first_byte = summarise(&measured, |run| Some(run.first_byte_p99_ms), "");
                    self.record(scenario, implementation, first_byte_metric, None, first_byte);
                }
                Err(error) => self.fail(scenario, implementation, &what, &dir.attach_logs(error)),
            }
        }
        tunnel.check_running().map_err(|error| dir.attach_logs(error))
    }

    /// 1 vs many peers, a large setconf, handshakes per second; on the direct topology.
    fn scale(&mut self, implementation: Implementation) -> Result<()> {
        let scenario = Scenario::Scale;
        let dir = TestDir::new(&format!("bench-scale-{implementation}"))?;
        let topology = Topology::build(scenario, &self.binaries.tool)?;
        let Topology::Direct(direct) = &topology else {
            anyhow::bail!("the scale scenario runs on the direct topology");
        };
        let mut tunnel = Tunnel::start(&topology, implementation, &self.binaries, &dir)?;
        let path = tunnel.path(&topology);
        let repeater = self.repeater(&topology)?;
        let _iperf = IperfServer::start(path.destination, &dir, IPERF_PORT)?;
        let label = |what: &str| format!("scale / {implementation}: {what}");
        let seconds = self.profile.tcp_seconds;
        let extra = self.profile.scale_extra_peers;

        let tcp_with = |peers: &str, metric: Metric, runner: &mut Runner, tunnel: &mut Tunnel| {
            let what = format!("TCP 1 stream with {peers}");
            match repeater.run(
                &label(&what),
                || tcp::measure(&path, tunnel, 1, seconds),
                TcpRun::describe,
            ) {
                Ok(measured) => runner.record(
                    scenario,
                    implementation,
                    metric,
                    None,
                    summarise(&measured, |run| Some(run.gbit_per_s), ""),
                ),
                Err(error) => runner.fail(scenario, implementation, &what, &dir.attach_logs(error)),
            }
        };
        tcp_with("1 peer", plan::TCP_1_PEERS_1, self, &mut tunnel);
        let started = std::time::Instant::now();
        match scale::add_extra_peers(&self.binaries.tool, &tunnel, &dir, extra) {
            Ok(()) => {
                progress(&label(&format!(
                    "added {extra} peers to both ends in {:.1} s",
                    started.elapsed().as_secs_f64()
                )));
                tcp_with(&format!("{extra} more peers"), plan::TCP_1_PEERS_10K, self, &mut tunnel);
            }
            Err(error) => {
                self.fail(scenario, implementation, "adding peers", &dir.attach_logs(error))
            }
        }

        let (peers, per_peer) = (self.profile.setconf_peers, self.profile.setconf_ips_per_peer);
        let what = format!("wg setconf of {} allowed IPs", peers * per_peer);
        let setconf = scale::setconf_files(&self.binaries.tool, &tunnel, &dir, peers, per_peer)
            .and_then(|files| {
                repeater.run(
                    &label(&what),
                    || scale::setconf_seconds(&tunnel, &files),
                    |seconds| format!("{seconds:.3} s"),
                )
            });
        match setconf {
            Ok(measured) => self.record(
                scenario,
                implementation,
                plan::SETCONF_130K,
                None,
                summarise(&measured, |seconds| Some(*seconds), ""),
            ),
            Err(error) => self.fail(scenario, implementation, &what, &dir.attach_logs(error)),
        }

        let flood = Flood {
            tool: &self.binaries.tool,
            source: &direct.client,
            target: format!("{}:{LISTEN_PORT}", direct.server_if.v4),
            server_public: tunnel.endpoint("server")?.keys.public_key.clone(),
            peers: self.profile.handshake_peers,
            initiations: self.profile.handshake_initiations,
            duration_ms: self.profile.handshake_duration.as_millis() as u64,
        };
        let what = format!("handshakes from {} peers", flood.peers);
        let handshakes =
            repeater.run(&label(&what), || flood.run(&tunnel, &dir), scale::FloodRun::describe);
        match handshakes {
            Ok(measured) => self.record(
                scenario,
                implementation,
                plan::HANDSHAKES,
                None,
                summarise(&measured, |run| Some(run.per_second), ""),
            ),
            Err(error) => self.fail(scenario, implementation, &what, &dir.attach_logs(error)),
        }
        tunnel.check_running().map_err(|error| dir.attach_logs(error))
    }

    /// The instructions the kernel's verifier processed for each program, one record per
    /// program. They depend on the kernel and the object, not on the machine's load: measured
    /// once, outside the repeater. A count over the budget is flagged, not failed: the run
    /// reports; tests/tests/verifier_budget.rs is the check.
    fn verifier(&mut self) {
        let scenario = Scenario::EbpfMicro;
        let implementation = Implementation::GatewaydEbpf;
        let metric = plan::VERIFIER_INSTRUCTIONS;
        match verifier::measure(&self.binaries.tool) {
            Ok(counts) => {
                progress(&format!(
                    "{scenario}: instructions verified: {}",
                    verifier::describe(&counts)
                ));
                for count in counts {
                    let mut reps = Reps::single(count.instructions);
                    if count.over_budget() {
                        reps.flags.push(format!(
                            "over the budget of {:.0} instructions (a quarter of the verifier's \
                             limit; tests/tests/verifier_budget.rs)",
                            count.budget
                        ));
                    }
                    self.record(scenario, implementation, metric, Some(count.program), Some(reps));
                }
            }
            Err(error) => self.fail(scenario, implementation, "verifier", &error),
        }
    }

    /// The eBPF programs' nanoseconds per packet.
    fn micro(&mut self) -> Result<()> {
        let scenario = Scenario::EbpfMicro;
        let implementation = Implementation::GatewaydEbpf;
        let repeater = self.repeater_for(HashSet::new());
        let (runs, sizes) = (self.profile.micro_runs, self.profile.micro_sizes.clone());
        let measured = repeater
            .run(
                &format!("{scenario}: {runs} single runs per program and size"),
                || micro::measure(&self.binaries.tool, runs, &sizes),
                |rows| micro::describe(rows),
            )
            .context("the eBPF microbenchmark")?;
        for &size in &sizes {
            let variant = Some(format!("{size}B"));
            let row = |rows: &Vec<micro::MicroRow>| {
                rows.iter().find(|row| row.inner_bytes == size).copied()
            };
            let programs: [Figure<micro::MicroRow>; 4] = [
                (plan::MICRO_DECRYPT, |row| row.decrypt_ns),
                (plan::MICRO_ENCRYPT, |row| row.encrypt_ns),
                (plan::MICRO_HUB, |row| row.hub_ns),
                (plan::MICRO_FLOOR, |row| row.empty_ns),
            ];
            for (metric, pick) in programs {
                let reps =
                    summarise(&measured, |rows| row(rows).map(|row| pick(&row)), "size missing");
                self.record(scenario, implementation, metric, variant.clone(), reps);
            }
        }
        Ok(())
    }

    fn repeater(&self, topology: &Topology) -> Result<Repeater> {
        let namespaces = topology
            .namespaces()
            .iter()
            .map(|netns| netns_inode(netns.name()))
            .collect::<Result<HashSet<u64>>>()?;
        Ok(self.repeater_for(namespaces))
    }

    fn repeater_for(&self, own_namespaces: HashSet<u64>) -> Repeater {
        Repeater {
            reps: self.profile.reps,
            retries: self.profile.retries,
            thresholds: self.profile.thresholds.clone(),
            own_namespaces,
            retry_budget: Rc::clone(&self.retry_budget),
        }
    }

    fn record(
        &mut self,
        scenario: Scenario,
        implementation: Implementation,
        metric: Metric,
        variant: Option<String>,
        reps: Option<Reps>,
    ) {
        match reps {
            Some(reps) => self.results.records.push(Record {
                scenario,
                implementation,
                metric,
                variant,
                reps,
            }),
            None => self.fail(
                scenario,
                implementation,
                metric.label,
                &anyhow::anyhow!("no repetition produced a figure"),
            ),
        }
    }

    fn fail(
        &mut self,
        scenario: Scenario,
        implementation: Implementation,
        what: &str,
        error: &anyhow::Error,
    ) {
        progress(&format!("{scenario} / {implementation}: {what} FAILED: {error:#}"));
        self.results.failures.push(Failure {
            scenario,
            implementation,
            what: what.to_string(),
            error: format!("{error:#}"),
        });
    }
}
