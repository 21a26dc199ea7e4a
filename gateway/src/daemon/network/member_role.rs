//! The interface as a member of a network: enrollment with an invitation, then the saved
//! membership applied (addresses, one peer per controller, routes) and kept current by a long
//! poll at every controller. The saved membership is applied at start before any controller
//! answers: the data plane never waits for one.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Method;
use ipnet::IpNet;

use super::interface::Interface;
use crate::network::api::{self, LONG_POLL, RouteRecord};
use crate::network::controller::{JoinAnswer, JoinRequest};
use crate::network::invite::Invitation;
use crate::network::map::{MapError, SignedMap};
use crate::network::membership::{KEEPALIVE_SECONDS, Membership};
use crate::uapi::{AllowedIpChange, DeviceUpdate, Key, PeerUpdate};
use crate::wg::noise::StaticIdentity;

/// How long an enrollment may take: the first handshake with the controller, then its answer.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a member waits before asking a controller that did not answer again.
const RETRY: Duration = Duration::from_secs(2);

pub struct MemberRole {
    pub interface: Arc<Interface>,
    directory: PathBuf,
    membership: Mutex<Membership>,
    /// One long poll per controller, by name.
    pollers: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

impl Drop for MemberRole {
    fn drop(&mut self) {
        for (_, poller) in self.pollers.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            poller.abort();
        }
    }
}

impl MemberRole {
    /// The membership saved in `directory`, applied, if this interface joined a network.
    pub fn open(
        interface: Arc<Interface>,
        directory: PathBuf,
    ) -> Result<Option<Arc<MemberRole>>, String> {
        let Some(membership) = Membership::load(&directory)? else { return Ok(None) };
        let role = Arc::new(MemberRole {
            interface,
            directory,
            membership: Mutex::new(membership),
            pollers: Mutex::default(),
        });
        role.apply()?;
        Ok(Some(role))
    }

    /// Enrolls with `token` as `name`: the interface's own key (or a new one) stays here; the
    /// enrollment key only carries the request. Undone if anything fails.
    pub async fn join(
        interface: Arc<Interface>,
        directory: PathBuf,
        token: &str,
        name: &str,
    ) -> Result<Arc<MemberRole>, String> {
        let invitation = Invitation::from_token(token).map_err(|e| e.to_string())?;
        let previous_key = interface.private_key();
        let own_key = previous_key.unwrap_or_else(|| {
            let mut bytes = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
            Key(bytes).clamped()
        });
        let own_public = StaticIdentity::from_private_key(own_key.0)
            .public_key()
            .ok_or("the interface's private key has no public key")?;
        let endpoint = resolve(&invitation.controller.endpoint).await?;
        let controller_key = Key::from_base64(&invitation.controller.public_key)
            .map_err(|e| format!("the invitation's controller key: {e}"))?;
        let enrollment_key = Key::from_base64(&invitation.enrollment_key)
            .map_err(|e| format!("the invitation's enrollment key: {e}"))?;
        // On the controller's /56, which its own address shares: the request's route.
        let enrollment_address = IpNet::new(invitation.enrollment_address, 56)
            .map_err(|e| format!("the invitation's enrollment address: {e}"))?;

        let mut controller = PeerUpdate::new(controller_key);
        controller.endpoint = Some(endpoint);
        controller.persistent_keepalive_interval = Some(KEEPALIVE_SECONDS);
        controller.allowed_ips = vec![
            AllowedIpChange::RemoveAll,
            AllowedIpChange::Add(IpNet::from(invitation.controller.api.ip())),
        ];
        let undo = |interface: &Interface| {
            let mut gone = PeerUpdate::new(controller_key);
            gone.remove = true;
            let _ = interface.apply(&DeviceUpdate {
                private_key: Some(previous_key.unwrap_or(Key([0; 32]))),
                peers: vec![gone],
                ..DeviceUpdate::default()
            });
            interface.remove_address(enrollment_address);
        };
        interface.apply(&DeviceUpdate {
            private_key: Some(enrollment_key),
            peers: vec![controller],
            ..DeviceUpdate::default()
        })?;
        let request = JoinRequest {
            invite: invitation.id.clone(),
            secret: invitation.secret.clone(),
            name: name.to_string(),
            public_key: Key(own_public).to_base64(),
        };
        let answer = async {
            interface.ensure_address(enrollment_address)?;
            ask_to_join(&invitation, &request).await
        }
        .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                undo(&interface);
                return Err(e);
            }
        };
        let membership = match Membership::joined(name, &answer) {
            Ok(membership) => membership,
            Err(e) => {
                undo(&interface);
                return Err(e.to_string());
            }
        };
        interface.remove_address(enrollment_address);
        interface.apply(&DeviceUpdate { private_key: Some(own_key), ..DeviceUpdate::default() })?;
        interface.adopt(controller_key.0);
        super::save_own(&directory, &own_key, 0)?;
        membership.save(&directory)?;
        let role = Arc::new(MemberRole {
            interface,
            directory,
            membership: Mutex::new(membership),
            pollers: Mutex::default(),
        });
        role.apply()?;
        Ok(role)
    }

    pub fn membership(&self) -> Membership {
        self.membership.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes the interface what the held map says, and polls every controller it names.
    fn apply(self: &Arc<Self>) -> Result<(), String> {
        let membership = self.membership();
        let held = membership.held().map_err(|e| e.to_string())?;
        let map = held.map();
        let v6 = IpNet::new(membership.ipv6.into(), map.prefix.prefix_len()).expect("a /40");
        let v4 = IpNet::new(membership.ipv4.into(), map.ipv4_pool.prefix_len()).expect("a pool");
        self.interface.ensure_address(v6)?;
        self.interface.ensure_address(v4)?;
        let wanted = membership
            .wanted_peers(|endpoint| endpoint.to_socket_addrs().ok()?.next())
            .map_err(|e| e.to_string())?;
        self.interface.sync_peers(&wanted)?;
        let (network, pool) = (IpNet::from(map.prefix), IpNet::from(map.ipv4_pool));
        let routes: BTreeSet<IpNet> = wanted
            .iter()
            .flat_map(|peer| peer.allowed_ips.iter().copied())
            .filter(|prefix| !network.contains(prefix) && !pool.contains(prefix))
            // A default route through an exit node needs the policy routing `gateway up`
            // sets for one (its endpoint must stay outside the tunnel): not made here.
            .filter(|prefix| prefix.prefix_len() != 0)
            .collect();
        self.interface.sync_routes(&routes)?;
        let mut pollers = self.pollers.lock().unwrap_or_else(|p| p.into_inner());
        let controllers: HashMap<String, SocketAddr> = map
            .controllers
            .iter()
            .map(|c| (c.name.clone(), SocketAddr::new(IpAddr::V6(c.address), api::API_PORT)))
            .collect();
        pollers.retain(|name, poller| {
            let keep = controllers.contains_key(name);
            if !keep {
                poller.abort();
            }
            keep
        });
        for (name, address) in controllers {
            pollers.entry(name).or_insert_with(|| {
                tokio::spawn(poll(Arc::downgrade(self), address)).abort_handle()
            });
        }
        Ok(())
    }

    /// Takes a map a controller sent: saved, then applied; refused (and audited) if it is not
    /// newer or not signed by a controller of the network.
    fn offer(self: &Arc<Self>, signed: &SignedMap) -> Result<(), MapError> {
        {
            let mut membership = self.membership.lock().unwrap_or_else(|p| p.into_inner());
            let mut updated = membership.clone();
            updated.offer(signed)?;
            if let Err(e) = updated.save(&self.directory) {
                tracing::error!("network: the new map is not saved: {e}");
            }
            *membership = updated;
        }
        let membership = self.membership();
        match membership.is_member() {
            Ok(false) => {
                tracing::warn!(target: "audit", "network: `{}' was removed from the network", membership.name)
            }
            _ => tracing::info!("network: map from `{}' taken", signed.signer),
        }
        if let Err(e) = self.apply() {
            tracing::error!("network: the new map is not applied: {e}");
        }
        Ok(())
    }

    /// Asks the controller to carry `prefix` to this member.
    pub async fn advertise(&self, prefix: IpNet) -> Result<RouteRecord, String> {
        let membership = self.membership();
        let held = membership.held().map_err(|e| e.to_string())?;
        let controller = held
            .map()
            .controllers
            .iter()
            .find(|c| {
                held.map()
                    .members
                    .iter()
                    .any(|m| m.name == membership.name && m.controller == c.name)
            })
            .or_else(|| held.map().controllers.first())
            .ok_or("the network has no controller")?;
        let to = SocketAddr::new(IpAddr::V6(controller.address), api::API_PORT);
        let body = serde_json::to_vec(&api::AdvertiseRequest { prefix }).expect("serializes");
        api::call(membership.ipv6.into(), to, Method::POST, "/v1/routes", Some(body), RETRY * 5)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the controller did not answer".to_string())
    }
}

/// Long-polls the controller at `address` for maps newer than the held one, until the role
/// goes.
async fn poll(role: std::sync::Weak<MemberRole>, address: SocketAddr) {
    loop {
        let Some(member) = role.upgrade() else { return };
        let membership = member.membership();
        let version = membership.held().map(|held| held.map().version).unwrap_or(0);
        drop(member);
        let path = format!("/v1/map?after={version}");
        let timeout = LONG_POLL + Duration::from_secs(10);
        match api::call::<SignedMap>(
            membership.ipv6.into(),
            address,
            Method::GET,
            &path,
            None,
            timeout,
        )
        .await
        {
            Ok(Some(signed)) => {
                let Some(member) = role.upgrade() else { return };
                let taken = tokio::task::spawn_blocking(move || member.offer(&signed)).await;
                match taken {
                    Ok(Err(MapError::Stale { .. })) => {}
                    Ok(Err(e)) => tracing::warn!(target: "audit", "network: from {address}: {e}"),
                    _ => {}
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!("network: the controller at {address}: {e}");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Sends the join request until the controller answers (the first handshake may take a
/// moment) or refuses.
async fn ask_to_join(invitation: &Invitation, request: &JoinRequest) -> Result<JoinAnswer, String> {
    let body = serde_json::to_vec(request).expect("a request serializes");
    let deadline = Instant::now() + JOIN_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let result = api::call::<JoinAnswer>(
            invitation.enrollment_address,
            invitation.controller.api,
            Method::POST,
            "/v1/join",
            Some(body.clone()),
            left.min(Duration::from_secs(5)),
        )
        .await;
        match result {
            Ok(Some(answer)) => return Ok(answer),
            Ok(None) => return Err("the controller answered nothing".into()),
            Err(api::CallError::Refused(why)) => return Err(why),
            Err(api::CallError::Failed(why)) if Instant::now() >= deadline => {
                return Err(format!(
                    "controller `{}' ({}) did not answer: {why}",
                    invitation.controller.name, invitation.controller.endpoint
                ));
            }
            Err(api::CallError::Failed(_)) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

async fn resolve(endpoint: &str) -> Result<SocketAddr, String> {
    tokio::net::lookup_host(endpoint)
        .await
        .map_err(|e| format!("cannot resolve the controller's endpoint `{endpoint}': {e}"))?
        .next()
        .ok_or_else(|| format!("the controller's endpoint `{endpoint}' resolves to no address"))
}
