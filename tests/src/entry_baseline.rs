//! The public entry point as people build it today, on the [`Entry`] topology, with no part of
//! gatewayd: what the entry tests check it against and what `cargo xtask bench` compares it
//! with.
//!
//! - A WireGuard tunnel between the VPS (10.88.0.1) and the home (10.88.0.3), both ends a
//!   reference implementation (wireguard-go or boringtun). The home dials the VPS (it is behind
//!   the carrier's NAT) and admits any source from it (`AllowedIPs = 0.0.0.0/0`) without
//!   routing anything but the tunnel subnet into the tunnel (wg-quick's `Table = off`).
//! - tcp/udp forwards: nftables DNAT on the VPS's public interface to the backend, routed into
//!   the tunnel; no masquerade, so the backend sees the client's address.
//! - The home: connection marks and policy routing, so replies to connections that came in
//!   through the tunnel go back into it instead of out of the default route: nftables marks
//!   new connections arriving from the tunnel, copies the mark onto their replies, and an
//!   `ip rule` sends marked packets to a table whose default route is the tunnel.
//! - SNI forwards: nginx's `stream` module with `ssl_preread`, choosing the backend by the
//!   ClientHello's server name, and `proxy_bind $remote_addr:$remote_port transparent`, so the
//!   backend sees the client's address and port. A transparent socket's replies arrive from
//!   the tunnel addressed to the client: nftables marks packets of transparent sockets
//!   (`socket transparent 1`) and an `ip rule` delivers them locally (the TPROXY recipe of the
//!   kernel's documentation).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::topology::Entry;
use crate::traffic::wait_for_ping;
use crate::wait::Probe;
use crate::wg::{Implementation, KeyPair, WgPeer};
use crate::{Netns, Process, TestDir, unique_ifname};

pub const VPS_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
pub const HOME_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 3);
pub const TUNNEL_PREFIX_LEN: u8 = 24;
pub const LISTEN_PORT: u16 = 51820;
pub const TUNNEL_MTU: u32 = 1420;
/// The home's connection mark and routing table for connections that came through the tunnel.
const HOME_MARK: u32 = 0x51;
/// The VPS's packet mark and routing table for nginx's transparent sockets.
const VPS_TRANSPARENT_MARK: u32 = 0x52;
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const NGINX_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// A tcp or udp port forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortForward {
    pub udp: bool,
    pub public_port: u16,
    pub backend: SocketAddr,
}

/// What the baseline exposes on the VPS.
#[derive(Debug, Clone, Default)]
pub struct BaselineForwards {
    pub ports: Vec<PortForward>,
    /// The public port nginx takes TLS on (443), and its server names and backends.
    pub sni_port: u16,
    pub sni: Vec<(String, SocketAddr)>,
}

/// The running baseline: tunnel daemons, nginx; rules and routes live in the namespaces.
pub struct Baseline {
    // Processes first: they stop before anything else drops.
    nginx: Option<Process>,
    pub vps_tunnel: WgPeer,
    pub home_tunnel: WgPeer,
}

impl Baseline {
    /// Brings up the tunnel, the DNAT and policy routing, and nginx if `forwards.sni` is not
    /// empty; returns once the home answers a ping through the tunnel.
    pub fn start(
        entry: &Entry,
        dir: &TestDir,
        implementation: Implementation,
        forwards: &BaselineForwards,
    ) -> Result<Baseline> {
        let vps_tunnel = WgPeer::start(implementation, &entry.vps, dir, &unique_ifname("wg")?)?;
        let home_tunnel = WgPeer::start(implementation, &entry.home, dir, &unique_ifname("wg")?)?;
        let mut baseline = Baseline { nginx: None, vps_tunnel, home_tunnel };
        baseline.configure_tunnel(entry)?;
        wait_for_ping(&entry.home, IpAddr::V4(VPS_TUNNEL), READY_TIMEOUT)
            .map_err(|error| dir.attach_logs(error))
            .context("home → VPS through the baseline's tunnel")?;
        configure_home(entry, baseline.home_tunnel.ifname())?;
        configure_vps(entry, baseline.vps_tunnel.ifname(), forwards)?;
        if !forwards.sni.is_empty() {
            baseline.nginx = Some(start_nginx(entry, dir, forwards)?);
        }
        Ok(baseline)
    }

    fn configure_tunnel(&self, entry: &Entry) -> Result<()> {
        let (vps_keys, home_keys) = (KeyPair::generate()?, KeyPair::generate()?);
        self.vps_tunnel.setconf(&vps_config(&vps_keys, &home_keys))?;
        self.home_tunnel.setconf(&home_config(entry, &vps_keys, &home_keys))?;
        let address = |v4: Ipv4Addr| [(IpAddr::V4(v4), TUNNEL_PREFIX_LEN)];
        self.vps_tunnel.bring_up(&address(VPS_TUNNEL), TUNNEL_MTU)?;
        self.home_tunnel.bring_up(&address(HOME_TUNNEL), TUNNEL_MTU)?;
        entry.vps.add_route_dev(Entry::HOME_LAN, self.vps_tunnel.ifname())
    }

    /// nginx's log (for error messages).
    pub fn nginx_log(&self) -> Option<String> {
        self.nginx.as_ref().map(Process::log)
    }
}

/// The VPS's tunnel config (wg(8) format): the home as its peer, with the home LAN.
pub fn vps_config(vps: &KeyPair, home: &KeyPair) -> String {
    format!(
        "[Interface]\nPrivateKey = {}\nListenPort = {LISTEN_PORT}\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = {HOME_TUNNEL}/32, {}\n",
        vps.private_key,
        home.public_key,
        Entry::HOME_LAN
    )
}

/// The home's tunnel config: it dials the VPS and admits any source from it.
pub fn home_config(entry: &Entry, vps: &KeyPair, home: &KeyPair) -> String {
    format!(
        "[Interface]\nPrivateKey = {}\n\n\
         [Peer]\nPublicKey = {}\nEndpoint = {}:{LISTEN_PORT}\nAllowedIPs = 0.0.0.0/0\n\
         PersistentKeepalive = 25\n",
        home.private_key, vps.public_key, entry.vps_wan.v4
    )
}

/// Connection marks and policy routing at the home: replies to connections that came in
/// through the tunnel leave through it.
pub fn configure_home(entry: &Entry, tunnel: &str) -> Result<()> {
    let home = &entry.home;
    // Packets from the internet arrive through the tunnel with their real source: a reverse
    // path check would look for that source behind the default route and drop them.
    for interface in ["all", "default", tunnel] {
        home.set_sysctl(&format!("net.ipv4.conf.{interface}.rp_filter"), "0")?;
    }
    home.load_nftables(&format!(
        "table ip entry_baseline {{\n\
         \tchain prerouting {{\n\
         \t\ttype filter hook prerouting priority mangle; policy accept;\n\
         \t\tiifname \"{tunnel}\" ct state new ct mark set {HOME_MARK:#x}\n\
         \t\tiifname != \"{tunnel}\" ct mark {HOME_MARK:#x} meta mark set ct mark\n\
         \t}}\n\
         }}\n"
    ))?;
    let mark = format!("{HOME_MARK:#x}");
    let table = HOME_MARK.to_string();
    home.ip(&["rule", "add", "fwmark", &mark, "lookup", &table])?;
    home.ip(&["route", "add", "default", "dev", tunnel, "table", &table]).map(drop)
}

/// DNAT of the port forwards, and the TPROXY-style local delivery of nginx's transparent
/// sockets' replies.
pub fn configure_vps(entry: &Entry, tunnel: &str, forwards: &BaselineForwards) -> Result<()> {
    let vps = &entry.vps;
    let public = entry.vps_wan.v4;
    let wan = &entry.vps_wan.name;
    let mut dnat = String::new();
    for forward in &forwards.ports {
        let transport = if forward.udp { "udp" } else { "tcp" };
        let _ = writeln!(
            dnat,
            "\t\tiifname \"{wan}\" ip daddr {public} {transport} dport {} dnat to {}",
            forward.public_port, forward.backend
        );
    }
    vps.set_sysctl(&format!("net.ipv4.conf.{tunnel}.rp_filter"), "0")?;
    vps.load_nftables(&format!(
        "table ip entry_baseline {{\n\
         \tchain prerouting_nat {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         {dnat}\
         \t}}\n\
         \tchain prerouting_transparent {{\n\
         \t\ttype filter hook prerouting priority mangle; policy accept;\n\
         \t\tiifname \"{tunnel}\" socket transparent 1 meta mark set {VPS_TRANSPARENT_MARK:#x}\n\
         \t}}\n\
         }}\n"
    ))?;
    let mark = format!("{VPS_TRANSPARENT_MARK:#x}");
    let table = VPS_TRANSPARENT_MARK.to_string();
    vps.ip(&["rule", "add", "fwmark", &mark, "lookup", &table])?;
    vps.ip(&["route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", &table]).map(drop)
}

/// nginx's stream module in the VPS's namespace: `ssl_preread` picks the backend by server
/// name, `proxy_bind ... transparent` connects from the client's address and port.
pub fn start_nginx(entry: &Entry, dir: &TestDir, forwards: &BaselineForwards) -> Result<Process> {
    let prefix = dir.file("nginx");
    std::fs::create_dir_all(&prefix)
        .with_context(|| format!("cannot create {}", prefix.display()))?;
    let mut names = String::new();
    for (name, backend) in &forwards.sni {
        let _ = writeln!(names, "        {name} {backend};");
    }
    let listen = SocketAddr::new(IpAddr::V4(entry.vps_wan.v4), forwards.sni_port);
    let config = format!(
        "load_module {NGINX_MODULE};\n\
         daemon off;\n\
         worker_processes auto;\n\
         pid {prefix}/nginx.pid;\n\
         error_log stderr notice;\n\
         events {{ worker_connections 4096; }}\n\
         stream {{\n\
         \x20   map $ssl_preread_server_name $backend {{\n\
         {names}\
         \x20   }}\n\
         \x20   server {{\n\
         \x20       listen {listen} backlog=4096;\n\
         \x20       ssl_preread on;\n\
         \x20       proxy_pass $backend;\n\
         \x20       proxy_bind $remote_addr:$remote_port transparent;\n\
         \x20   }}\n\
         }}\n",
        prefix = prefix.display()
    );
    let config_path = prefix.join("nginx.conf");
    std::fs::write(&config_path, &config)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let mut command = entry.vps.command("nginx");
    command.arg("-e").arg("stderr").arg("-p").arg(&prefix).arg("-c").arg(&config_path);
    let mut nginx = Process::spawn(dir, "nginx", &mut command)?;
    wait_listening(&entry.vps, dir, &mut nginx, forwards.sni_port)
        .with_context(|| format!("nginx with this config:\n{config}"))?;
    Ok(nginx)
}

fn wait_listening(netns: &Netns, dir: &TestDir, process: &mut Process, port: u16) -> Result<()> {
    let filter = format!("sport = :{port}");
    dir.wait_for(&format!("{} to listen on {port}", process.label()), READY_TIMEOUT, || {
        process.check_running()?;
        let listening = netns.run("ss", &["-Hltn", &filter])?;
        Ok(if listening.trim().is_empty() {
            Probe::NotYet("not listening".into())
        } else {
            Probe::Ready(())
        })
    })
}
