//! The controller on an in-memory store and an interface that records its peers.

use std::collections::BTreeMap;

use rand_core::OsRng;

use super::*;
use crate::network::addressing::DEFAULT_IPV4_POOL;
use crate::network::map::HeldMap;
use crate::network::store::sqlite::SqliteStore;

#[derive(Default)]
struct FakeTunnel {
    peers: BTreeMap<[u8; 32], Vec<IpNet>>,
}

impl Tunnel for FakeTunnel {
    fn set_peer(&mut self, key: [u8; 32], ips: &[IpNet]) -> std::result::Result<(), String> {
        self.peers.insert(key, ips.to_vec());
        Ok(())
    }
    fn remove_peer(&mut self, key: [u8; 32]) -> std::result::Result<(), String> {
        self.peers.remove(&key);
        Ok(())
    }
}

const HOUR: Duration = Duration::from_secs(3600);
const NOW: u64 = 1_800_000_000;

fn name(text: &str) -> Name {
    Name::parse(text).unwrap()
}

fn controller() -> Controller<SqliteStore> {
    let store = SqliteStore::in_memory().unwrap();
    let endpoint = "vps.example.net:51820".to_string();
    Controller::create(
        store,
        name("home"),
        DEFAULT_IPV4_POOL,
        name("vps"),
        [1; 32],
        endpoint,
        &mut OsRng,
    )
    .unwrap()
}

/// What a member sends with `invitation`, as `name` with key `key`.
fn request(invitation: &Invitation, member: &str, key: u8) -> JoinRequest {
    JoinRequest {
        invite: invitation.id.clone(),
        secret: invitation.secret.clone(),
        name: member.to_string(),
        public_key: Key([key; 32]).to_base64(),
    }
}

fn enrollment_public(invitation: &Invitation) -> [u8; 32] {
    let private = Key::from_base64(&invitation.enrollment_key).unwrap();
    StaticIdentity::from_private_key(private.0).public_key().unwrap()
}

#[test]
fn a_member_joins_through_its_invitations_enrollment_peer_and_gets_the_signed_map() {
    let mut controller = controller();
    let mut tunnel = FakeTunnel::default();
    let invitation = controller.invite(NOW, HOUR, false, &mut OsRng, &mut tunnel).unwrap();
    let enrollment = enrollment_public(&invitation);
    assert_eq!(
        tunnel.peers[&enrollment],
        vec![IpNet::from(invitation.enrollment_address)],
        "the enrollment peer may use its one address only"
    );
    assert_eq!(invitation.controller.api.ip(), IpAddr::V6(controller.address().unwrap()));
    let token = invitation.to_token();
    let invitation = Invitation::from_token(&token).unwrap();

    let answer = controller
        .join(invitation.enrollment_address, &request(&invitation, "nas", 7), NOW + 10, &mut tunnel)
        .unwrap();
    assert!(!tunnel.peers.contains_key(&enrollment), "a single-use enrollment peer goes");
    assert_eq!(
        tunnel.peers[&[7; 32]],
        vec![IpNet::from(IpAddr::V6(answer.ipv6)), IpNet::from(IpAddr::V4(answer.ipv4))]
    );
    let own = controller.store().controllers().unwrap().remove(0);
    let signer = ed25519_dalek::VerifyingKey::from_bytes(&own.signing_key).unwrap();
    let held = HeldMap::first(&answer.map, signer).unwrap();
    let nas = held.map().members.iter().find(|m| m.name == "nas").unwrap();
    assert_eq!((nas.ipv6, nas.ipv4), (answer.ipv6, answer.ipv4));
    assert!(own.prefix.contains(&answer.ipv6));
}

#[test]
fn bad_joins_are_refused_change_nothing_and_are_audited() {
    let mut controller = controller();
    let mut tunnel = FakeTunnel::default();
    let invitation = controller.invite(NOW, HOUR, false, &mut OsRng, &mut tunnel).unwrap();
    let from = invitation.enrollment_address;
    let peers_before = tunnel.peers.clone();
    let mut refused = |from: IpAddr, request: JoinRequest, now: u64| {
        controller.join(from, &request, now, &mut tunnel).unwrap_err().to_string()
    };

    let elsewhere: IpAddr = "fd00::99".parse().unwrap();
    assert_eq!(
        refused(elsewhere, request(&invitation, "nas", 7), NOW),
        "invitation refused: unknown or forged token"
    );
    let mut forged = request(&invitation, "nas", 7);
    forged.secret = Key([9; 32]).to_base64();
    assert_eq!(refused(from, forged, NOW), "invitation refused: unknown or forged token");
    let mut unknown = request(&invitation, "nas", 7);
    unknown.invite = "000000".to_string();
    assert_eq!(refused(from, unknown, NOW), "invitation refused: unknown or forged token");
    assert_eq!(
        refused(from, request(&invitation, "nas", 7), NOW + 3600),
        "invitation refused: the token has expired"
    );
    assert_eq!(refused(from, request(&invitation, "vps", 7), NOW), "the name `vps' already exists");
    assert_eq!(
        refused(from, request(&invitation, "n a s", 7), NOW),
        "`n a s' is not a name: only letters, digits and '-' (one DNS label, no dots)"
    );
    assert_eq!(tunnel.peers, peers_before, "refusals leave the interface as it was");
    assert!(controller.store().members().unwrap().is_empty());

    // Used once, then again: the second is refused like a forgery (the invitation is gone).
    controller.join(from, &request(&invitation, "nas", 7), NOW, &mut tunnel).unwrap();
    let again = controller.join(from, &request(&invitation, "laptop", 8), NOW, &mut tunnel);
    assert_eq!(again.unwrap_err().to_string(), "invitation refused: unknown or forged token");

    let log = controller.store().audit_log(20).unwrap();
    let refusals = log.iter().filter(|(_, line)| line.contains("refused")).count();
    assert_eq!(refusals, 7, "{log:#?}");
    assert!(log.iter().any(|(_, line)| line.starts_with("`nas' joined from")));
}

#[test]
fn a_reusable_invitation_enrolls_several_and_expires() {
    let mut controller = controller();
    let mut tunnel = FakeTunnel::default();
    let invitation = controller.invite(NOW, HOUR, true, &mut OsRng, &mut tunnel).unwrap();
    let from = invitation.enrollment_address;
    controller.join(from, &request(&invitation, "nas", 7), NOW, &mut tunnel).unwrap();
    controller.join(from, &request(&invitation, "laptop", 8), NOW, &mut tunnel).unwrap();
    assert!(tunnel.peers.contains_key(&enrollment_public(&invitation)), "it stays for the next");
    assert_eq!(controller.expire_invites(NOW + 3599, &mut tunnel).unwrap(), 0);
    assert_eq!(controller.expire_invites(NOW + 3600, &mut tunnel).unwrap(), 1);
    assert!(!tunnel.peers.contains_key(&enrollment_public(&invitation)));
    assert_eq!(tunnel.peers.len(), 2, "the two members stay");
}

#[test]
fn a_removed_member_loses_its_peer_and_the_map_moves_on() {
    let mut controller = controller();
    let mut tunnel = FakeTunnel::default();
    let invitation = controller.invite(NOW, HOUR, false, &mut OsRng, &mut tunnel).unwrap();
    let answer = controller
        .join(invitation.enrollment_address, &request(&invitation, "nas", 7), NOW, &mut tunnel)
        .unwrap();
    let before: NetworkMap = serde_json::from_str(&answer.map.map).unwrap();
    controller.remove_member(&name("nas"), NOW, &mut tunnel).unwrap();
    assert!(tunnel.peers.is_empty());
    let after: NetworkMap = serde_json::from_str(&controller.signed_map().unwrap().map).unwrap();
    assert!(after.version > before.version);
    assert!(after.members.is_empty());
    assert_eq!(controller.desired_peers(NOW).unwrap(), vec![]);
}

#[test]
fn a_controller_reopens_with_its_own_signing_key_only() {
    let dir = std::env::temp_dir().join(format!("gateway-controller-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("network.db");
    let store = SqliteStore::open(&path).unwrap();
    let endpoint = "vps.example.net:51820".to_string();
    let created = Controller::create(
        store,
        name("home"),
        DEFAULT_IPV4_POOL,
        name("vps"),
        [1; 32],
        endpoint,
        &mut OsRng,
    )
    .unwrap();
    let signing = created.signing.clone();
    drop(created);
    assert!(
        Controller::open(SqliteStore::open(&path).unwrap(), name("vps"), signing.clone()).is_ok()
    );
    let other = SigningKey::generate(&mut OsRng);
    let refused = Controller::open(SqliteStore::open(&path).unwrap(), name("vps"), other);
    assert_eq!(
        refused.err().unwrap().to_string(),
        "the signing key does not match `vps''s in the network's database"
    );
    let stranger = Controller::open(SqliteStore::open(&path).unwrap(), name("vps2"), signing);
    assert_eq!(stranger.err().unwrap().to_string(), "`vps2' is not a controller of this network");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn routes_come_from_members_addresses_only_and_reach_the_map_once_approved() {
    let mut controller = controller();
    let mut tunnel = FakeTunnel::default();
    let invitation = controller.invite(NOW, HOUR, false, &mut OsRng, &mut tunnel).unwrap();
    let answer = controller
        .join(invitation.enrollment_address, &request(&invitation, "nas", 7), NOW, &mut tunnel)
        .unwrap();
    let lan: IpNet = "192.168.50.0/24".parse().unwrap();

    let stranger: IpAddr = "fd00::99".parse().unwrap();
    let refused = controller.advertise_route(stranger, lan, NOW).unwrap_err();
    assert_eq!(refused.to_string(), "fd00::99 is no member's address");
    let host_bits =
        controller.advertise_route(answer.ipv4.into(), "192.168.50.1/24".parse().unwrap(), NOW);
    assert!(host_bits.unwrap_err().to_string().contains("did you mean 192.168.50.0/24"));

    let version = controller
        .signed_map()
        .map(|s| HeldMap::from_authenticated(&s).unwrap().map().version)
        .unwrap();
    let route = controller.advertise_route(answer.ipv6.into(), lan, NOW).unwrap();
    assert_eq!(route.state, RouteState::Advertised);
    let map = HeldMap::from_authenticated(&controller.signed_map().unwrap()).unwrap().map().clone();
    assert_eq!(map.version, version, "an advertised route changes no member's map");
    assert!(map.members[0].routes.is_empty());
    assert!(!tunnel.peers[&[7; 32]].contains(&lan));

    controller.decide_route(&name("nas"), lan, true, NOW, &mut tunnel).unwrap();
    let map = HeldMap::from_authenticated(&controller.signed_map().unwrap()).unwrap().map().clone();
    assert!(map.version > version);
    assert_eq!(map.members[0].routes, vec![lan]);
    assert!(tunnel.peers[&[7; 32]].contains(&lan), "the controller routes the LAN to nas at once");

    controller.decide_route(&name("nas"), lan, false, NOW, &mut tunnel).unwrap();
    assert!(!tunnel.peers[&[7; 32]].contains(&lan), "a withdrawn approval takes the route away");
    let log = controller.store().audit_log(10).unwrap();
    assert!(log.iter().any(|(_, line)| line.contains("fd00::99") && line.contains("refused")));
    assert!(log.iter().any(|(_, line)| line == "route 192.168.50.0/24 of `nas' rejected"));
}
