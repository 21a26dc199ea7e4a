//! A one-namespace topology for BPF_PROG_TEST_RUN tests that need routes: an underlay veth
//! (`u0`, the gateway's side, addresses .1; the far side `u1` stays unaddressed, its
//! neighbours are static), a LAN veth (`l0`, 10.8.0.1/24), and a TUN held open (10.9.0.1/24,
//! fd00::1/64, and a route to 10.77.0.0/16; MTU 1420), forwarding on.

use super::frames::PEER_MAC;
use super::netns::{Netns, Tun, unique};

pub const LAN_HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x08];

pub struct Lab {
    pub ns: Netns,
    pub tun: Tun,
    pub tun_ifindex: u32,
    pub underlay: String,
    pub underlay_ifindex: u32,
    pub underlay_mac: [u8; 6],
    pub lan: String,
    pub lan_ifindex: u32,
    pub lan_mac: [u8; 6],
}

fn mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s.trim().split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    v.try_into().unwrap()
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

impl Lab {
    // Not a `Default`: building one creates a namespace, links and a TUN.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Lab {
        let ns = Netns::new("ebl");
        let tun_name = unique("ebt");
        let tun = {
            let _in = ns.enter();
            Tun::open(&tun_name)
        };
        let (u0, u1, l0, l1) = ("u0", "u1", "l0", "l1");
        ns.ip(&["link", "add", u0, "type", "veth", "peer", "name", u1]);
        ns.ip(&["link", "add", l0, "type", "veth", "peer", "name", l1]);
        for dev in [u0, u1, l0, l1, tun_name.as_str()] {
            ns.ip(&["link", "set", dev, "up"]);
        }
        ns.sysctl("net.ipv4.conf.all.forwarding", "1");
        ns.sysctl("net.ipv6.conf.all.forwarding", "1");
        ns.ip(&["link", "set", &tun_name, "multicast", "off"]);
        ns.ip(&["addr", "add", "192.0.2.1/24", "dev", u0]);
        ns.ip(&["addr", "add", "2001:db8::1/64", "dev", u0, "nodad"]);
        ns.ip(&["addr", "add", "10.8.0.1/24", "dev", l0]);
        ns.ip(&["addr", "add", "10.9.0.1/24", "dev", &tun_name]);
        ns.ip(&["addr", "add", "fd00::1/64", "dev", &tun_name, "nodad"]);
        ns.ip(&["link", "set", &tun_name, "mtu", "1420"]);
        ns.ip(&["route", "add", "10.77.0.0/16", "dev", &tun_name]);
        let peer = mac_str(PEER_MAC);
        for (addr, dev) in [("192.0.2.2", u0), ("2001:db8::2", u0)] {
            ns.ip(&["neigh", "add", addr, "lladdr", &peer, "dev", dev, "nud", "permanent"]);
        }
        ns.ip(&[
            "neigh",
            "add",
            "10.8.0.5",
            "lladdr",
            &mac_str(LAN_HOST_MAC),
            "dev",
            l0,
            "nud",
            "permanent",
        ]);
        let read_mac =
            |dev: &str| mac(&ns.exec(&["cat", &format!("/sys/class/net/{dev}/address")]));
        Lab {
            tun_ifindex: ns.ifindex(&tun_name),
            underlay_ifindex: ns.ifindex(u0),
            underlay_mac: read_mac(u0),
            lan_ifindex: ns.ifindex(l0),
            lan_mac: read_mac(l0),
            underlay: u0.to_string(),
            lan: l0.to_string(),
            tun,
            ns,
        }
    }
}
