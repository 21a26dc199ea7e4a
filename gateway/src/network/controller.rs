//! The controller: the network's state (in a [`NetworkStore`]) and what changes it —
//! creating the network, inviting, enrolling, removing members, deciding routes — with the
//! peers of the interface it runs on kept in step through [`Tunnel`]. It does no I/O of its
//! own: the daemon serves its API inside the tunnel and hands it the requests, with the
//! address each came from (which WireGuard's cryptokey routing vouches for).
//!
//! Every refusal is also an audit line in the store, as every change is.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use ipnet::IpNet;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

use super::addressing::{NetworkPrefix, controller_address};
use super::invite::{ControllerContact, Invitation, secret_hash};
use super::map::{NetworkMap, SignedMap, peers_for};
use super::name::Name;
use super::store::{
    Invite, Member, MemberKind, Network, NetworkStore, NewController, NewMember, Route, RouteState,
    StoreError,
};
use crate::uapi::Key;
use crate::wg::noise::StaticIdentity;

/// The controller's API port inside the tunnel.
pub const API_PORT: u16 = 7946;

/// What the controller needs of the interface it runs on.
pub trait Tunnel {
    /// Adds the peer, or sets its allowed IPs to exactly these.
    fn set_peer(
        &mut self,
        public_key: [u8; 32],
        allowed_ips: &[IpNet],
    ) -> std::result::Result<(), String>;
    /// Removes the peer (one already gone is not an error).
    fn remove_peer(&mut self, public_key: [u8; 32]) -> std::result::Result<(), String>;
}

/// A member's request to enroll, sent from the enrollment address over the tunnel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub invite: String,
    /// The invitation's secret (base64).
    pub secret: String,
    pub name: String,
    /// The public key the member made for itself (base64).
    pub public_key: String,
}

/// The controller's answer: the member's addresses and the network map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinAnswer {
    pub ipv6: Ipv6Addr,
    pub ipv4: std::net::Ipv4Addr,
    pub map: SignedMap,
}

/// Why a request was refused, or failed: one line.
#[derive(Debug)]
pub enum ControllerError {
    Store(StoreError),
    Refused(String),
    Tunnel(String),
}

impl std::fmt::Display for ControllerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControllerError::Store(e) => e.fmt(f),
            ControllerError::Refused(why) => f.write_str(why),
            ControllerError::Tunnel(e) => write!(f, "the interface: {e}"),
        }
    }
}

impl std::error::Error for ControllerError {}

impl From<StoreError> for ControllerError {
    fn from(e: StoreError) -> Self {
        ControllerError::Store(e)
    }
}

type Result<T> = std::result::Result<T, ControllerError>;

pub struct Controller<S> {
    store: S,
    me: Name,
    signing: SigningKey,
}

impl<S: NetworkStore> Controller<S> {
    /// Creates the network in `store`, with this host its first controller `me`, reachable
    /// at `endpoint`; returns it with its new signing key (the caller keeps it secret).
    pub fn create(
        mut store: S,
        network: Name,
        ipv4_pool: ipnet::Ipv4Net,
        me: Name,
        public_key: [u8; 32],
        endpoint: String,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Controller<S>> {
        let signing = SigningKey::generate(rng);
        store.create_network(&Network {
            name: network,
            prefix: NetworkPrefix::random(rng),
            ipv4_pool,
            map_version: 0,
        })?;
        store.add_controller(&NewController {
            name: me.clone(),
            public_key,
            signing_key: signing.verifying_key().to_bytes(),
            endpoint,
        })?;
        Ok(Controller { store, me, signing })
    }

    /// A controller of the network `store` holds, with its saved signing key.
    pub fn open(store: S, me: Name, signing: SigningKey) -> Result<Controller<S>> {
        let known = store.controllers()?.into_iter().find(|c| c.name == me);
        let Some(known) = known else {
            return Err(ControllerError::Refused(format!(
                "`{me}' is not a controller of this network"
            )));
        };
        if known.signing_key != signing.verifying_key().to_bytes() {
            return Err(ControllerError::Refused(format!(
                "the signing key does not match `{me}''s in the network's database"
            )));
        }
        Ok(Controller { store, me, signing })
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// This controller's name.
    pub fn me(&self) -> &Name {
        &self.me
    }

    /// The key this controller signs maps with (the daemon keeps it, root's alone).
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// This controller's own address in the tunnel (where its API listens).
    pub fn address(&self) -> Result<Ipv6Addr> {
        Ok(controller_address(self.own()?.prefix))
    }

    fn own(&self) -> Result<super::store::Controller> {
        let me = self.store.controllers()?.into_iter().find(|c| c.name == self.me);
        me.ok_or_else(|| ControllerError::Refused(format!("`{}' is no controller now", self.me)))
    }

    /// A new invitation: the enrollment peer is added to the interface before the token
    /// exists, so a member can use it at once.
    pub fn invite(
        &mut self,
        now: u64,
        lifetime: Duration,
        reusable: bool,
        rng: &mut impl CryptoRngCore,
        tunnel: &mut impl Tunnel,
    ) -> Result<Invitation> {
        let network = self.store.network()?;
        let own = self.own()?;
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let mut enrollment_private = [0u8; 32];
        rng.fill_bytes(&mut enrollment_private);
        let enrollment_private = Key(enrollment_private).clamped();
        let enrollment_public = StaticIdentity::from_private_key(enrollment_private.0)
            .public_key()
            .expect("a clamped key has a public key");
        // The enrollment addresses' /64 is `ff` in byte 7 of the controller's /56: members'
        // have 0 there, so the two never meet.
        let mut address = own.prefix.addr().octets();
        address[7] = 0xff;
        rng.fill_bytes(&mut address[8..]);
        let enrollment_address = Ipv6Addr::from(address);
        let mut id = [0u8; 6];
        rng.fill_bytes(&mut id);
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let expires_at = now + lifetime.as_secs();
        tunnel
            .set_peer(enrollment_public, &[IpNet::from(IpAddr::V6(enrollment_address))])
            .map_err(ControllerError::Tunnel)?;
        let stored = self.store.add_invite(&Invite {
            id: id.clone(),
            secret_hash: secret_hash(&secret),
            controller: self.me.clone(),
            enrollment_key: enrollment_public,
            enrollment_address,
            reusable,
            expires_at,
            uses: 0,
        });
        if let Err(e) = stored {
            let _ = tunnel.remove_peer(enrollment_public);
            return Err(e.into());
        }
        let kind = if reusable { "reusable" } else { "single-use" };
        self.audit(now, &format!("invitation {id} ({kind}, until {expires_at}) issued"));
        Ok(Invitation {
            network: network.name.to_string(),
            controller: ControllerContact {
                name: self.me.to_string(),
                public_key: Key(own.public_key).to_base64(),
                endpoint: own.endpoint.clone(),
                api: std::net::SocketAddr::new(controller_address(own.prefix).into(), API_PORT),
            },
            enrollment_key: enrollment_private.to_base64(),
            enrollment_address: enrollment_address.into(),
            id,
            secret: Key(secret).to_base64(),
            expires_at,
        })
    }

    /// Enrolls the member that sent `request` from `from`: refused unless `from` is the
    /// enrollment address of the invitation the request names and the invitation holds.
    /// On success the member's own key replaces the enrollment peer (single-use) or joins it
    /// (reusable), allowed the member's addresses.
    pub fn join(
        &mut self,
        from: IpAddr,
        request: &JoinRequest,
        now: u64,
        tunnel: &mut impl Tunnel,
    ) -> Result<JoinAnswer> {
        let result = self.try_join(from, request, now, tunnel);
        let line = match &result {
            Ok(answer) => format!(
                "`{}' joined from {from} with invitation {}: {} {}",
                request.name, request.invite, answer.ipv6, answer.ipv4
            ),
            Err(e) => format!("join of `{}' from {from} refused: {e}", request.name),
        };
        self.audit(now, &line);
        result
    }

    fn try_join(
        &mut self,
        from: IpAddr,
        request: &JoinRequest,
        now: u64,
        tunnel: &mut impl Tunnel,
    ) -> Result<JoinAnswer> {
        let refused = |why: &str| ControllerError::Refused(format!("invitation refused: {why}"));
        let invite = self.store.invites()?.into_iter().find(|i| i.id == request.invite);
        // The request must come through the invitation's own enrollment peer.
        let Some(invite) = invite.filter(|i| IpAddr::V6(i.enrollment_address) == from) else {
            return Err(refused("unknown or forged token"));
        };
        let name =
            Name::parse(&request.name).map_err(|e| ControllerError::Refused(e.to_string()))?;
        let public_key = Key::from_base64(&request.public_key)
            .map_err(|e| ControllerError::Refused(format!("the member's public key: {e}")))?;
        let secret =
            Key::from_base64(&request.secret).map_err(|_| refused("unknown or forged token"))?;
        let member = self.store.enroll(
            &invite.id,
            &secret_hash(&secret.0),
            now,
            &NewMember {
                name,
                public_key: public_key.0,
                kind: MemberKind::Gateway,
                controller: self.me.clone(),
            },
        )?;
        if !invite.reusable {
            let _ = tunnel.remove_peer(invite.enrollment_key);
            self.store.forget_invite(&invite.id)?;
        }
        tunnel
            .set_peer(member.public_key, &member_ips(&member))
            .map_err(ControllerError::Tunnel)?;
        Ok(JoinAnswer { ipv6: member.ipv6, ipv4: member.ipv4, map: self.signed_map()? })
    }

    /// Removes a member: its peer goes from the interface at once.
    pub fn remove_member(
        &mut self,
        name: &Name,
        now: u64,
        tunnel: &mut impl Tunnel,
    ) -> Result<Member> {
        let member = self.store.remove_member(name)?;
        let _ = tunnel.remove_peer(member.public_key);
        self.audit(now, &format!("`{name}' removed"));
        Ok(member)
    }

    /// A member's request, sent from `from`, that the network carry `prefix` to it: recorded
    /// as advertised, for the operator to approve. Refused unless `from` is a member's own
    /// address (cryptokey routing vouches that only its key sends from there).
    pub fn advertise_route(&mut self, from: IpAddr, prefix: IpNet, now: u64) -> Result<Route> {
        let member = self
            .store
            .members()?
            .into_iter()
            .find(|member| IpAddr::V6(member.ipv6) == from || IpAddr::V4(member.ipv4) == from);
        let result = match &member {
            None => Err(ControllerError::Refused(format!("{from} is no member's address"))),
            Some(_) if prefix != prefix.trunc() => Err(ControllerError::Refused(format!(
                "{prefix} has host bits set (did you mean {}?)",
                prefix.trunc()
            ))),
            Some(member) => self.store.advertise_route(&member.name, prefix).map_err(Into::into),
        };
        let who = member.map_or_else(|| from.to_string(), |m| format!("`{}'", m.name));
        match &result {
            Ok(route) if route.state == RouteState::Advertised => {
                self.audit(now, &format!("{who} advertises {prefix}"))
            }
            Ok(_) => {}
            Err(e) => self.audit(now, &format!("route {prefix} from {who} refused: {e}")),
        }
        result
    }

    /// Approves or rejects a member's advertised route; the controller's own peer for the
    /// member follows at once (the other members through the map).
    pub fn decide_route(
        &mut self,
        member: &Name,
        prefix: IpNet,
        approve: bool,
        now: u64,
        tunnel: &mut impl Tunnel,
    ) -> Result<Route> {
        let state = if approve { RouteState::Approved } else { RouteState::Rejected };
        let route = self.store.decide_route(member, prefix, state)?;
        let verb = if approve { "approved" } else { "rejected" };
        self.audit(now, &format!("route {prefix} of `{member}' {verb}"));
        let holder = self.store.members()?.into_iter().find(|m| &m.name == member);
        if let Some(holder) = holder.filter(|holder| holder.controller == self.me) {
            let mut ips = member_ips(&holder);
            ips.extend(self.approved_routes(&holder.name)?);
            tunnel.set_peer(holder.public_key, &ips).map_err(ControllerError::Tunnel)?;
        }
        Ok(route)
    }

    fn approved_routes(&self, member: &Name) -> Result<Vec<IpNet>> {
        Ok(self
            .store
            .routes()?
            .into_iter()
            .filter(|route| &route.member == member && route.state == RouteState::Approved)
            .map(|route| route.prefix)
            .collect())
    }

    /// Forgets invitations past their expiry, and their enrollment peers.
    pub fn expire_invites(&mut self, now: u64, tunnel: &mut impl Tunnel) -> Result<usize> {
        let expired: Vec<Invite> =
            self.store.invites()?.into_iter().filter(|i| now >= i.expires_at).collect();
        for invite in &expired {
            let _ = tunnel.remove_peer(invite.enrollment_key);
            self.store.forget_invite(&invite.id)?;
        }
        Ok(expired.len())
    }

    /// The current map, signed by this controller.
    pub fn signed_map(&mut self) -> Result<SignedMap> {
        let map = NetworkMap::of(&self.store.snapshot()?);
        Ok(SignedMap::sign(&map, self.me.as_str(), &self.signing))
    }

    /// The peers this controller's interface should have: its members and the other
    /// controllers, as the map says, and the enrollment peers of live invitations.
    pub fn desired_peers(&mut self, now: u64) -> Result<Vec<([u8; 32], Vec<IpNet>)>> {
        let map = NetworkMap::of(&self.store.snapshot()?);
        let mut peers: Vec<([u8; 32], Vec<IpNet>)> = peers_for(&map, self.me.as_str(), None)
            .into_iter()
            .filter_map(|peer| Some((Key::from_base64(&peer.public_key).ok()?.0, peer.allowed_ips)))
            .collect();
        for invite in self.store.invites()? {
            if invite.controller == self.me && now < invite.expires_at {
                peers.push((
                    invite.enrollment_key,
                    vec![IpNet::from(IpAddr::V6(invite.enrollment_address))],
                ));
            }
        }
        Ok(peers)
    }

    fn audit(&mut self, now: u64, line: &str) {
        tracing::info!(target: "audit", "network: {line}");
        if let Err(e) = self.store.audit(now, line) {
            tracing::warn!("network: the audit log: {e}");
        }
    }
}

/// A member's own addresses, as host routes.
fn member_ips(member: &Member) -> Vec<IpNet> {
    vec![IpNet::from(IpAddr::V6(member.ipv6)), IpNet::from(IpAddr::V4(member.ipv4))]
}

#[cfg(test)]
mod tests;
