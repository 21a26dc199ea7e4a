//! gatewayd as the hub: a phone (boringtun, dialling over IPv6) and a home (wireguard-go,
//! behind the carrier's IPv4 NAT) are both its peers, and the phone reaches a host on the
//! home's LAN through it. Ping (IPv4 and IPv6 inside) and TCP (iperf3).
//!
//! With eBPF and fast forwarding, the hub re-encrypts in XDP (RxHubForwarded), and the stack's
//! FORWARD hook sees none of it; with `--no-fast-forward` the same traffic is decrypted in XDP
//! and forwarded by the stack (an nftables counter on the hub's FORWARD hook proves it), then
//! encrypted at the TUN's egress; with `--no-ebpf` the daemon carries it all.
//!
//! `hub_answers_a_spokes_first_initiation_without_ebpf`: wireguard-go spokes configured
//! and brought up before the hub's interface is; the hub must answer the dialling spoke's
//! first handshake initiation, not wait for its retry.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use gateway_common::maps::Stat;
use gateway_tests::gatewayd::{DataPath, Gatewayd, GatewaydOptions, XdpPass};
use gateway_tests::pair::{TUNNEL_MTU, tunnel_addresses, tunnel_cidrs};
use gateway_tests::topology::{Hub, TopologyOptions};
use gateway_tests::traffic::{
    IperfOptions, IperfServer, iperf3_client_when_ready, ping_until_clean, wait_for_ping,
};
use gateway_tests::wg::{Implementation, KeyPair, WgPeer};
use gateway_tests::{Probe, TestDir, require_root, require_tools, unique_ifname};

const TOOLS: &[&str] = &["ip", "nft", "ping", "wg", "iperf3", "wireguard-go", "boringtun-cli"];
const PORT: u16 = 51820;
const TIMEOUT: Duration = Duration::from_secs(15);
const PINGS: u32 = 5;
const IPERF_PORT: u16 = 5201;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forwarding {
    /// eBPF on, hub forwarding in XDP.
    Xdp,
    /// eBPF on, `--no-fast-forward`.
    Stack,
    /// `--no-ebpf`.
    Userspace,
}

fn hub(forwarding: Forwarding) -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new(&format!("hub-{forwarding:?}"))?;
    let hub = Hub::build(&TopologyOptions { ipv6: true, ..TopologyOptions::default() })?;
    // The hub's XDP_TX frames arrive at the internet's end of its link (none without eBPF,
    // which then needs no eBPF object at all).
    let _pass = match forwarding {
        Forwarding::Xdp | Forwarding::Stack => {
            Some(XdpPass::attach(&hub.internet, &hub.internet_vps.name)?)
        }
        Forwarding::Userspace => None,
    };
    let mut options = GatewaydOptions::new(match forwarding {
        Forwarding::Xdp | Forwarding::Stack => DataPath::Ebpf,
        Forwarding::Userspace => DataPath::Userspace,
    });
    options.fast_forward = forwarding == Forwarding::Xdp;
    let vps = Gatewayd::start(&hub.vps, &dir, &unique_ifname("gw")?, &options)?;
    let phone = WgPeer::start(Implementation::Boringtun, &hub.phone, &dir, &unique_ifname("wg")?)?;
    let home = WgPeer::start(Implementation::WireguardGo, &hub.home, &dir, &unique_ifname("wg")?)?;
    let world = World { hub: &hub, vps: &vps, phone: &phone, home: &home, keys: Keys::generate()? };
    world.run(&dir, forwarding).map_err(|error| dir.attach_logs(error))
}

struct Keys {
    vps: KeyPair,
    phone: KeyPair,
    home: KeyPair,
}

impl Keys {
    fn generate() -> Result<Keys> {
        Ok(Keys {
            vps: KeyPair::generate()?,
            phone: KeyPair::generate()?,
            home: KeyPair::generate()?,
        })
    }
}

struct World<'a> {
    hub: &'a Hub,
    vps: &'a Gatewayd,
    phone: &'a WgPeer,
    home: &'a WgPeer,
    keys: Keys,
}

/// The overlay: the VPS .1, the phone .2, the home .3.
const VPS_TUNNEL: u8 = 1;
const PHONE_TUNNEL: u8 = 2;
const HOME_TUNNEL: u8 = 3;

impl World<'_> {
    fn configure(&self) -> Result<()> {
        let (phone_v4, phone_v6) = tunnel_addresses(PHONE_TUNNEL);
        let (home_v4, home_v6) = tunnel_addresses(HOME_TUNNEL);
        let keys = &self.keys;
        self.vps.setconf(&format!(
            "[Interface]\nPrivateKey = {}\nListenPort = {PORT}\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = {phone_v4}/32, {phone_v6}/128\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = {home_v4}/32, {home_v6}/128, {}, {}\n",
            keys.vps.private_key,
            keys.phone.public_key,
            keys.home.public_key,
            Hub::HOME_LAN_V4,
            Hub::HOME_LAN_V6,
        ))?;
        let overlay = "10.77.0.0/24, fd77::/64";
        self.phone.setconf(&format!(
            "[Interface]\nPrivateKey = {}\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = [{}]:{PORT}\nAllowedIPs = {overlay}, {}, {}\n",
            keys.phone.private_key,
            keys.vps.public_key,
            self.hub.vps_wan.v6()?,
            Hub::HOME_LAN_V4,
            Hub::HOME_LAN_V6,
        ))?;
        self.home.setconf(&format!(
            "[Interface]\nPrivateKey = {}\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = {}:{PORT}\nAllowedIPs = {overlay}\n\
             PersistentKeepalive = 25\n",
            keys.home.private_key, keys.vps.public_key, self.hub.vps_wan.v4,
        ))?;
        self.vps.bring_up(&tunnel_cidrs(tunnel_addresses(VPS_TUNNEL)), TUNNEL_MTU)?;
        self.phone.bring_up(&tunnel_cidrs(tunnel_addresses(PHONE_TUNNEL)), TUNNEL_MTU)?;
        self.home.bring_up(&tunnel_cidrs(tunnel_addresses(HOME_TUNNEL)), TUNNEL_MTU)?;
        for (netns, ifname) in
            [(&self.hub.vps, self.vps.ifname()), (&self.hub.phone, self.phone.ifname())]
        {
            netns.add_route_dev(Hub::HOME_LAN_V4, ifname)?;
            netns.add_route_dev(Hub::HOME_LAN_V6, ifname)?;
        }
        // Counts what the hub's stack forwards from the tunnel back into it.
        let gw = self.vps.ifname();
        self.hub.vps.load_nftables(&format!(
            "table inet hubcount {{\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority 0; policy accept;\n\
             \t\tiifname \"{gw}\" oifname \"{gw}\" counter\n\
             \t}}\n\
             }}\n"
        ))
    }

    fn stack_forwarded(&self) -> Result<u64> {
        self.hub.vps.nft_counted_packets("inet", "hubcount", "forward")
    }

    fn run(&self, dir: &TestDir, forwarding: Forwarding) -> Result<()> {
        self.configure()?;
        // The home's keepalive opens the NAT mapping: the hub can reach the home only then.
        dir.wait_for("the hub to learn the home's endpoint", TIMEOUT, || {
            let status = self.vps.show()?.peer(&self.keys.home.public_key)?.clone();
            Ok(match status.endpoint {
                Some(endpoint) => Probe::Ready(endpoint),
                None => Probe::NotYet(format!("{status:?}")),
            })
        })?;
        let lan_v4 = IpAddr::V4(self.hub.lan_host_if.v4);
        let lan_v6 = IpAddr::V6(self.hub.lan_host_if.v6()?);
        for destination in [lan_v4, lan_v6] {
            wait_for_ping(&self.hub.phone, destination, TIMEOUT).with_context(|| {
                let stats = self.vps.ebpf_stats().map(|s| s.nonzero()).unwrap_or_default();
                format!("phone → hub → home → {destination} (hub's eBPF counters: {stats})")
            })?;
        }

        let stats_before = self.vps.ebpf_stats()?;
        let forwarded_before = self.stack_forwarded()?;
        let mut replies = 0;
        for destination in [lan_v4, lan_v6] {
            let report = ping_until_clean(&self.hub.phone, destination, PINGS, TIMEOUT)?;
            replies += u64::from(report.received);
        }
        let _iperf = IperfServer::start(&self.hub.lan_host, dir, IPERF_PORT)?;
        let tcp = iperf3_client_when_ready(
            &self.hub.phone,
            lan_v4,
            IPERF_PORT,
            &IperfOptions { duration: Duration::from_secs(1), ..IperfOptions::default() },
            TIMEOUT,
        )
        .context("TCP from the phone to the home LAN")?;
        ensure!(tcp.received_bytes > 0, "no TCP bytes crossed the hub: {tcp:?}");
        let stats = self.vps.ebpf_stats()?.since(&stats_before);
        let stack = self.stack_forwarded()? - forwarded_before;
        eprintln!(
            "{forwarding:?}: {replies} echo replies, {} TCP bytes; the stack forwarded {stack}; \
             eBPF counters grew by {}",
            tcp.received_bytes,
            stats.nonzero()
        );
        // Every echo exchange crosses the hub twice; TCP's data at least once per full packet.
        let crossings = 2 * replies + tcp.received_bytes.div_ceil(u64::from(TUNNEL_MTU));
        match forwarding {
            Forwarding::Xdp => {
                let hub_forwarded = stats.get(Stat::RxHubForwarded);
                ensure!(
                    hub_forwarded >= crossings,
                    "XDP forwarded {hub_forwarded} packets, fewer than the {crossings} that \
                     crossed: {}",
                    stats.nonzero()
                );
                ensure!(
                    stack < crossings / 10,
                    "the stack forwarded {stack} of the {crossings} packets XDP should have"
                );
            }
            Forwarding::Stack => {
                ensure!(
                    stats.get(Stat::RxHubForwarded) == 0,
                    "XDP forwarded with --no-fast-forward: {}",
                    stats.nonzero()
                );
                ensure!(
                    stack >= crossings,
                    "the stack forwarded {stack} packets, fewer than the {crossings} that crossed"
                );
                let decrypted = stats.get(Stat::RxDeliveredLocal);
                let encrypted = stats.get(Stat::TxEncrypted);
                ensure!(
                    decrypted >= crossings && encrypted >= 2 * replies,
                    "the programs decrypted {decrypted} and encrypted {encrypted}, too few for \
                     {crossings} crossings: {}",
                    stats.nonzero()
                );
            }
            Forwarding::Userspace => {
                ensure!(
                    stats.all_zero(),
                    "eBPF counters moved with --no-ebpf: {}",
                    stats.nonzero()
                );
                ensure!(
                    stack >= crossings,
                    "the stack forwarded {stack} packets, fewer than the {crossings} that crossed"
                );
            }
        }
        ensure!(stats.get(Stat::Error) == 0, "program errors: {}", stats.nonzero());
        Ok(())
    }
}

/// The size of a handshake initiation's UDP datagram (UDP header and message): no other
/// WireGuard message has it, so an nftables `udp length` match counts initiations.
const INITIATION_UDP_LENGTH: u16 = 8 + 148;

/// gatewayd as the hub (`--no-ebpf`, as in the bug report; handshakes take the same socket
/// and threads with eBPF), wireguard-go as both spokes, in the order of the bug report: the hub is started and configured, the spokes are configured and brought up, and
/// only then is the hub's interface brought up. The home's persistent keepalive makes it dial
/// at once, so its first initiation reaches the hub's socket (bound since `wg setconf`) while
/// the hub's interface is still down. gatewayd used to drop it there (`NotRunning`, without a
/// log line) and learnt the home only at its retry, REKEY_TIMEOUT (5 s) later, so the phone
/// could not reach the home's LAN in the first seconds; wireguard-go as the hub answers it.
///
/// How "answered the first initiation" is checked, without timing: an nftables counter on the
/// hub counts the home's initiations that arrive. The hub's interface is brought up once at
/// least one has arrived; the hub must then complete the handshake (its `latest-handshake`
/// for the home appears) with no further initiation counted. A spoke, like the kernel, sends
/// no new initiation within REKEY_TIMEOUT of the last, so a hub that dropped those first ones
/// can complete a handshake only from a retry, which the counter would show.
fn first_initiation(data_path: DataPath) -> Result<()> {
    require_root()?;
    require_tools(&["ip", "nft", "ping", "wg", "wireguard-go"])?;
    let dir = TestDir::new(&format!("hub-first-initiation-{data_path}"))?;
    let hub = Hub::build(&TopologyOptions::default())?;
    let vps =
        Gatewayd::start(&hub.vps, &dir, &unique_ifname("gw")?, &GatewaydOptions::new(data_path))?;
    let phone =
        WgPeer::start(Implementation::WireguardGo, &hub.phone, &dir, &unique_ifname("wg")?)?;
    let home = WgPeer::start(Implementation::WireguardGo, &hub.home, &dir, &unique_ifname("wg")?)?;
    let keys = Keys::generate()?;
    let run = || -> Result<()> {
        // The home's traffic reaches the VPS masqueraded as the carrier's address.
        hub.vps.load_nftables(&format!(
            "table inet firstinit {{\n\
             \tchain input {{\n\
             \t\ttype filter hook input priority filter; policy accept;\n\
             \t\tip saddr {} udp dport {PORT} udp length {INITIATION_UDP_LENGTH} counter\n\
             \t}}\n\
             }}\n",
            hub.cgnat_wan.v4
        ))?;
        let initiations = || hub.vps.nft_counted_packets("inet", "firstinit", "input");
        let (phone_v4, _) = tunnel_addresses(PHONE_TUNNEL);
        let (home_v4, _) = tunnel_addresses(HOME_TUNNEL);
        vps.setconf(&format!(
            "[Interface]\nPrivateKey = {}\nListenPort = {PORT}\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = {phone_v4}/32\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = {home_v4}/32, {}\n",
            keys.vps.private_key,
            keys.phone.public_key,
            keys.home.public_key,
            Hub::HOME_LAN_V4,
        ))?;
        let overlay = "10.77.0.0/24";
        phone.setconf(&format!(
            "[Interface]\nPrivateKey = {}\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = {}:{PORT}\nAllowedIPs = {overlay}, {}\n",
            keys.phone.private_key,
            keys.vps.public_key,
            hub.vps_wan.v4,
            Hub::HOME_LAN_V4,
        ))?;
        home.setconf(&format!(
            "[Interface]\nPrivateKey = {}\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = {}:{PORT}\nAllowedIPs = {overlay}\n\
             PersistentKeepalive = 25\n",
            keys.home.private_key, keys.vps.public_key, hub.vps_wan.v4,
        ))?;
        phone.bring_up(&tunnel_cidrs(tunnel_addresses(PHONE_TUNNEL)), TUNNEL_MTU)?;
        home.bring_up(&tunnel_cidrs(tunnel_addresses(HOME_TUNNEL)), TUNNEL_MTU)?;
        hub.phone.add_route_dev(Hub::HOME_LAN_V4, phone.ifname())?;
        let before_up = dir.wait_for("the home's first initiation at the hub", TIMEOUT, || {
            Ok(match initiations()? {
                0 => Probe::NotYet("none counted".to_string()),
                n => Probe::Ready(n),
            })
        })?;

        vps.bring_up(&tunnel_cidrs(tunnel_addresses(VPS_TUNNEL)), TUNNEL_MTU)?;
        hub.vps.add_route_dev(Hub::HOME_LAN_V4, vps.ifname())?;
        dir.wait_for("the hub's handshake with the home", TIMEOUT, || {
            let status = vps.show()?.peer(&keys.home.public_key)?.clone();
            Ok(match status.latest_handshake {
                Some(_) => Probe::Ready(()),
                None => Probe::NotYet(format!("{status:?}")),
            })
        })?;
        let counted = initiations()?;
        ensure!(
            counted == before_up,
            "the hub completed its handshake with the home only after {} more initiation(s) \
             from it: it lost the {before_up} that arrived before its interface was up",
            counted - before_up
        );
        // What the bug report saw fail: the phone reaching the home's LAN through the hub.
        wait_for_ping(&hub.phone, IpAddr::V4(hub.lan_host_if.v4), TIMEOUT)
            .context("phone → hub → home LAN")
    };
    run().map_err(|error| dir.attach_logs(error))
}

#[test]
fn hub_answers_a_spokes_first_initiation_without_ebpf() -> Result<()> {
    first_initiation(DataPath::Userspace)
}

#[test]
fn hub_forwards_in_xdp() -> Result<()> {
    hub(Forwarding::Xdp)
}

#[test]
fn hub_forwards_through_the_stack_without_fast_forward() -> Result<()> {
    hub(Forwarding::Stack)
}

#[test]
fn hub_forwards_in_userspace_without_ebpf() -> Result<()> {
    hub(Forwarding::Userspace)
}
