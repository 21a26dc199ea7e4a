//! The behaviour the kernel's allowedips selftest checks (explicit inserts, lookups and
//! per-peer removals; a randomized comparison against a linear-scan model), plus the per-peer
//! removal of single prefixes and the trie's structural invariants.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::AllowedIps;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Peer {
    A,
    B,
    C,
    D,
    E,
    F,
    G,
    H,
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

/// An IPv6 address from four big-endian 32-bit words, as the kernel test writes them.
fn v6(a: u32, b: u32, c: u32, d: u32) -> Ipv6Addr {
    Ipv6Addr::from(
        (u128::from(a) << 96) | (u128::from(b) << 64) | (u128::from(c) << 32) | u128::from(d),
    )
}

fn net4(addr: Ipv4Addr, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new(addr, len).unwrap())
}

fn net6(addr: Ipv6Addr, len: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new(addr, len).unwrap())
}

fn lookup4(table: &AllowedIps<Peer>, addr: Ipv4Addr) -> Option<Peer> {
    table.lookup(IpAddr::V4(addr)).copied()
}

fn lookup6(table: &AllowedIps<Peer>, addr: Ipv6Addr) -> Option<Peer> {
    table.lookup(IpAddr::V6(addr)).copied()
}

/// The table the kernel selftest builds before its lookups.
fn kernel_selftest_table() -> AllowedIps<Peer> {
    use Peer::*;
    let mut t = AllowedIps::new();
    t.insert(net4(v4(192, 168, 4, 0), 24), A);
    t.insert(net4(v4(192, 168, 4, 4), 32), B);
    t.insert(net4(v4(192, 168, 0, 0), 16), C);
    t.insert(net4(v4(192, 95, 5, 64), 27), D);
    // Same prefix once masked: replaces D.
    t.insert(IpNet::V4(Ipv4Net::new(v4(192, 95, 5, 65), 27).unwrap()), C);
    t.insert(net6(v6(0x26075300, 0x60006b00, 0, 0xc05f0543), 128), D);
    t.insert(net6(v6(0x26075300, 0x60006b00, 0, 0), 64), C);
    t.insert(net4(v4(0, 0, 0, 0), 0), E);
    t.insert(net6(v6(0, 0, 0, 0), 0), E);
    t.insert(net6(v6(0, 0, 0, 0), 0), F); // replaces E
    t.insert(net6(v6(0x24046800, 0, 0, 0), 32), G);
    t.insert(net6(v6(0x24046800, 0x40040800, 0xdeadbeef, 0xdeadbeef), 64), H); // masked
    t.insert(net6(v6(0x24046800, 0x40040800, 0xdeadbeef, 0xdeadbeef), 128), A);
    t.insert(net6(v6(0x24446800, 0x40e40800, 0xdeaebeef, 0x0defbeef), 128), C);
    t.insert(net6(v6(0x24446800, 0xf0e40800, 0xeeaebeef, 0), 98), B);
    t.insert(net4(v4(64, 15, 112, 0), 20), G);
    t.insert(net4(v4(64, 15, 123, 211), 25), H); // masked
    t.insert(net4(v4(10, 0, 0, 0), 25), A);
    t.insert(net4(v4(10, 0, 0, 128), 25), B);
    t.insert(net4(v4(10, 1, 0, 0), 30), A);
    t.insert(net4(v4(10, 1, 0, 4), 30), B);
    t.insert(net4(v4(10, 1, 0, 8), 29), C);
    t.insert(net4(v4(10, 1, 0, 16), 29), D);
    t
}

#[test]
fn kernel_selftest_lookups() {
    use Peer::*;
    let t = kernel_selftest_table();
    let expectations4 = [
        (v4(192, 168, 4, 20), A),
        (v4(192, 168, 4, 0), A),
        (v4(192, 168, 4, 4), B),
        (v4(192, 168, 200, 182), C),
        (v4(192, 95, 5, 68), C),
        (v4(192, 95, 5, 96), E),
        (v4(64, 15, 116, 26), G),
        (v4(64, 15, 127, 3), G),
        (v4(64, 15, 123, 1), G),
        (v4(64, 15, 123, 128), H),
        (v4(64, 15, 123, 129), H),
        (v4(10, 0, 0, 52), A),
        (v4(10, 0, 0, 220), B),
        (v4(10, 1, 0, 2), A),
        (v4(10, 1, 0, 6), B),
        (v4(10, 1, 0, 10), C),
        (v4(10, 1, 0, 20), D),
    ];
    for (addr, peer) in expectations4 {
        assert_eq!(lookup4(&t, addr), Some(peer), "lookup of {addr}");
    }
    let expectations6 = [
        (v6(0x26075300, 0x60006b00, 0, 0xc05f0543), D),
        (v6(0x26075300, 0x60006b00, 0, 0xc02e01ee), C),
        (v6(0x26075300, 0x60006b01, 0, 0), F),
        (v6(0x24046800, 0x40040806, 0, 0x1006), G),
        (v6(0x24046800, 0x40040806, 0x1234, 0x5678), G),
        (v6(0x240467ff, 0x40040806, 0x1234, 0x5678), F),
        (v6(0x24046801, 0x40040806, 0x1234, 0x5678), F),
        (v6(0x24046800, 0x40040800, 0x1234, 0x5678), H),
        (v6(0x24046800, 0x40040800, 0, 0), H),
        (v6(0x24046800, 0x40040800, 0x10101010, 0x10101010), H),
        (v6(0x24046800, 0x40040800, 0xdeadbeef, 0xdeadbeef), A),
    ];
    for (addr, peer) in expectations6 {
        assert_eq!(lookup6(&t, addr), Some(peer), "lookup of {addr}");
    }
    assert_eq!(t.len(), 21, "two of the 23 inserts replaced an existing prefix");
}

#[test]
fn ipv4_mapped_ipv6_addresses_are_not_looked_up_as_ipv4() {
    let mut t = AllowedIps::new();
    t.insert(net4(v4(192, 0, 2, 0), 24), Peer::A);
    assert_eq!(lookup4(&t, v4(192, 0, 2, 1)), Some(Peer::A));
    assert_eq!(lookup6(&t, v4(192, 0, 2, 1).to_ipv6_mapped()), None);
    t.insert(net6(v4(192, 0, 2, 0).to_ipv6_mapped(), 120), Peer::B);
    assert_eq!(lookup6(&t, v4(192, 0, 2, 1).to_ipv6_mapped()), Some(Peer::B));
    assert_eq!(lookup4(&t, v4(192, 0, 2, 1)), Some(Peer::A));
}

#[test]
fn remove_by_value_removes_every_prefix_of_that_peer_only() {
    use Peer::*;
    let mut t = AllowedIps::new();
    for first in [1, 64, 128, 192, 255] {
        t.insert(net4(v4(first, 0, 0, 0), 32), A);
    }
    t.insert(net4(v4(1, 0, 0, 0), 8), B);
    assert_eq!(t.remove_by_value(&A), 5);
    for first in [1, 64, 128, 192, 255] {
        assert_ne!(lookup4(&t, v4(first, 0, 0, 0)), Some(A));
    }
    assert_eq!(lookup4(&t, v4(1, 0, 0, 0)), Some(B));
    assert_eq!(t.len(), 1);
    assert_eq!(t.remove_by_value(&A), 0);

    let mut t = AllowedIps::new();
    t.insert(net4(v4(192, 168, 0, 0), 16), A);
    t.insert(net4(v4(192, 168, 0, 0), 24), A);
    t.remove_by_value(&A);
    assert_eq!(lookup4(&t, v4(192, 168, 0, 1)), None);
    assert!(t.is_empty());
    assert_eq!(t.v4.reachable_nodes(), 0);
}

#[test]
fn deep_ipv6_chain_is_built_and_torn_down_cleanly() {
    // 128 host routes, each all-ones but for one bit: every one diverges from the others at a
    // different depth, which exercises glue nodes at every length.
    let mut t = AllowedIps::new();
    for i in 0..128u32 {
        let addr = Ipv6Addr::from(!(1u128 << i));
        t.insert(net6(addr, 128), Peer::A);
    }
    assert_eq!(t.len(), 128);
    for i in 0..128u32 {
        assert_eq!(lookup6(&t, Ipv6Addr::from(!(1u128 << i))), Some(Peer::A));
    }
    assert_eq!(lookup6(&t, Ipv6Addr::from(u128::MAX)), None);
    assert!(t.v6.reachable_nodes() < 2 * 128);
    assert_eq!(t.remove_by_value(&Peer::A), 128);
    assert_eq!(t.v6.reachable_nodes(), 0);
}

#[test]
fn prefixes_of_a_peer_are_masked_and_in_insertion_order() {
    let mut t = AllowedIps::new();
    t.insert(net4(v4(192, 95, 5, 93), 27), Peer::A);
    t.insert(net6(v6(0x26075300, 0x60006b00, 0, 0xc05f0543), 128), Peer::A);
    t.insert(net4(v4(10, 1, 0, 20), 29), Peer::A);
    t.insert(net6(v6(0x26075300, 0x6d8a6bf8, 0xdab1f1df, 0xc05f1523), 83), Peer::A);
    t.insert(net6(v6(0x26075300, 0x6d8a6bf8, 0xdab1f1df, 0xc05f1523), 21), Peer::A);
    t.insert(net4(v4(10, 9, 9, 9), 32), Peer::B);
    let listed: Vec<IpNet> = t.prefixes_of(&Peer::A).collect();
    let expected: Vec<IpNet> = vec![
        "192.95.5.64/27".parse().unwrap(),
        "2607:5300:6000:6b00::c05f:543/128".parse().unwrap(),
        "10.1.0.16/29".parse().unwrap(),
        "2607:5300:6d8a:6bf8:dab1:e000::/83".parse().unwrap(),
        "2607:5000::/21".parse().unwrap(),
    ];
    assert_eq!(listed, expected);

    // Re-inserting moves a prefix to the end of its (new) owner's list, as the kernel does.
    t.insert(net4(v4(192, 95, 5, 64), 27), Peer::A);
    let last = t.prefixes_of(&Peer::A).last();
    assert_eq!(last, Some("192.95.5.64/27".parse().unwrap()));
    t.insert(net4(v4(10, 1, 0, 16), 29), Peer::B);
    assert_eq!(t.prefixes_of(&Peer::A).count(), 4);
    assert_eq!(
        t.prefixes_of(&Peer::B).collect::<Vec<_>>(),
        vec!["10.9.9.9/32".parse::<IpNet>().unwrap(), "10.1.0.16/29".parse().unwrap()]
    );
}

#[test]
fn removal_of_one_prefix_respects_its_owner() {
    let mut t = AllowedIps::new();
    t.insert(net4(v4(10, 0, 0, 0), 8), Peer::A);
    t.insert(net4(v4(10, 1, 0, 0), 16), Peer::B);
    t.insert(net6(v6(0xfd000000, 0, 0, 0), 8), Peer::A);

    // Another peer's prefix, an absent prefix, a covering-but-different prefix: no change.
    assert!(!t.remove_if_owned_by(&net4(v4(10, 1, 0, 0), 16), &Peer::A));
    assert!(!t.remove_if_owned_by(&net4(v4(10, 2, 0, 0), 16), &Peer::A));
    assert!(!t.remove_if_owned_by(&net4(v4(10, 0, 0, 0), 9), &Peer::A));
    assert_eq!(t.len(), 3);
    assert_eq!(lookup4(&t, v4(10, 1, 2, 3)), Some(Peer::B));

    // Host bits are ignored, as on insert.
    assert!(t.remove_if_owned_by(&"10.1.2.3/16".parse().unwrap(), &Peer::B));
    assert_eq!(lookup4(&t, v4(10, 1, 2, 3)), Some(Peer::A));
    assert_eq!(t.prefixes_of(&Peer::B).count(), 0);

    assert_eq!(t.remove(&net6(v6(0xfd000000, 0, 0, 0), 8)), Some(Peer::A));
    assert_eq!(t.remove(&net6(v6(0xfd000000, 0, 0, 0), 8)), None);
    assert_eq!(lookup6(&t, v6(0xfd000000, 0, 0, 1)), None);
    assert_eq!(t.prefixes_of(&Peer::A).collect::<Vec<_>>(), vec![net4(v4(10, 0, 0, 0), 8)]);
}

#[test]
fn default_routes_and_host_routes_coexist() {
    let mut t = AllowedIps::new();
    t.insert("0.0.0.0/0".parse().unwrap(), Peer::A);
    t.insert("::/0".parse().unwrap(), Peer::B);
    t.insert("255.255.255.255/32".parse().unwrap(), Peer::C);
    t.insert("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128".parse().unwrap(), Peer::D);
    assert_eq!(lookup4(&t, v4(0, 0, 0, 0)), Some(Peer::A));
    assert_eq!(lookup4(&t, v4(255, 255, 255, 254)), Some(Peer::A));
    assert_eq!(lookup4(&t, v4(255, 255, 255, 255)), Some(Peer::C));
    assert_eq!(lookup6(&t, Ipv6Addr::from(u128::MAX)), Some(Peer::D));
    assert_eq!(lookup6(&t, Ipv6Addr::from(u128::MAX - 1)), Some(Peer::B));
    assert_eq!(t.remove(&"0.0.0.0/0".parse().unwrap()), Some(Peer::A));
    assert_eq!(lookup4(&t, v4(1, 2, 3, 4)), None);
    assert_eq!(lookup4(&t, v4(255, 255, 255, 255)), Some(Peer::C));
    let all: Vec<(IpNet, Peer)> = t.iter().map(|(net, peer)| (net, *peer)).collect();
    assert_eq!(
        all,
        vec![
            ("255.255.255.255/32".parse().unwrap(), Peer::C),
            ("::/0".parse().unwrap(), Peer::B),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128".parse().unwrap(), Peer::D),
        ]
    );
}

/// SplitMix64: a small deterministic generator, so a failure reproduces from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn u128(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }
}

/// The kernel test's "horrible" table: a list scanned linearly, longest prefix winning.
#[derive(Default)]
struct LinearModel {
    entries: Vec<(IpNet, u32)>,
}

impl LinearModel {
    fn insert(&mut self, prefix: IpNet, peer: u32) {
        let prefix = prefix.trunc();
        self.entries.retain(|(existing, _)| *existing != prefix);
        self.entries.push((prefix, peer));
    }

    fn remove(&mut self, prefix: IpNet) {
        let prefix = prefix.trunc();
        self.entries.retain(|(existing, _)| *existing != prefix);
    }

    fn remove_if_owned_by(&mut self, prefix: IpNet, peer: u32) {
        let prefix = prefix.trunc();
        self.entries.retain(|(existing, owner)| !(*existing == prefix && *owner == peer));
    }

    fn remove_by_value(&mut self, peer: u32) {
        self.entries.retain(|(_, owner)| *owner != peer);
    }

    fn lookup(&self, address: IpAddr) -> Option<u32> {
        self.entries
            .iter()
            .filter(|(prefix, _)| prefix.contains(&address))
            .max_by_key(|(prefix, _)| prefix.prefix_len())
            .map(|(_, peer)| *peer)
    }

    fn prefixes_of(&self, peer: u32) -> Vec<IpNet> {
        self.entries.iter().filter(|(_, owner)| *owner == peer).map(|(net, _)| *net).collect()
    }
}

fn random_prefix(rng: &mut Rng, ipv6: bool) -> IpNet {
    if ipv6 {
        net6(Ipv6Addr::from(rng.u128()), 1 + rng.below(128) as u8)
    } else {
        net4(Ipv4Addr::from(rng.next() as u32), 1 + rng.below(32) as u8)
    }
}

/// Keeps the first `keep` bits of `base` and randomizes the rest, as the kernel test mutates
/// routes so that they share long prefixes.
fn mutate(rng: &mut Rng, base: IpNet) -> IpAddr {
    match base {
        IpNet::V4(net) => {
            let keep = rng.below(33) as u32;
            let mask = if keep == 0 { 0 } else { u32::MAX << (32 - keep) };
            let bits = (u32::from(net.addr()) & mask) | (rng.next() as u32 & !mask);
            IpAddr::V4(Ipv4Addr::from(bits))
        }
        IpNet::V6(net) => {
            let keep = rng.below(129) as u32;
            let mask = if keep == 0 { 0 } else { u128::MAX << (128 - keep) };
            let bits = (u128::from(net.addr()) & mask) | (rng.u128() & !mask);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

fn with_len(address: IpAddr, ipv6_len: u8, ipv4_len: u8) -> IpNet {
    match address {
        IpAddr::V4(a) => net4(a, ipv4_len),
        IpAddr::V6(a) => net6(a, ipv6_len),
    }
}

fn assert_same_lookups(t: &AllowedIps<u32>, model: &LinearModel, rng: &mut Rng, queries: usize) {
    let bases: Vec<IpNet> = model.entries.iter().map(|(net, _)| *net).collect();
    for _ in 0..queries {
        let address = match rng.below(3) {
            0 => IpAddr::V4(Ipv4Addr::from(rng.next() as u32)),
            1 => IpAddr::V6(Ipv6Addr::from(rng.u128())),
            _ if !bases.is_empty() => {
                let base = bases[rng.below(bases.len() as u64) as usize];
                mutate(rng, base)
            }
            _ => IpAddr::V4(Ipv4Addr::from(rng.next() as u32)),
        };
        assert_eq!(t.lookup(address).copied(), model.lookup(address), "lookup of {address}");
    }
}

fn assert_same_contents(t: &AllowedIps<u32>, model: &LinearModel, peers: u32) {
    assert_eq!(t.len(), model.entries.len());
    let mut listed: Vec<(IpNet, u32)> = t.iter().map(|(net, peer)| (net, *peer)).collect();
    let mut expected = model.entries.clone();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
    for peer in 0..peers {
        assert_eq!(t.prefixes_of(&peer).collect::<Vec<_>>(), model.prefixes_of(peer));
    }
}

#[test]
fn randomized_against_linear_model() {
    const PEERS: u32 = 48;
    const ROUTES: usize = 60;
    const MUTATED_PER_ROUTE: usize = 20;
    const QUERIES: usize = 1500;
    for seed in [1u64, 0x5eed, 0xdead_beef] {
        let mut rng = Rng(seed);
        let mut t = AllowedIps::new();
        let mut model = LinearModel::default();
        for ipv6 in [false, true] {
            for _ in 0..ROUTES {
                let base = random_prefix(&mut rng, ipv6);
                let peer = rng.below(u64::from(PEERS)) as u32;
                t.insert(base, peer);
                model.insert(base, peer);
                for _ in 0..MUTATED_PER_ROUTE {
                    let address = mutate(&mut rng, base);
                    let prefix =
                        with_len(address, 1 + rng.below(128) as u8, 1 + rng.below(32) as u8);
                    let peer = rng.below(u64::from(PEERS)) as u32;
                    t.insert(prefix, peer);
                    model.insert(prefix, peer);
                }
            }
        }
        assert_same_contents(&t, &model, PEERS);
        assert_same_lookups(&t, &model, &mut rng, QUERIES * 4);

        // Mixed removals, checked after each batch, until every peer is gone (as the kernel
        // test removes peer by peer and checks between removals).
        for peer in 0..PEERS {
            for _ in 0..8 {
                let Some(&(prefix, owner)) =
                    model.entries.get(rng.below(model.entries.len().max(1) as u64) as usize)
                else {
                    break;
                };
                match rng.below(3) {
                    0 => {
                        assert_eq!(t.remove(&prefix), Some(owner));
                        model.remove(prefix);
                    }
                    1 => {
                        let claimed = rng.below(u64::from(PEERS)) as u32;
                        assert_eq!(t.remove_if_owned_by(&prefix, &claimed), claimed == owner);
                        model.remove_if_owned_by(prefix, claimed);
                    }
                    _ => {
                        assert!(t.remove_if_owned_by(&prefix, &owner));
                        model.remove_if_owned_by(prefix, owner);
                    }
                }
            }
            let expected = model.prefixes_of(peer).len();
            assert_eq!(t.remove_by_value(&peer), expected);
            model.remove_by_value(peer);
            assert_same_lookups(&t, &model, &mut rng, QUERIES / 8);
            if peer % 8 == 0 {
                assert_same_contents(&t, &model, PEERS);
            }
        }
        assert!(t.is_empty());
        assert_eq!(t.v4.reachable_nodes() + t.v6.reachable_nodes(), 0);
    }
}

#[test]
fn node_count_stays_bounded_through_churn() {
    let mut rng = Rng(42);
    let mut t = AllowedIps::new();
    for round in 0..20_000u32 {
        let prefix = random_prefix(&mut rng, round % 2 == 0);
        if rng.below(3) == 0 {
            t.remove(&prefix);
        } else {
            t.insert(prefix, round % 7);
        }
    }
    for family_nodes in [(t.v4.reachable_nodes(), t.v4.len()), (t.v6.reachable_nodes(), t.v6.len())]
    {
        let (nodes, values) = family_nodes;
        assert!(nodes < 2 * values.max(1), "{nodes} nodes for {values} prefixes");
    }
}

#[test]
fn inserts_130k_prefixes_quickly() {
    let mut t = AllowedIps::new();
    let started = Instant::now();
    for i in 0..130_000u32 {
        let peer = i % 1000;
        if i % 2 == 0 {
            t.insert(net4(Ipv4Addr::from(0x0a00_0000 | (i << 2)), 30), peer);
        } else {
            t.insert(net6(Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i) << 16), 112), peer);
        }
    }
    let elapsed = started.elapsed();
    eprintln!("130 000 inserts took {elapsed:?}");
    assert_eq!(t.len(), 130_000);
    assert_eq!(t.lookup(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (1000 << 2) | 1))), Some(&0));
    // Generous for an unoptimized test build; release builds take a few tens of milliseconds.
    assert!(elapsed.as_secs_f64() < 2.0, "130 000 inserts took {elapsed:?}");
    let started = Instant::now();
    for peer in 0..1000 {
        assert_eq!(t.remove_by_value(&peer), 130);
    }
    assert!(t.is_empty());
    assert!(started.elapsed().as_secs_f64() < 2.0, "removal took {:?}", started.elapsed());
}
