//! The VPS as an exit node (`gatewayd --masquerade OUTIF`): a phone (wireguard-go, its peer's
//! AllowedIPs 0.0.0.0/0) reaches a site on the internet through the VPS, and the site sees
//! only the VPS's public address.
//!
//! The world ([`Exit`]): phone — internet — VPS; the site is a `peer-report` server on the
//! internet host (it answers with the address it saw the client at) and the internet host
//! itself for ping. The internet has no route back to the tunnel's addresses, so every answer
//! that arrives proves the VPS translated the request.
//!
//! | check                                                     | eBPF | `--no-ebpf` |
//! |-----------------------------------------------------------|:----:|:-----------:|
//! | TCP and UDP: the site sees the VPS's address, a mapped port | ✓  | ✓ (the kernel's port) |
//! | ICMP echo: answered; the internet counts requests from the VPS only | ✓ | ✓ |
//! | the programs' counters moved (`MasqueradeOut`, `MasqueradeIn`) | ✓ | – |
//! | the kernel's NAT table exists while running               | –    | ✓           |
//! | at exit: reserved ports and forwarding restored, no table left | ✓ | ✓        |

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use gateway_common::maps::{MASQ_DEFAULT_FIRST_PORT, MASQ_DEFAULT_PORT_COUNT, Stat};
use gateway_tests::gatewayd::{
    DataPath, Gatewayd, GatewaydOptions, XdpPass, gatewayd_binary, leftovers,
};
use gateway_tests::pair::{TUNNEL_MTU, tunnel_addresses};
use gateway_tests::topology::Exit;
use gateway_tests::traffic::{PeerReportServer, ping, tcp_exchange, udp_exchange};
use gateway_tests::wg::{Implementation, KeyPair, WgPeer};
use gateway_tests::{Netns, TestDir, require_root, require_tools, unique_ifname};

const TOOLS: &[&str] = &["ip", "nft", "ping", "wg", "wireguard-go", "ethtool"];
const LISTEN_PORT: u16 = 51820;
const SITE_TCP: u16 = 8080;
const SITE_UDP: u16 = 5353;
const TIMEOUT: Duration = Duration::from_secs(15);
const PINGS: u32 = 3;
const RESERVED_PORTS: &str = "net.ipv4.ip_local_reserved_ports";

/// The overlay: the VPS .1, the phone .2.
const VPS_TUNNEL: u8 = 1;
const PHONE_TUNNEL: u8 = 2;

#[test]
fn the_phone_reaches_the_internet_as_the_vps_in_ebpf() -> Result<()> {
    exit_node(DataPath::Ebpf)
}

#[test]
fn the_phone_reaches_the_internet_as_the_vps_without_ebpf() -> Result<()> {
    exit_node(DataPath::Userspace)
}

/// `--masquerade` on an interface that does not exist, or has no IPv4 address: one line
/// naming it, a failed exit, and nothing left behind (interface, socket, reserved ports).
#[test]
fn a_masquerade_interface_that_cannot_serve_is_refused() -> Result<()> {
    require_root()?;
    require_tools(&["ip"])?;
    let netns = Netns::new("msq")?;
    let bare = unique_ifname("vx")?;
    netns.ip(&["link", "add", &bare, "type", "veth", "peer", "name", &unique_ifname("vy")?])?;
    let reserved = || -> Result<String> {
        Ok(netns.run("sysctl", &["-n", RESERVED_PORTS])?.trim().to_string())
    };
    let reserved_before = reserved()?;
    for (outif, naming) in
        [("gtnosuch0", "unknown interface gtnosuch0"), (&bare, "no IPv4 address")]
    {
        for data_path in ["--no-ebpf", "--xdp-mode=native"] {
            let name = unique_ifname("gw")?;
            let stderr = refused_start(&netns, &["-f", data_path, "--masquerade", outif, &name])?;
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            ensure!(
                lines.len() == 1 && lines[0].contains(naming),
                "--masquerade {outif} ({data_path}): expected one line naming {naming:?}, got \
                 {stderr:?}"
            );
            let left = leftovers(&netns, &name, &[])?;
            ensure!(left.is_empty(), "a refused --masquerade {outif} left {left:?}");
            ensure!(reserved()? == reserved_before, "a refused start changed {RESERVED_PORTS}");
        }
    }
    Ok(())
}

/// Runs `gatewayd args...` in `netns`, expecting it to refuse within 10 s: its stderr.
fn refused_start(netns: &Netns, args: &[&str]) -> Result<String> {
    let mut child = netns
        .command(gatewayd_binary()?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting gatewayd")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            bail!("`gatewayd {}` did not refuse to start", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output()?;
    ensure!(!output.status.success(), "`gatewayd {}` exited successfully", args.join(" "));
    Ok(String::from_utf8_lossy(&output.stderr).into_owned())
}

fn exit_node(data_path: DataPath) -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new(&format!("masquerade-{data_path}"))?;
    let exit = Exit::build()?;
    // Frames the VPS's XDP program sends on arrive at the internet's end of its link.
    let _pass = match data_path {
        DataPath::Ebpf => Some(XdpPass::attach(&exit.internet, &exit.internet_vps.name)?),
        DataPath::Userspace => None,
    };
    let sysctl = |key: &str| -> Result<String> {
        Ok(exit.vps.run("sysctl", &["-n", key])?.trim().to_string())
    };
    let reserved_before = sysctl(RESERVED_PORTS)?;
    let outif = exit.vps_wan.name.clone();
    let options =
        GatewaydOptions { masquerade: Some(outif.clone()), ..GatewaydOptions::new(data_path) };
    let mut vps = Gatewayd::start(&exit.vps, &dir, &unique_ifname("gw")?, &options)?;
    let phone =
        WgPeer::start(Implementation::WireguardGo, &exit.phone, &dir, &unique_ifname("wg")?)?;
    let site = PeerReportServer::start(&exit.internet, &dir, "site", &[SITE_TCP], &[SITE_UDP])?;
    let world = World { exit: &exit, vps: &vps, phone: &phone };
    let table = format!("gatewayd-masq-{}", vps.ifname());
    world
        .run(data_path, &table)
        .and_then(|()| {
            let range = format!(
                "{MASQ_DEFAULT_FIRST_PORT}-{}",
                MASQ_DEFAULT_FIRST_PORT as u32 + MASQ_DEFAULT_PORT_COUNT as u32 - 1
            );
            let reserved = sysctl(RESERVED_PORTS)?;
            ensure!(reserved.contains(&range), "{RESERVED_PORTS} is {reserved:?} while running");
            Ok(())
        })
        .map_err(|error| dir.attach_logs(error))?;
    drop(site);
    vps.signal_and_wait(libc::SIGTERM, TIMEOUT)?;
    let reserved_after = sysctl(RESERVED_PORTS)?;
    ensure!(
        reserved_after == reserved_before,
        "{RESERVED_PORTS} is {reserved_after:?} after exit, was {reserved_before:?}"
    );
    let forwarding = sysctl(&format!("net.ipv4.conf.{outif}.forwarding"))?;
    ensure!(forwarding == "0", "forwarding on {outif} left on ({forwarding}) after exit");
    ensure!(
        exit.vps.run("nft", &["list", "table", "ip", &table]).is_err(),
        "the nftables table {table} is left after exit"
    );
    Ok(())
}

struct World<'a> {
    exit: &'a Exit,
    vps: &'a Gatewayd,
    phone: &'a WgPeer,
}

impl World<'_> {
    /// The programs' counters, for failure messages.
    fn counters(&self) -> String {
        self.vps.ebpf_stats().map_or_else(|e| format!("no counters: {e:#}"), |s| s.nonzero())
    }

    fn configure(&self) -> Result<()> {
        let vps_keys = KeyPair::generate()?;
        let phone_keys = KeyPair::generate()?;
        let (phone_v4, _) = tunnel_addresses(PHONE_TUNNEL);
        let (vps_v4, _) = tunnel_addresses(VPS_TUNNEL);
        self.vps.setconf(&format!(
            "[Interface]\nPrivateKey = {}\nListenPort = {LISTEN_PORT}\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = {phone_v4}/32\n",
            vps_keys.private_key, phone_keys.public_key,
        ))?;
        self.phone.setconf(&format!(
            "[Interface]\nPrivateKey = {}\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = {}:{LISTEN_PORT}\nAllowedIPs = 0.0.0.0/0\n",
            phone_keys.private_key, vps_keys.public_key, self.exit.vps_wan.v4,
        ))?;
        self.vps.bring_up(&[(IpAddr::V4(vps_v4), 24)], TUNNEL_MTU)?;
        self.phone.bring_up(&[(IpAddr::V4(phone_v4), 24)], TUNNEL_MTU)?;
        // The site through the tunnel, as wg-quick's default route would send it; the VPS
        // itself over the phone's own default route.
        self.exit.phone.add_route_dev(&format!("{}/32", Exit::SITE), self.phone.ifname())
    }

    fn run(&self, data_path: DataPath, table: &str) -> Result<()> {
        self.configure()?;
        // Counts what reaches the internet host from the VPS's address and from the tunnel's.
        self.exit.internet.load_nftables(&format!(
            "table ip seen {{\n\
             \tchain from_vps {{\n\
             \t\ttype filter hook input priority 0; policy accept;\n\
             \t\tip saddr {} icmp type echo-request counter\n\
             \t}}\n\
             \tchain from_tunnel {{\n\
             \t\ttype filter hook prerouting priority 0; policy accept;\n\
             \t\tip saddr 10.77.0.0/24 counter\n\
             \t}}\n\
             }}\n",
            self.exit.vps_wan.v4,
        ))?;
        let before = self.vps.ebpf_stats()?;
        let public = IpAddr::V4(self.exit.vps_wan.v4);
        let (phone_v4, _) = tunnel_addresses(PHONE_TUNNEL);
        let site_tcp = SocketAddr::new(IpAddr::V4(Exit::SITE), SITE_TCP);
        let site_udp = SocketAddr::new(IpAddr::V4(Exit::SITE), SITE_UDP);

        let tcp = tcp_exchange(&self.exit.phone, site_tcp, &[b"GET /\n"], Duration::ZERO, TIMEOUT)
            .with_context(|| format!("TCP from the phone to the site ({})", self.counters()))?;
        let udp = udp_exchange(&self.exit.phone, IpAddr::V4(phone_v4), site_udp, b"hello", TIMEOUT)
            .with_context(|| format!("UDP from the phone to the site ({})", self.counters()))?;
        for (what, exchange, site) in [("TCP", &tcp, site_tcp), ("UDP", &udp, site_udp)] {
            ensure!(
                exchange.client.ip() == IpAddr::V4(phone_v4),
                "{what}: the phone sent from {}, not its tunnel address",
                exchange.client
            );
            ensure!(
                exchange.report.peer.ip() == public,
                "{what}: the site saw {}, not the VPS's {public}",
                exchange.report.peer
            );
            ensure!(
                exchange.answered_from == site,
                "{what}: answered from {}",
                exchange.answered_from
            );
            if data_path == DataPath::Ebpf {
                let port = exchange.report.peer.port() as u32;
                let first = MASQ_DEFAULT_FIRST_PORT as u32;
                ensure!(
                    (first..first + MASQ_DEFAULT_PORT_COUNT as u32).contains(&port),
                    "{what}: port {port} is not one of the programs' range"
                );
            }
        }

        let pings = ping(&self.exit.phone, IpAddr::V4(Exit::SITE), PINGS)?;
        ensure!(pings.all_received(), "ping from the phone to the site: {pings:?}");
        let requests = self.exit.internet.nft_counted_packets("ip", "seen", "from_vps")?;
        ensure!(requests >= PINGS as u64, "{requests} echo requests from the VPS's address");
        let leaked = self.exit.internet.nft_counted_packets("ip", "seen", "from_tunnel")?;
        ensure!(leaked == 0, "{leaked} packets reached the internet with a tunnel source");

        match data_path {
            DataPath::Ebpf => {
                let moved = self.vps.ebpf_stats()?.since(&before);
                // TCP (handshake, request, FIN), UDP and every echo request.
                let out = moved.get(Stat::MasqueradeOut);
                let back = moved.get(Stat::MasqueradeIn);
                ensure!(
                    out >= 3 + 1 + PINGS as u64 && back >= 2 + 1 + PINGS as u64,
                    "the programs translated {out} packets out and {back} back: {}",
                    moved.nonzero()
                );
            }
            DataPath::Userspace => {
                self.exit
                    .vps
                    .run("nft", &["list", "table", "ip", table])
                    .with_context(|| format!("the kernel's NAT table {table} while running"))?;
            }
        }
        Ok(())
    }
}
