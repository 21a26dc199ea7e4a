//! ECN across the tunnel, as the kernel's WireGuard marks it, on both data paths: gatewayd
//! and a wireguard-go peer one router apart (the `pair` topology).
//!
//! - In: the peer's host sends inner datagrams marked ECT(0) and Not-ECT; the router marks the
//!   outer packets to gatewayd Congestion Experienced (nftables `ip ecn set ce`). gatewayd's
//!   host must see the ECT(0) ones arrive on the tunnel as CE and the Not-ECT ones unmarked
//!   (nftables counters on its input hook, `iifname` the tunnel).
//! - Out: gatewayd's host sends inner datagrams marked ECT(1), then CE; the router must see
//!   outer packets from gatewayd marked ECT(1), then ECT(0) (CE is not copied out).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use gateway_common::ecn::{CE, ECT_0, ECT_1, NOT_ECT};
use gateway_tests::gatewayd::DataPath;
use gateway_tests::pair::{GATEWAYD_PORT, GATEWAYD_TUNNEL, PEER_TUNNEL, Pair, PairSpec};
use gateway_tests::{Netns, Probe, TestDir, require_root, require_tools, wait_for};

const TOOLS: &[&str] = &["ip", "nft", "ping", "wg", "wireguard-go"];
const DATAGRAMS: u64 = 5;
/// Inner destination ports, one per kind of datagram sent in.
const PORT_ECT0: u16 = 7001;
const PORT_NOT_ECT: u16 = 7002;

fn ecn(data_path: DataPath) -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let dir = TestDir::new(&format!("ecn-{data_path}"))?;
    let spec = PairSpec::with_wireguard_go(data_path);
    let pair = Pair::build(&dir, &spec)?;
    run(&pair, &dir).map_err(|error| dir.attach_logs(error))
}

fn run(pair: &Pair, dir: &TestDir) -> Result<()> {
    pair.establish(dir)?;
    let router = &pair.direct.router;
    router.load_nftables(&format!(
        "table ip ecnpath {{
            chain forward {{
                type filter hook forward priority 0;
                udp dport {GATEWAYD_PORT} ip ecn set ce
            }}
            chain out_ect1 {{
                type filter hook forward priority 10;
                udp sport {GATEWAYD_PORT} ip ecn ect1 counter
            }}
            chain out_ect0 {{
                type filter hook forward priority 20;
                udp sport {GATEWAYD_PORT} ip ecn ect0 counter
            }}
        }}"
    ))?;
    let tunnel = pair.gatewayd.ifname();
    pair.gatewayd_ns().load_nftables(&format!(
        "table inet ecnin {{
            chain marked_ce {{
                type filter hook input priority 0;
                iifname \"{tunnel}\" udp dport {PORT_ECT0} ip ecn ce counter
            }}
            chain left_alone {{
                type filter hook input priority 10;
                iifname \"{tunnel}\" udp dport {PORT_NOT_ECT} ip ecn not-ect counter
            }}
        }}"
    ))?;

    // In: marked CE on the way, delivered CE when ECN-capable, untouched when not.
    let to_gatewayd = IpAddr::V4(GATEWAYD_TUNNEL.0);
    send_marked(pair.peer_ns(), to_gatewayd, PORT_ECT0, ECT_0)?;
    send_marked(pair.peer_ns(), to_gatewayd, PORT_NOT_ECT, NOT_ECT)?;
    let gatewayd_ns = pair.gatewayd_ns();
    wait_for_count("ECT(0) datagrams arriving CE", gatewayd_ns, "inet", "ecnin", "marked_ce")?;
    wait_for_count(
        "Not-ECT datagrams arriving unmarked",
        gatewayd_ns,
        "inet",
        "ecnin",
        "left_alone",
    )?;

    // Out: ECT(1) copied to the outer header, CE sent as ECT(0).
    let to_peer = IpAddr::V4(PEER_TUNNEL.0);
    send_marked(gatewayd_ns, to_peer, 7003, ECT_1)?;
    wait_for_count("outer packets marked ECT(1)", router, "ip", "ecnpath", "out_ect1")?;
    let ect0_before = router.nft_counted_packets("ip", "ecnpath", "out_ect0")?;
    send_marked(gatewayd_ns, to_peer, 7004, CE)?;
    wait_for("outer packets marked ECT(0)", Duration::from_secs(5), || {
        let seen = router.nft_counted_packets("ip", "ecnpath", "out_ect0")? - ect0_before;
        Ok(if seen >= DATAGRAMS { Probe::Ready(()) } else { Probe::NotYet(format!("{seen}")) })
    })
}

/// Sends `DATAGRAMS` small UDP datagrams from inside `netns` with the IP header's ECN bits
/// set to `ecn`.
fn send_marked(netns: &Netns, to: IpAddr, port: u16, ecn: u8) -> Result<()> {
    let _in = netns.enter()?;
    let socket = UdpSocket::bind("0.0.0.0:0").context("binding a UDP socket")?;
    let tos = i32::from(ecn);
    // SAFETY: setsockopt with a pointer to a live int and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_TOS,
            &tos as *const i32 as *const _,
            size_of::<i32>() as u32,
        )
    };
    ensure!(rc == 0, "IP_TOS {ecn}: {}", std::io::Error::last_os_error());
    for _ in 0..DATAGRAMS {
        socket.send_to(b"marked", SocketAddr::new(to, port)).context("sending")?;
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Waits until an nftables chain's counters reach `DATAGRAMS`.
fn wait_for_count(what: &str, netns: &Netns, family: &str, table: &str, chain: &str) -> Result<()> {
    wait_for(what, Duration::from_secs(5), || {
        let seen = netns.nft_counted_packets(family, table, chain)?;
        Ok(if seen >= DATAGRAMS { Probe::Ready(()) } else { Probe::NotYet(format!("{seen}")) })
    })
}

#[test]
fn ecn_through_the_ebpf_path() -> Result<()> {
    ecn(DataPath::Ebpf)
}

#[test]
fn ecn_through_the_userspace_path() -> Result<()> {
    ecn(DataPath::Userspace)
}
