//! gatewayd against the reference implementations (wireguard-go, boringtun) in namespaces:
//! handshake with either side initiating, ping over IPv4 and IPv6 inside the tunnel, TCP both
//! ways and UDP out (iperf3), over IPv4 and IPv6 underlays, with the eBPF data path and with
//! `--no-ebpf`; `gateway status` agrees with the daemon.
//!
//! One test body, many configurations (the `interop!` table). With eBPF on, the status socket's
//! counters must show the traffic took the programs (decrypted in XDP, encrypted at the TUN's
//! TC egress); with `--no-ebpf` they must stay at zero while the userspace counters move.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use gateway::daemon::status::Status;
use gateway_common::maps::Stat;
use gateway_tests::gatewayd::{DataPath, EbpfStats, GatewaydOptions, PeerPaths};
use gateway_tests::pair::{Family, GATEWAYD_TUNNEL, Initiator, PEER_TUNNEL, Pair, PairSpec};
use gateway_tests::traffic::{
    IperfOptions, IperfServer, Protocol, iperf3_client_when_ready, ping_until_clean,
};
use gateway_tests::wg::Implementation;
use gateway_tests::{TestDir, require_root, require_tools};

const TOOLS: &[&str] = &["ip", "ping", "ss", "wg", "iperf3", "wireguard-go", "boringtun-cli"];
const PINGS: u32 = 5;
const IPERF_PORT: u16 = 5201;
const UDP_LENGTH: u32 = 1200;
const RETRY_TIMEOUT: Duration = Duration::from_secs(20);

struct Case {
    peer: Implementation,
    initiator: Initiator,
    underlay: Family,
    data_path: DataPath,
}

/// What crossed the tunnel in one run, counted at the receivers.
#[derive(Default, Debug)]
struct Delivered {
    /// Echo replies that came back (each one request decrypted and one reply encrypted by
    /// gatewayd).
    echo_replies: u64,
    /// TCP bytes gatewayd's side received.
    tcp_bytes_in: u64,
    /// TCP bytes gatewayd's side sent that arrived.
    tcp_bytes_out: u64,
    /// UDP datagrams gatewayd's side sent that arrived.
    udp_datagrams_out: u64,
}

fn interop(case: Case) -> Result<()> {
    require_root()?;
    require_tools(TOOLS)?;
    let name =
        format!("interop-{}-{:?}-{}-{}", case.peer, case.initiator, case.underlay, case.data_path);
    let dir = TestDir::new(&name)?;
    // Every TCP segment through the eBPF send path (`--no-tun-gso`), so that the checks below
    // see all of this host's TCP there; by default bulk sends go to the daemon in GSO batches.
    let gatewayd = GatewaydOptions { tun_gso: false, ..GatewaydOptions::new(case.data_path) };
    let spec =
        PairSpec { peer: case.peer, initiator: case.initiator, underlay: case.underlay, gatewayd };
    let pair = Pair::build(&dir, &spec)?;
    run(&pair, &dir).map_err(|error| dir.attach_logs(error))
}

fn run(pair: &Pair, dir: &TestDir) -> Result<()> {
    pair.establish(dir)?;
    let handshake = pair.gatewayd.show()?.peer(&pair.peer_keys.public_key)?.latest_handshake;
    ensure!(handshake.is_some(), "gatewayd reports no handshake after the first ping");
    let peer_sees = pair.peer.show()?.peer(&pair.gatewayd_keys.public_key)?.endpoint;
    ensure!(
        peer_sees == Some(pair.gatewayd_endpoint()?),
        "the peer sees gatewayd at {peer_sees:?}, not {}",
        pair.gatewayd_endpoint()?
    );

    let stats_before = pair.gatewayd.ebpf_stats()?;
    let checksum_errors_before = pair.peer_ns().udp_checksum_errors()?;
    let paths_before = pair.gatewayd.peer_counters(&pair.peer_keys.public_key)?;
    let mut delivered = Delivered::default();
    for (from, to) in [
        (pair.gatewayd_ns(), IpAddr::V4(PEER_TUNNEL.0)),
        (pair.peer_ns(), IpAddr::V4(GATEWAYD_TUNNEL.0)),
        (pair.gatewayd_ns(), IpAddr::V6(PEER_TUNNEL.1)),
        (pair.peer_ns(), IpAddr::V6(GATEWAYD_TUNNEL.1)),
    ] {
        delivered.echo_replies +=
            u64::from(ping_until_clean(from, to, PINGS, RETRY_TIMEOUT)?.received);
    }

    let _iperf = IperfServer::start(pair.gatewayd_ns(), dir, IPERF_PORT)?;
    let second = Duration::from_secs(1);
    let gatewayd_v4 = IpAddr::V4(GATEWAYD_TUNNEL.0);
    let tcp = iperf3_client_when_ready(
        pair.peer_ns(),
        gatewayd_v4,
        IPERF_PORT,
        &IperfOptions { duration: second, ..IperfOptions::default() },
        RETRY_TIMEOUT,
    )
    .context("TCP into gatewayd's side")?;
    ensure!(tcp.received_bytes > 0, "no TCP bytes arrived: {tcp:?}");
    delivered.tcp_bytes_in = tcp.received_bytes;
    // Locally generated TCP: the stack leaves its checksum to the device; with eBPF the TUN
    // egress program completes it and has the device complete the outer one instead. Both
    // inner families, so every inner/outer pairing of header sizes is laid out.
    for to in [gatewayd_v4, IpAddr::V6(GATEWAYD_TUNNEL.1)] {
        let tcp_out = iperf3_client_when_ready(
            pair.peer_ns(),
            to,
            IPERF_PORT,
            &IperfOptions { duration: second, reverse: true, ..IperfOptions::default() },
            RETRY_TIMEOUT,
        )
        .with_context(|| format!("TCP out of gatewayd's side, from {to}"))?;
        ensure!(
            tcp_out.received_bytes > 0,
            "no TCP bytes from gatewayd's {to} arrived: {tcp_out:?}"
        );
        delivered.tcp_bytes_out += tcp_out.received_bytes;
    }
    let udp = iperf3_client_when_ready(
        pair.peer_ns(),
        IpAddr::V6(GATEWAYD_TUNNEL.1),
        IPERF_PORT,
        &IperfOptions {
            protocol: Protocol::Udp,
            duration: second,
            bitrate: Some(20_000_000),
            length: Some(UDP_LENGTH),
            reverse: true,
            ..IperfOptions::default()
        },
        RETRY_TIMEOUT,
    )
    .context("UDP out of gatewayd's side")?;
    // What the receiver counted: iperf3's sent-minus-lost misses a tail still queued when
    // the test ended.
    let arrived = udp.received_bytes / u64::from(UDP_LENGTH);
    ensure!(arrived > 0, "no UDP datagram arrived: {udp:?}");
    delivered.udp_datagrams_out = arrived;

    let checksum_errors = pair.peer_ns().udp_checksum_errors()? - checksum_errors_before;
    ensure!(
        checksum_errors == 0,
        "the peer's host dropped {checksum_errors} UDP datagrams from gatewayd for bad checksums"
    );
    let stats = pair.gatewayd.ebpf_stats()?.since(&stats_before);
    let paths = pair.gatewayd.peer_counters(&pair.peer_keys.public_key)?;
    eprintln!("delivered {delivered:?}; eBPF counters grew by {}", stats.nonzero());
    check_cli(pair)?;
    match pair.spec.gatewayd.data_path {
        DataPath::Ebpf => check_ebpf_carried(&delivered, &stats, &paths_before, &paths),
        DataPath::Userspace => check_userspace_carried(pair, &delivered, &paths_before, &paths),
    }
}

/// `gateway status` shows the same daemon the status socket does, as JSON and as text.
fn check_cli(pair: &Pair) -> Result<()> {
    let json = pair.gatewayd.cli_status(true)?;
    let status: Status = serde_json::from_str(&json).context("`gateway status --json`")?;
    let key = &pair.peer_keys.public_key;
    ensure!(
        status.interface == pair.gatewayd.ifname()
            && status.data_path == pair.spec.gatewayd.data_path.to_string()
            && status.peers.iter().any(|peer| &peer.public_key == key),
        "`gateway status --json` disagrees with the daemon: {status:?}"
    );
    let text = pair.gatewayd.cli_status(false)?;
    ensure!(
        text.contains(pair.gatewayd.ifname()) && text.contains(key.as_str()),
        "`gateway status` does not show the interface and its peer:\n{text}"
    );
    Ok(())
}

/// Every echo request and reply, every TCP segment in, every UDP datagram out went through the
/// programs.
fn check_ebpf_carried(
    delivered: &Delivered,
    stats: &EbpfStats,
    before: &PeerPaths,
    after: &PeerPaths,
) -> Result<()> {
    // The smallest number of tunnel packets the TCP bytes can have taken.
    let tcp_segments_in = delivered.tcp_bytes_in.div_ceil(1420);
    let decrypted = stats.get(Stat::RxDeliveredLocal);
    ensure!(
        decrypted >= delivered.echo_replies + tcp_segments_in,
        "XDP delivered {decrypted} packets, fewer than the {} echo messages and {tcp_segments_in} \
         TCP segments that arrived; eBPF counters: {}",
        delivered.echo_replies,
        stats.nonzero()
    );
    let encrypted = stats.get(Stat::TxEncrypted);
    let tcp_segments_out = delivered.tcp_bytes_out.div_ceil(1420);
    ensure!(
        encrypted >= delivered.echo_replies + delivered.udp_datagrams_out + tcp_segments_out,
        "TC egress encrypted {encrypted} packets, fewer than the {} echo messages, {} UDP \
         datagrams and {tcp_segments_out} TCP segments that arrived; eBPF counters: {}",
        delivered.echo_replies,
        delivered.udp_datagrams_out,
        stats.nonzero()
    );
    // The underlay completes checksums in software, so the TCP this host sends (left to the
    // device by the stack) is the programs' to send too; only a segment whose checksum looks
    // both complete and left to the device (one in 65536) goes to the daemon.
    let offloaded = stats.get(Stat::TxPassOffload);
    ensure!(
        offloaded * 1000 <= encrypted,
        "the TUN egress program left {offloaded} packets to the daemon for their checksums: {}",
        stats.nonzero()
    );
    ensure!(stats.get(Stat::Error) == 0, "the programs hit errors: {}", stats.nonzero());
    // Forwarding is off on gatewayd's host, so bpf_fib_lookup refuses every outer route;
    // the program must still have sent everything itself.
    ensure!(
        stats.get(Stat::TxPassNoRoute) == 0,
        "the TUN egress program found no route to the peer: {}",
        stats.nonzero()
    );
    let rx = after.ebpf.rx_packets - before.ebpf.rx_packets;
    let tx = after.ebpf.tx_packets - before.ebpf.tx_packets;
    ensure!(
        rx >= decrypted && tx >= encrypted,
        "the peer's eBPF counters ({rx} in, {tx} out) do not cover what the programs did: {}",
        stats.nonzero()
    );
    Ok(())
}

/// `--no-ebpf`: no program counted anything, the userspace path carried it all.
fn check_userspace_carried(
    pair: &Pair,
    delivered: &Delivered,
    before: &PeerPaths,
    after: &PeerPaths,
) -> Result<()> {
    let status = pair.gatewayd.status()?;
    ensure!(status.data_path == "userspace", "data path {:?}", status.data_path);
    let stats = EbpfStats(status.ebpf_stats);
    ensure!(stats.all_zero(), "eBPF counters moved with --no-ebpf: {}", stats.nonzero());
    ensure!(
        after.ebpf == Default::default(),
        "the peer's eBPF counters moved with --no-ebpf: {:?}",
        after.ebpf
    );
    let rx = after.userspace.rx_packets - before.userspace.rx_packets;
    let tx = after.userspace.tx_packets - before.userspace.tx_packets;
    let tcp_segments_in = delivered.tcp_bytes_in.div_ceil(1420);
    ensure!(
        rx >= delivered.echo_replies + tcp_segments_in
            && tx >= delivered.echo_replies + delivered.udp_datagrams_out,
        "userspace counted {rx} packets in and {tx} out, fewer than arrived: {delivered:?}"
    );
    Ok(())
}

macro_rules! interop {
    ($($name:ident: $peer:ident, $initiator:ident, $underlay:ident, $path:ident;)*) => {$(
        #[test]
        fn $name() -> Result<()> {
            interop(Case {
                peer: Implementation::$peer,
                initiator: Initiator::$initiator,
                underlay: Family::$underlay,
                data_path: DataPath::$path,
            })
        }
    )*};
}

interop! {
    wireguard_go_we_initiate_ebpf: WireguardGo, Gatewayd, V4, Ebpf;
    wireguard_go_we_initiate_userspace: WireguardGo, Gatewayd, V4, Userspace;
    wireguard_go_it_initiates_ebpf: WireguardGo, Peer, V4, Ebpf;
    wireguard_go_it_initiates_userspace: WireguardGo, Peer, V4, Userspace;
    boringtun_we_initiate_ebpf: Boringtun, Gatewayd, V4, Ebpf;
    boringtun_we_initiate_userspace: Boringtun, Gatewayd, V4, Userspace;
    boringtun_it_initiates_ebpf: Boringtun, Peer, V4, Ebpf;
    boringtun_it_initiates_userspace: Boringtun, Peer, V4, Userspace;
    wireguard_go_ipv6_underlay_ebpf: WireguardGo, Gatewayd, V6, Ebpf;
    wireguard_go_ipv6_underlay_userspace: WireguardGo, Peer, V6, Userspace;
    boringtun_ipv6_underlay_ebpf: Boringtun, Peer, V6, Ebpf;
    boringtun_ipv6_underlay_userspace: Boringtun, Gatewayd, V6, Userspace;
}
