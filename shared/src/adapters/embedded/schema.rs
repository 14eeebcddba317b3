//! The store file: owner-only permissions, connection settings, and the schema with its version.

use super::Failure;
use crate::ports::StoreError;
use rusqlite::{Connection as Db, OpenFlags, TransactionBehavior};
use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::time::Duration;

/// The schema version this code writes, kept in `PRAGMA user_version`. A migration to version n runs
/// in [`migrate`] as `if version < n { ... }`, inside the same transaction as the version bump.
pub(super) const SCHEMA_VERSION: i64 = 6;

/// How long SQLite itself waits for another connection's (or process's) write lock before reporting
/// SQLITE_BUSY. Writes are short, so this is only reached when something holds the file locked.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Version 1. Times are [`super::codec::time_key`] text: fixed width, exact, sortable.
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS tenants (
    id   TEXT PRIMARY KEY NOT NULL,
    data TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS apps (
    tenant TEXT NOT NULL,
    id     TEXT NOT NULL,
    data   TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS connections (
    id              TEXT PRIMARY KEY NOT NULL,
    tenant          TEXT NOT NULL,
    data            TEXT NOT NULL,
    version         INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     TEXT,
    created_at      TEXT NOT NULL,
    next_refresh_at TEXT,
    CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
);
CREATE INDEX IF NOT EXISTS connections_by_tenant ON connections (tenant, created_at, id);
CREATE INDEX IF NOT EXISTS connections_due ON connections (next_refresh_at, id)
    WHERE next_refresh_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS transitions (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    connection TEXT NOT NULL REFERENCES connections (id),
    at         TEXT NOT NULL,
    data       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transitions_by_connection ON transitions (connection, at, seq);

CREATE TABLE IF NOT EXISTS api_keys (
    prefix TEXT PRIMARY KEY NOT NULL,
    tenant TEXT NOT NULL,
    data   TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS api_keys_by_tenant ON api_keys (tenant, prefix);

CREATE TABLE IF NOT EXISTS pending_authorizations (
    key        TEXT PRIMARY KEY NOT NULL,
    expires_at TEXT NOT NULL,
    data       TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pending_by_expiry ON pending_authorizations (expires_at);

CREATE TABLE IF NOT EXISTS connect_links (
    key        TEXT PRIMARY KEY NOT NULL,
    expires_at TEXT NOT NULL,
    data       TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS vault_versions (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant     TEXT NOT NULL,
    connection TEXT NOT NULL,
    slot       TEXT NOT NULL CHECK (slot IN ('a', 'b')),
    write_id   TEXT NOT NULL,
    content    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (tenant, connection, slot, write_id)
);
CREATE INDEX IF NOT EXISTS vault_versions_by_slot ON vault_versions (tenant, connection, slot, seq);

CREATE TABLE IF NOT EXISTS client_secrets (
    tenant     TEXT NOT NULL,
    app        TEXT NOT NULL,
    content    TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant, app)
) WITHOUT ROWID;
";

/// Version 2: the notification outbox (`notices`, see `notifications.rs`). The trigger writes a
/// transition's notice inside the transaction that inserts the transition, so no notice is lost; its
/// condition is `crate::notify::notice_kind_of` in SQL (a test holds the two together).
const SCHEMA_V2: &str = "
CREATE TABLE IF NOT EXISTS notices (
    key        TEXT PRIMARY KEY NOT NULL,
    connection TEXT NOT NULL,
    created_at TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'settled')),
    claimed_at TEXT,
    attempts   INTEGER NOT NULL DEFAULT 0,
    subject    TEXT NOT NULL,
    outcome    TEXT,
    CHECK ((state = 'sending') = (claimed_at IS NOT NULL))
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS notices_unsettled ON notices (created_at, key)
    WHERE state <> 'settled';

CREATE TRIGGER IF NOT EXISTS transitions_outbox AFTER INSERT ON transitions
WHEN json_extract(NEW.data, '$.from') <> json_extract(NEW.data, '$.to')
    AND (json_extract(NEW.data, '$.to') IN ('reconnect_required', 'disabled')
        OR (json_extract(NEW.data, '$.to') = 'connected'
            AND json_extract(NEW.data, '$.from') IN ('reconnect_required', 'disabled')))
BEGIN
    INSERT INTO notices (key, connection, created_at, state, attempts, subject)
    VALUES ('transition:' || NEW.seq, NEW.connection, NEW.at, 'pending', 0,
            json_object('transition', json(NEW.data)));
END;
";

/// Version 3: `awaiting_since`, set while only a person can make a connection work again (reconnect
/// required, disabled) to when that began, for the notifier's reminders; kept by every connection
/// write (`connections.rs`). Rows written before it are filled in by [`backfill_awaiting_since`].
const SCHEMA_V3: &str = "
ALTER TABLE connections ADD COLUMN awaiting_since TEXT;
CREATE INDEX IF NOT EXISTS connections_awaiting ON connections (awaiting_since, id)
    WHERE awaiting_since IS NOT NULL;
";

/// Version 4: `local_keys`, the store's own keys. `escrow` seals the tokens a refresh could not write to
/// the vault while they wait in the connection's record (see [`crate::escrow`]); it is made once, with
/// the file, and kept in it, so it is as private as the vault's own entries.
const SCHEMA_V4: &str = "
CREATE TABLE IF NOT EXISTS local_keys (
    name TEXT PRIMARY KEY,
    key  BLOB NOT NULL
);
";

/// Version 5: `usage_counters`, counters shared by the connections of one provider user under one app
/// (see `usage.rs`), one row per counter and window; `expires_at` lets old windows be swept.
const SCHEMA_V5_USAGE: &str = "
CREATE TABLE IF NOT EXISTS usage_counters (
    tenant        TEXT NOT NULL,
    app           TEXT NOT NULL,
    provider_user TEXT NOT NULL,
    counter       TEXT NOT NULL,
    window_start  TEXT NOT NULL,
    used          INTEGER NOT NULL CHECK (used >= 0),
    expires_at    TEXT NOT NULL,
    PRIMARY KEY (tenant, app, provider_user, counter, window_start)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_counters_by_expiry ON usage_counters (expires_at);
";

/// Version 6: the status-change event outbox (see `events.rs`). The trigger makes every transition
/// that changes the status an event inside the transaction that inserts it, so no event is lost;
/// transitions recorded before this version are history, not news, and get none.
const SCHEMA_V6_EVENTS: &str = "
CREATE TABLE IF NOT EXISTS status_events (
    seq        INTEGER PRIMARY KEY NOT NULL REFERENCES transitions (seq),
    fanned_out INTEGER NOT NULL DEFAULT 0 CHECK (fanned_out IN (0, 1))
);
CREATE INDEX IF NOT EXISTS status_events_pending ON status_events (seq) WHERE fanned_out = 0;

CREATE TRIGGER IF NOT EXISTS transitions_events AFTER INSERT ON transitions
WHEN json_extract(NEW.data, '$.from') <> json_extract(NEW.data, '$.to')
BEGIN
    INSERT INTO status_events (seq) VALUES (NEW.seq);
END;

CREATE TABLE IF NOT EXISTS event_deliveries (
    key        TEXT PRIMARY KEY NOT NULL,
    tenant     TEXT NOT NULL,
    state      TEXT NOT NULL
               CHECK (state IN ('pending', 'sending', 'delivered', 'dead', 'dropped')),
    due_at     TEXT,
    claimed_at TEXT,
    settled_at TEXT,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    ticket     TEXT NOT NULL,
    CHECK ((state = 'sending') = (claimed_at IS NOT NULL)),
    CHECK ((state IN ('pending', 'sending')) = (due_at IS NOT NULL))
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_deliveries_due ON event_deliveries (due_at, key)
    WHERE state IN ('pending', 'sending');
CREATE INDEX IF NOT EXISTS event_deliveries_dead ON event_deliveries (tenant, settled_at, key)
    WHERE state = 'dead';

CREATE TABLE IF NOT EXISTS webhooks (
    tenant     TEXT NOT NULL,
    id         TEXT NOT NULL,
    created_at TEXT NOT NULL,
    data       TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
";

/// Fills `awaiting_since` from each connection's own record: the schema alone cannot say which
/// statuses wait for a person, the domain can.
fn backfill_awaiting_since(tx: &rusqlite::Transaction<'_>) -> Result<(), Failure> {
    use super::codec::{time_key, ConnectionRow, CONNECTION_COLUMNS};
    use crate::domain::ScheduleEntry;
    let mut waiting = Vec::new();
    {
        let mut select = tx.prepare(&format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE next_refresh_at IS NULL"
        ))?;
        let rows = select.query_map([], ConnectionRow::read)?;
        for row in rows {
            let row = row?;
            if let Some(ScheduleEntry::Awaiting(since)) = row.decode()?.schedule_entry() {
                waiting.push((row.id, time_key(since)));
            }
        }
    }
    let mut update = tx.prepare("UPDATE connections SET awaiting_since = ?2 WHERE id = ?1")?;
    for (id, since) in waiting {
        update.execute([id, since])?;
    }
    Ok(())
}

/// Creates the parent folders (owner-only where this creates them) and the file itself with mode 0600
/// before SQLite opens it, so it is never readable by others even for a moment; an existing file (or
/// WAL or shared-memory file) that is more open is restricted. SQLite creates its `-wal` and `-shm`
/// files with the database file's permissions.
pub(super) fn prepare_file(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dirs(parent)?;
    }
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    drop(options.open(path)?);
    #[cfg(unix)]
    {
        restrict_to_owner(path)?;
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut sibling = path.as_os_str().to_owned();
            sibling.push(suffix);
            match restrict_to_owner(Path::new(&sibling)) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
    }
    Ok(())
}

fn create_private_dirs(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(unix)]
fn restrict_to_owner(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The one connection per store that writes; it also switches the file to WAL.
    Writer,
    /// Pooled connections for reads, which WAL lets run beside a write.
    Reader,
}

/// A connection to the prepared file. It is never created here: a file deleted under a running store
/// is an error, not a silently empty database.
pub(super) fn connect(path: &Path, role: Role) -> Result<Db, Failure> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let db = Db::open_with_flags(path, flags)?;
    configure(&db)?;
    match role {
        Role::Writer => {
            let mode: String =
                db.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                // Still correct (every write takes the lock up front), only reads wait for writes.
                tracing::warn!(journal_mode = %mode, "the store file could not use WAL (a network filesystem?)");
            }
        }
        Role::Reader => db.pragma_update(None, "query_only", true)?,
    }
    Ok(db)
}

/// A private database in memory, with the settings of a file's connections: the store's only
/// connection, since no other can see it (so neither WAL nor read-only readers apply).
#[cfg(any(test, feature = "testing"))]
pub(super) fn connect_in_memory() -> Result<Db, Failure> {
    let db = Db::open_in_memory()?;
    configure(&db)?;
    Ok(db)
}

fn configure(db: &Db) -> Result<(), Failure> {
    db.busy_timeout(BUSY_TIMEOUT)?;
    db.pragma_update(None, "foreign_keys", true)?;
    // FULL: a committed rotation must survive a power cut, or the provider's new refresh token is lost.
    db.pragma_update(None, "synchronous", "FULL")?;
    // Deleted and rewritten rows are zeroed, not left in free pages and free space of the file, where
    // a copy of it would still show the (sealed) tokens a disconnect deleted.
    db.pragma_update(None, "secure_delete", true)?;
    Ok(())
}

/// Creates or upgrades the schema, in one transaction so two processes opening a new file at once
/// cannot both create it.
pub(super) fn migrate(db: &mut Db) -> Result<(), Failure> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(Failure::Refused(StoreError::Unavailable(format!(
            "the store file has schema version {version}, newer than this broker's {SCHEMA_VERSION}: \
             run the broker version that wrote it, or a newer one"
        ))));
    }
    if version < 1 {
        tx.execute_batch(SCHEMA_V1)?;
    }
    if version < 2 {
        tx.execute_batch(SCHEMA_V2)?;
    }
    if version < 3 {
        tx.execute_batch(SCHEMA_V3)?;
        backfill_awaiting_since(&tx)?;
    }
    if version < 4 {
        tx.execute_batch(SCHEMA_V4)?;
        let key = crate::escrow::DataKey::generate()
            .map_err(|e| Failure::Refused(StoreError::Unavailable(e.to_string())))?;
        tx.execute(
            "INSERT OR IGNORE INTO local_keys (name, key) VALUES ('escrow', ?1)",
            [&key.0[..]],
        )?;
    }
    if version < 5 {
        tx.execute_batch(SCHEMA_V5_USAGE)?;
    }
    if version < 6 {
        tx.execute_batch(super::history::SCHEMA_V6_HISTORY)?;
        tx.execute_batch(SCHEMA_V6_EVENTS)?;
    }
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}
