//! The network map: what the controllers tell every member, at one version. Signed by the
//! controller that sends it (Ed25519), so that a member accepts a map from any controller of
//! its network and knows it is one; versioned, so that it keeps the newest and refuses an
//! older one.
//!
//! Until members reach each other directly (hole punching, issue 14), the network is a hub
//! per controller: a member has one peer per controller, and the controller it enrolled at
//! carries the traffic to the members enrolled there; controllers carry each other's members
//! (they route each other's /56, as clan-core's do). [`peers_for`] turns a map into the peers
//! one machine should have.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::addressing::controller_address;
use super::store::{RouteState, Snapshot};
use crate::uapi::Key;

/// The network at one version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkMap {
    /// The network's name: its DNS domain too.
    pub network: String,
    pub version: u64,
    pub prefix: Ipv6Net,
    pub ipv4_pool: Ipv4Net,
    pub controllers: Vec<MapController>,
    pub members: Vec<MapMember>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapController {
    pub name: String,
    /// WireGuard public key (base64).
    pub public_key: String,
    /// The Ed25519 key its maps are signed with (base64).
    pub signing_key: String,
    /// Where its WireGuard port is (`host:port`).
    pub endpoint: String,
    /// Its /56 and its own address in it.
    pub prefix: Ipv6Net,
    pub address: Ipv6Addr,
    pub ipv4: Ipv4Addr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapMember {
    pub name: String,
    /// WireGuard public key (base64).
    pub public_key: String,
    /// The controller it enrolled at: the one that carries its traffic.
    pub controller: String,
    pub ipv6: Ipv6Addr,
    pub ipv4: Ipv4Addr,
    /// Its approved routes (LANs behind it; 0.0.0.0/0 and ::/0 make it an exit node).
    #[serde(default)]
    pub routes: Vec<IpNet>,
}

impl NetworkMap {
    /// The map of the network as the controller's store holds it: approved routes only.
    pub fn of(snapshot: &Snapshot) -> NetworkMap {
        let key = |bytes: &[u8; 32]| Key(*bytes).to_base64();
        NetworkMap {
            network: snapshot.network.name.to_string(),
            version: snapshot.network.map_version,
            prefix: snapshot.network.prefix.net(),
            ipv4_pool: snapshot.network.ipv4_pool,
            controllers: snapshot
                .controllers
                .iter()
                .map(|controller| MapController {
                    name: controller.name.to_string(),
                    public_key: key(&controller.public_key),
                    signing_key: STANDARD.encode(controller.signing_key),
                    endpoint: controller.endpoint.clone(),
                    prefix: controller.prefix,
                    address: controller_address(controller.prefix),
                    ipv4: controller.ipv4,
                })
                .collect(),
            members: snapshot
                .members
                .iter()
                .map(|member| MapMember {
                    name: member.name.to_string(),
                    public_key: key(&member.public_key),
                    controller: member.controller.to_string(),
                    ipv6: member.ipv6,
                    ipv4: member.ipv4,
                    routes: snapshot
                        .routes
                        .iter()
                        .filter(|route| route.member == member.name)
                        .filter(|route| route.state == RouteState::Approved)
                        .map(|route| route.prefix)
                        .collect(),
                })
                .collect(),
        }
    }
}

/// A map as it travels: the exact JSON signed, who signed it, and the signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedMap {
    pub map: String,
    pub signer: String,
    /// Ed25519 over `map`'s bytes (base64).
    pub signature: String,
}

/// Why a map was not taken: one line (and an audit line where it is received).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapError {
    UnknownSigner(String),
    BadSignature(String),
    Malformed(String),
    /// Not newer than the one held: a replay, or a controller that is behind.
    Stale {
        version: u64,
        held: u64,
    },
    /// Signed for another network.
    OtherNetwork(String),
}

impl std::fmt::Display for MapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MapError::UnknownSigner(who) => {
                write!(
                    f,
                    "network map refused: signed by `{who}', not a controller of this network"
                )
            }
            MapError::BadSignature(who) => {
                write!(f, "network map refused: the signature does not match `{who}''s key")
            }
            MapError::Malformed(why) => write!(f, "network map refused: {why}"),
            MapError::Stale { version, held } => write!(
                f,
                "network map refused: version {version} is not newer than the {held} held"
            ),
            MapError::OtherNetwork(name) => {
                write!(f, "network map refused: it is network `{name}''s")
            }
        }
    }
}

impl std::error::Error for MapError {}

impl SignedMap {
    pub fn sign(map: &NetworkMap, signer: &str, key: &SigningKey) -> SignedMap {
        let json = serde_json::to_string(map).expect("a map serializes");
        let signature = key.sign(json.as_bytes());
        SignedMap {
            map: json,
            signer: signer.to_string(),
            signature: STANDARD.encode(signature.to_bytes()),
        }
    }

    /// The map, if `signer` is one of `trusted` (controller name → its signing key) and the
    /// signature is its.
    pub fn verify(&self, trusted: &BTreeMap<String, VerifyingKey>) -> Result<NetworkMap, MapError> {
        let key = trusted
            .get(&self.signer)
            .ok_or_else(|| MapError::UnknownSigner(self.signer.clone()))?;
        let bad = || MapError::BadSignature(self.signer.clone());
        let bytes: [u8; 64] = STANDARD
            .decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        key.verify(self.map.as_bytes(), &Signature::from_bytes(&bytes)).map_err(|_| bad())?;
        serde_json::from_str(&self.map).map_err(|e| MapError::Malformed(e.to_string()))
    }
}

/// The signing keys of a map's controllers, as the members trust them from then on.
pub fn signing_keys(map: &NetworkMap) -> Result<BTreeMap<String, VerifyingKey>, MapError> {
    map.controllers
        .iter()
        .map(|controller| {
            let bad =
                || MapError::Malformed(format!("controller `{}''s signing key", controller.name));
            let bytes: [u8; 32] = STANDARD
                .decode(&controller.signing_key)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(bad)?;
            let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
            Ok((controller.name.clone(), key))
        })
        .collect()
}

/// The map a member holds, and the rule for taking a newer one: signed by a controller it
/// trusts, for its network, of a higher version. A taken map's controllers are trusted from
/// then on (a controller added to the network is announced by a map its peers sign).
#[derive(Clone, Debug)]
pub struct HeldMap {
    map: NetworkMap,
    trusted: BTreeMap<String, VerifyingKey>,
}

impl HeldMap {
    /// Starts from a map received at enrollment from the controller the invitation named
    /// (`signer`'s key is the one the enrollment's tunnel authenticated).
    pub fn first(signed: &SignedMap, signer_key: VerifyingKey) -> Result<HeldMap, MapError> {
        let trusted = BTreeMap::from([(signed.signer.clone(), signer_key)]);
        let map = signed.verify(&trusted)?;
        let trusted = signing_keys(&map)?;
        Ok(HeldMap { map, trusted })
    }

    /// Starts from a map that came over a channel already authenticated as its signer's (the
    /// enrollment's answer, through the tunnel to the controller the invitation named), or
    /// from the member's own saved copy: the signer's key is the map's own entry for it, and
    /// the signature is checked against that (the map arrived whole).
    pub fn from_authenticated(signed: &SignedMap) -> Result<HeldMap, MapError> {
        let unverified: NetworkMap =
            serde_json::from_str(&signed.map).map_err(|e| MapError::Malformed(e.to_string()))?;
        let keys = signing_keys(&unverified)?;
        let key = keys
            .get(&signed.signer)
            .ok_or_else(|| MapError::UnknownSigner(signed.signer.clone()))?;
        HeldMap::first(signed, *key)
    }

    pub fn map(&self) -> &NetworkMap {
        &self.map
    }

    /// Takes `signed` if it is newer; the reason if not, and the held map stays.
    pub fn offer(&mut self, signed: &SignedMap) -> Result<&NetworkMap, MapError> {
        let map = signed.verify(&self.trusted)?;
        if map.network != self.map.network {
            return Err(MapError::OtherNetwork(map.network));
        }
        if map.version <= self.map.version {
            return Err(MapError::Stale { version: map.version, held: self.map.version });
        }
        self.trusted = signing_keys(&map)?;
        self.map = map;
        Ok(&self.map)
    }
}

/// One peer a machine should have, as the map says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredPeer {
    /// The peer's name in the network (a controller's or a member's).
    pub name: String,
    pub public_key: String,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<IpNet>,
}

/// The peers `me` (a member's or a controller's name) should have. A member: one per
/// controller, each allowed that controller's address and the members enrolled there (their
/// addresses and approved routes; default routes only of `exit_node`, if it is one of them).
/// A controller: its members, and the other controllers with theirs.
pub fn peers_for(map: &NetworkMap, me: &str, exit_node: Option<&str>) -> Vec<DesiredPeer> {
    let host = |address: IpAddr| IpNet::from(address);
    let carried_by = |controller: &str, except: &str| -> Vec<IpNet> {
        map.members
            .iter()
            .filter(|member| member.controller == controller && member.name != except)
            .flat_map(|member| {
                let routes = member.routes.iter().copied().filter(|route| {
                    route.prefix_len() != 0 || exit_node == Some(member.name.as_str())
                });
                [host(member.ipv6.into()), host(member.ipv4.into())].into_iter().chain(routes)
            })
            .collect()
    };
    let controller_peer = |controller: &MapController, except: &str| DesiredPeer {
        name: controller.name.clone(),
        public_key: controller.public_key.clone(),
        endpoint: Some(controller.endpoint.clone()),
        allowed_ips: [host(controller.address.into()), host(controller.ipv4.into())]
            .into_iter()
            .chain(carried_by(&controller.name, except))
            .collect(),
    };
    if map.controllers.iter().any(|controller| controller.name == me) {
        let members =
            map.members.iter().filter(|member| member.controller == me).map(|member| DesiredPeer {
                name: member.name.clone(),
                public_key: member.public_key.clone(),
                endpoint: None,
                allowed_ips: [host(member.ipv6.into()), host(member.ipv4.into())]
                    .into_iter()
                    .chain(member.routes.iter().copied())
                    .collect(),
            });
        let others = map
            .controllers
            .iter()
            .filter(|controller| controller.name != me)
            .map(|controller| controller_peer(controller, me));
        return members.chain(others).collect();
    }
    map.controllers.iter().map(|controller| controller_peer(controller, me)).collect()
}

#[cfg(test)]
mod tests;
