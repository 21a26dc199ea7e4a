//! [`NetworkStore`] in an SQLite file: WAL journal (readers never wait for the writer, a
//! crash loses at most the transaction in flight), foreign keys on, the schema brought up to
//! date on open ([`super::migrations`]).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnet::IpNet;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::migrations::MIGRATIONS;
use super::{
    Controller, Invite, Member, MemberKind, Network, NetworkStore, NewController, NewMember,
    Result, Route, RouteState, Snapshot, StoreError,
};
use crate::network::addressing::{self, NetworkPrefix};
use crate::network::name::Name;

pub struct SqliteStore {
    connection: Connection,
}

fn database(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if need be) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let connection = Connection::open(path)
            .map_err(|e| StoreError::Database(format!("{}: {e}", path.display())))?;
        SqliteStore::with_connection(connection)
    }

    /// A database in memory, for tests.
    pub fn in_memory() -> Result<SqliteStore> {
        SqliteStore::with_connection(Connection::open_in_memory().map_err(database)?)
    }

    fn with_connection(mut connection: Connection) -> Result<SqliteStore> {
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .and_then(|()| connection.pragma_update(None, "foreign_keys", true))
            .and_then(|()| connection.pragma_update(None, "synchronous", "NORMAL"))
            .map_err(database)?;
        migrate(&mut connection)?;
        Ok(SqliteStore { connection })
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<usize> {
        schema_version(&self.connection)
    }

    fn write(&mut self) -> Result<Transaction<'_>> {
        self.connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(database)
    }
}

fn schema_version(connection: &Connection) -> Result<usize> {
    let version: i64 =
        connection.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(database)?;
    Ok(version as usize)
}

fn migrate(connection: &mut Connection) -> Result<()> {
    let at = schema_version(connection)?;
    if at > MIGRATIONS.len() {
        return Err(StoreError::Database(format!(
            "the database is at schema version {at}, newer than this gateway knows ({}): \
             upgrade gateway",
            MIGRATIONS.len()
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(at) {
        let transaction = connection.transaction().map_err(database)?;
        transaction.execute_batch(migration).map_err(database)?;
        transaction.pragma_update(None, "user_version", index as i64 + 1).map_err(database)?;
        transaction.commit().map_err(database)?;
    }
    Ok(())
}

fn bump_map(transaction: &Transaction<'_>) -> Result<()> {
    transaction
        .execute("UPDATE network SET map_version = map_version + 1 WHERE id = 1", [])
        .map_err(database)?;
    Ok(())
}

fn read_network(connection: &Connection) -> Result<Network> {
    let row = connection
        .query_row(
            "SELECT name, ula_prefix, ipv4_pool, map_version FROM network WHERE id = 1",
            [],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            },
        )
        .optional()
        .map_err(database)?;
    let (name, prefix, pool, version) = row.ok_or(StoreError::NoNetwork)?;
    let corrupt = |what: &str| StoreError::Database(format!("stored {what} is not valid"));
    Ok(Network {
        name: Name::parse(&name).map_err(|_| corrupt("network name"))?,
        prefix: NetworkPrefix::parse(&prefix).map_err(StoreError::Allocation)?,
        ipv4_pool: pool.parse().map_err(|_| corrupt("IPv4 pool"))?,
        map_version: version as u64,
    })
}

fn read_controllers(connection: &Connection) -> Result<Vec<Controller>> {
    let network = read_network(connection)?;
    let mut statement = connection
        .prepare(
            "SELECT name, public_key, signing_key, endpoint, subnet, ipv4 FROM controllers
             ORDER BY name",
        )
        .map_err(database)?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                key(row.get(1)?)?,
                key(row.get(2)?)?,
                row.get::<_, String>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, String>(5)?,
            ))
        })
        .map_err(database)?;
    let corrupt =
        |what: &str| StoreError::Database(format!("a stored controller's {what} is not valid"));
    let mut controllers = Vec::new();
    for row in rows {
        let (name, public_key, signing_key, endpoint, subnet, ipv4) = row.map_err(database)?;
        controllers.push(Controller {
            name: Name::parse(&name).map_err(|_| corrupt("name"))?,
            public_key,
            signing_key,
            endpoint,
            prefix: network.prefix.controller_prefix(subnet as u16),
            ipv4: ipv4.parse().map_err(|_| corrupt("IPv4 address"))?,
        });
    }
    Ok(controllers)
}

fn key(blob: Vec<u8>) -> rusqlite::Result<[u8; 32]> {
    blob.try_into().map_err(|_| rusqlite::Error::InvalidQuery)
}

fn kind_text(kind: MemberKind) -> &'static str {
    match kind {
        MemberKind::Gateway => "gateway",
        MemberKind::Client => "client",
    }
}

fn state_text(state: RouteState) -> &'static str {
    match state {
        RouteState::Advertised => "advertised",
        RouteState::Approved => "approved",
        RouteState::Rejected => "rejected",
    }
}

fn read_members(connection: &Connection, only: Option<&Name>) -> Result<Vec<Member>> {
    let mut statement = connection
        .prepare(
            "SELECT name, public_key, kind, controller, ipv6, ipv4 FROM members
             WHERE ?1 IS NULL OR name = ?1 ORDER BY name",
        )
        .map_err(database)?;
    let rows = statement
        .query_map(params![only.map(Name::as_str)], |row| {
            Ok((
                row.get::<_, String>(0)?,
                key(row.get(1)?)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, String>(5)?,
            ))
        })
        .map_err(database)?;
    let corrupt =
        |what: &str| StoreError::Database(format!("a stored member's {what} is not valid"));
    let mut members = Vec::new();
    for row in rows {
        let (name, public_key, kind, controller, ipv6, ipv4) = row.map_err(database)?;
        members.push(Member {
            name: Name::parse(&name).map_err(|_| corrupt("name"))?,
            public_key,
            kind: if kind == "client" { MemberKind::Client } else { MemberKind::Gateway },
            controller: Name::parse(&controller).map_err(|_| corrupt("controller"))?,
            ipv6: ipv6.parse::<Ipv6Addr>().map_err(|_| corrupt("IPv6 address"))?,
            ipv4: ipv4.parse::<Ipv4Addr>().map_err(|_| corrupt("IPv4 address"))?,
        });
    }
    Ok(members)
}

fn exists(transaction: &Transaction<'_>, query: &str, value: &dyn rusqlite::ToSql) -> bool {
    transaction.query_row(query, [value], |_| Ok(())).optional().ok().flatten().is_some()
}

/// An IPv4 address from the pool for `name`, checked against every member's and
/// controller's.
fn allocate_v4(transaction: &Transaction<'_>, network: &Network, name: &Name) -> Result<Ipv4Addr> {
    let taken = |address: Ipv4Addr| {
        let text = address.to_string();
        exists(transaction, "SELECT 1 FROM members WHERE ipv4 = ?1", &text)
            || exists(transaction, "SELECT 1 FROM controllers WHERE ipv4 = ?1", &text)
    };
    addressing::allocate_member_v4(network.ipv4_pool, name, taken).map_err(StoreError::Allocation)
}

/// Adds `member` inside `transaction`: addresses derived and checked against the stored ones.
fn insert_member(transaction: &Transaction<'_>, member: &NewMember) -> Result<Member> {
    let network = read_network(transaction)?;
    let name = member.name.as_str();
    if exists(transaction, "SELECT 1 FROM members WHERE name = ?1", &name)
        || exists(transaction, "SELECT 1 FROM controllers WHERE name = ?1", &name)
    {
        return Err(StoreError::AlreadyExists(format!("the name `{name}'")));
    }
    if exists(
        transaction,
        "SELECT 1 FROM members WHERE public_key = ?1",
        &member.public_key.as_slice(),
    ) {
        return Err(StoreError::AlreadyExists("a member with this public key".to_string()));
    }
    let subnet: Option<i64> = transaction
        .query_row(
            "SELECT subnet FROM controllers WHERE name = ?1",
            [member.controller.as_str()],
            |row| row.get(0),
        )
        .optional()
        .map_err(database)?;
    let subnet = subnet
        .ok_or_else(|| StoreError::NotFound(format!("controller `{}'", member.controller)))?;
    let prefix = network.prefix.controller_prefix(subnet as u16);
    let taken_v6 =
        |a: Ipv6Addr| exists(transaction, "SELECT 1 FROM members WHERE ipv6 = ?1", &a.to_string());
    let ipv6 = addressing::allocate_member_v6(prefix, &member.name, taken_v6)
        .map_err(StoreError::Allocation)?;
    let ipv4 = allocate_v4(transaction, &network, &member.name)?;
    transaction
        .execute(
            "INSERT INTO members (name, public_key, kind, controller, ipv6, ipv4)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                name,
                member.public_key.as_slice(),
                kind_text(member.kind),
                member.controller.as_str(),
                ipv6.to_string(),
                ipv4.to_string()
            ],
        )
        .map_err(database)?;
    bump_map(transaction)?;
    Ok(Member {
        name: member.name.clone(),
        public_key: member.public_key,
        kind: member.kind,
        controller: member.controller.clone(),
        ipv6,
        ipv4,
    })
}

impl NetworkStore for SqliteStore {
    fn create_network(&mut self, network: &Network) -> Result<()> {
        let transaction = self.write()?;
        if exists(&transaction, "SELECT 1 FROM network WHERE id = ?1", &1) {
            let existing = read_network(&transaction)?;
            return Err(StoreError::AlreadyExists(format!("the network `{}'", existing.name)));
        }
        transaction
            .execute(
                "INSERT INTO network (id, name, ula_prefix, ipv4_pool, map_version)
                 VALUES (1, ?1, ?2, ?3, ?4)",
                params![
                    network.name.as_str(),
                    network.prefix.net().to_string(),
                    network.ipv4_pool.to_string(),
                    network.map_version as i64
                ],
            )
            .map_err(database)?;
        transaction.commit().map_err(database)
    }

    fn network(&self) -> Result<Network> {
        read_network(&self.connection)
    }

    fn snapshot(&mut self) -> Result<Snapshot> {
        // A read transaction: the four reads see one state of the database.
        let transaction = self.connection.transaction().map_err(database)?;
        let snapshot = Snapshot {
            network: read_network(&transaction)?,
            controllers: read_controllers(&transaction)?,
            members: read_members(&transaction, None)?,
            routes: read_routes(&transaction)?,
        };
        transaction.commit().map_err(database)?;
        Ok(snapshot)
    }

    fn add_controller(&mut self, controller: &NewController) -> Result<Controller> {
        let name = &controller.name;
        let transaction = self.write()?;
        let network = read_network(&transaction)?;
        if exists(&transaction, "SELECT 1 FROM controllers WHERE name = ?1", &name.as_str())
            || exists(&transaction, "SELECT 1 FROM members WHERE name = ?1", &name.as_str())
        {
            return Err(StoreError::AlreadyExists(format!("the name `{name}'")));
        }
        let taken = |subnet: u16| {
            exists(&transaction, "SELECT 1 FROM controllers WHERE subnet = ?1", &i64::from(subnet))
        };
        let subnet =
            addressing::allocate_controller_subnet(name, taken).map_err(StoreError::Allocation)?;
        let ipv4 = allocate_v4(&transaction, &network, name)?;
        transaction
            .execute(
                "INSERT INTO controllers (name, public_key, signing_key, endpoint, subnet, ipv4)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    name.as_str(),
                    controller.public_key.as_slice(),
                    controller.signing_key.as_slice(),
                    controller.endpoint,
                    i64::from(subnet),
                    ipv4.to_string()
                ],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    StoreError::AlreadyExists("a controller with this key".to_string())
                }
                e => database(e),
            })?;
        bump_map(&transaction)?;
        transaction.commit().map_err(database)?;
        Ok(Controller {
            name: name.clone(),
            public_key: controller.public_key,
            signing_key: controller.signing_key,
            endpoint: controller.endpoint.clone(),
            prefix: network.prefix.controller_prefix(subnet),
            ipv4,
        })
    }

    fn controllers(&self) -> Result<Vec<Controller>> {
        read_controllers(&self.connection)
    }

    fn add_member(&mut self, member: &NewMember) -> Result<Member> {
        let transaction = self.write()?;
        let added = insert_member(&transaction, member)?;
        transaction.commit().map_err(database)?;
        Ok(added)
    }

    fn remove_member(&mut self, name: &Name) -> Result<Member> {
        let transaction = self.write()?;
        let member = read_members(&transaction, Some(name))?
            .pop()
            .ok_or_else(|| StoreError::NotFound(format!("member `{name}'")))?;
        transaction
            .execute("DELETE FROM members WHERE name = ?1", [name.as_str()])
            .map_err(database)?;
        bump_map(&transaction)?;
        transaction.commit().map_err(database)?;
        Ok(member)
    }

    fn members(&self) -> Result<Vec<Member>> {
        read_members(&self.connection, None)
    }

    fn add_invite(&mut self, invite: &Invite) -> Result<()> {
        let transaction = self.write()?;
        read_network(&transaction)?;
        transaction
            .execute(
                "INSERT INTO invites (id, secret_hash, controller, enrollment_key,
                    enrollment_address, reusable, expires_at, uses)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    invite.id,
                    invite.secret_hash.as_slice(),
                    invite.controller.as_str(),
                    invite.enrollment_key.as_slice(),
                    invite.enrollment_address.to_string(),
                    invite.reusable,
                    invite.expires_at as i64,
                    invite.uses
                ],
            )
            .map_err(database)?;
        transaction.commit().map_err(database)
    }

    fn invites(&self) -> Result<Vec<Invite>> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT id, secret_hash, controller, enrollment_key, enrollment_address,
                    reusable, expires_at, uses FROM invites ORDER BY id",
            )
            .map_err(database)?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    key(row.get(1)?)?,
                    row.get::<_, String>(2)?,
                    key(row.get(3)?)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, bool>(5)?,
                    row.get::<_, i64>(6)?,
                    row.get::<_, u32>(7)?,
                ))
            })
            .map_err(database)?;
        let corrupt =
            |what: &str| StoreError::Database(format!("a stored invitation's {what} is not valid"));
        let mut invites = Vec::new();
        for row in rows {
            let (id, secret_hash, controller, enrollment_key, address, reusable, expires, uses) =
                row.map_err(database)?;
            invites.push(Invite {
                id,
                secret_hash,
                controller: Name::parse(&controller).map_err(|_| corrupt("controller"))?,
                enrollment_key,
                enrollment_address: address.parse().map_err(|_| corrupt("address"))?,
                reusable,
                expires_at: expires as u64,
                uses,
            });
        }
        Ok(invites)
    }

    fn forget_invite(&mut self, id: &str) -> Result<()> {
        self.connection.execute("DELETE FROM invites WHERE id = ?1", [id]).map_err(database)?;
        Ok(())
    }

    fn enroll(
        &mut self,
        invite_id: &str,
        secret_hash: &[u8; 32],
        now: u64,
        member: &NewMember,
    ) -> Result<Member> {
        let transaction = self.write()?;
        let invite: Option<(Vec<u8>, bool, i64, u32)> = transaction
            .query_row(
                "SELECT secret_hash, reusable, expires_at, uses FROM invites WHERE id = ?1",
                [invite_id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .optional()
            .map_err(database)?;
        // An unknown id and a wrong secret read alike: nothing tells a forger which it was.
        let (stored_hash, reusable, expires_at, uses) = match invite {
            Some(found) if constant_time_eq(&found.0, secret_hash) => found,
            _ => return Err(StoreError::Invite("unknown or forged token".to_string())),
        };
        if stored_hash.len() != 32 {
            return Err(StoreError::Database("a stored invitation is damaged".to_string()));
        }
        if now >= expires_at as u64 {
            return Err(StoreError::Invite("the token has expired".to_string()));
        }
        if !reusable && uses > 0 {
            return Err(StoreError::Invite("the token was used already".to_string()));
        }
        let added = insert_member(&transaction, member)?;
        transaction
            .execute("UPDATE invites SET uses = uses + 1 WHERE id = ?1", [invite_id])
            .map_err(database)?;
        transaction.commit().map_err(database)?;
        Ok(added)
    }

    fn advertise_route(&mut self, member: &Name, prefix: IpNet) -> Result<Route> {
        let transaction = self.write()?;
        if !exists(&transaction, "SELECT 1 FROM members WHERE name = ?1", &member.as_str()) {
            return Err(StoreError::NotFound(format!("member `{member}'")));
        }
        let prefix = prefix.trunc();
        transaction
            .execute(
                "INSERT INTO routes (member, prefix, state) VALUES (?1, ?2, 'advertised')
                 ON CONFLICT (member, prefix) DO NOTHING",
                params![member.as_str(), prefix.to_string()],
            )
            .map_err(database)?;
        let state = route_state(&transaction, member, prefix)?.expect("just inserted");
        transaction.commit().map_err(database)?;
        Ok(Route { member: member.clone(), prefix, state })
    }

    fn decide_route(&mut self, member: &Name, prefix: IpNet, state: RouteState) -> Result<Route> {
        let transaction = self.write()?;
        let prefix = prefix.trunc();
        let Some(before) = route_state(&transaction, member, prefix)? else {
            return Err(StoreError::NotFound(format!("route {prefix} of `{member}'")));
        };
        transaction
            .execute(
                "UPDATE routes SET state = ?3 WHERE member = ?1 AND prefix = ?2",
                params![member.as_str(), prefix.to_string(), state_text(state)],
            )
            .map_err(database)?;
        if (before == RouteState::Approved) != (state == RouteState::Approved) {
            bump_map(&transaction)?;
        }
        transaction.commit().map_err(database)?;
        Ok(Route { member: member.clone(), prefix, state })
    }

    fn routes(&self) -> Result<Vec<Route>> {
        read_routes(&self.connection)
    }

    fn audit(&mut self, now: u64, event: &str) -> Result<()> {
        self.connection
            .execute("INSERT INTO audit (at, event) VALUES (?1, ?2)", params![now as i64, event])
            .map_err(database)?;
        Ok(())
    }

    fn audit_log(&self, count: usize) -> Result<Vec<(u64, String)>> {
        let mut statement = self
            .connection
            .prepare("SELECT at, event FROM (SELECT id, at, event FROM audit ORDER BY id DESC LIMIT ?1) ORDER BY id")
            .map_err(database)?;
        let rows = statement
            .query_map([count as i64], |row| Ok((row.get::<_, i64>(0)? as u64, row.get(1)?)))
            .map_err(database)?;
        rows.collect::<rusqlite::Result<_>>().map_err(database)
    }
}

fn read_routes(connection: &Connection) -> Result<Vec<Route>> {
    let mut statement = connection
        .prepare("SELECT member, prefix, state FROM routes ORDER BY member, prefix")
        .map_err(database)?;
    let rows = statement
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?))
        })
        .map_err(database)?;
    let corrupt = || StoreError::Database("a stored route is not valid".to_string());
    let mut routes = Vec::new();
    for row in rows {
        let (member, prefix, state) = row.map_err(database)?;
        routes.push(Route {
            member: Name::parse(&member).map_err(|_| corrupt())?,
            prefix: prefix.parse().map_err(|_| corrupt())?,
            state: parse_state(&state).ok_or_else(corrupt)?,
        });
    }
    Ok(routes)
}

fn parse_state(text: &str) -> Option<RouteState> {
    match text {
        "advertised" => Some(RouteState::Advertised),
        "approved" => Some(RouteState::Approved),
        "rejected" => Some(RouteState::Rejected),
        _ => None,
    }
}

fn route_state(
    transaction: &Transaction<'_>,
    member: &Name,
    prefix: IpNet,
) -> Result<Option<RouteState>> {
    let state: Option<String> = transaction
        .query_row(
            "SELECT state FROM routes WHERE member = ?1 AND prefix = ?2",
            params![member.as_str(), prefix.to_string()],
            |row| row.get(0),
        )
        .optional()
        .map_err(database)?;
    Ok(state.as_deref().and_then(parse_state))
}

/// Compares secrets' hashes in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
