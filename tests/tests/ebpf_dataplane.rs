//! The dataplane API itself: AllowedIPs in the kernel's tries (moves, replacement, removal,
//! 130 000 prefixes), slot capacity, and picking underlay interfaces from routes.

mod ebpf_common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ebpf_common::lab::Lab;
use ebpf_common::{Keys, add_peer, load, require_root};
use gateway::dataplane::{
    Capacities, Dataplane, DataplaneError, SessionEntry, SessionSlot, SessionState, SessionUse,
    route_interface, underlay_interfaces,
};
use gateway::wg::session_memory::SessionMemory;
use ipnet::IpNet;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn nets(v: &[&str]) -> Vec<IpNet> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn allowed_ips_follow_the_kernel_semantics() {
    let mut dp = load();
    let a = dp.add_peer().unwrap();
    let b = dp.add_peer().unwrap();
    dp.set_allowed_ips(a, &nets(&["10.0.0.0/8", "fd00::/64", "192.0.2.77/24"])).unwrap();
    dp.set_allowed_ips(b, &nets(&["10.1.0.0/16"])).unwrap();
    // Host bits are ignored, the longest prefix wins.
    assert_eq!(dp.allowed_ips(a), nets(&["10.0.0.0/8", "192.0.2.0/24", "fd00::/64"]));
    assert_eq!(dp.allowed_ip_owner(ip("10.1.2.3")).unwrap(), Some(b));
    assert_eq!(dp.allowed_ip_owner(ip("10.2.2.3")).unwrap(), Some(a));
    assert_eq!(dp.allowed_ip_owner(ip("fd00::9")).unwrap(), Some(a));
    assert_eq!(dp.allowed_ip_owner(ip("11.0.0.1")).unwrap(), None);
    // Adding a prefix another peer has moves it.
    dp.add_allowed_ips(b, nets(&["10.0.0.0/8"])).unwrap();
    assert_eq!(dp.allowed_ip_owner(ip("10.2.2.3")).unwrap(), Some(b));
    assert_eq!(dp.allowed_ips(a), nets(&["192.0.2.0/24", "fd00::/64"]));
    // Replacing touches only the difference; removing a peer removes its prefixes.
    dp.set_allowed_ips(a, &nets(&["fd00::/64", "198.51.100.0/24"])).unwrap();
    assert_eq!(dp.allowed_ip_owner(ip("192.0.2.1")).unwrap(), None);
    assert_eq!(dp.allowed_ip_owner(ip("198.51.100.1")).unwrap(), Some(a));
    assert!(!dp.remove_allowed_ip(b, "fd00::/64".parse().unwrap()).unwrap(), "not b's");
    dp.remove_peer(a).unwrap();
    assert_eq!(dp.allowed_ip_owner(ip("fd00::1")).unwrap(), None);
    assert_eq!(dp.allowed_ip_owner(ip("198.51.100.1")).unwrap(), None);
    assert!(matches!(dp.set_allowed_ips(a, &[]), Err(DataplaneError::Invalid(_))));
}

#[test]
fn a_hundred_thirty_thousand_prefixes() {
    require_root();
    let caps = Capacities { sessions: 16, peers: 16, allowed_ips: 140_000 };
    let mut dp = Dataplane::load(caps).unwrap();
    let p = dp.add_peer().unwrap();
    let prefixes: Vec<IpNet> = (0..130_000u32)
        .map(|i| IpNet::new(IpAddr::from((0x0a00_0000u32 | (i << 8)).to_be_bytes()), 24).unwrap())
        .collect();
    let started = Instant::now();
    assert_eq!(dp.add_allowed_ips(p, prefixes.iter().copied()).unwrap(), 130_000);
    let took = started.elapsed();
    println!("130 000 prefixes added in {took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_eq!(dp.allowed_ip_owner(ip("10.1.2.3")).unwrap(), Some(p));
    let started = Instant::now();
    dp.clear_allowed_ips(p).unwrap();
    println!("and removed in {:?}", started.elapsed());
    assert_eq!(dp.allowed_ip_owner(ip("10.1.2.3")).unwrap(), None);
}

#[test]
fn session_slots_run_out_and_come_back_and_retiring_respects_reuse() {
    let mut dp = load();
    let keys = Keys::new(1);
    let peer = add_peer(&mut dp, keys, &[], None, Instant::now());
    let entry = |i: u32| SessionEntry {
        peer: peer.slot,
        local_index: 0x5000 + i,
        remote_index: i,
        created: Instant::now(),
        send_key: [1; 32],
        recv_key: [2; 32],
    };
    let state = SessionState { usable: SessionUse { receive: true, send: true }, initiator: true };
    let pool = dp.session_pool();
    let mut cells = Vec::new();
    while let Some(cell) = pool.allocate() {
        let slot = SessionSlot(cell.slot().unwrap());
        dp.publish_session(slot, &entry(cells.len() as u32 + 1), state).unwrap();
        cells.push(cell);
    }
    assert_eq!(cells.len() as u32 + 1, dp.capacities().sessions, "all but the test peer's");
    // A dropped keypair returns its slot; the next session gets it with fresh counters.
    let freed = cells.remove(3);
    let slot = SessionSlot(freed.slot().unwrap());
    freed.send_nonce.store(77, std::sync::atomic::Ordering::Relaxed);
    drop(freed);
    let reused = pool.allocate().expect("the freed slot");
    assert_eq!(reused.slot(), Some(slot.0));
    assert_eq!(reused.send_nonce.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(reused.replay.next_expected(), 0, "a fresh window");
    dp.publish_session(slot, &entry(1000), state).unwrap();
    // Retiring the old session (published under index 0x5004) leaves the new one alone.
    dp.retire_session(slot, 0x5000 + 4).unwrap();
    assert_ne!(dp.session_state(slot).unwrap(), 0, "the slot's new session is still live");
    dp.retire_session(slot, 0x5000 + 1000).unwrap();
    assert_eq!(dp.session_state(slot).unwrap(), 0);
}

#[test]
fn underlays_are_the_interfaces_routes_leave_through() {
    require_root();
    let lab = Lab::new();
    let _in = lab.ns.enter();
    assert_eq!(route_interface(ip("192.0.2.99")).unwrap(), lab.underlay_ifindex);
    assert_eq!(route_interface(ip("2001:db8::42")).unwrap(), lab.underlay_ifindex);
    assert_eq!(route_interface(ip("10.8.0.9")).unwrap(), lab.lan_ifindex);
    assert_eq!(route_interface(ip("10.77.3.3")).unwrap(), lab.tun_ifindex);
    let found = underlay_interfaces(&[ip("192.0.2.5"), ip("10.8.0.5"), ip("2001:db8::5")]).unwrap();
    assert_eq!(found, vec![lab.underlay_ifindex, lab.lan_ifindex]);
    let err = route_interface(ip("203.0.113.1")).unwrap_err();
    assert!(err.to_string().contains("203.0.113.1"), "{err}");
}
