//! MTU trouble, handled: a home and a VPS, each a gatewayd with a host behind it, joined by
//! an underlay of MTU 1280 while their tunnels keep the usual 1420 (the `Narrow` topology).
//! Each daemon learns the underlay's MTU from its route to the other's endpoint, so the
//! tunnel's path MTU is 1280 − 60 = 1220:
//!
//! - a datagram that does not fit and may not be fragmented (`ping -M do`, 1300 bytes) gets
//!   ICMP "fragmentation needed" with MTU 1220 back to its sender, both ways, and one that
//!   fits (1100 bytes) is answered;
//! - a TCP connection's SYN and SYN-ACK arrive with their MSS clamped to 1180, so each end's
//!   segment size (TCP_MAXSEG right after the handshake, before any ICMP could have taught
//!   it) fits the path; and 4 MB cross each way with no stall (a bounded wait per read).
//!
//! With eBPF (the send programs leave SYNs and too-large packets to the daemon, the receive
//! programs clamp decrypted SYNs), with eBPF and the home's LAN served in XDP (`--lan-iface`,
//! `wg_tx_lan`), and with `--no-ebpf`. Where both ends clamp, each end's clamp hides the
//! other's; so the home also runs behind a stock VPS (wireguard-go, which clamps nothing and
//! fragments its outer datagrams): the SYN the home receives is clamped by the home alone,
//! on its receive path, and the ICMP is checked in the direction the home answers for.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use gateway_common::maps::Stat;
use gateway_tests::gatewayd::{DataPath, Gatewayd, GatewaydOptions, XdpPass};
use gateway_tests::topology::{Narrow, TopologyOptions};
use gateway_tests::traffic::{PingOptions, ping_with, wait_for_ping};
use gateway_tests::wg::{Implementation, KeyPair, WgPeer};
use gateway_tests::{Netns, TestDir, require_root, require_tools, unique_ifname};

const TOOLS: &[&str] = &["ip", "ping", "wg"];
const STOCK_TOOLS: &[&str] = &["ip", "ping", "wg", "wireguard-go"];
const PORT: u16 = 51820;
const TCP_PORT: u16 = 5301;
const TIMEOUT: Duration = Duration::from_secs(15);
const TUNNEL_MTU: u32 = 1420;
/// 1280 − 20 (IPv4) − 8 (UDP) − 16 (WireGuard header) − 16 (tag).
const PATH_MTU: u32 = 1220;
/// The MSS a SYN is clamped to: the path MTU less IPv4 and TCP headers.
const CLAMPED_MSS: u32 = PATH_MTU - 40;
/// Bytes sent each way over one connection.
const TRANSFER: usize = 4 << 20;
const HOME_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
const VPS_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// eBPF on both, the home's LAN through the stack.
    Ebpf,
    /// eBPF on both, the home's LAN in XDP (`wg_tx_lan`).
    EbpfLan,
    /// `--no-ebpf` on both.
    Userspace,
}

/// What runs on the VPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vps {
    /// gatewayd, on the same data path as the home.
    Gatewayd,
    /// wireguard-go.
    Stock,
}

#[test]
fn a_narrow_underlay_is_no_black_hole_with_ebpf() -> Result<()> {
    narrow_underlay(Path::Ebpf, Vps::Gatewayd)
}

#[test]
fn a_narrow_underlay_is_no_black_hole_with_ebpf_on_the_lan() -> Result<()> {
    narrow_underlay(Path::EbpfLan, Vps::Gatewayd)
}

#[test]
fn a_narrow_underlay_is_no_black_hole_without_ebpf() -> Result<()> {
    narrow_underlay(Path::Userspace, Vps::Gatewayd)
}

#[test]
fn a_home_with_ebpf_clamps_what_a_stock_vps_sends() -> Result<()> {
    narrow_underlay(Path::Ebpf, Vps::Stock)
}

#[test]
fn a_home_without_ebpf_clamps_what_a_stock_vps_sends() -> Result<()> {
    narrow_underlay(Path::Userspace, Vps::Stock)
}

fn narrow_underlay(path: Path, vps_kind: Vps) -> Result<()> {
    require_root()?;
    require_tools(if vps_kind == Vps::Stock { STOCK_TOOLS } else { TOOLS })?;
    let dir = TestDir::new(&format!("mtu-{path:?}-{vps_kind:?}"))?;
    let net = Narrow::build(&TopologyOptions::default())?;
    // Frames the programs build are complete, and so are the hosts' own (no checksum left
    // to a veth peer); hosts behind a gateway take what its XDP programs send them.
    for (netns, device) in [
        (&net.lan_host, &net.lan_host_if.name),
        (&net.client, &net.client_if.name),
        (&net.home, &net.home_wan.name),
        (&net.vps, &net.vps_wan.name),
    ] {
        netns.checksum_in_software(device)?;
    }
    let _receivers = match path {
        Path::Userspace => Vec::new(),
        Path::Ebpf | Path::EbpfLan => vec![
            XdpPass::attach(&net.lan_host, &net.lan_host_if.name)?,
            XdpPass::attach(&net.client, &net.client_if.name)?,
        ],
    };
    let data_path = if path == Path::Userspace { DataPath::Userspace } else { DataPath::Ebpf };
    let mut home_options = GatewaydOptions::new(data_path);
    if path == Path::EbpfLan {
        home_options.lan_ifaces = vec![net.home_lan.name.clone()];
    }
    let home = Gatewayd::start(&net.home, &dir, &unique_ifname("gw")?, &home_options)?;
    let vps = match vps_kind {
        Vps::Gatewayd => VpsDaemon::Gatewayd(Gatewayd::start(
            &net.vps,
            &dir,
            &unique_ifname("gw")?,
            &GatewaydOptions::new(data_path),
        )?),
        Vps::Stock => VpsDaemon::Stock(WgPeer::start(
            Implementation::WireguardGo,
            &net.vps,
            &dir,
            &unique_ifname("wg")?,
        )?),
    };
    let world = World { net: &net, home: &home, vps: &vps };
    world.run(path).map_err(|error| dir.attach_logs(error))
}

enum VpsDaemon {
    Gatewayd(Gatewayd),
    Stock(WgPeer),
}

impl VpsDaemon {
    fn peer(&self) -> &WgPeer {
        match self {
            VpsDaemon::Gatewayd(gatewayd) => gatewayd,
            VpsDaemon::Stock(peer) => peer,
        }
    }
}

struct World<'a> {
    net: &'a Narrow,
    home: &'a Gatewayd,
    vps: &'a VpsDaemon,
}

impl World<'_> {
    fn run(&self, path: Path) -> Result<()> {
        self.configure()?;
        let (lan_host, client) = (self.net.lan_host_if.v4, self.net.client_if.v4);
        wait_for_ping(&self.net.lan_host, IpAddr::V4(client), TIMEOUT)
            .context("LAN host → client through the tunnel")?;
        let home_before = self.stats(self.home, path)?;

        // TCP first: an ICMP error would teach the hosts the path MTU, and their segment
        // size would then fit whatever the SYNs said. The client connects to the LAN host
        // (its SYN sealed by the VPS, its SYN-ACK by the home), then the other way round.
        transfer(&self.net.client, &self.net.lan_host, lan_host)
            .context("client → LAN host connection")?;
        transfer(&self.net.lan_host, &self.net.client, client)
            .context("LAN host → client connection")?;

        refused_with_the_path_mtu(&self.net.lan_host, client).context("LAN host → client")?;
        if matches!(self.vps, VpsDaemon::Gatewayd(_)) {
            refused_with_the_path_mtu(&self.net.client, lan_host).context("client → LAN host")?;
        }
        fitting_datagrams_pass(&self.net.lan_host, client)?;

        if let Some(before) = home_before {
            // The home's LAN traffic reached the send programs: on the LAN port itself
            // (`wg_tx_lan`) or at the TUN's egress; SYNs and too-large packets were left to
            // the daemon, everything else sealed there.
            let after = self.stats(self.home, path)?.context("stats")?;
            let since = after.since(&before);
            ensure!(
                since.get(Stat::TxPassSyn) > 0,
                "no SYN left to the daemon: {}",
                since.nonzero()
            );
            ensure!(
                since.get(Stat::TxEncrypted) > 0,
                "the home's programs sealed nothing: {}",
                since.nonzero()
            );
            if let VpsDaemon::Stock(_) = self.vps {
                // The client's SYN came unclamped: the receive program clamped it.
                ensure!(
                    since.get(Stat::RxMssClamped) > 0,
                    "no SYN clamped on receipt: {}",
                    since.nonzero()
                );
            }
        }
        Ok(())
    }

    fn configure(&self) -> Result<()> {
        let (home_keys, vps_keys) = (KeyPair::generate()?, KeyPair::generate()?);
        let vps = self.vps.peer();
        vps.setconf(&format!(
            "[Interface]\nPrivateKey = {}\nListenPort = {PORT}\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = {HOME_TUNNEL}/32, {}\n",
            vps_keys.private_key,
            home_keys.public_key,
            Narrow::HOME_LAN_V4,
        ))?;
        self.home.setconf(&format!(
            "[Interface]\nPrivateKey = {}\nListenPort = {PORT}\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = {}:{PORT}\nAllowedIPs = {VPS_TUNNEL}/32, {}\n",
            home_keys.private_key,
            vps_keys.public_key,
            self.net.vps_wan.v4,
            Narrow::VPS_LAN_V4,
        ))?;
        self.home.bring_up(&[(IpAddr::V4(HOME_TUNNEL), 24)], TUNNEL_MTU)?;
        vps.bring_up(&[(IpAddr::V4(VPS_TUNNEL), 24)], TUNNEL_MTU)?;
        self.net.home.add_route_dev(Narrow::VPS_LAN_V4, self.home.ifname())?;
        self.net.vps.add_route_dev(Narrow::HOME_LAN_V4, vps.ifname())
    }

    /// The programs' counters, when they run.
    fn stats(
        &self,
        gatewayd: &Gatewayd,
        path: Path,
    ) -> Result<Option<gateway_tests::gatewayd::EbpfStats>> {
        match path {
            Path::Userspace => Ok(None),
            Path::Ebpf | Path::EbpfLan => gatewayd.ebpf_stats().map(Some),
        }
    }
}

/// `ping -M do` with 1300 bytes of payload (1328 in all: under the tunnel's 1420, over the
/// path's 1220): the answer is "fragmentation needed" with the path MTU, not silence.
fn refused_with_the_path_mtu(from: &Netns, to: Ipv4Addr) -> Result<()> {
    let to = to.to_string();
    let output = from
        .command("ping")
        .args(["-n", "-M", "do", "-s", "1300", "-c", "2", "-i", "0.5", "-W", "3", &to])
        .output()
        .context("running ping")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // iputils: "Frag needed and DF set (mtu = 1220)" for the ICMP error, then "message too
    // long, mtu=1220" once the route remembers it.
    let said = [format!("mtu = {PATH_MTU}"), format!("mtu={PATH_MTU}")];
    ensure!(
        said.iter().any(|s| text.contains(s.as_str())),
        "ping -M do -s 1300 {to} did not learn MTU {PATH_MTU}:\n{text}"
    );
    Ok(())
}

fn fitting_datagrams_pass(from: &Netns, to: Ipv4Addr) -> Result<()> {
    let options = PingOptions { size: Some(1100), ..PingOptions::count(3) };
    let report = ping_with(from, IpAddr::V4(to), &options)?;
    ensure!(report.received > 0, "1100-byte pings to {to} were not answered: {report:?}");
    Ok(())
}

/// A connection from `client_ns` to `server` (in `server_ns`): both ends' segment size fits
/// the path from the start, and TRANSFER bytes cross each way.
fn transfer(client_ns: &Netns, server_ns: &Netns, server: Ipv4Addr) -> Result<()> {
    let listener = {
        let _inside = server_ns.enter()?;
        TcpListener::bind((server, TCP_PORT)).context("listening")?
    };
    let address = SocketAddr::from((server, TCP_PORT));
    let client = {
        let _inside = client_ns.enter()?;
        TcpStream::connect_timeout(&address, TIMEOUT).context("connecting")?
    };
    listener.set_nonblocking(false)?;
    let (accepted, _) = listener.accept().context("accepting")?;
    for (end, stream) in [("connecting", &client), ("accepting", &accepted)] {
        let mss = max_segment(stream)?;
        ensure!(
            mss <= CLAMPED_MSS,
            "the {end} end sends {mss}-byte segments: the SYN it got announced more than \
             {CLAMPED_MSS}"
        );
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
    }
    one_way(&client, &accepted).context("to the accepting end")?;
    one_way(&accepted, &client).context("to the connecting end")
}

/// TRANSFER bytes from `from` to `to`, read by a thread of their own; each read or write
/// waits at most TIMEOUT (a black hole stalls there).
fn one_way(from: &TcpStream, to: &TcpStream) -> Result<()> {
    let mut reader = to.try_clone()?;
    let received = std::thread::spawn(move || -> std::io::Result<usize> {
        let mut buffer = vec![0u8; 65536];
        let mut total = 0;
        while total < TRANSFER {
            match reader.read(&mut buffer)? {
                0 => break,
                n => total += n,
            }
        }
        Ok(total)
    });
    let chunk = vec![0x5au8; 65536];
    let mut writer = from.try_clone()?;
    let mut sent = 0;
    while sent < TRANSFER {
        writer.write_all(&chunk).context("sending")?;
        sent += chunk.len();
    }
    let received = received.join().map_err(|_| anyhow::anyhow!("the reader panicked"))?;
    let received = received.context("receiving (stalled?)")?;
    ensure!(received == TRANSFER, "{received} of {TRANSFER} bytes arrived");
    Ok(())
}

/// TCP_MAXSEG: the segment size the connection sends with now.
fn max_segment(stream: &TcpStream) -> Result<u32> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a pointer to a live c_int and its size, as getsockopt expects.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    ensure!(rc == 0, "TCP_MAXSEG: {}", std::io::Error::last_os_error());
    Ok(value as u32)
}
