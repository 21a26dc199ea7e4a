//! The controller's state: the network, its controllers and members with their addresses,
//! invitations, routes, the map's version and an audit log. One interface, [`NetworkStore`],
//! so that the state can live elsewhere than in SQLite (PostgreSQL, for operators who want
//! it) without the controller changing; [`sqlite::SqliteStore`] is the default.
//!
//! Every change that the members must learn of bumps the map's version in the same
//! transaction, so a version names exactly one state of the network.

pub mod migrations;
pub mod sqlite;

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::addressing::{AllocationError, NetworkPrefix};
use super::name::Name;

/// The network itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    pub name: Name,
    pub prefix: NetworkPrefix,
    pub ipv4_pool: Ipv4Net,
    /// Bumped by every change members must learn of.
    pub map_version: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Controller {
    pub name: Name,
    /// Its WireGuard public key.
    pub public_key: [u8; 32],
    /// The Ed25519 public key its network maps are signed with.
    pub signing_key: [u8; 32],
    /// Where members reach its WireGuard port (`host:port`).
    pub endpoint: String,
    /// Its /56 of the network's /40 (its own address is `::1` there).
    pub prefix: Ipv6Net,
    pub ipv4: Ipv4Addr,
}

/// What a new controller brings: the rest (its /56, its IPv4 address) the store allocates.
#[derive(Clone, Debug)]
pub struct NewController {
    pub name: Name,
    pub public_key: [u8; 32],
    pub signing_key: [u8; 32],
    pub endpoint: String,
}

/// What kind of machine a member is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberKind {
    /// A gatewayd: it receives the network map and may advertise routes.
    Gateway,
    /// A stock WireGuard client (a phone): configured once, from an exported file.
    Client,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: Name,
    pub public_key: [u8; 32],
    pub kind: MemberKind,
    /// The controller it enrolled at (its address is in that controller's /56).
    pub controller: Name,
    pub ipv6: Ipv6Addr,
    pub ipv4: Ipv4Addr,
}

/// A route's standing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteState {
    Advertised,
    Approved,
    Rejected,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub member: Name,
    pub prefix: IpNet,
    pub state: RouteState,
}

/// An invitation as the controller keeps it: never the secret itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    pub id: String,
    /// BLAKE2s-256 of the secret the token carries.
    pub secret_hash: [u8; 32],
    /// The controller that issued it, whose interface has the enrollment peer.
    pub controller: Name,
    /// The public half of the one-time key the token carries (see `invite`).
    pub enrollment_key: [u8; 32],
    /// The one address the enrollment key may use.
    pub enrollment_address: Ipv6Addr,
    pub reusable: bool,
    /// Unix seconds.
    pub expires_at: u64,
    /// Members enrolled with it.
    pub uses: u32,
}

/// Why a change was refused, or the store failed: one line each.
#[derive(Debug)]
pub enum StoreError {
    /// The network does not exist yet (`gateway network create`).
    NoNetwork,
    AlreadyExists(String),
    NotFound(String),
    Allocation(AllocationError),
    /// An invitation that cannot be used: expired, used up, unknown.
    Invite(String),
    /// The database file or a query failed.
    Database(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::NoNetwork => {
                f.write_str("no network here yet: create one with `gateway network create NAME`")
            }
            StoreError::AlreadyExists(what) => write!(f, "{what} already exists"),
            StoreError::NotFound(what) => write!(f, "{what} does not exist"),
            StoreError::Allocation(e) => e.fmt(f),
            StoreError::Invite(why) => write!(f, "invitation refused: {why}"),
            StoreError::Database(e) => write!(f, "the network's database: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What a new member brings: the rest (addresses) the store allocates.
#[derive(Clone, Debug)]
pub struct NewMember {
    pub name: Name,
    pub public_key: [u8; 32],
    pub kind: MemberKind,
    pub controller: Name,
}

/// The whole network at one version, read in one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub network: Network,
    pub controllers: Vec<Controller>,
    pub members: Vec<Member>,
    pub routes: Vec<Route>,
}

/// The controller's state, wherever it lives. Every method is one transaction.
pub trait NetworkStore {
    /// Creates the network (once): its prefix and IPv4 pool are fixed from then on.
    fn create_network(&mut self, network: &Network) -> Result<()>;
    fn network(&self) -> Result<Network>;
    /// Everything the network map is made of, consistent with its version.
    fn snapshot(&mut self) -> Result<Snapshot>;

    /// Adds a controller and gives it a /56 and an IPv4 address derived from its name;
    /// bumps the map.
    fn add_controller(&mut self, controller: &NewController) -> Result<Controller>;
    fn controllers(&self) -> Result<Vec<Controller>>;

    /// Adds a member with addresses derived from its name, collision-checked; bumps the map.
    fn add_member(&mut self, member: &NewMember) -> Result<Member>;
    /// Removes a member and its routes; bumps the map.
    fn remove_member(&mut self, name: &Name) -> Result<Member>;
    fn members(&self) -> Result<Vec<Member>>;

    /// Records an invitation.
    fn add_invite(&mut self, invite: &Invite) -> Result<()>;
    /// Every invitation still known (used single-use ones included until forgotten).
    fn invites(&self) -> Result<Vec<Invite>>;
    /// Forgets an invitation (expired, or used up).
    fn forget_invite(&mut self, id: &str) -> Result<()>;
    /// Uses an invitation for `member`, in the transaction that adds it: refused if the
    /// invitation is unknown, expired at `now` (Unix seconds), or single-use and used.
    fn enroll(
        &mut self,
        invite_id: &str,
        secret_hash: &[u8; 32],
        now: u64,
        member: &NewMember,
    ) -> Result<Member>;

    /// A member advertises a route (it stays `Advertised` until approved).
    fn advertise_route(&mut self, member: &Name, prefix: IpNet) -> Result<Route>;
    /// Approves or rejects an advertised route; bumps the map when approval changes.
    fn decide_route(&mut self, member: &Name, prefix: IpNet, state: RouteState) -> Result<Route>;
    fn routes(&self) -> Result<Vec<Route>>;

    /// Appends a line to the audit log (refusals included), with the time (Unix seconds).
    fn audit(&mut self, now: u64, event: &str) -> Result<()>;
    /// The last `count` audit lines, oldest first.
    fn audit_log(&self, count: usize) -> Result<Vec<(u64, String)>>;
}
