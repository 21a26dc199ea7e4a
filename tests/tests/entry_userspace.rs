//! The entry point without eBPF (`gatewayd --no-ebpf`): the daemon's proxy carries tcp, udp
//! and http forwards, and the daemon translates its connections itself (`daemon::proxy_nat`),
//! so a backend behind a wireguard-go peer sees the internet client's address and port, over
//! IPv4 and IPv6, and the client gets its answers from the VPS's address and port.
//!
//! The [`Pair`] topology, IPv6 underlay: gatewayd (the VPS) in `client`, wireguard-go (the
//! home, its backends on its tunnel addresses) in `server`. The router plays the internet
//! client, from addresses outside the underlay (`CLIENT`) that the VPS routes back through it
//! and the home routes into its tunnel (its peer for the VPS admits them as sources).

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use gateway_tests::gatewayd::{DataPath, gateway_cli_binary};
use gateway_tests::pair::{Family, PEER_TUNNEL, Pair, PairSpec};
use gateway_tests::{Netns, Probe, TestDir, require_root, require_tools};

const TOOLS: &[&str] = &["ip", "ping", "wg", "wireguard-go"];
/// The internet client's addresses, on the router's loopback.
const CLIENT: (&str, &str) = ("198.51.100.7", "2001:db8:51::7");
const BACKEND_PORT: u16 = 8080;
const TIMEOUT: Duration = Duration::from_secs(10);
/// How often an unanswered udp datagram is sent again.
const UDP_RESEND: Duration = Duration::from_millis(300);
/// The proxy's release grace (`ProxyLimits::release_grace`) and some.
const RELEASED: Duration = Duration::from_secs(15);

/// Servers on the home's tunnel addresses that answer every connection and datagram with the
/// address and port they saw it from.
struct ReportServers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl ReportServers {
    fn start(home: &Netns, addresses: &[IpAddr]) -> Result<ReportServers> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &address in addresses {
            let at = SocketAddr::new(address, BACKEND_PORT);
            let (tcp, udp) = {
                let _inside = home.enter()?;
                let tcp = TcpListener::bind(at).with_context(|| format!("tcp backend on {at}"))?;
                let udp = UdpSocket::bind(at).with_context(|| format!("udp backend on {at}"))?;
                (tcp, udp)
            };
            tcp.set_nonblocking(true)?;
            udp.set_read_timeout(Some(Duration::from_millis(100)))?;
            let stop_tcp = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || serve_tcp(&tcp, &stop_tcp)));
            let stop_udp = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || serve_udp(&udp, &stop_udp)));
        }
        Ok(ReportServers { stop, threads })
    }
}

impl Drop for ReportServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn serve_tcp(listener: &TcpListener, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                std::thread::spawn(move || report_tcp(stream, peer));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Writes the peer's address, then reads what the client sent until it closes (closing with
/// unread bytes would reset the connection).
fn report_tcp(mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(TIMEOUT));
    let _ = stream.write_all(format!("{peer}\n").as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
    let _ = std::io::copy(&mut stream, &mut std::io::sink());
}

fn serve_udp(socket: &UdpSocket, stop: &AtomicBool) {
    let mut buffer = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((_, peer)) = socket.recv_from(&mut buffer) {
            let _ = socket.send_to(peer.to_string().as_bytes(), peer);
        }
    }
}

/// What a backend reported, and where the client was and heard back from.
struct Exchange {
    client: SocketAddr,
    answered_from: SocketAddr,
    seen_by_backend: SocketAddr,
}

fn parse_report(text: &str) -> Result<SocketAddr> {
    let text = text.trim();
    let seen: SocketAddr = text.parse().with_context(|| format!("the backend said {text:?}"))?;
    // A backend bound to an IPv6 address never sees a mapped IPv4 one; be plain anyway.
    Ok(SocketAddr::new(seen.ip().to_canonical(), seen.port()))
}

fn tcp_exchange(client: &Netns, to: SocketAddr, request: &[u8]) -> Result<Exchange> {
    let mut stream = {
        let _inside = client.enter()?;
        TcpStream::connect_timeout(&to, TIMEOUT).with_context(|| format!("connecting to {to}"))?
    };
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.write_all(request)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).with_context(|| format!("reading {to}'s answer"))?;
    Ok(Exchange {
        client: stream.local_addr()?,
        answered_from: stream.peer_addr()?,
        seen_by_backend: parse_report(&answer)?,
    })
}

fn udp_exchange(client: &Netns, from: IpAddr, to: SocketAddr) -> Result<Exchange> {
    let socket = {
        let _inside = client.enter()?;
        UdpSocket::bind(SocketAddr::new(from, 0))?
    };
    socket.set_read_timeout(Some(UDP_RESEND))?;
    let mut buffer = [0u8; 2048];
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        ensure!(std::time::Instant::now() < deadline, "no udp answer from {to} in {TIMEOUT:?}");
        socket.send_to(b"who am I?", to)?;
        if let Ok((length, answered_from)) = socket.recv_from(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..length]);
            return Ok(Exchange {
                client: socket.local_addr()?,
                answered_from,
                seen_by_backend: parse_report(&text)?,
            });
        }
    }
}

fn check(exchange: &Exchange, public: SocketAddr, what: &str) -> Result<()> {
    ensure!(
        exchange.seen_by_backend == exchange.client,
        "{what}: the backend saw {}, the client is {}",
        exchange.seen_by_backend,
        exchange.client
    );
    ensure!(
        exchange.answered_from == public,
        "{what}: the answer came from {}, not {public}",
        exchange.answered_from
    );
    Ok(())
}

/// Removes the forwards gatewayd saved for its interface (`/var/lib/gatewayd/<ifname>`).
struct StateDirectory(std::path::PathBuf);

impl Drop for StateDirectory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn forward(pair: &Pair, args: &[&str]) -> Result<()> {
    let mut cli = pair.gatewayd_ns().command(gateway_cli_binary()?);
    cli.args(["forward", "add", pair.gatewayd.ifname()]).args(args);
    let output = cli.output().context("running gateway forward add")?;
    ensure!(
        output.status.success(),
        "gateway forward add {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// The internet client on the router, routed as described at the top.
fn route_the_client(pair: &Pair) -> Result<()> {
    let (v4, v6): (IpAddr, IpAddr) = (CLIENT.0.parse()?, CLIENT.1.parse()?);
    let router = &pair.direct.router;
    let towards_vps = &pair.direct.router_client_if;
    let vps = pair.gatewayd_underlay();
    for (client, prefix_len, vps_address, via) in [
        (v4, 32, IpAddr::V4(vps.v4), IpAddr::V4(towards_vps.v4)),
        (v6, 128, IpAddr::V6(vps.v6()?), IpAddr::V6(towards_vps.v6()?)),
    ] {
        router.add_address("lo", client, prefix_len)?;
        // Connections from the router to the VPS leave from the client's address.
        let host = format!("{vps_address}/{prefix_len}");
        router.ip(&[
            "route",
            "add",
            &host,
            "dev",
            &towards_vps.name,
            "src",
            &client.to_string(),
        ])?;
        pair.gatewayd_ns().add_route_via(&format!("{client}/{prefix_len}"), via)?;
        pair.peer_ns().add_route_dev(&format!("{client}/{prefix_len}"), pair.peer.ifname())?;
    }
    let gatewayd_key = &pair.gatewayd_keys.public_key;
    let allowed = format!("10.77.0.1/32,fd77::1/128,{}/32,{}/128", CLIENT.0, CLIENT.1);
    pair.peer.set(&["peer", gatewayd_key, "allowed-ips", &allowed])
}

#[test]
fn backends_see_the_client_through_the_daemons_own_translation() -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new("entry-userspace")?;
    let spec =
        PairSpec { underlay: Family::V6, ..PairSpec::with_wireguard_go(DataPath::Userspace) };
    let pair = Pair::build(&dir, &spec)?;
    let _state =
        StateDirectory(std::path::Path::new("/var/lib/gatewayd").join(pair.gatewayd.ifname()));
    run(&pair, &dir).map_err(|error| dir.attach_logs(error))
}

fn run(pair: &Pair, dir: &TestDir) -> Result<()> {
    pair.establish(dir)?;
    route_the_client(pair)?;
    let (home_v4, home_v6) = PEER_TUNNEL;
    let _servers = ReportServers::start(pair.peer_ns(), &[home_v4.into(), home_v6.into()])?;
    let (backend_v4, backend_v6) = (
        SocketAddr::new(home_v4.into(), BACKEND_PORT).to_string(),
        SocketAddr::new(home_v6.into(), BACKEND_PORT).to_string(),
    );
    forward(pair, &["tcp", "9000", "--to", &backend_v4])?;
    forward(pair, &["tcp", "9006", "--to", &backend_v6])?;
    forward(pair, &["udp", "9000", "--to", &backend_v4])?;
    forward(pair, &["udp", "9006", "--to", &backend_v6])?;
    forward(pair, &["http", "80", "--host", "www.example.com", "--to", &backend_v4])?;

    let vps = pair.gatewayd_underlay();
    let public = |address: IpAddr, port| SocketAddr::new(address, port);
    let (vps_v4, vps_v6) = (IpAddr::V4(vps.v4), IpAddr::V6(vps.v6()?));
    let client = &pair.direct.router;

    let tcp4 = public(vps_v4, 9000);
    check(&tcp_exchange(client, tcp4, b"")?, tcp4, "tcp over IPv4")?;
    let tcp6 = public(vps_v6, 9006);
    check(&tcp_exchange(client, tcp6, b"")?, tcp6, "tcp over IPv6")?;
    let http = public(vps_v4, 80);
    let request = b"GET / HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n";
    check(&tcp_exchange(client, http, request)?, http, "http by Host")?;
    let udp4 = public(vps_v4, 9000);
    check(&udp_exchange(client, CLIENT.0.parse()?, udp4)?, udp4, "udp over IPv4")?;
    let udp6 = public(vps_v6, 9006);
    check(&udp_exchange(client, CLIENT.1.parse()?, udp6)?, udp6, "udp over IPv6")?;

    let status = pair.gatewayd.status()?;
    ensure!(status.entry.dataplane.proxy_steering, "status: {:?}", status.entry.dataplane);
    let printed = pair.gatewayd.cli_status(false)?;
    ensure!(
        printed.contains("backends see the client's address"),
        "gateway status says otherwise:\n{printed}"
    );
    // The tcp connections' translations go after the proxy's grace; the two udp clients stay
    // until they idle out.
    dir.wait_for("the closed connections' translations to be released", RELEASED, || {
        let connections = pair.gatewayd.status()?.entry.dataplane.proxied_connections;
        Ok(if connections == 2 {
            Probe::Ready(())
        } else {
            Probe::NotYet(format!("{connections} proxied connections"))
        })
    })
}
