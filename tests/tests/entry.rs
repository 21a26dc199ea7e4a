//! The public entry point (`gateway forward`): services on a home LAN exposed on the public
//! addresses of VPSes, with every backend seeing the internet client's real address and port,
//! and every client seeing its replies come from the VPS's address and port.
//!
//! The world ([`Entry`]): client — internet — VPS (and a second VPS) — carrier NAT — home —
//! NAS and a second LAN host (both with the home as default route). gatewayd runs on each
//! VPS and on the home. The home dials both VPSes; its peer for the VPS admits any source
//! (`AllowedIPs = 10.88.0.1/32, 0.0.0.0/0`), the second VPS is named with `--entry-peer`, and
//! only the tunnel subnet is routed into the tunnel. The backends are `peer-report` servers
//! (they answer with the address they saw the client at), and `openssl s_server` for a real
//! TLS handshake.
//!
//! What runs where (the VPSes' data path; the home always runs eBPF: sending replies back to
//! the peer their flow came from, whatever the routes say, is its LAN XDP program's job, and
//! `--no-ebpf` has no hook on the LAN there):
//!
//! | check                                                | VPS eBPF | VPS `--no-ebpf` |
//! |------------------------------------------------------|:--------:|:---------------:|
//! | tcp, udp, `--listen`, 1000-port tcp range (shifted), udp range | ✓ | – (per packet in XDP only) |
//! | tls: two names → two backends, wildcard, exact wins, default | ✓ | ✓ (the daemon proxies) |
//! | tls: a ~1.7 KB ClientHello in two segments           | ✓        | ✓               |
//! | tls: a real handshake (curl → openssl s_server)      | ✓        | ✓               |
//! | http: two Host names → two backends                  | ✓        | ✓               |
//! | forward removal (and `list`, `list --json`)          | ✓        | ✓               |
//! | the home's routes, rules and nftables unchanged; its LAN's own traffic leaves by the default route | ✓ | ✓ |
//! | a restart of the VPS's daemon keeps the forwards     | ✓ (tcp, tls) | ✓ (tls, http) |
//! | two VPSes in front of one home, replies per flow     | ✓ (tcp)  | ✓ (tls)         |
//!
//! `baseline_keeps_the_client_address` checks the same world done as people do it today
//! (`gateway_tests::entry_baseline`: nftables DNAT, connmark policy routing at the home, nginx
//! `ssl_preread` with transparent `proxy_bind`), which `cargo xtask bench` compares with.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use gateway_common::maps::Stat;
use gateway_tests::entry_baseline::{Baseline, BaselineForwards, PortForward};
use gateway_tests::forward::Forwards;
use gateway_tests::gatewayd::{DataPath, Gatewayd, GatewaydOptions, XdpPass};
use gateway_tests::topology::{Entry, TopologyOptions};
use gateway_tests::traffic::{
    Exchange, POST_QUANTUM_SIZE, PeerReportServer, TcpClient, TlsServer, client_hello, curl_http,
    curl_https, tcp_exchange, tcp_no_answer, udp_exchange, wait_for_ping,
};
use gateway_tests::wg::{Implementation, KeyPair};
use gateway_tests::{Netns, TestDir, require_root, require_tools, unique_ifname};

const TOOLS: &[&str] = &["ip", "nft", "ss", "wg", "ethtool", "curl", "openssl"];
const LISTEN_PORT: u16 = 51820;
const TUNNEL_MTU: u32 = 1420;
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client waits for a forward that should not answer (removed, or no name matches).
const NO_ANSWER: Duration = Duration::from_secs(3);
/// The pause between the two halves of a split ClientHello: long enough that they leave as
/// separate segments and arrive apart.
const SPLIT_PAUSE: Duration = Duration::from_millis(200);

/// The overlay: VPS .1, second VPS .2, home .3.
const VPS_TUNNEL: [u8; 4] = [10, 88, 0, 1];
const VPS2_TUNNEL: [u8; 4] = [10, 88, 0, 2];
const HOME_TUNNEL: [u8; 4] = [10, 88, 0, 3];
const TUNNEL_SUBNET: &str = "10.88.0.0/24";

/// The backends' ports: on the NAS a peer-report serves tcp 22, 8443 (tls), 9443 (tls),
/// 8080 (http), the range's sampled ports, and udp 53 and the udp range's samples; on the
/// second host one serves tcp 8443, 9443, 8080; on the NAS an openssl s_server serves 10443.
const SSH: u16 = 22;
const DNS: u16 = 53;
const TLS_A: u16 = 8443;
const TLS_WILD: u16 = 9443;
const TLS_REAL: u16 = 10443;
const HTTP: u16 = 8080;
/// tcp 20000-20999 → NAS 30000-30999 (shifted); udp 40000-40999 → NAS, same ports.
const TCP_RANGE: (u16, u16) = (20000, 20999);
const TCP_RANGE_TO: u16 = 30000;
const UDP_RANGE: (u16, u16) = (40000, 40999);
/// Public ports of the range checked (first, middle, last).
const TCP_RANGE_SAMPLES: [u16; 3] = [20000, 20500, 20999];
const UDP_RANGE_SAMPLES: [u16; 2] = [40000, 40999];

/// A gatewayd world on the entry topology. Fields drop in order: daemons and servers first,
/// then the pass-through programs, then the namespaces.
struct World {
    /// `None` only while it restarts.
    vps: Option<Gatewayd>,
    vps2: Gatewayd,
    home: Gatewayd,
    _servers: Vec<PeerReportServer>,
    _tls: TlsServer,
    _receivers: Vec<XdpPass>,
    keys: Keys,
    /// The home's routes, rules and nftables once its tunnel was up, before any forward.
    home_before: String,
    dir: TestDir,
    entry: Entry,
}

struct Keys {
    vps: KeyPair,
    vps2: KeyPair,
    home: KeyPair,
}

impl World {
    /// Builds the topology, starts the backends and gatewayd on both VPSes (`vps_path`) and on
    /// the home (eBPF), configures the tunnels and waits until the home reaches both VPSes.
    fn start(test: &str, vps_path: DataPath) -> Result<World> {
        require_root()?;
        require_tools(TOOLS)?;
        let dir = TestDir::new(&format!("entry-{test}-{vps_path}"))?;
        let entry = Entry::build(&TopologyOptions::default())?;
        // veth takes frames an XDP program sent (XDP_TX) or redirected to it only when it runs
        // XDP itself: the far ends of every link gatewayd's programs transmit on.
        let receivers = [
            (&entry.internet, &entry.internet_vps.name),
            (&entry.internet, &entry.internet_vps2.name),
            (&entry.cgnat, &entry.cgnat_home.name),
            (&entry.nas, &entry.nas_if.name),
            (&entry.host, &entry.host_if.name),
        ]
        .into_iter()
        .map(|(netns, device)| XdpPass::attach(netns, device))
        .collect::<Result<Vec<_>>>()?;
        let servers = vec![
            PeerReportServer::start(
                &entry.nas,
                &dir,
                "nas",
                &[SSH, TLS_A, TLS_WILD, HTTP, 30000, 30500, 30999],
                &[DNS, UDP_RANGE.0, UDP_RANGE.1],
            )?,
            PeerReportServer::start(&entry.host, &dir, "host", &[TLS_A, TLS_WILD, HTTP], &[])?,
        ];
        let tls = TlsServer::start(&entry.nas, &dir, "tls.example.com", TLS_REAL)?;
        let keys = Keys {
            vps: KeyPair::generate()?,
            vps2: KeyPair::generate()?,
            home: KeyPair::generate()?,
        };
        let vps_options = GatewaydOptions::new(vps_path);
        let vps = Gatewayd::start(&entry.vps, &dir, &unique_ifname("gw")?, &vps_options)?;
        let vps2 = Gatewayd::start(&entry.vps2, &dir, &unique_ifname("gw")?, &vps_options)?;
        let home_options = GatewaydOptions {
            lan_ifaces: vec![entry.home_lan.name.clone(), entry.home_lan_host.name.clone()],
            entry_peers: vec![keys.vps2.public_key.clone()],
            ..GatewaydOptions::new(DataPath::Ebpf)
        };
        let home = Gatewayd::start(&entry.home, &dir, &unique_ifname("gw")?, &home_options)?;
        let mut world = World {
            vps: Some(vps),
            vps2,
            home,
            _servers: servers,
            _tls: tls,
            _receivers: receivers,
            keys,
            home_before: String::new(),
            dir,
            entry,
        };
        world.configure().map_err(|error| world.dir.attach_logs(error))?;
        world.home_before = home_network_state(&world.entry.home)?;
        Ok(world)
    }

    fn configure(&self) -> Result<()> {
        let (entry, keys) = (&self.entry, &self.keys);
        configure_vps(self.vps(), &entry.vps, &keys.vps, &keys.home, VPS_TUNNEL)?;
        configure_vps(&self.vps2, &entry.vps2, &keys.vps2, &keys.home, VPS2_TUNNEL)?;
        let ip = |octets: [u8; 4]| IpAddr::from(octets);
        // The home, as the README tells a user: the VPS admits any source (it brings in the
        // internet), the second VPS is an entry peer by `--entry-peer`; only the tunnel subnet
        // is routed into the tunnel (the interface's address route).
        self.home.setconf(&format!(
            "[Interface]\nPrivateKey = {}\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = {}:{LISTEN_PORT}\n\
             AllowedIPs = {}/32, 0.0.0.0/0\nPersistentKeepalive = 25\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = {}:{LISTEN_PORT}\nAllowedIPs = {}/32\n\
             PersistentKeepalive = 25\n",
            keys.home.private_key,
            keys.vps.public_key,
            entry.vps_wan.v4,
            ip(VPS_TUNNEL),
            keys.vps2.public_key,
            entry.vps2_wan.v4,
            ip(VPS2_TUNNEL),
        ))?;
        self.home.bring_up(&[(ip(HOME_TUNNEL), 24)], TUNNEL_MTU)?;
        self.wait_for_tunnels()
    }

    /// The home dials both VPSes (they learn its endpoint behind the carrier's NAT from it).
    fn wait_for_tunnels(&self) -> Result<()> {
        for (vps, name) in [(VPS_TUNNEL, "VPS"), (VPS2_TUNNEL, "second VPS")] {
            wait_for_ping(&self.entry.home, IpAddr::from(vps), TIMEOUT)
                .map_err(|error| self.dir.attach_logs(error))
                .with_context(|| format!("home → {name} through the tunnel"))?;
        }
        Ok(())
    }

    fn vps(&self) -> &Gatewayd {
        self.vps.as_ref().expect("the VPS's gatewayd is running")
    }

    fn forwards(&self) -> Forwards<'_> {
        Forwards::new(&self.entry.vps, self.vps().ifname())
    }

    fn forwards2(&self) -> Forwards<'_> {
        Forwards::new(&self.entry.vps2, self.vps2.ifname())
    }

    fn public(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.entry.vps_wan.v4), port)
    }

    fn nas(&self, port: u16) -> String {
        format!("{}:{port}", self.entry.nas_if.v4)
    }

    fn host(&self, port: u16) -> String {
        format!("{}:{port}", self.entry.host_if.v4)
    }

    fn client_ip(&self) -> IpAddr {
        IpAddr::V4(self.entry.client_wan.v4)
    }

    /// Runs `check`, with the daemons' logs attached to its error.
    fn run(&self, check: impl FnOnce(&World) -> Result<()>) -> Result<()> {
        check(self).map_err(|error| self.dir.attach_logs(error))
    }
}

/// A VPS: its tunnel address, the home as its peer with the home LAN, routed into the tunnel.
fn configure_vps(
    daemon: &Gatewayd,
    netns: &Netns,
    keys: &KeyPair,
    home: &KeyPair,
    address: [u8; 4],
) -> Result<()> {
    daemon.setconf(&format!(
        "[Interface]\nPrivateKey = {}\nListenPort = {LISTEN_PORT}\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = {}/32, {}\n",
        keys.private_key,
        home.public_key,
        IpAddr::from(HOME_TUNNEL),
        Entry::HOME_LAN
    ))?;
    daemon.bring_up(&[(IpAddr::from(address), 24)], TUNNEL_MTU)?;
    netns.add_route_dev(Entry::HOME_LAN, daemon.ifname())
}

/// The backend `name` answered, saw the client's own address and port, and took it on
/// `backend_port`; the client's answer came from `public`.
fn check_kept(
    exchange: &Exchange,
    client_ip: IpAddr,
    public: SocketAddr,
    name: &str,
    backend_port: u16,
) -> Result<()> {
    let report = &exchange.report;
    let what = format!("client {} → {public}", exchange.client);
    ensure!(
        report.name == name,
        "{what} reached {}, not {name}: {:?}",
        report.name,
        exchange.answer
    );
    let expected_peer = SocketAddr::new(client_ip, exchange.client.port());
    ensure!(
        report.peer == expected_peer,
        "{what}: the backend saw the client as {}, not {expected_peer}",
        report.peer
    );
    ensure!(
        report.local.port() == backend_port,
        "{what} arrived at the backend's port {}, not {backend_port}",
        report.local.port()
    );
    ensure!(
        exchange.answered_from == public,
        "{what}: the answer came from {}, not the public address and port",
        exchange.answered_from
    );
    Ok(())
}

fn tcp_line(world: &World, public: SocketAddr) -> Result<Exchange> {
    tcp_exchange(&world.entry.client, public, &[b"hello\n"], Duration::ZERO, TIMEOUT)
}

fn udp(world: &World, public: SocketAddr) -> Result<Exchange> {
    udp_exchange(&world.entry.client, world.client_ip(), public, b"hello", TIMEOUT)
}

fn tls(world: &World, public: SocketAddr, name: &str) -> Result<Exchange> {
    let hello = client_hello(name, 0);
    tcp_exchange(&world.entry.client, public, &[&hello], Duration::ZERO, TIMEOUT)
}

/// The home's routing (every table), rules and nftables ruleset, as text to compare.
fn home_network_state(home: &Netns) -> Result<String> {
    Ok(format!(
        "routes:\n{}\nrules:\n{}\nnftables:\n{}",
        home.ip(&["-4", "route", "show", "table", "all"])?,
        home.ip(&["-4", "rule", "show"])?,
        home.run("nft", &["list", "ruleset"])?
    ))
}

/// The home needed nothing but gatewayd: its routes, rules and nftables (its router's own NAT
/// alone) are as they were before any forward; its default route still points at the carrier; and a LAN host's
/// own connection to the internet leaves by it (the client's server sees the carrier's
/// address), not through the tunnel that admits any source.
fn check_home_untouched(world: &World) -> Result<()> {
    let home = &world.entry.home;
    let now = home_network_state(home)?;
    ensure!(
        now == world.home_before,
        "the home's network changed:\nbefore:\n{}\nnow:\n{now}",
        world.home_before
    );
    // Only the tunnel subnet is routed into the tunnel (besides the local and broadcast
    // entries of the tunnel's own address).
    let tunnel_routes =
        home.ip(&["-4", "route", "show", "table", "all", "dev", world.home.ifname()])?;
    let routed: Vec<&str> = tunnel_routes
        .lines()
        .filter(|line| !line.starts_with("local ") && !line.starts_with("broadcast "))
        .collect();
    ensure!(
        routed.len() == 1 && routed[0].starts_with(TUNNEL_SUBNET),
        "the home routes more than {TUNNEL_SUBNET} into the tunnel:\n{tunnel_routes}"
    );
    let default = home.ip(&["-4", "route", "show", "default"])?;
    let carrier = world.entry.cgnat_home.v4.to_string();
    ensure!(
        default.contains(&format!("via {carrier}")) && default.lines().count() == 1,
        "the home's default route is not the carrier's ({carrier}): {default}"
    );
    let _outbound =
        PeerReportServer::start(&world.entry.client, &world.dir, "client", &[7000], &[])?;
    let to = SocketAddr::new(world.client_ip(), 7000);
    let exchange = tcp_exchange(&world.entry.host, to, &[b"out\n"], Duration::ZERO, TIMEOUT)
        .context("the second LAN host's own connection to the internet")?;
    let carrier_public = IpAddr::V4(world.entry.cgnat_wan.v4);
    ensure!(
        exchange.report.peer.ip() == carrier_public,
        "the LAN host's connection reached the internet as {}, not through the carrier's NAT \
         ({carrier_public})",
        exchange.report.peer
    );
    Ok(())
}

fn stats_grew(daemon: &Gatewayd, stat: Stat, what: &str) -> Result<()> {
    let stats = daemon.ebpf_stats()?;
    ensure!(stats.get(stat) > 0, "{what}: {stat:?} did not count: {}", stats.nonzero());
    ensure!(stats.get(Stat::Error) == 0, "{what}: program errors: {}", stats.nonzero());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// tcp and udp forwards (eBPF on the VPS)

#[test]
fn tcp_and_udp_forwards_keep_the_client_address() -> Result<()> {
    let world = World::start("l4", DataPath::Ebpf)?;
    world.run(|world| {
        let forwards = world.forwards();
        let listen = world.entry.vps_wan.v4.to_string();
        forwards.add(&["tcp", "2222", "--to", &world.nas(SSH)])?;
        forwards.add(&["tcp", "2223", "--to", &world.nas(SSH), "--listen", &listen])?;
        forwards.add(&["udp", "5353", "--to", &world.nas(DNS)])?;
        let tcp_range = format!("{}-{}", TCP_RANGE.0, TCP_RANGE.1);
        forwards.add(&["tcp", &tcp_range, "--to", &world.nas(TCP_RANGE_TO)])?;
        let udp_range = format!("{}-{}", UDP_RANGE.0, UDP_RANGE.1);
        forwards.add(&["udp", &udp_range, "--to", &world.entry.nas_if.v4.to_string()])?;

        let client = world.client_ip();
        for port in [2222, 2223] {
            check_kept(
                &tcp_line(world, world.public(port))?,
                client,
                world.public(port),
                "nas",
                SSH,
            )?;
        }
        check_kept(&udp(world, world.public(5353))?, client, world.public(5353), "nas", DNS)?;
        for port in TCP_RANGE_SAMPLES {
            let backend = TCP_RANGE_TO + (port - TCP_RANGE.0);
            let exchange = tcp_line(world, world.public(port))
                .with_context(|| format!("tcp range, public port {port}"))?;
            check_kept(&exchange, client, world.public(port), "nas", backend)?;
        }
        for port in UDP_RANGE_SAMPLES {
            let exchange = udp(world, world.public(port))
                .with_context(|| format!("udp range, public port {port}"))?;
            check_kept(&exchange, client, world.public(port), "nas", port)?;
        }
        stats_grew(world.vps(), Stat::EntryForwarded, "the VPS")?;
        stats_grew(world.vps(), Stat::EntryReplyTranslated, "the VPS")?;
        stats_grew(&world.home, Stat::ReplyToSent, "the home")?;
        forward_counts(world.vps(), "tcp 2222", "ebpf", 1)?;
        forward_counts(world.vps(), &format!("udp {udp_range}"), "ebpf", 1)?;

        let listed = forwards.list()?;
        for shown in ["2222", "5353", "20000-20999", &world.nas(TCP_RANGE_TO)] {
            ensure!(listed.contains(shown), "`forward list` does not show {shown}:\n{listed}");
        }
        let json = forwards.list_json()?.to_string();
        let nas = world.entry.nas_if.v4.to_string();
        ensure!(
            json.contains("2222") && json.contains(&nas),
            "`forward list --json` does not show the tcp forward to {nas}: {json}"
        );

        forwards.remove(&["tcp", "2222"])?;
        forwards.remove(&["tcp", &tcp_range])?;
        tcp_no_answer(&world.entry.client, world.public(2222), b"hello\n", NO_ANSWER)
            .context("tcp 2222 after its removal")?;
        tcp_no_answer(&world.entry.client, world.public(20500), b"hello\n", NO_ANSWER)
            .context("the tcp range after its removal")?;
        let listed = forwards.list()?;
        ensure!(!listed.contains("20000-20999"), "a removed range is still listed:\n{listed}");
        // What was not removed still works.
        check_kept(&tcp_line(world, world.public(2223))?, client, world.public(2223), "nas", SSH)?;
        check_kept(&udp(world, world.public(5353))?, client, world.public(5353), "nas", DNS)?;
        check_home_untouched(world)
    })
}

// ---------------------------------------------------------------------------------------
// tls and http forwards (the daemon proxies, with either data path)

fn named_forwards(vps_path: DataPath) -> Result<()> {
    let world = World::start("named", vps_path)?;
    world.run(|world| {
        let forwards = world.forwards();
        forwards.add(&["tls", "443", "--sni", "a.example.com", "--to", &world.nas(TLS_A)])?;
        forwards.add(&["tls", "443", "--sni", "b.example.com", "--to", &world.host(TLS_A)])?;
        forwards.add(&["tls", "443", "--sni", "*.example.net", "--to", &world.host(TLS_WILD)])?;
        forwards.add(&["tls", "443", "--sni", "www.example.net", "--to", &world.nas(TLS_WILD)])?;
        forwards.add(&["tls", "443", "--sni", "tls.example.com", "--to", &world.nas(TLS_REAL)])?;
        forwards.add(&["http", "80", "--host", "a.example.com", "--to", &world.nas(HTTP)])?;
        forwards.add(&["http", "80", "--host", "b.example.com", "--to", &world.host(HTTP)])?;

        let (client, https, http) = (world.client_ip(), world.public(443), world.public(80));
        check_kept(&tls(world, https, "a.example.com")?, client, https, "nas", TLS_A)?;
        check_kept(&tls(world, https, "b.example.com")?, client, https, "host", TLS_A)?;
        check_kept(&tls(world, https, "x.example.net")?, client, https, "host", TLS_WILD)
            .context("the wildcard *.example.net")?;
        check_kept(&tls(world, https, "www.example.net")?, client, https, "nas", TLS_WILD)
            .context("the exact name www.example.net wins over *.example.net")?;

        // A ClientHello as large as a post-quantum one, in two writes 200 ms apart: the proxy
        // must wait for the whole of it.
        let hello = client_hello("b.example.com", POST_QUANTUM_SIZE);
        let (first, second) = hello.split_at(hello.len() / 2);
        let split =
            tcp_exchange(&world.entry.client, https, &[first, second], SPLIT_PAUSE, TIMEOUT)
                .context("a ClientHello split over two segments")?;
        check_kept(&split, client, https, "host", TLS_A)?;
        ensure!(
            split.report.bytes == hello.len(),
            "the backend got {} of the ClientHello's {} bytes",
            split.report.bytes,
            hello.len()
        );

        // A real TLS handshake, passed through: the certificate is the backend's.
        let real = curl_https(&world.entry.client, https.ip(), 443, "tls.example.com", TIMEOUT)?;
        ensure!(
            real.certificate_subject().is_some_and(|subject| subject.contains("tls.example.com")),
            "curl https://tls.example.com got another certificate:\n{}",
            real.verbose
        );
        ensure!(real.answered_from == https, "the TLS answer came from {}", real.answered_from);

        for (host, name) in [("a.example.com", "nas"), ("b.example.com", "host")] {
            let answer = curl_http(&world.entry.client, http.ip(), 80, host, TIMEOUT)?;
            let exchange = Exchange {
                client: answer.client,
                answered_from: answer.answered_from,
                report: answer.report()?,
                answer: answer.body.clone(),
            };
            check_kept(&exchange, client, http, name, HTTP)
                .with_context(|| format!("Host: {host}"))?;
        }
        if vps_path == DataPath::Ebpf {
            stats_grew(world.vps(), Stat::ProxyTranslated, "the VPS")?;
        }
        stats_grew(&world.home, Stat::ReplyToSent, "the home")?;
        forward_counts(world.vps(), "tls 443 --sni a.example.com", "proxy", 1)?;
        forward_counts(world.vps(), "http 80 --host b.example.com", "proxy", 1)?;

        // No name matches and there is no default: closed. Then a default takes it.
        tcp_no_answer(
            &world.entry.client,
            https,
            &client_hello("nobody.example.org", 0),
            NO_ANSWER,
        )
        .context("an unknown server name without a default backend")?;
        forwards.add(&["tls", "443", "--default", "--to", &world.nas(TLS_A)])?;
        check_kept(&tls(world, https, "nobody.example.org")?, client, https, "nas", TLS_A)
            .context("the default backend")?;

        // Removing a name: it falls to the default; removing a Host: closed (no default).
        forwards.remove(&["tls", "443", "--sni", "b.example.com"])?;
        check_kept(&tls(world, https, "b.example.com")?, client, https, "nas", TLS_A)
            .context("b.example.com after its removal goes to the default")?;
        forwards.remove(&["http", "80", "--host", "a.example.com"])?;
        ensure!(
            curl_http(&world.entry.client, http.ip(), 80, "a.example.com", NO_ANSWER).is_err(),
            "Host a.example.com still answers after its removal"
        );
        let answer = curl_http(&world.entry.client, http.ip(), 80, "b.example.com", TIMEOUT)?;
        ensure!(answer.report()?.name == "host", "Host b.example.com: {:?}", answer.body);
        // One forward a line: tls b.example.com and http a.example.com are gone, http
        // b.example.com and tls a.example.com stay.
        let listed = forwards.list()?;
        let lines = |name: &str| -> Vec<&str> {
            listed.lines().filter(|line| line.contains(name)).collect()
        };
        let (a, b) = (lines("a.example.com"), lines("b.example.com"));
        ensure!(
            a.len() == 1 && a[0].contains("tls") && b.len() == 1 && b[0].contains("http"),
            "`forward list` after removing tls b.example.com and http a.example.com:\n{listed}"
        );
        check_home_untouched(world)
    })
}

/// The `path` (proxy or ebpf) counted `connections` or more for `forward`, and bytes both
/// ways.
fn forward_counts(daemon: &Gatewayd, forward: &str, path: &str, connections: u64) -> Result<()> {
    let status = daemon.status()?;
    let all = &status.entry.traffic;
    let Some(traffic) = all.iter().find(|t| t.forward == forward && t.path == path) else {
        bail!("no traffic counted for {forward} on the {path} path: {all:?}");
    };
    let count = traffic.count;
    ensure!(
        count.connections >= connections && count.bytes_to_backend > 0 && count.bytes_to_client > 0,
        "{forward}: {count:?}, after {connections} connections or more that sent and got bytes"
    );
    Ok(())
}

#[test]
fn tls_and_http_forwards_route_by_name_ebpf() -> Result<()> {
    named_forwards(DataPath::Ebpf)
}

#[test]
fn tls_and_http_forwards_route_by_name_userspace() -> Result<()> {
    named_forwards(DataPath::Userspace)
}

// ---------------------------------------------------------------------------------------
// A restart of the VPS's daemon

fn restart_keeps_forwards(vps_path: DataPath) -> Result<()> {
    let mut world = World::start("restart", vps_path)?;
    let ifname = world.vps().ifname().to_string();
    let client = world.client_ip();
    let (ssh, https, http) = (world.public(2222), world.public(443), world.public(80));
    world.run(|world| {
        let forwards = world.forwards();
        if vps_path == DataPath::Ebpf {
            forwards.add(&["tcp", "2222", "--to", &world.nas(SSH)])?;
        } else {
            forwards.add(&["http", "80", "--host", "a.example.com", "--to", &world.nas(HTTP)])?;
        }
        forwards.add(&["tls", "443", "--sni", "a.example.com", "--to", &world.nas(TLS_A)])?;
        Ok(())
    })?;

    // Stop (SIGTERM) and start again on the same interface, configured as before. The home
    // keeps its sessions with the old daemon, which the new one does not know: it is told its
    // peer anew (as after a reconnection) so it handshakes at once.
    if let Some(mut old) = world.vps.take() {
        old.signal_and_wait(libc::SIGTERM, TIMEOUT)?;
    }
    let options = GatewaydOptions::new(vps_path);
    world.vps = Some(Gatewayd::start(&world.entry.vps, &world.dir, &ifname, &options)?);
    world.run(|world| {
        configure_vps(
            world.vps(),
            &world.entry.vps,
            &world.keys.vps,
            &world.keys.home,
            VPS_TUNNEL,
        )?;
        world.home.set(&["peer", &world.keys.vps.public_key, "remove"])?;
        world.configure_home_peer_again()?;
        let listed = world.forwards().list()?;
        let kept = if vps_path == DataPath::Ebpf { "2222" } else { "http" };
        ensure!(
            listed.contains("a.example.com") && listed.contains(kept),
            "the forwards after a restart (tls a.example.com and {kept} were added):\n{listed}"
        );
        check_kept(&tls(world, https, "a.example.com")?, client, https, "nas", TLS_A)?;
        if vps_path == DataPath::Ebpf {
            check_kept(&tcp_line(world, ssh)?, client, ssh, "nas", SSH)?;
        } else {
            let answer = curl_http(&world.entry.client, http.ip(), 80, "a.example.com", TIMEOUT)?;
            ensure!(answer.report()?.peer.ip() == client, "after the restart: {:?}", answer.body);
        }
        Ok(())
    })
}

impl World {
    /// The home's peer for the VPS, as in [`World::configure`] (after it was removed).
    fn configure_home_peer_again(&self) -> Result<()> {
        self.home.set(&[
            "peer",
            &self.keys.vps.public_key,
            "endpoint",
            &format!("{}:{LISTEN_PORT}", self.entry.vps_wan.v4),
            "allowed-ips",
            &format!("{}/32,0.0.0.0/0", IpAddr::from(VPS_TUNNEL)),
            "persistent-keepalive",
            "25",
        ])?;
        self.wait_for_tunnels()
    }
}

#[test]
fn a_restart_of_the_vps_daemon_keeps_the_forwards_ebpf() -> Result<()> {
    restart_keeps_forwards(DataPath::Ebpf)
}

#[test]
fn a_restart_of_the_vps_daemon_keeps_the_forwards_userspace() -> Result<()> {
    restart_keeps_forwards(DataPath::Userspace)
}

// ---------------------------------------------------------------------------------------
// Two VPSes in front of one home

/// The same backend forwarded on both VPSes. Connections through each are opened first and
/// used after, interleaved, so a home that sent replies to whichever VPS spoke last (rather
/// than to the one each flow came from) would break one of them.
fn two_vpses(vps_path: DataPath) -> Result<()> {
    let world = World::start("two-vps", vps_path)?;
    world.run(|world| {
        let (port, backend_port, request): (u16, u16, Vec<u8>) = match vps_path {
            DataPath::Ebpf => (2222, SSH, b"hello\n".to_vec()),
            DataPath::Userspace => (443, TLS_A, client_hello("a.example.com", 0)),
        };
        for forwards in [world.forwards(), world.forwards2()] {
            match vps_path {
                DataPath::Ebpf => forwards.add(&["tcp", "2222", "--to", &world.nas(SSH)])?,
                DataPath::Userspace => forwards.add(&[
                    "tls",
                    "443",
                    "--sni",
                    "a.example.com",
                    "--to",
                    &world.nas(TLS_A),
                ])?,
            }
        }
        let first = world.public(port);
        let second = SocketAddr::new(IpAddr::V4(world.entry.vps2_wan.v4), port);
        let client = &world.entry.client;
        for round in 0..2 {
            let through_first = TcpClient::connect(client, first, TIMEOUT)?;
            let through_second = TcpClient::connect(client, second, TIMEOUT)?;
            let (a, b) = if round == 0 {
                let a = through_first.exchange(&[&request], Duration::ZERO)?;
                (a, through_second.exchange(&[&request], Duration::ZERO)?)
            } else {
                let b = through_second.exchange(&[&request], Duration::ZERO)?;
                (through_first.exchange(&[&request], Duration::ZERO)?, b)
            };
            check_kept(&a, world.client_ip(), first, "nas", backend_port)
                .with_context(|| format!("round {round}, through the first VPS"))?;
            check_kept(&b, world.client_ip(), second, "nas", backend_port)
                .with_context(|| format!("round {round}, through the second VPS"))?;
        }
        check_home_untouched(world)
    })
}

#[test]
fn two_vpses_in_front_of_one_home_ebpf() -> Result<()> {
    two_vpses(DataPath::Ebpf)
}

#[test]
fn two_vpses_in_front_of_one_home_userspace() -> Result<()> {
    two_vpses(DataPath::Userspace)
}

// ---------------------------------------------------------------------------------------
// The baseline: the same world as people build it today (no gatewayd)

#[test]
fn baseline_keeps_the_client_address() -> Result<()> {
    require_root()?;
    require_tools(&["ip", "nft", "ss", "wg", "ethtool", "wireguard-go", "nginx"])?;
    let dir = TestDir::new("entry-baseline")?;
    let entry = Entry::build(&TopologyOptions::default())?;
    let nas = |port| SocketAddr::new(IpAddr::V4(entry.nas_if.v4), port);
    let host = |port| SocketAddr::new(IpAddr::V4(entry.host_if.v4), port);
    let forwards = BaselineForwards {
        ports: vec![
            PortForward { udp: false, public_port: 2222, backend: nas(SSH) },
            PortForward { udp: true, public_port: 5353, backend: nas(DNS) },
        ],
        sni_port: 443,
        sni: vec![("a.example.com".into(), nas(TLS_A)), ("b.example.com".into(), host(TLS_A))],
    };
    let _nas = PeerReportServer::start(&entry.nas, &dir, "nas", &[SSH, TLS_A], &[DNS])?;
    let _host = PeerReportServer::start(&entry.host, &dir, "host", &[TLS_A], &[])?;
    let baseline = Baseline::start(&entry, &dir, Implementation::WireguardGo, &forwards)?;
    let public = |port| SocketAddr::new(IpAddr::V4(entry.vps_wan.v4), port);
    let client = IpAddr::V4(entry.client_wan.v4);
    let check = || -> Result<()> {
        let tcp = tcp_exchange(&entry.client, public(2222), &[b"hi\n"], Duration::ZERO, TIMEOUT)?;
        check_kept(&tcp, client, public(2222), "nas", SSH).context("DNAT tcp")?;
        let udp = udp_exchange(&entry.client, client, public(5353), b"hi", TIMEOUT)?;
        check_kept(&udp, client, public(5353), "nas", DNS).context("DNAT udp")?;
        let hello = client_hello("a.example.com", POST_QUANTUM_SIZE);
        let (first, second) = hello.split_at(hello.len() / 2);
        let split =
            tcp_exchange(&entry.client, public(443), &[first, second], SPLIT_PAUSE, TIMEOUT)?;
        check_kept(&split, client, public(443), "nas", TLS_A).context("nginx, split hello")?;
        let hello = client_hello("b.example.com", 0);
        let named = tcp_exchange(&entry.client, public(443), &[&hello], Duration::ZERO, TIMEOUT)?;
        check_kept(&named, client, public(443), "host", TLS_A).context("nginx, second name")
    };
    check().map_err(|error| {
        let nginx = baseline.nginx_log().unwrap_or_default();
        dir.attach_logs(error.context(format!("nginx said:\n{nginx}")))
    })
}
