//! The interface as its network's controller: the [`Controller`] over its SQLite store, its
//! API and DNS server on its tunnel addresses, and its interface kept in step with the store
//! after every change (peers, addresses, routes) while the newest signed map is published to
//! the members' long polls.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::interface::{ControllerTunnel, Interface, Lingering};
use super::unix_now;
use crate::network::api::{self, ControllerApi, MapFeed, RouteRecord};
use crate::network::controller::{Controller, JoinAnswer, JoinRequest};
use crate::network::dns::{self, NetworkNames};
use crate::network::map::{NetworkMap, SignedMap};
use crate::network::name::Name;
use crate::network::peers::WantedPeer;
use crate::network::store::sqlite::SqliteStore;
use crate::network::store::{NetworkStore as _, RouteState};

pub const DATABASE: &str = "network.db";
/// The controller's own secrets: its name and the key its maps are signed with.
pub const IDENTITY: &str = "controller.json";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    name: String,
    /// Ed25519 secret (base64).
    signing_key: String,
}

pub struct ControllerRole {
    pub interface: Arc<Interface>,
    controller: Mutex<Controller<SqliteStore>>,
    maps: watch::Sender<Arc<(u64, SignedMap)>>,
    names: NetworkNames,
    lingering: Lingering,
    /// The API and DNS servers and the periodic sync; aborted with the role.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for ControllerRole {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            task.abort();
        }
    }
}

type Created = (Arc<ControllerRole>, NetworkMap);

impl ControllerRole {
    /// Creates the network in `directory` and starts serving it.
    pub fn create(
        interface: Arc<Interface>,
        directory: &Path,
        network: Name,
        ipv4_pool: ipnet::Ipv4Net,
        me: Name,
        endpoint: String,
        public_key: [u8; 32],
    ) -> Result<Created, String> {
        let database = directory.join(DATABASE);
        if database.exists() {
            return Err(format!("{} already holds a network", database.display()));
        }
        std::fs::create_dir_all(directory)
            .map_err(|e| format!("cannot create {}: {e}", directory.display()))?;
        let store = SqliteStore::open(&database).map_err(|e| e.to_string())?;
        let mut rng = rand_core::OsRng;
        let created = Controller::create(
            store,
            network,
            ipv4_pool,
            me.clone(),
            public_key,
            endpoint,
            &mut rng,
        );
        let controller = match created {
            Ok(controller) => controller,
            Err(e) => {
                let _ = std::fs::remove_file(&database);
                return Err(e.to_string());
            }
        };
        let identity = Identity {
            name: me.to_string(),
            signing_key: crate::uapi::Key(controller.signing_key().to_bytes()).to_base64(),
        };
        let text = serde_json::to_string_pretty(&identity).expect("an identity serializes");
        crate::config::atomic::replace_private_file(&directory.join(IDENTITY), &text)?;
        ControllerRole::start(interface, controller)
    }

    /// The controller saved in `directory`, if there is one.
    pub fn open(interface: Arc<Interface>, directory: &Path) -> Result<Option<Created>, String> {
        let database = directory.join(DATABASE);
        if !database.exists() {
            return Ok(None);
        }
        let path = directory.join(IDENTITY);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let identity: Identity = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a controller's identity: {e}", path.display()))?;
        let secret = crate::uapi::Key::from_base64(&identity.signing_key)
            .map_err(|e| format!("{}: signing_key: {e}", path.display()))?;
        let me = Name::parse(&identity.name).map_err(|e| format!("{}: {e}", path.display()))?;
        let store = SqliteStore::open(&database).map_err(|e| e.to_string())?;
        let controller = Controller::open(store, me, SigningKey::from_bytes(&secret.0))
            .map_err(|e| format!("{}: {e}", database.display()))?;
        ControllerRole::start(interface, controller).map(Some)
    }

    fn start(
        interface: Arc<Interface>,
        mut controller: Controller<SqliteStore>,
    ) -> Result<Created, String> {
        let signed = controller.signed_map().map_err(|e| e.to_string())?;
        let map = crate::network::map::HeldMap::from_authenticated(&signed)
            .map_err(|e| e.to_string())?
            .map()
            .clone();
        let names = NetworkNames::new(&map)?;
        let (maps, _) = watch::channel(Arc::new((map.version, signed)));
        let role = Arc::new(ControllerRole {
            interface,
            controller: Mutex::new(controller),
            maps,
            names,
            lingering: Lingering::default(),
            tasks: Mutex::default(),
        });
        role.sync()?;
        role.interface.enable_forwarding()?;
        role.serve(&map)?;
        Ok((role, map))
    }

    /// Starts the API and DNS servers on the controller's tunnel addresses, and the sync that
    /// expires invitations and lingering enrollment peers.
    fn serve(self: &Arc<Self>, map: &NetworkMap) -> Result<(), String> {
        let own = self.own(map)?;
        let api_address = SocketAddr::new(IpAddr::V6(own.address), api::API_PORT);
        let listener = std::net::TcpListener::bind(api_address)
            .and_then(|listener| {
                listener.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(listener)
            })
            .map_err(|e| format!("the network API cannot listen on {api_address}: {e}"))?;
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let api: Arc<dyn ControllerApi> = Arc::clone(self) as Arc<dyn ControllerApi>;
        tasks.push(tokio::spawn(api::serve(listener, api)).abort_handle());
        for address in [IpAddr::V6(own.address), IpAddr::V4(own.ipv4)] {
            let names = self.names.clone();
            let at = SocketAddr::new(address, 53);
            tasks.push(
                tokio::spawn(async move {
                    match dns::serve(names, at).await {
                        Ok((mut server, _)) => {
                            // Served until the task is aborted with the role.
                            std::future::pending::<()>().await;
                            let _ = server.shutdown_gracefully().await;
                        }
                        Err(e) => tracing::error!("network: DNS cannot listen on {at}: {e}"),
                    }
                })
                .abort_handle(),
            );
        }
        let role = Arc::downgrade(self);
        tasks.push(
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let Some(role) = role.upgrade() else { return };
                    let _ = tokio::task::spawn_blocking(move || {
                        if let Err(e) = role.expire_and_sync() {
                            tracing::warn!("network: {e}");
                        }
                    })
                    .await;
                }
            })
            .abort_handle(),
        );
        Ok(())
    }

    fn own<'m>(
        &self,
        map: &'m NetworkMap,
    ) -> Result<&'m crate::network::map::MapController, String> {
        let me = self.lock().me().to_string();
        map.controllers
            .iter()
            .find(|controller| controller.name == me)
            .ok_or_else(|| format!("`{me}' is no controller of network `{}'", map.network))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Controller<SqliteStore>> {
        self.controller.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expire_and_sync(&self) -> Result<(), String> {
        {
            let mut controller = self.lock();
            let mut tunnel =
                ControllerTunnel { interface: &self.interface, lingering: &self.lingering };
            controller.expire_invites(unix_now(), &mut tunnel).map_err(|e| e.to_string())?;
        }
        self.sync()
    }

    /// Brings the interface and the published map in step with the store: run after every
    /// change (and every few seconds, which also ends lingering enrollment peers).
    pub fn sync(&self) -> Result<(), String> {
        let mut controller = self.lock();
        let signed = controller.signed_map().map_err(|e| e.to_string())?;
        let map = crate::network::map::HeldMap::from_authenticated(&signed)
            .map_err(|e| e.to_string())?
            .map()
            .clone();
        let mut wanted: Vec<WantedPeer> = controller
            .desired_peers(unix_now())
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(public_key, allowed_ips)| WantedPeer {
                public_key,
                allowed_ips,
                endpoint: None,
                persistent_keepalive: 0,
            })
            .collect();
        drop(controller);
        wanted.extend(self.lingering.current());
        let own = self.own(&map)?;
        self.interface.ensure_address(
            IpNet::new(own.address.into(), map.prefix.prefix_len()).expect("a /40"),
        )?;
        self.interface.ensure_address(
            IpNet::new(own.ipv4.into(), map.ipv4_pool.prefix_len()).expect("a pool"),
        )?;
        self.interface.sync_peers(&wanted)?;
        // The network's own addresses are on-link through the addresses above; its members'
        // approved routes need routes of their own. Never a default route: the controller's
        // own traffic keeps its uplink (an exit node serves the members that choose it).
        let routes: BTreeSet<IpNet> = map
            .members
            .iter()
            .flat_map(|m| m.routes.iter().copied())
            .filter(|prefix| prefix.prefix_len() != 0)
            .collect();
        self.interface.sync_routes(&routes)?;
        if self.maps.borrow().0 != map.version {
            self.names.update(&map)?;
            self.maps.send_replace(Arc::new((map.version, signed)));
            tracing::info!("network: map version {} published", map.version);
        }
        Ok(())
    }

    /// Runs `change` on the controller with its hands on the interface, then syncs.
    pub fn change<T>(
        &self,
        change: impl FnOnce(
            &mut Controller<SqliteStore>,
            &mut ControllerTunnel<'_>,
        ) -> Result<T, String>,
    ) -> Result<T, String> {
        let result = {
            let mut controller = self.lock();
            let mut tunnel =
                ControllerTunnel { interface: &self.interface, lingering: &self.lingering };
            change(&mut controller, &mut tunnel)
        };
        if let Err(e) = self.sync() {
            tracing::warn!("network: {e}");
        }
        result
    }

    pub fn map(&self) -> NetworkMap {
        let signed = self.maps.borrow().1.clone();
        crate::network::map::HeldMap::from_authenticated(&signed)
            .expect("the controller's own map verifies")
            .map()
            .clone()
    }

    pub fn me(&self) -> String {
        self.lock().me().to_string()
    }

    pub fn routes(&self) -> Result<Vec<RouteRecord>, String> {
        let routes = self.lock().store().routes().map_err(|e| e.to_string())?;
        Ok(routes.into_iter().map(route_record).collect())
    }
}

pub fn route_record(route: crate::network::store::Route) -> RouteRecord {
    let state = match route.state {
        RouteState::Advertised => "advertised",
        RouteState::Approved => "approved",
        RouteState::Rejected => "rejected",
    };
    RouteRecord { member: route.member.to_string(), prefix: route.prefix, state: state.into() }
}

impl ControllerApi for ControllerRole {
    fn join(&self, from: IpAddr, request: JoinRequest) -> Result<JoinAnswer, String> {
        // The enrollment peer outlives a single-use invitation by a few seconds: the answer
        // goes back through it.
        let invite = self.lock().store().invites().map_err(|e| e.to_string())?;
        if let Some(invite) = invite
            .iter()
            .find(|i| i.id == request.invite && IpAddr::V6(i.enrollment_address) == from)
        {
            self.lingering.keep(invite.enrollment_key, from);
        }
        self.change(|controller, tunnel| {
            controller.join(from, &request, unix_now(), tunnel).map_err(|e| e.to_string())
        })
    }

    fn advertise(&self, from: IpAddr, prefix: IpNet) -> Result<RouteRecord, String> {
        self.change(|controller, _| {
            controller.advertise_route(from, prefix, unix_now()).map_err(|e| e.to_string())
        })
        .map(route_record)
    }

    fn may_read_map(&self, from: IpAddr) -> bool {
        let map = self.map();
        map.members.iter().any(|m| IpAddr::V6(m.ipv6) == from || IpAddr::V4(m.ipv4) == from)
            || map.controllers.iter().any(|c| IpAddr::V6(c.address) == from)
    }

    fn maps(&self) -> MapFeed {
        self.maps.subscribe()
    }
}
