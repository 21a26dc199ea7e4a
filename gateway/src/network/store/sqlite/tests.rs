//! The SQLite store against the rules of `NetworkStore`, on files in a temporary directory
//! (and in memory where the file does not matter).

use super::*;
use crate::network::addressing::DEFAULT_IPV4_POOL;

fn name(text: &str) -> Name {
    Name::parse(text).unwrap()
}

fn network() -> Network {
    Network {
        name: name("home"),
        prefix: NetworkPrefix::parse("fd12:3456:7800::/40").unwrap(),
        ipv4_pool: DEFAULT_IPV4_POOL,
        map_version: 0,
    }
}

fn new_member(text: &str, key: u8) -> NewMember {
    NewMember {
        name: name(text),
        public_key: [key; 32],
        kind: MemberKind::Gateway,
        controller: name("vps"),
    }
}

/// A store with the network and its controller `vps`.
fn store() -> SqliteStore {
    let mut store = SqliteStore::in_memory().unwrap();
    store.create_network(&network()).unwrap();
    store.add_controller(&new_controller("vps", 1)).unwrap();
    store
}

fn new_controller(text: &str, key: u8) -> NewController {
    NewController {
        name: name(text),
        public_key: [key; 32],
        signing_key: [key + 100; 32],
        endpoint: format!("{text}.example.net:51820"),
    }
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir()
            .join(format!("gateway-network-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_new_database_is_migrated_and_a_newer_one_refused() {
    let dir = TempDir::new("migrate");
    let path = dir.0.join("network.db");
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len());
    drop(store);
    // Reopening applies nothing twice.
    assert_eq!(SqliteStore::open(&path).unwrap().schema_version().unwrap(), MIGRATIONS.len());
    let connection = Connection::open(&path).unwrap();
    connection.pragma_update(None, "user_version", MIGRATIONS.len() as i64 + 1).unwrap();
    drop(connection);
    let refused = SqliteStore::open(&path).err().unwrap().to_string();
    assert!(refused.contains("newer than this gateway knows"), "{refused}");
}

#[test]
fn the_network_is_created_once_and_survives_a_reopen() {
    let dir = TempDir::new("reopen");
    let path = dir.0.join("network.db");
    let mut store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.network().unwrap_err().to_string(), StoreError::NoNetwork.to_string());
    store.create_network(&network()).unwrap();
    assert_eq!(
        store.create_network(&network()).unwrap_err().to_string(),
        "the network `home' already exists"
    );
    let vps = store.add_controller(&new_controller("vps", 1)).unwrap();
    let nas = store.add_member(&new_member("nas", 2)).unwrap();
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.network().unwrap().prefix, network().prefix);
    assert_eq!(store.controllers().unwrap(), vec![vps]);
    assert_eq!(store.members().unwrap(), vec![nas]);
}

#[test]
fn members_get_derived_addresses_that_never_collide_or_move() {
    let mut store = store();
    let vps = store.controllers().unwrap().remove(0);
    let nas = store.add_member(&new_member("nas", 2)).unwrap();
    assert!(vps.prefix.contains(&nas.ipv6));
    assert_eq!(
        nas.ipv6,
        addressing::allocate_member_v6(vps.prefix, &name("nas"), |_| false).unwrap()
    );
    assert!(DEFAULT_IPV4_POOL.contains(&nas.ipv4));
    // nas holds the address `phone' derives to (as a member whose own first derivation
    // collided could): phone takes its next derivation.
    let phone_v6 = addressing::allocate_member_v6(vps.prefix, &name("phone"), |_| false).unwrap();
    store
        .connection
        .execute("UPDATE members SET ipv6 = ?1 WHERE name = 'nas'", [phone_v6.to_string()])
        .unwrap();
    let phone = store.add_member(&new_member("phone", 3)).unwrap();
    assert_ne!(phone.ipv6, phone_v6, "a derivation that collides takes the next one");
    assert!(vps.prefix.contains(&phone.ipv6));
    // Addresses are read back as stored, not re-derived.
    let members = store.members().unwrap();
    assert_eq!(members.iter().find(|m| m.name == name("nas")).unwrap().ipv6, phone_v6);
}

#[test]
fn names_and_keys_are_unique_across_members_and_controllers() {
    let mut store = store();
    store.add_member(&new_member("nas", 2)).unwrap();
    for (member, message) in [
        (new_member("nas", 9), "the name `nas' already exists"),
        (new_member("vps", 9), "the name `vps' already exists"),
        (new_member("other", 2), "a member with this public key already exists"),
    ] {
        assert_eq!(store.add_member(&member).unwrap_err().to_string(), message);
    }
    let mut unknown = new_member("laptop", 4);
    unknown.controller = name("nowhere");
    assert_eq!(
        store.add_member(&unknown).unwrap_err().to_string(),
        "controller `nowhere' does not exist"
    );
    assert_eq!(store.members().unwrap().len(), 1, "refusals add nothing");
}

#[test]
fn every_change_members_must_learn_of_bumps_the_map_version() {
    let mut store = store();
    let version = |store: &SqliteStore| store.network().unwrap().map_version;
    let start = version(&store);
    store.add_member(&new_member("nas", 2)).unwrap();
    assert_eq!(version(&store), start + 1);
    let lan: IpNet = "192.168.50.0/24".parse().unwrap();
    store.advertise_route(&name("nas"), lan).unwrap();
    assert_eq!(version(&store), start + 1, "an advertised route is not in the map yet");
    store.decide_route(&name("nas"), lan, RouteState::Approved).unwrap();
    assert_eq!(version(&store), start + 2);
    store.decide_route(&name("nas"), lan, RouteState::Approved).unwrap();
    assert_eq!(version(&store), start + 2, "approving again changes nothing");
    store.decide_route(&name("nas"), lan, RouteState::Rejected).unwrap();
    assert_eq!(version(&store), start + 3);
    store.remove_member(&name("nas")).unwrap();
    assert_eq!(version(&store), start + 4);
    assert!(store.routes().unwrap().is_empty(), "a removed member's routes go with it");
}

#[test]
fn routes_are_stored_truncated_and_decided() {
    let mut store = store();
    store.add_member(&new_member("nas", 2)).unwrap();
    let route = store.advertise_route(&name("nas"), "192.168.50.7/24".parse().unwrap()).unwrap();
    assert_eq!(route.prefix.to_string(), "192.168.50.0/24");
    assert_eq!(route.state, RouteState::Advertised);
    let exit = store.advertise_route(&name("nas"), "0.0.0.0/0".parse().unwrap()).unwrap();
    store.decide_route(&name("nas"), exit.prefix, RouteState::Approved).unwrap();
    let states: Vec<_> =
        store.routes().unwrap().into_iter().map(|r| (r.prefix.to_string(), r.state)).collect();
    assert_eq!(
        states,
        [
            ("0.0.0.0/0".to_string(), RouteState::Approved),
            ("192.168.50.0/24".to_string(), RouteState::Advertised)
        ]
    );
    let missing =
        store.decide_route(&name("nas"), "10.0.0.0/8".parse().unwrap(), RouteState::Approved);
    assert_eq!(missing.unwrap_err().to_string(), "route 10.0.0.0/8 of `nas' does not exist");
    let stranger = store.advertise_route(&name("ghost"), "10.0.0.0/8".parse().unwrap());
    assert_eq!(stranger.unwrap_err().to_string(), "member `ghost' does not exist");
}

#[test]
fn invitations_are_used_once_unless_reusable_and_expire() {
    let mut store = store();
    let hash = [7u8; 32];
    let mut next = 0u8;
    let mut invite = |id: &str, reusable| {
        next += 1;
        Invite {
            id: id.to_string(),
            secret_hash: hash,
            controller: name("vps"),
            enrollment_key: [next; 32],
            enrollment_address: format!("fd00::{next}").parse().unwrap(),
            reusable,
            expires_at: 1000,
            uses: 0,
        }
    };
    store.add_invite(&invite("once", false)).unwrap();
    store.add_invite(&invite("many", true)).unwrap();
    let refused = |result: Result<Member>| result.unwrap_err().to_string();

    store.enroll("once", &hash, 999, &new_member("nas", 2)).unwrap();
    assert_eq!(
        refused(store.enroll("once", &hash, 999, &new_member("laptop", 3))),
        "invitation refused: the token was used already"
    );
    store.enroll("many", &hash, 10, &new_member("laptop", 3)).unwrap();
    store.enroll("many", &hash, 10, &new_member("phone", 4)).unwrap();
    assert_eq!(
        refused(store.enroll("many", &hash, 1000, &new_member("tablet", 5))),
        "invitation refused: the token has expired"
    );
    assert_eq!(
        refused(store.enroll("many", &[8; 32], 10, &new_member("tablet", 5))),
        "invitation refused: unknown or forged token"
    );
    assert_eq!(
        refused(store.enroll("nope", &hash, 10, &new_member("tablet", 5))),
        "invitation refused: unknown or forged token"
    );
    // A refused member (its name taken) does not use the invitation up.
    store.add_invite(&invite("fresh", false)).unwrap();
    assert_eq!(
        refused(store.enroll("fresh", &hash, 10, &new_member("nas", 6))),
        "the name `nas' already exists"
    );
    store.enroll("fresh", &hash, 10, &new_member("tablet", 6)).unwrap();
    assert_eq!(store.members().unwrap().len(), 4);
    let uses: Vec<(String, u32)> =
        store.invites().unwrap().into_iter().map(|i| (i.id, i.uses)).collect();
    assert_eq!(uses, [("fresh".to_string(), 1), ("many".to_string(), 2), ("once".to_string(), 1)]);
    store.forget_invite("once").unwrap();
    assert_eq!(store.invites().unwrap().len(), 2);
}

#[test]
fn the_audit_log_keeps_its_order() {
    let mut store = store();
    for (at, event) in [(1, "a"), (2, "b"), (3, "c")] {
        store.audit(at, event).unwrap();
    }
    assert_eq!(store.audit_log(2).unwrap(), [(2, "b".to_string()), (3, "c".to_string())]);
}

#[test]
fn controllers_get_a_56_and_an_ipv4_address_apart_from_the_members() {
    let mut store = store();
    let nas = store.add_member(&new_member("nas", 2)).unwrap();
    let vps2 = store.add_controller(&new_controller("vps2", 3)).unwrap();
    let vps = store.controllers().unwrap().remove(0);
    assert_ne!(vps.prefix, vps2.prefix);
    assert!(network().prefix.net().contains(&vps2.prefix));
    assert_eq!(vps2.prefix.prefix_len(), 56);
    let v4s = [vps.ipv4, vps2.ipv4, nas.ipv4];
    assert!(v4s.iter().all(|a| DEFAULT_IPV4_POOL.contains(a)));
    assert!(v4s[0] != v4s[1] && v4s[1] != v4s[2] && v4s[0] != v4s[2], "{v4s:?}");
    assert_eq!(store.controllers().unwrap()[1], vps2);
    for (refused, message) in [
        (new_controller("nas", 9), "the name `nas' already exists"),
        (new_controller("vps", 9), "the name `vps' already exists"),
        (new_controller("other", 3), "a controller with this key already exists"),
    ] {
        assert_eq!(store.add_controller(&refused).unwrap_err().to_string(), message);
    }
}
