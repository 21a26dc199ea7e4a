//! Signing, the version rule, and the peers a map gives each machine.

use super::*;

fn signing_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn controller(name: &str, seed: u8, subnet: &str, address: &str, ipv4: &str) -> MapController {
    MapController {
        name: name.to_string(),
        public_key: format!("{name}-wg-key"),
        signing_key: STANDARD.encode(signing_key(seed).verifying_key().to_bytes()),
        endpoint: format!("{name}.example.net:51820"),
        prefix: subnet.parse().unwrap(),
        address: address.parse().unwrap(),
        ipv4: ipv4.parse().unwrap(),
    }
}

fn member(name: &str, at: &str, ipv6: &str, ipv4: &str, routes: &[&str]) -> MapMember {
    MapMember {
        name: name.to_string(),
        public_key: format!("{name}-wg-key"),
        controller: at.to_string(),
        ipv6: ipv6.parse().unwrap(),
        ipv4: ipv4.parse().unwrap(),
        routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
    }
}

/// Two controllers; nas and phone at vps, office (an exit node with a LAN) at vps2.
fn map(version: u64) -> NetworkMap {
    NetworkMap {
        network: "home".to_string(),
        version,
        prefix: "fd12:3456:7800::/40".parse().unwrap(),
        ipv4_pool: "100.64.0.0/10".parse().unwrap(),
        controllers: vec![
            controller("vps", 1, "fd12:3456:78aa:0100::/56", "fd12:3456:78aa:100::1", "100.64.0.1"),
            controller(
                "vps2",
                2,
                "fd12:3456:78bb:0200::/56",
                "fd12:3456:78bb:200::1",
                "100.64.0.2",
            ),
        ],
        members: vec![
            member("nas", "vps", "fd12:3456:78aa:100::a", "100.64.0.10", &["192.168.50.0/24"]),
            member("phone", "vps", "fd12:3456:78aa:100::b", "100.64.0.11", &[]),
            member(
                "office",
                "vps2",
                "fd12:3456:78bb:200::c",
                "100.64.0.12",
                &["10.20.0.0/16", "0.0.0.0/0"],
            ),
        ],
    }
}

fn nets(texts: &[&str]) -> Vec<IpNet> {
    texts.iter().map(|t| t.parse().unwrap()).collect()
}

#[test]
fn a_member_takes_newer_maps_signed_by_any_controller_only() {
    let first = SignedMap::sign(&map(1), "vps", &signing_key(1));
    let mut held = HeldMap::first(&first, signing_key(1).verifying_key()).unwrap();
    assert_eq!(held.map().version, 1);

    // vps2 is a controller of the network (in the map held): its maps are taken too.
    assert_eq!(held.offer(&SignedMap::sign(&map(3), "vps2", &signing_key(2))).unwrap().version, 3);
    let refused =
        |held: &mut HeldMap, signed: SignedMap| held.offer(&signed).unwrap_err().to_string();
    assert_eq!(
        refused(&mut held, SignedMap::sign(&map(2), "vps", &signing_key(1))),
        "network map refused: version 2 is not newer than the 3 held"
    );
    assert_eq!(
        refused(&mut held, SignedMap::sign(&map(3), "vps", &signing_key(1))),
        "network map refused: version 3 is not newer than the 3 held"
    );
    assert_eq!(
        refused(&mut held, SignedMap::sign(&map(4), "vps", &signing_key(9))),
        "network map refused: the signature does not match `vps''s key"
    );
    assert_eq!(
        refused(&mut held, SignedMap::sign(&map(4), "mallory", &signing_key(9))),
        "network map refused: signed by `mallory', not a controller of this network"
    );
    let mut tampered = SignedMap::sign(&map(4), "vps", &signing_key(1));
    tampered.map = tampered.map.replace("192.168.50.0/24", "192.168.51.0/24");
    assert_eq!(
        refused(&mut held, tampered),
        "network map refused: the signature does not match `vps''s key"
    );
    let mut other = map(5);
    other.network = "work".to_string();
    assert_eq!(
        refused(&mut held, SignedMap::sign(&other, "vps", &signing_key(1))),
        "network map refused: it is network `work''s"
    );
    assert_eq!(held.map().version, 3, "every refusal kept the map held");
}

#[test]
fn a_controller_removed_from_the_map_is_no_longer_trusted() {
    let mut held = HeldMap::first(
        &SignedMap::sign(&map(1), "vps", &signing_key(1)),
        signing_key(1).verifying_key(),
    )
    .unwrap();
    let mut without_vps2 = map(2);
    without_vps2.controllers.retain(|c| c.name != "vps2");
    without_vps2.members.retain(|m| m.controller != "vps2");
    held.offer(&SignedMap::sign(&without_vps2, "vps", &signing_key(1))).unwrap();
    let from_vps2 = SignedMap::sign(&map(3), "vps2", &signing_key(2));
    assert!(matches!(held.offer(&from_vps2), Err(MapError::UnknownSigner(_))));
}

#[test]
fn a_member_has_one_peer_per_controller_carrying_the_members_enrolled_there() {
    let peers = peers_for(&map(1), "nas", None);
    assert_eq!(peers.len(), 2);
    let vps = &peers[0];
    assert_eq!(
        (vps.name.as_str(), vps.endpoint.as_deref()),
        ("vps", Some("vps.example.net:51820"))
    );
    assert_eq!(
        vps.allowed_ips,
        nets(&[
            "fd12:3456:78aa:100::1/128",
            "100.64.0.1/32",
            "fd12:3456:78aa:100::b/128",
            "100.64.0.11/32"
        ]),
        "nas itself is not routed to vps"
    );
    assert_eq!(
        peers[1].allowed_ips,
        nets(&[
            "fd12:3456:78bb:200::1/128",
            "100.64.0.2/32",
            "fd12:3456:78bb:200::c/128",
            "100.64.0.12/32",
            "10.20.0.0/16"
        ]),
        "office's LAN, but not its default route: nas did not choose it as exit node"
    );
    let with_exit = peers_for(&map(1), "nas", Some("office"));
    assert!(with_exit[1].allowed_ips.contains(&"0.0.0.0/0".parse().unwrap()));
}

#[test]
fn a_controller_has_its_members_and_the_other_controllers() {
    let peers = peers_for(&map(1), "vps", None);
    let names: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["nas", "phone", "vps2"]);
    assert_eq!(
        peers[0].allowed_ips,
        nets(&["fd12:3456:78aa:100::a/128", "100.64.0.10/32", "192.168.50.0/24"])
    );
    assert_eq!(peers[0].endpoint, None, "members' endpoints are learnt from their handshakes");
    assert!(
        peers[2].allowed_ips.contains(&"10.20.0.0/16".parse().unwrap()),
        "vps carries traffic to office's LAN through vps2"
    );
}

#[test]
fn the_map_of_a_store_has_its_members_with_approved_routes_only() {
    use crate::network::addressing::DEFAULT_IPV4_POOL;
    use crate::network::addressing::NetworkPrefix;
    use crate::network::name::Name;
    use crate::network::store::sqlite::SqliteStore;
    use crate::network::store::{
        MemberKind, Network, NetworkStore, NewController, NewMember, RouteState,
    };

    let name = |text: &str| Name::parse(text).unwrap();
    let mut store = SqliteStore::in_memory().unwrap();
    store
        .create_network(&Network {
            name: name("home"),
            prefix: NetworkPrefix::parse("fd12:3456:7800::/40").unwrap(),
            ipv4_pool: DEFAULT_IPV4_POOL,
            map_version: 0,
        })
        .unwrap();
    let vps = store
        .add_controller(&NewController {
            name: name("vps"),
            public_key: [1; 32],
            signing_key: signing_key(1).verifying_key().to_bytes(),
            endpoint: "vps.example.net:51820".to_string(),
        })
        .unwrap();
    let member = |text: &str, key| NewMember {
        name: name(text),
        public_key: [key; 32],
        kind: MemberKind::Gateway,
        controller: name("vps"),
    };
    let nas = store.add_member(&member("nas", 2)).unwrap();
    store.add_member(&member("phone", 3)).unwrap();
    let lan: IpNet = "192.168.50.0/24".parse().unwrap();
    let other: IpNet = "192.168.60.0/24".parse().unwrap();
    store.advertise_route(&name("nas"), lan).unwrap();
    store.advertise_route(&name("nas"), other).unwrap();
    store.decide_route(&name("nas"), lan, RouteState::Approved).unwrap();

    let map = NetworkMap::of(&store.snapshot().unwrap());
    assert_eq!(map.version, 4, "a controller, two members, one approval");
    assert_eq!(
        map.controllers[0].address.to_string(),
        format!("{}", controller_address(vps.prefix))
    );
    assert_eq!(map.members[0].name, "nas");
    assert_eq!(map.members[0].ipv6, nas.ipv6);
    assert_eq!(map.members[0].routes, vec![lan], "the advertised, unapproved route is not in it");
    // The phone reaches the nas's LAN through vps; vps has both members as peers.
    let phone_peers = peers_for(&map, "phone", None);
    assert!(phone_peers[0].allowed_ips.contains(&lan));
    let signed = SignedMap::sign(&map, "vps", &signing_key(1));
    let held = HeldMap::first(&signed, signing_key(1).verifying_key()).unwrap();
    assert_eq!(held.map(), &map);
}
