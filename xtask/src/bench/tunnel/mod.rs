//! The implementations under test, brought up on a topology: tunnel daemons in their roles,
//! configured with `wg setconf` (the same configs for every implementation), addresses and
//! routes, and a ping through before anything is measured. Plain routing brings up nothing but
//! (in the hub) the routes that let the phone reach the home LAN without a tunnel.
//!
//! Direct: client 10.202.0.1 ⇄ server 10.202.0.2, each with the other's underlay endpoint.
//! Hub: phone 10.77.0.2 and home 10.77.0.3 dial the VPS 10.77.0.1 (keepalive 25 s; the home
//! is behind the carrier's NAT); the VPS learns their endpoints and relays phone ⇄ home LAN
//! 192.168.50.0/24 with forwarding on.
//! Entry: the home 10.88.0.3 dials the VPS 10.88.0.1 and admits any source from it; the VPS
//! forwards its public ports to the NAS 192.168.60.10 (the same configs for both
//! implementations, `gateway_tests::entry_baseline`): tcp 5201 (iperf3), udp 5300 (the UDP
//! generator), tcp 8000 (`peer-report`, new connections) keep their ports, and TLS on 443
//! naming `nas.example.com` goes to the NAS's 8443 (`peer-report`). gatewayd-ebpf runs on both
//! ends with `gateway forward`; nftables-nginx is wireguard-go on both ends with nftables DNAT,
//! connmark policy routing at the home and nginx `ssl_preread`.

mod daemon;
pub mod status;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use gateway_tests::entry_baseline::{self, BaselineForwards, PortForward};
use gateway_tests::topology::{Direct, Entry, Hub};
use gateway_tests::traffic::wait_for_ping;
use gateway_tests::wg::{KeyPair, WgPeer};
use gateway_tests::{Netns, Process, TestDir, unique_ifname};

pub use daemon::Binaries;
use daemon::DaemonOptions;
use status::GatewaydStatus;

use super::metrics::tcp::IPERF_PORT;
use super::metrics::udp_rate::RECEIVER_PORT;
use super::plan::Implementation;
use super::topology::Topology;

pub const LISTEN_PORT: u16 = 51820;
pub const TUNNEL_MTU: u32 = 1420;
const READY_TIMEOUT: Duration = Duration::from_secs(15);

const CLIENT_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 202, 0, 1);
const SERVER_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 202, 0, 2);
const VPS_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const PHONE_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const HOME_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
const TUNNEL_PREFIX_LEN: u8 = 24;

/// The entry scenario's forwards (public port = backend port on the NAS, but TLS).
pub const ENTRY_CONNECT_PORT: u16 = 8000;
pub const ENTRY_TLS_PORT: u16 = 443;
pub const ENTRY_TLS_BACKEND_PORT: u16 = 8443;
pub const ENTRY_SNI: &str = "nas.example.com";

/// One tunnel daemon in its role.
pub struct Endpoint {
    /// "client", "server", "phone", "vps", "home".
    pub role: &'static str,
    pub netns: String,
    pub keys: KeyPair,
    pub daemon: WgPeer,
}

/// An implementation running on a topology.
pub struct Tunnel {
    pub implementation: Implementation,
    pub endpoints: Vec<Endpoint>,
    /// Other processes the implementation runs (nginx): stopped on drop, their CPU time
    /// counted with the daemons'.
    pub helpers: Vec<Process>,
}

/// Where measured traffic flows: from a namespace to an address served in another.
pub struct TrafficPath<'t> {
    pub source: &'t Netns,
    pub destination: &'t Netns,
    pub address: IpAddr,
}

impl Tunnel {
    pub fn start(
        topology: &Topology,
        implementation: Implementation,
        binaries: &Binaries,
        dir: &TestDir,
    ) -> Result<Tunnel> {
        let mut tunnel = Tunnel { implementation, endpoints: Vec::new(), helpers: Vec::new() };
        match (topology, implementation) {
            (Topology::Direct(_), Implementation::Plain) => {}
            (Topology::Hub { hub, .. }, Implementation::Plain) => {
                Topology::route_hub_without_tunnel(hub)?
            }
            (Topology::Entry { entry, .. }, _) => tunnel.start_entry(entry, binaries, dir)?,
            (Topology::Direct(direct), _) => tunnel.start_direct(direct, binaries, dir)?,
            (Topology::Hub { hub, .. }, _) => tunnel.start_hub(hub, binaries, dir)?,
        }
        let path = tunnel.path(topology);
        wait_for_ping(path.source, path.address, READY_TIMEOUT)
            .map_err(|error| dir.attach_logs(error))
            .with_context(|| format!("{implementation}: no traffic gets through"))?;
        tunnel.check_data_path()?;
        Ok(tunnel)
    }

    fn start_direct(&mut self, direct: &Direct, binaries: &Binaries, dir: &TestDir) -> Result<()> {
        let (client_keys, server_keys) = (KeyPair::generate()?, KeyPair::generate()?);
        let client_config = format!(
            "[Interface]\nPrivateKey = {}\nListenPort = {LISTEN_PORT}\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = {SERVER_TUNNEL}/32\nEndpoint = {}:{LISTEN_PORT}\n",
            client_keys.private_key, server_keys.public_key, direct.server_if.v4
        );
        let server_config = format!(
            "[Interface]\nPrivateKey = {}\nListenPort = {LISTEN_PORT}\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = {CLIENT_TUNNEL}/32\nEndpoint = {}:{LISTEN_PORT}\n",
            server_keys.private_key, client_keys.public_key, direct.client_if.v4
        );
        let none = DaemonOptions::default();
        self.add(binaries, dir, "server", &direct.server, server_keys, &none)?;
        self.add(binaries, dir, "client", &direct.client, client_keys, &none)?;
        self.configure("server", &server_config, SERVER_TUNNEL, &[])?;
        self.configure("client", &client_config, CLIENT_TUNNEL, &[])
    }

    fn start_hub(&mut self, hub: &Hub, binaries: &Binaries, dir: &TestDir) -> Result<()> {
        let (vps_keys, phone_keys, home_keys) =
            (KeyPair::generate()?, KeyPair::generate()?, KeyPair::generate()?);
        let lan = Hub::HOME_LAN_V4;
        let vps_endpoint = format!("{}:{LISTEN_PORT}", hub.vps_wan.v4);
        let vps_config = format!(
            "[Interface]\nPrivateKey = {}\nListenPort = {LISTEN_PORT}\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = {PHONE_TUNNEL}/32\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = {HOME_TUNNEL}/32, {lan}\n",
            vps_keys.private_key, phone_keys.public_key, home_keys.public_key
        );
        let spoke_config = |keys: &KeyPair, allowed: &str| {
            format!(
                "[Interface]\nPrivateKey = {}\nListenPort = {LISTEN_PORT}\n\n\
                 [Peer]\nPublicKey = {}\nAllowedIPs = {allowed}\nEndpoint = {vps_endpoint}\n\
                 PersistentKeepalive = 25\n",
                keys.private_key, vps_keys.public_key
            )
        };
        let phone_config = spoke_config(&phone_keys, &format!("10.77.0.0/24, {lan}"));
        let home_config = spoke_config(&home_keys, "10.77.0.0/24");
        let none = DaemonOptions::default();
        let home_options = DaemonOptions { lan_interface: Some(hub.home_lan.name.clone()) };
        self.add(binaries, dir, "vps", &hub.vps, vps_keys, &none)?;
        self.add(binaries, dir, "home", &hub.home, home_keys, &home_options)?;
        self.add(binaries, dir, "phone", &hub.phone, phone_keys, &none)?;
        self.configure("vps", &vps_config, VPS_TUNNEL, &[lan])?;
        self.configure("home", &home_config, HOME_TUNNEL, &[])?;
        self.configure("phone", &phone_config, PHONE_TUNNEL, &[lan])?;
        // The VPS learns the spokes' endpoints from their first handshakes: make them happen
        // before relayed traffic needs them, then check the relay both ways.
        let checks = [
            (&hub.home, VPS_TUNNEL, "home → VPS"),
            (&hub.phone, VPS_TUNNEL, "phone → VPS"),
            (&hub.phone, hub.lan_host_if.v4, "phone → VPS → home LAN"),
            (&hub.lan_host, PHONE_TUNNEL, "home LAN → VPS → phone"),
        ];
        for (from, to, what) in checks {
            wait_for_ping(from, IpAddr::V4(to), READY_TIMEOUT)
                .map_err(|error| dir.attach_logs(error))
                .with_context(|| format!("{what} through the tunnel"))?;
        }
        Ok(())
    }

    /// The entry point: the tunnel between the VPS and the home, then the forwards, by
    /// `gateway forward` (gatewayd) or by nftables, policy routing and nginx (the baseline).
    fn start_entry(&mut self, entry: &Entry, binaries: &Binaries, dir: &TestDir) -> Result<()> {
        let (vps_keys, home_keys) = (KeyPair::generate()?, KeyPair::generate()?);
        let vps_config = entry_baseline::vps_config(&vps_keys, &home_keys);
        let home_config = entry_baseline::home_config(entry, &vps_keys, &home_keys);
        let home_options = if self.implementation.is_gatewayd() {
            DaemonOptions { lan_interface: Some(entry.home_lan.name.clone()) }
        } else {
            DaemonOptions::default()
        };
        self.add(binaries, dir, "vps", &entry.vps, vps_keys, &DaemonOptions::default())?;
        self.add(binaries, dir, "home", &entry.home, home_keys, &home_options)?;
        let lan = Entry::HOME_LAN;
        self.configure("vps", &vps_config, entry_baseline::VPS_TUNNEL, &[lan])?;
        self.configure("home", &home_config, entry_baseline::HOME_TUNNEL, &[])?;
        wait_for_ping(&entry.home, IpAddr::V4(entry_baseline::VPS_TUNNEL), READY_TIMEOUT)
            .map_err(|error| dir.attach_logs(error))
            .context("home → VPS through the tunnel")?;
        let forwards = entry_forwards(entry);
        let vps_tunnel = self.endpoint("vps")?.daemon.ifname().to_string();
        match self.implementation {
            Implementation::NftablesNginx => {
                let home_tunnel = self.endpoint("home")?.daemon.ifname().to_string();
                entry_baseline::configure_home(entry, &home_tunnel)?;
                entry_baseline::configure_vps(entry, &vps_tunnel, &forwards)?;
                self.helpers.push(entry_baseline::start_nginx(entry, dir, &forwards)?);
            }
            implementation if implementation.is_gatewayd() => {
                let netns = entry.vps.name();
                let cli = binaries.gateway_cli.to_string_lossy();
                let add = |args: &[String]| -> Result<()> {
                    let mut all = vec!["forward".to_string(), "add".into(), vps_tunnel.clone()];
                    all.extend_from_slice(args);
                    let all: Vec<&str> = all.iter().map(String::as_str).collect();
                    run_in(netns, &cli, &all).map(drop)
                };
                for forward in &forwards.ports {
                    let transport = if forward.udp { "udp" } else { "tcp" };
                    add(&[
                        transport.into(),
                        forward.public_port.to_string(),
                        "--to".into(),
                        forward.backend.to_string(),
                    ])?;
                }
                for (name, backend) in &forwards.sni {
                    add(&[
                        "tls".into(),
                        forwards.sni_port.to_string(),
                        "--sni".into(),
                        name.clone(),
                        "--to".into(),
                        backend.to_string(),
                    ])?;
                }
            }
            implementation => bail!("{implementation} does not run the entry scenario"),
        }
        Ok(())
    }

    fn add(
        &mut self,
        binaries: &Binaries,
        dir: &TestDir,
        role: &'static str,
        netns: &Netns,
        keys: KeyPair,
        options: &DaemonOptions,
    ) -> Result<()> {
        let ifname = unique_ifname("wg")?;
        let mut command = daemon::command(self.implementation, binaries, netns, &ifname, options)?;
        let daemon = WgPeer::start_command(netns, dir, &ifname, &mut command)
            .with_context(|| format!("starting {} as the {role}", self.implementation))?;
        self.endpoints.push(Endpoint { role, netns: netns.name().to_string(), keys, daemon });
        Ok(())
    }

    fn configure(
        &self,
        role: &str,
        config: &str,
        address: Ipv4Addr,
        routes: &[&str],
    ) -> Result<()> {
        let endpoint = self.endpoint(role)?;
        endpoint.daemon.setconf(config)?;
        endpoint.daemon.bring_up(&[(IpAddr::V4(address), TUNNEL_PREFIX_LEN)], TUNNEL_MTU)?;
        for route in routes {
            run_in(
                &endpoint.netns,
                "ip",
                &["route", "add", route, "dev", endpoint.daemon.ifname()],
            )?;
        }
        Ok(())
    }

    pub fn endpoint(&self, role: &str) -> Result<&Endpoint> {
        match self.endpoints.iter().find(|endpoint| endpoint.role == role) {
            Some(endpoint) => Ok(endpoint),
            None => bail!("{} has no {role} endpoint", self.implementation),
        }
    }

    /// Where the measured traffic flows for this implementation on `topology`.
    pub fn path<'t>(&self, topology: &'t Topology) -> TrafficPath<'t> {
        let tunnel = self.implementation != Implementation::Plain;
        match topology {
            Topology::Direct(direct) => TrafficPath {
                source: &direct.client,
                destination: &direct.server,
                address: IpAddr::V4(if tunnel { SERVER_TUNNEL } else { direct.server_if.v4 }),
            },
            Topology::Hub { hub, .. } => TrafficPath {
                source: &hub.phone,
                destination: &hub.lan_host,
                address: IpAddr::V4(hub.lan_host_if.v4),
            },
            // Through the forwards: to the VPS's public address, served on the NAS.
            Topology::Entry { entry, .. } => TrafficPath {
                source: &entry.client,
                destination: &entry.nas,
                address: IpAddr::V4(entry.vps_wan.v4),
            },
        }
    }

    /// The daemons' and helpers' process ids (their CPU time is the tunnel's).
    pub fn pids(&mut self) -> Vec<u32> {
        let mut pids: Vec<u32> =
            self.endpoints.iter_mut().map(|endpoint| endpoint.daemon.process().pid()).collect();
        pids.extend(self.helpers.iter().map(Process::pid));
        pids
    }

    /// An error with the daemon's log if one has exited.
    pub fn check_running(&mut self) -> Result<()> {
        for endpoint in &mut self.endpoints {
            endpoint.daemon.process().check_running()?;
        }
        for helper in &mut self.helpers {
            helper.check_running()?;
        }
        Ok(())
    }

    /// Each gatewayd's status, by role (empty for the other implementations).
    pub fn gatewayd_status(&self) -> Result<Vec<(&'static str, GatewaydStatus)>> {
        if !self.implementation.is_gatewayd() {
            return Ok(Vec::new());
        }
        self.endpoints
            .iter()
            .map(|endpoint| Ok((endpoint.role, status::read(endpoint.daemon.ifname())?)))
            .collect()
    }

    /// gatewayd-ebpf must really run its eBPF path (it falls back to userspace, with a log
    /// line, when the programs cannot be loaded): otherwise its figures would be mislabelled.
    fn check_data_path(&self) -> Result<()> {
        if !self.implementation.is_ebpf() {
            return Ok(());
        }
        for (role, status) in self.gatewayd_status()? {
            if status.data_path != "ebpf" {
                bail!(
                    "gatewayd-ebpf as the {role} runs its {} data path (attachments: {:?})",
                    status.data_path,
                    status.attachments
                );
            }
        }
        Ok(())
    }

    /// `wg args...` in the namespace of the endpoint in `role`.
    pub fn wg(&self, role: &str, args: &[&str]) -> Result<String> {
        run_in(&self.endpoint(role)?.netns, "wg", args)
    }
}

/// The entry scenario's forwards, to the NAS (see the module's documentation).
fn entry_forwards(entry: &Entry) -> BaselineForwards {
    let nas = |port| SocketAddr::new(IpAddr::V4(entry.nas_if.v4), port);
    let same = |udp, port| PortForward { udp, public_port: port, backend: nas(port) };
    BaselineForwards {
        ports: vec![
            same(false, IPERF_PORT),
            same(true, RECEIVER_PORT),
            same(false, ENTRY_CONNECT_PORT),
        ],
        sni_port: ENTRY_TLS_PORT,
        sni: vec![(ENTRY_SNI.to_string(), nas(ENTRY_TLS_BACKEND_PORT))],
    }
}

/// Runs `program args...` in the namespace named `netns`, returning its stdout.
pub fn run_in(netns: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", netns, program]).args(args);
    crate::run::capture(&mut command)
}
