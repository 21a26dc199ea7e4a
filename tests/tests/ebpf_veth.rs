//! End to end on real native XDP: namespace A is the gateway (veth `a0` as the underlay, a
//! TUN held open by the test, the programs attached natively), namespace B a WireGuard peer
//! played by the test with the `chacha20poly1305` crate. No daemon: the test installs the
//! session, peer and AllowedIPs through the dataplane API.
//!
//! B sends an encrypted ICMP echo request; A's kernel must see it as received on the TUN
//! (an nftables `iifname` counter proves it), answer, and the answer must come back
//! encrypted by the TUN egress program, without ever reaching the TUN fd.

mod ebpf_common;

use std::net::{IpAddr, UdpSocket};
use std::time::{Duration, Instant};

use ebpf_common::capture::Capture;
use ebpf_common::frames;
use ebpf_common::netns::{Netns, Tun, sh, unique};
use ebpf_common::{Keys, LISTEN_PORT, TestPeer, add_peer, config, load};
use gateway::dataplane::{
    AttachMode, AttachPreference, Dataplane, PeerEndpoint, Program, TunnelSends,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct World {
    a: Netns,
    b: Netns,
    tun: Tun,
    dp: Dataplane,
    mode: AttachMode,
}

/// A and B joined by a veth pair of the given MTU; the TUN in A has MTU `mtu - 80`.
fn world(mtu: u32, prefer: AttachPreference, hub: bool) -> World {
    let a = Netns::new("eba");
    let b = Netns::new("ebb");
    let (a0, b0) = ("a0", "b0");
    a.ip(&[
        "link",
        "add",
        a0,
        "mtu",
        &mtu.to_string(),
        "type",
        "veth",
        "peer",
        "name",
        b0,
        "netns",
        &b.name,
        "mtu",
        &mtu.to_string(),
    ]);
    let tun_name = unique("ebv");
    let tun = {
        let _in = a.enter();
        Tun::open(&tun_name)
    };
    a.ip(&["link", "set", a0, "up"]);
    b.ip(&["link", "set", b0, "up"]);
    a.ip(&["link", "set", &tun_name, "up", "mtu", &(mtu - 80).to_string(), "multicast", "off"]);
    a.sysctl("net.ipv4.conf.all.forwarding", "1");
    a.sysctl("net.ipv6.conf.all.forwarding", "1");
    a.ip(&["addr", "add", "192.0.2.1/24", "dev", a0]);
    a.ip(&["addr", "add", "2001:db8::1/64", "dev", a0, "nodad"]);
    b.ip(&["addr", "add", "192.0.2.2/24", "dev", b0]);
    b.ip(&["addr", "add", "2001:db8::2/64", "dev", b0, "nodad"]);
    a.ip(&["addr", "add", "10.9.0.1/24", "dev", &tun_name]);
    let b_mac = b.exec(&["cat", "/sys/class/net/b0/address"]);
    for addr in ["192.0.2.2", "2001:db8::2"] {
        a.ip(&["neigh", "replace", addr, "lladdr", b_mac.trim(), "dev", a0, "nud", "permanent"]);
    }
    // The "as received on the TUN" property: count what the input hook sees from it.
    a.exec(&["nft", &format!("add table inet ebv; add chain inet ebv input {{ type filter hook input priority 0 ; }}; add rule inet ebv input iifname \"{tun_name}\" counter")]);
    let mut dp = load();
    let mut c = config(a.ifindex(&tun_name), mtu - 80);
    c.hub_forward = hub;
    dp.set_config(&c).unwrap();
    let mode = {
        let _in = a.enter();
        dp.attach_tunnel(tun_name.as_str(), TunnelSends::Batched).expect("attach_tunnel");
        dp.attach_underlay(a0, prefer).expect("attach_underlay")
    };
    {
        // B's end needs an XDP program to accept frames A sends with XDP_TX.
        let _in = b.enter();
        dp.attach_xdp_pass(b0).expect("xdp_pass on b0");
    }
    World { a, b, tun, dp, mode }
}

impl World {
    fn peer(&mut self, keys: Keys, inner: &str, endpoint: &str, port: u16) -> TestPeer {
        let a0 = self.a.ifindex("a0");
        let e = PeerEndpoint { addr: (ip(endpoint), port).into(), local: None, ifindex: a0 };
        add_peer(&mut self.dp, keys, &[inner], Some(e), Instant::now())
    }

    /// A UDP socket in B playing a peer.
    fn socket(&self, addr: &str, port: u16) -> UdpSocket {
        let _in = self.b.enter();
        let s = UdpSocket::bind((ip(addr), port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s
    }

    fn input_counter(&self) -> u64 {
        let out = self.a.exec(&["nft", "list", "chain", "inet", "ebv", "input"]);
        let at = out.find("counter packets ").expect("counter");
        out[at + 16..].split_whitespace().next().unwrap().parse().unwrap()
    }
}

/// Sends `inner` from `socket` to the gateway, sealed for `peer`.
fn send(
    socket: &UdpSocket,
    peer: &TestPeer,
    counter: u64,
    inner: &[u8],
    mtu: usize,
    gateway: &str,
) {
    let k = peer.keys;
    let message =
        frames::wg_data(&k.gateway_recv, k.gateway_index, counter, &frames::padded(inner, mtu));
    socket.send_to(&message, (ip(gateway), LISTEN_PORT)).unwrap();
}

/// Receives a transport message on `socket` and opens it with `peer`'s keys.
fn receive(socket: &UdpSocket, peer: &TestPeer) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    let (n, from) = socket.recv_from(&mut buf).expect("nothing came back");
    assert_eq!(from.port(), LISTEN_PORT);
    let (receiver, _, plain) =
        frames::open_wg_data(&peer.keys.gateway_send, &buf[..n]).expect("open");
    assert_eq!(receiver, peer.keys.peer_index);
    plain
}

/// Checks `plain` is an ICMP echo reply from `src` to `dst` with `data`.
fn expect_echo_reply(plain: &[u8], src: &str, dst: &str, data: &[u8]) {
    let len = u16::from_be_bytes([plain[2], plain[3]]) as usize;
    assert_eq!(plain[0], 0x45);
    assert_eq!(&plain[12..16], &ip_octets(src)[..], "reply source");
    assert_eq!(&plain[16..20], &ip_octets(dst)[..], "reply destination");
    assert_eq!(plain[9], 1, "ICMP");
    assert_eq!(plain[20], 0, "echo reply");
    assert!(&plain[28..len] == data, "echo data");
    assert!(plain[len..].iter().all(|&b| b == 0), "padding");
}

fn ip_octets(s: &str) -> [u8; 4] {
    match ip(s) {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => panic!("IPv4 only"),
    }
}

/// How B sends: from a UDP socket (a peer on this host: its frames cross the veth with the
/// checksum left to "hardware", CHECKSUM_PARTIAL), or as complete frames written to `b0`
/// (as frames from a real wire are).
#[derive(Clone, Copy, PartialEq)]
enum From {
    Socket,
    Wire,
}

fn ping_through(w: &mut World, outer_peer: &str, outer_gateway: &str, sizes: &[usize], from: From) {
    let peer = w.peer(Keys::new(1), "10.9.0.2/32", outer_peer, 40000);
    let socket = w.socket(outer_peer, 40000);
    let wire = {
        let _in = w.b.enter();
        Capture::open(w.b.ifindex("b0"))
    };
    let macs = |ns: &Netns, dev: &str| -> [u8; 6] {
        let text = ns.exec(&["cat", &format!("/sys/class/net/{dev}/address")]);
        let v: Vec<u8> =
            text.trim().split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
        v.try_into().unwrap()
    };
    let (a_mac, b_mac) = (macs(&w.a, "a0"), macs(&w.b, "b0"));
    let mtu = w.dp.config().unwrap().tun_mtu as usize;
    let before = w.dp.stats().unwrap();
    let counted = w.input_counter();
    for (seq, &size) in sizes.iter().enumerate() {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + seq) as u8).collect();
        let request = frames::ping(ip("10.9.0.2"), ip("10.9.0.1"), 0x4242, seq as u16, &data);
        if from == From::Socket {
            send(&socket, &peer, seq as u64, &request, mtu, outer_gateway);
        } else {
            let k = peer.keys;
            let padded = frames::padded(&request, mtu);
            let message = frames::wg_data(&k.gateway_recv, k.gateway_index, seq as u64, &padded);
            let (src, dst) = (ip(outer_peer), ip(outer_gateway));
            wire.send(&frames::outer_frame_between(
                a_mac,
                b_mac,
                src,
                dst,
                40000,
                LISTEN_PORT,
                &message,
            ));
        }
        let plain = receive(&socket, &peer);
        expect_echo_reply(&plain, "10.9.0.1", "10.9.0.2", &data);
    }
    let n = sizes.len() as u64;
    let delta = w.dp.stats().unwrap().since(&before);
    assert_eq!(delta.rx_delivered_local, n, "{delta:?}");
    assert_eq!(delta.tx_encrypted, n, "{delta:?}");
    assert_eq!(delta.error, 0, "{delta:?}");
    assert_eq!(w.input_counter() - counted, n, "the replies' requests came in on the TUN");
    let leaked: Vec<_> =
        w.tun.drain().into_iter().filter(|p| p.first().is_some_and(|b| b >> 4 == 4)).collect();
    assert!(leaked.is_empty(), "IPv4 packets reached the TUN fd: {leaked:02x?}");
    let (endpoint, _) = w.dp.peer_endpoint(peer.slot).unwrap();
    assert_eq!(endpoint.unwrap().local, Some(ip(outer_gateway)), "roamed to what the peer used");
}

#[test]
fn ping_through_native_xdp_and_tun_egress() {
    let mut w = world(1500, AttachPreference::Native, false);
    assert_eq!(w.mode, AttachMode::NativeXdp);
    ping_through(&mut w, "192.0.2.2", "192.0.2.1", &[0, 56, 1000, 1392], From::Socket);
    ping_through_wire(&mut w);
}

fn ping_through_wire(w: &mut World) {
    ping_through(w, "192.0.2.2", "192.0.2.1", &[0, 56, 1000, 1392], From::Wire);
}

#[test]
fn ping_over_an_ipv6_underlay() {
    let mut w = world(1500, AttachPreference::Native, false);
    ping_through(&mut w, "2001:db8::2", "2001:db8::1", &[56, 1392], From::Socket);
}

#[test]
fn ping_through_tc_only_receive() {
    let mut w = world(1500, AttachPreference::Tc, false);
    assert_eq!(w.mode, AttachMode::Tc);
    ping_through(&mut w, "192.0.2.2", "192.0.2.1", &[56, 1392], From::Socket);
}

#[test]
fn jumbo_frames_through_native_xdp() {
    let mut w = world(9000, AttachPreference::Native, false);
    assert_eq!(w.mode, AttachMode::NativeXdp);
    ping_through(&mut w, "192.0.2.2", "192.0.2.1", &[1500, 4000, 8000, 8892], From::Wire);
}

#[test]
fn hub_forwarding_between_two_peers() {
    let mut w = world(1500, AttachPreference::Native, true);
    let p1 = w.peer(Keys::new(1), "10.9.0.2/32", "192.0.2.2", 40001);
    let p2 = w.peer(Keys::new(2), "10.9.0.3/32", "2001:db8::2", 40002);
    let s1 = w.socket("192.0.2.2", 40001);
    let s2 = w.socket("2001:db8::2", 40002);
    let before = w.dp.stats().unwrap();
    for (seq, size) in [56usize, 1392].into_iter().enumerate() {
        let data = vec![seq as u8; size];
        let request = frames::ping(ip("10.9.0.2"), ip("10.9.0.3"), 7, seq as u16, &data);
        send(&s1, &p1, seq as u64, &request, 1420, "192.0.2.1");
        let plain = receive(&s2, &p2);
        let len = u16::from_be_bytes([plain[2], plain[3]]) as usize;
        assert_eq!(len, request.len());
        assert_eq!(plain[8], 63, "TTL decremented once");
        assert!(plain[20..len] == request[20..], "ICMP message intact");
        assert_eq!(frames::checksum(0, &plain[..20]), 0, "header checksum");
    }
    let delta = w.dp.stats().unwrap().since(&before);
    assert_eq!(delta.rx_hub_forwarded, 2, "{delta:?}");
    assert_eq!(delta.error, 0);
    assert!(w.tun.drain().into_iter().all(|p| p.first().is_none_or(|b| b >> 4 != 4)));
}

/// Attach, detach, and nothing left behind: no link of ours, no XDP program on either
/// interface, no qdisc.
#[test]
fn detach_leaves_nothing_attached() {
    let mut w = world(1500, AttachPreference::Native, false);
    let ids: Vec<u32> =
        Program::ALL.iter().map(|&p| w.dp.program(p).unwrap().info().unwrap().id()).collect();
    let our_links = || -> Vec<String> {
        sh(&["bpftool", "link", "show"])
            .lines()
            .filter(|l| {
                ids.iter().any(|id| {
                    l.split_whitespace()
                        .collect::<Vec<_>>()
                        .windows(2)
                        .any(|w| w[0] == "prog" && w[1] == id.to_string())
                })
            })
            .map(str::to_string)
            .collect()
    };
    // A link lives until the last reference to its file goes. A child another test thread
    // is forking at that moment holds a copy of every descriptor until it execs, so the
    // kernel may list a closed link a moment longer: look again until it is gone.
    let settled = || -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let links = our_links();
            if links.is_empty() || Instant::now() >= deadline {
                return links;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let links = our_links();
    assert_eq!(links.len(), 4, "rx xdp, handoff, tx tun, xdp_pass: {links:?}");
    assert!(w.a.ip(&["link", "show", "a0"]).contains("prog/xdp"));
    w.dp.detach_all().unwrap();
    assert!(w.dp.attached().is_empty());
    assert_eq!(settled(), Vec::<String>::new());
    assert!(!w.a.ip(&["link", "show", "a0"]).contains("prog/xdp"));
    assert!(!w.b.ip(&["link", "show", "b0"]).contains("prog/xdp"));
    assert!(!w.a.exec(&["tc", "qdisc", "show"]).contains("clsact"), "no clsact qdisc");
    // Dropping the data plane after a fresh attach detaches too.
    {
        let _in = w.a.enter();
        w.dp.attach_underlay("a0", AttachPreference::Native).unwrap();
    }
    assert_eq!(our_links().len(), 2);
    drop(w.dp);
    assert_eq!(settled(), Vec::<String>::new());
    assert!(!w.a.ip(&["link", "show", "a0"]).contains("prog/xdp"));
}

#[test]
fn ping_through_generic_xdp() {
    let mut w = world(1500, AttachPreference::Generic, false);
    assert_eq!(w.mode, AttachMode::GenericXdp);
    ping_through(&mut w, "192.0.2.2", "192.0.2.1", &[0, 56, 1392], From::Socket);
    ping_through_wire(&mut w);
}
