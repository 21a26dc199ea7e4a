//! The daemon's side of one network (`gateway network …`, `gateway route …`): the interface's
//! role in it — none, its controller ([`controller_role`]) or a member ([`member_role`]) —
//! resumed from the state directory at start and changed by requests on the control socket.
//!
//! What a role needs to come back after a restart is in the interface's state directory:
//! `interface.json` (its private key and, for a controller, the listen port members dial),
//! and `network.db` with `controller.json` (a controller) or `network.json` (a member). All
//! are written atomically and readable by root alone.

pub mod controller_role;
pub mod interface;
pub mod member_role;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use self::controller_role::ControllerRole;
use self::interface::Interface;
use self::member_role::MemberRole;
use crate::daemon::control::Control;
use crate::network::addressing::DEFAULT_IPV4_POOL;
use crate::network::api::RouteRecord;
use crate::network::map::NetworkMap;
use crate::network::name::Name;
use crate::uapi::{DeviceUpdate, Key, UapiHandler as _};
use crate::wg::noise::StaticIdentity;

/// The interface's own settings a network role keeps.
const OWN_FILE: &str = "interface.json";

/// A request about the network, on the control socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum NetworkRequest {
    Create {
        network: String,
        name: String,
        endpoint: String,
        #[serde(default)]
        ipv4_pool: Option<Ipv4Net>,
    },
    Invite {
        reusable: bool,
        expires_seconds: u64,
    },
    Join {
        token: String,
        name: String,
    },
    Members,
    Remove {
        name: String,
    },
    Status,
    Advertise {
        prefix: IpNet,
    },
    Routes,
    DecideRoute {
        member: String,
        prefix: IpNet,
        approve: bool,
    },
}

#[derive(Clone)]
enum Role {
    None,
    Controller(Arc<ControllerRole>),
    Member(Arc<MemberRole>),
}

pub struct NetworkService {
    interface: Arc<Interface>,
    directory: PathBuf,
    role: Mutex<Role>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnInterface {
    /// base64, as `wg genkey` prints it.
    private_key: String,
    /// 0: any (a member's); a controller's is in every member's map.
    #[serde(default)]
    listen_port: u16,
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn save_own(directory: &Path, key: &Key, listen_port: u16) -> Result<(), String> {
    let own = OwnInterface { private_key: key.to_base64(), listen_port };
    std::fs::create_dir_all(directory)
        .map_err(|e| format!("cannot create {}: {e}", directory.display()))?;
    let text = serde_json::to_string_pretty(&own).expect("serializes");
    crate::config::atomic::replace_private_file(&directory.join(OWN_FILE), &text)
}

fn load_own(directory: &Path) -> Result<Option<DeviceUpdate>, String> {
    let path = directory.join(OWN_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let own: OwnInterface =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let key = Key::from_base64(&own.private_key)
        .map_err(|e| format!("{}: private_key: {e}", path.display()))?;
    Ok(Some(DeviceUpdate {
        private_key: Some(key),
        listen_port: (own.listen_port != 0).then_some(own.listen_port),
        ..DeviceUpdate::default()
    }))
}

impl NetworkService {
    /// The interface's role as saved in `directory`, resumed: a member's peers and addresses
    /// are back before any controller answers.
    pub fn start(interface: &str, control: Arc<Control>, directory: PathBuf) -> NetworkService {
        let interface = Arc::new(Interface::new(interface.to_string(), control));
        let service = NetworkService { interface, directory, role: Mutex::new(Role::None) };
        match service.resume() {
            Ok(Role::None) => {}
            Ok(role) => *service.lock() = role,
            Err(e) => tracing::error!("network: cannot resume the interface's network role: {e}"),
        }
        service
    }

    fn resume(&self) -> Result<Role, String> {
        let Some(own) = load_own(&self.directory)? else { return Ok(Role::None) };
        self.interface.control.apply(&own).map_err(|e| e.to_string())?;
        let interface = Arc::clone(&self.interface);
        if let Some((role, map)) = ControllerRole::open(Arc::clone(&interface), &self.directory)? {
            tracing::info!(
                "network: controller of `{}' (map version {})",
                map.network,
                map.version
            );
            return Ok(Role::Controller(role));
        }
        if let Some(role) = MemberRole::open(interface, self.directory.clone())? {
            let membership = role.membership();
            tracing::info!("network: member `{}' (from the saved map)", membership.name);
            return Ok(Role::Member(role));
        }
        Ok(Role::None)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Role> {
        self.role.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn controller(&self) -> Result<Arc<ControllerRole>, String> {
        match &*self.lock() {
            Role::Controller(role) => Ok(Arc::clone(role)),
            Role::Member(_) => {
                Err(format!("{} is a member, not its network's controller", self.interface.name))
            }
            Role::None => Err(format!(
                "{} is in no network: `gateway network create` or `join` first",
                self.interface.name
            )),
        }
    }

    fn member(&self) -> Result<Arc<MemberRole>, String> {
        match &*self.lock() {
            Role::Member(role) => Ok(Arc::clone(role)),
            Role::Controller(_) => {
                Err(format!("{} is its network's controller, not a member", self.interface.name))
            }
            Role::None => Err(format!(
                "{} is in no network: `gateway network join` first",
                self.interface.name
            )),
        }
    }

    fn unclaimed(&self) -> Result<(), String> {
        match &*self.lock() {
            Role::None => Ok(()),
            Role::Controller(role) => Err(format!(
                "{} is already the controller of `{}'",
                self.interface.name,
                role.map().network
            )),
            Role::Member(role) => Err(format!(
                "{} is already `{}' in a network",
                self.interface.name,
                role.membership().name
            )),
        }
    }

    /// Answers `request`: a JSON value, or the one line of why not.
    pub async fn handle(self: &Arc<Self>, request: NetworkRequest) -> Result<Value, String> {
        match request {
            NetworkRequest::Join { token, name } => {
                self.unclaimed()?;
                Name::parse(&name).map_err(|e| e.to_string())?;
                let role = MemberRole::join(
                    Arc::clone(&self.interface),
                    self.directory.clone(),
                    token.trim(),
                    &name,
                )
                .await?;
                let membership = role.membership();
                let network = membership.held().map_err(|e| e.to_string())?.map().network.clone();
                *self.lock() = Role::Member(role);
                Ok(json!({
                    "network": network,
                    "name": membership.name,
                    "ipv6": membership.ipv6,
                    "ipv4": membership.ipv4,
                }))
            }
            NetworkRequest::Advertise { prefix } => {
                let route = self.member()?.advertise(prefix).await?;
                Ok(serde_json::to_value(route).expect("serializes"))
            }
            request => {
                let service = Arc::clone(self);
                tokio::task::spawn_blocking(move || service.handle_blocking(request))
                    .await
                    .map_err(|e| format!("the request failed: {e}"))?
            }
        }
    }

    fn handle_blocking(&self, request: NetworkRequest) -> Result<Value, String> {
        match request {
            NetworkRequest::Create { network, name, endpoint, ipv4_pool } => {
                self.create(&network, &name, endpoint, ipv4_pool.unwrap_or(DEFAULT_IPV4_POOL))
            }
            NetworkRequest::Invite { reusable, expires_seconds } => {
                let lifetime = Duration::from_secs(expires_seconds);
                let invitation = self.controller()?.change(|controller, tunnel| {
                    let mut rng = rand_core::OsRng;
                    controller
                        .invite(unix_now(), lifetime, reusable, &mut rng, tunnel)
                        .map_err(|e| e.to_string())
                })?;
                Ok(json!({ "token": invitation.to_token(), "expires_at": invitation.expires_at }))
            }
            NetworkRequest::Members => Ok(members(&self.controller()?.map())),
            NetworkRequest::Remove { name } => {
                let name = Name::parse(&name).map_err(|e| e.to_string())?;
                let removed = self.controller()?.change(|controller, tunnel| {
                    controller.remove_member(&name, unix_now(), tunnel).map_err(|e| e.to_string())
                })?;
                Ok(json!({ "removed": removed.name.to_string() }))
            }
            NetworkRequest::Status => Ok(self.status()),
            NetworkRequest::Routes => {
                let routes: Vec<RouteRecord> = self.controller()?.routes()?;
                Ok(serde_json::to_value(routes).expect("serializes"))
            }
            NetworkRequest::DecideRoute { member, prefix, approve } => {
                let member = Name::parse(&member).map_err(|e| e.to_string())?;
                let route = self.controller()?.change(|controller, tunnel| {
                    controller
                        .decide_route(&member, prefix, approve, unix_now(), tunnel)
                        .map_err(|e| e.to_string())
                })?;
                Ok(serde_json::to_value(controller_role::route_record(route)).expect("serializes"))
            }
            NetworkRequest::Join { .. } | NetworkRequest::Advertise { .. } => {
                unreachable!("answered on the runtime")
            }
        }
    }

    fn create(
        &self,
        network: &str,
        name: &str,
        endpoint: String,
        ipv4_pool: Ipv4Net,
    ) -> Result<Value, String> {
        self.unclaimed()?;
        let network = Name::parse(network).map_err(|e| format!("the network's name: {e}"))?;
        let me = Name::parse(name).map_err(|e| format!("the controller's name: {e}"))?;
        let port = endpoint_port(&endpoint)?;
        let snapshot = self.interface.control.get();
        if snapshot.listen_port != port {
            return Err(format!(
                "the endpoint's port {port} is not {}'s listen port {} (set it first: `wg set {} listen-port {port}`)",
                self.interface.name, snapshot.listen_port, self.interface.name
            ));
        }
        let key = snapshot.private_key.unwrap_or_else(|| {
            let mut bytes = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
            Key(bytes).clamped()
        });
        let public_key = StaticIdentity::from_private_key(key.0)
            .public_key()
            .ok_or("the interface's private key has no public key")?;
        self.interface
            .apply(&DeviceUpdate { private_key: Some(key), ..DeviceUpdate::default() })?;
        save_own(&self.directory, &key, port)?;
        let (role, map) = ControllerRole::create(
            Arc::clone(&self.interface),
            &self.directory,
            network,
            ipv4_pool,
            me.clone(),
            endpoint,
            public_key,
        )?;
        *self.lock() = Role::Controller(role);
        let own = map.controllers.iter().find(|c| c.name == me.as_str()).expect("just created");
        Ok(json!({
            "network": map.network,
            "prefix": map.prefix,
            "ipv4_pool": map.ipv4_pool,
            "controller": { "name": own.name, "ipv6": own.address, "ipv4": own.ipv4 },
        }))
    }

    fn status(&self) -> Value {
        match &*self.lock() {
            Role::None => json!({ "role": "none" }),
            Role::Controller(role) => {
                let map = role.map();
                let me = role.me();
                let own = map.controllers.iter().find(|c| c.name == me);
                json!({
                    "role": "controller",
                    "network": map.network,
                    "name": me,
                    "prefix": map.prefix,
                    "ipv4_pool": map.ipv4_pool,
                    "ipv6": own.map(|c| IpAddr::V6(c.address)),
                    "ipv4": own.map(|c| IpAddr::V4(c.ipv4)),
                    "map_version": map.version,
                    "members": map.members.len(),
                })
            }
            Role::Member(role) => {
                let membership = role.membership();
                let held = membership.held().ok();
                let map = held.as_ref().map(|held| held.map());
                json!({
                    "role": "member",
                    "network": map.map(|m| m.network.clone()),
                    "name": membership.name,
                    "prefix": map.map(|m| m.prefix),
                    "ipv4_pool": map.map(|m| m.ipv4_pool),
                    "ipv6": membership.ipv6,
                    "ipv4": membership.ipv4,
                    "map_version": map.map(|m| m.version),
                    "controllers": map.map(|m| m.controllers.iter().map(|c| c.name.clone()).collect::<Vec<_>>()),
                })
            }
        }
    }
}

/// The port of `host:port` (`[v6]:port`).
fn endpoint_port(endpoint: &str) -> Result<u16, String> {
    endpoint
        .rsplit_once(':')
        .and_then(|(host, port)| (!host.is_empty()).then_some(port)?.parse().ok())
        .filter(|port| *port != 0)
        .ok_or_else(|| format!("the endpoint `{endpoint}' is not host:port"))
}

/// The members as `gateway network members --json` lists them.
fn members(map: &NetworkMap) -> Value {
    let members: Vec<Value> = map
        .members
        .iter()
        .map(|member| {
            json!({
                "name": member.name,
                "public_key": member.public_key,
                "ipv6": member.ipv6,
                "ipv4": member.ipv4,
                "controller": member.controller,
                "routes": member.routes,
            })
        })
        .collect();
    Value::Array(members)
}
