//! The schema, as the ordered list of changes that build it. A database records how many it
//! has had (`PRAGMA user_version`); opening one applies the rest, each in its own
//! transaction. Changes are only ever appended: a released one is never edited.

/// The schema's changes, in order; `MIGRATIONS[i]` takes a database from version `i` to
/// `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the network, controllers, members, invitations, routes, the audit log.
    "CREATE TABLE network (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        name TEXT NOT NULL,
        ula_prefix TEXT NOT NULL,
        ipv4_pool TEXT NOT NULL,
        map_version INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE TABLE controllers (
        name TEXT PRIMARY KEY,
        public_key BLOB NOT NULL UNIQUE CHECK (length(public_key) = 32),
        signing_key BLOB NOT NULL UNIQUE CHECK (length(signing_key) = 32),
        endpoint TEXT NOT NULL,
        subnet INTEGER NOT NULL UNIQUE CHECK (subnet BETWEEN 0 AND 65535),
        ipv4 TEXT NOT NULL UNIQUE
    ) STRICT;
    CREATE TABLE members (
        name TEXT PRIMARY KEY,
        public_key BLOB NOT NULL UNIQUE CHECK (length(public_key) = 32),
        kind TEXT NOT NULL CHECK (kind IN ('gateway', 'client')),
        controller TEXT NOT NULL REFERENCES controllers (name),
        ipv6 TEXT NOT NULL UNIQUE,
        ipv4 TEXT NOT NULL UNIQUE
    ) STRICT;
    CREATE TABLE invites (
        id TEXT PRIMARY KEY,
        secret_hash BLOB NOT NULL CHECK (length(secret_hash) = 32),
        controller TEXT NOT NULL REFERENCES controllers (name),
        enrollment_key BLOB NOT NULL UNIQUE CHECK (length(enrollment_key) = 32),
        enrollment_address TEXT NOT NULL UNIQUE,
        reusable INTEGER NOT NULL CHECK (reusable IN (0, 1)),
        expires_at INTEGER NOT NULL,
        uses INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE TABLE routes (
        member TEXT NOT NULL REFERENCES members (name) ON DELETE CASCADE,
        prefix TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('advertised', 'approved', 'rejected')),
        PRIMARY KEY (member, prefix)
    ) STRICT;
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        event TEXT NOT NULL
    ) STRICT;",
];
