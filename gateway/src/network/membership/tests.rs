//! A member's side of the controller's tests: join, take newer maps, survive a restart.

use std::collections::BTreeMap;
use std::time::Duration;

use rand_core::OsRng;

use super::*;
use crate::network::controller::{Controller, JoinRequest, Tunnel};
use crate::network::invite::Invitation;
use crate::network::name::Name;
use crate::network::store::sqlite::SqliteStore;

#[derive(Default)]
struct FakeTunnel(BTreeMap<[u8; 32], Vec<ipnet::IpNet>>);

impl Tunnel for FakeTunnel {
    fn set_peer(&mut self, key: [u8; 32], ips: &[ipnet::IpNet]) -> Result<(), String> {
        self.0.insert(key, ips.to_vec());
        Ok(())
    }
    fn remove_peer(&mut self, key: [u8; 32]) -> Result<(), String> {
        self.0.remove(&key);
        Ok(())
    }
}

const NOW: u64 = 1_800_000_000;

fn name(text: &str) -> Name {
    Name::parse(text).unwrap()
}

fn join(
    controller: &mut Controller<SqliteStore>,
    tunnel: &mut FakeTunnel,
    member: &str,
    key: u8,
) -> Membership {
    let invitation =
        controller.invite(NOW, Duration::from_secs(3600), false, &mut OsRng, tunnel).unwrap();
    let invitation = Invitation::from_token(&invitation.to_token()).unwrap();
    let request = JoinRequest {
        invite: invitation.id.clone(),
        secret: invitation.secret.clone(),
        name: member.to_string(),
        public_key: Key([key; 32]).to_base64(),
    };
    let answer = controller.join(invitation.enrollment_address, &request, NOW, tunnel).unwrap();
    Membership::joined(member, &answer).unwrap()
}

#[test]
fn a_member_follows_the_maps_and_restarts_from_its_saved_one() {
    let store = SqliteStore::in_memory().unwrap();
    let endpoint = "127.0.0.1:51820".to_string();
    let mut controller = Controller::create(
        store,
        name("home"),
        crate::network::addressing::DEFAULT_IPV4_POOL,
        name("vps"),
        [1; 32],
        endpoint,
        &mut OsRng,
    )
    .unwrap();
    let mut tunnel = FakeTunnel::default();
    let mut nas = join(&mut controller, &mut tunnel, "nas", 7);
    assert!(nas.is_member().unwrap());
    let resolve = |text: &str| text.parse().ok();
    let peers = nas.wanted_peers(resolve).unwrap();
    assert_eq!(peers.len(), 1, "one peer: the controller");
    assert_eq!(peers[0].endpoint, Some("127.0.0.1:51820".parse().unwrap()));
    assert_eq!(peers[0].persistent_keepalive, KEEPALIVE_SECONDS);

    // A second member joins: nas's next map routes it through the controller.
    let laptop = join(&mut controller, &mut tunnel, "laptop", 8);
    nas.offer(&controller.signed_map().unwrap()).unwrap();
    let ips = &nas.wanted_peers(resolve).unwrap()[0].allowed_ips;
    assert!(ips.contains(&ipnet::IpNet::from(std::net::IpAddr::V6(laptop.ipv6))));
    // The same map again, or an older one, is refused and nothing changes.
    let before = nas.clone();
    assert!(matches!(nas.offer(&before.map), Err(MapError::Stale { .. })));
    assert_eq!(nas, before);

    let dir = std::env::temp_dir().join(format!("gateway-membership-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    nas.save(&dir).unwrap();
    assert_eq!(Membership::load(&dir).unwrap(), Some(nas.clone()));
    let mut damaged = nas.clone();
    damaged.map.map = damaged.map.map.replace("laptop", "mallory");
    std::fs::write(dir.join(FILE_NAME), serde_json::to_string(&damaged).unwrap()).unwrap();
    assert!(Membership::load(&dir).unwrap_err().contains("signature"));
    assert_eq!(Membership::load(&dir.join("nothing")).unwrap(), None);
    let _ = std::fs::remove_dir_all(&dir);

    // Removed: the next map no longer has it.
    controller.remove_member(&name("nas"), NOW, &mut tunnel).unwrap();
    nas.offer(&controller.signed_map().unwrap()).unwrap();
    assert!(!nas.is_member().unwrap());
}
