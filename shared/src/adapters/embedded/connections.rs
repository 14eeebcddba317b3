//! [`ConnectionStore`] on the `connections` and `transitions` tables.

use super::codec::{
    decode, decode_lease, encode, encode_connection, page_of, parse_time_key, rows_to_fetch,
    time_key, version_column, ConnectionRow, Cursor, CONNECTION_COLUMNS,
};
use super::{EmbeddedStore, Failure};
use crate::domain::{Connection, Lease, ScheduleEntry, StatusTransition};
use crate::ids::{ConnectionId, LeaseOwner, TenantId};
use crate::ports::{
    AwaitingConnection, ConnectionStore, DueConnection, Fence, LeaseAttempt, Page, PageRequest,
    StoreError,
};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use rusqlite::{params, Connection as Db, OptionalExtension};

/// The columns a write derives from a connection.
struct ConnectionColumns {
    id: String,
    tenant: String,
    data: String,
    version: i64,
    created_at: String,
    next_refresh_at: Option<String>,
    /// Only while it is not scheduled (`Connection::schedule_entry`): the two indexes never both hold
    /// a connection.
    awaiting_since: Option<String>,
}

impl ConnectionColumns {
    fn of(connection: &Connection) -> Result<Self, Failure> {
        let entry = connection.schedule_entry();
        Ok(Self {
            id: connection.id.to_string(),
            tenant: connection.tenant.to_string(),
            data: encode_connection(connection)?,
            version: version_column(connection.version, &format!("connection {}", connection.id))?,
            created_at: time_key(connection.created_at),
            next_refresh_at: match entry {
                Some(ScheduleEntry::Due(at)) => Some(time_key(at)),
                _ => None,
            },
            awaiting_since: match entry {
                Some(ScheduleEntry::Awaiting(since)) => Some(time_key(since)),
                _ => None,
            },
        })
    }
}

/// Transitions as rows: `(at, data)`.
fn transition_rows(transitions: &[StatusTransition]) -> Result<Vec<(String, String)>, Failure> {
    transitions
        .iter()
        .map(|t| Ok((time_key(t.at), encode(t, "a status transition", &[])?)))
        .collect()
}

fn insert_transitions(db: &Db, connection: &str, rows: &[(String, String)]) -> Result<(), Failure> {
    let mut insert =
        db.prepare_cached("INSERT INTO transitions (connection, at, data) VALUES (?1, ?2, ?3)")?;
    for (at, data) in rows {
        insert.execute(params![connection, at, data])?;
    }
    Ok(())
}

fn select_connection(db: &Db, id: &str) -> Result<Option<ConnectionRow>, Failure> {
    let sql = format!("SELECT {CONNECTION_COLUMNS} FROM connections WHERE id = ?1");
    Ok(db
        .prepare_cached(&sql)?
        .query_row([id], ConnectionRow::read)
        .optional()?)
}

fn next_version(version: u64, id: &str) -> Result<u64, Failure> {
    version.checked_add(1).ok_or_else(|| {
        Failure::Corrupt(format!(
            "connection {id}: version {version} is at its ceiling"
        ))
    })
}

#[async_trait]
impl ConnectionStore for EmbeddedStore {
    async fn insert_connection(
        &self,
        connection: &Connection,
        transitions: &[StatusTransition],
    ) -> Result<(), StoreError> {
        const OPERATION: &str = "inserting a connection";
        let columns = ConnectionColumns::of(connection).map_err(|f| f.into_store(OPERATION))?;
        let transitions = transition_rows(transitions).map_err(|f| f.into_store(OPERATION))?;
        let (lease_owner, lease_until) = match &connection.lease {
            Some(lease) => (
                Some(lease.owner.to_string()),
                Some(time_key(lease.expires_at)),
            ),
            None => (None, None),
        };
        self.write(move |db| {
            let c = &columns;
            let inserted = db
                .prepare_cached(
                    "INSERT INTO connections
                         (id, tenant, data, version, lease_owner, lease_until, created_at, next_refresh_at,
                          awaiting_since)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![
                    c.id,
                    c.tenant,
                    c.data,
                    c.version,
                    lease_owner,
                    lease_until,
                    c.created_at,
                    c.next_refresh_at,
                    c.awaiting_since
                ])?;
            if inserted == 0 {
                return Err(Failure::Refused(StoreError::AlreadyExists(format!("connection {}", c.id))));
            }
            insert_transitions(db, &c.id, &transitions)
        })
        .await
        .map_err(|f| f.into_store(OPERATION))
    }

    async fn get_connection(&self, id: &ConnectionId) -> Result<Option<Connection>, StoreError> {
        let id = id.to_string();
        self.read(move |db| {
            select_connection(db, &id)?
                .map(|row| row.decode())
                .transpose()
        })
        .await
        .map_err(|f| f.into_store("reading a connection"))
    }

    async fn save_connection(
        &self,
        connection: &Connection,
        fence: Fence<'_>,
        transitions: &[StatusTransition],
    ) -> Result<Connection, StoreError> {
        const OPERATION: &str = "saving a connection";
        #[cfg(any(test, feature = "testing"))]
        if self.told_to_fail(|f| &mut f.connection_saves) {
            let told = super::testing::TOLD_TO_FAIL;
            return Err(StoreError::Unavailable(format!("{OPERATION}: {told}")));
        }
        let columns = ConnectionColumns::of(connection).map_err(|f| f.into_store(OPERATION))?;
        let transitions = transition_rows(transitions).map_err(|f| f.into_store(OPERATION))?;
        let new_version =
            next_version(connection.version, &columns.id).map_err(|f| f.into_store(OPERATION))?;
        let new_version_column =
            version_column(new_version, &columns.id).map_err(|f| f.into_store(OPERATION))?;
        let fence_owner = fence.owner().map(|owner| owner.to_string());
        let release = matches!(fence, Fence::LeaseReleased(_));
        let lease = self
            .write(move |db| {
                let c = &columns;
                let stored: Option<(String, i64, Option<String>, Option<String>)> = db
                    .prepare_cached(
                        "SELECT tenant, version, lease_owner, lease_until FROM connections WHERE id = ?1",
                    )?
                    .query_row([&c.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .optional()?;
                let Some((tenant, version, lease_owner, lease_until)) = stored else {
                    return Err(Failure::Refused(StoreError::NotFound(format!("connection {}", c.id))));
                };
                let fenced = fence_owner.as_ref().is_some_and(|owner| lease_owner.as_ref() != Some(owner));
                if tenant != c.tenant || version != c.version || fenced {
                    return Err(Failure::Refused(StoreError::Conflict));
                }
                db.prepare_cached(
                    "UPDATE connections SET data = ?2, version = ?3, created_at = ?4, next_refresh_at = ?5,
                         awaiting_since = ?6
                     WHERE id = ?1",
                )?
                .execute(params![
                    c.id,
                    c.data,
                    new_version_column,
                    c.created_at,
                    c.next_refresh_at,
                    c.awaiting_since
                ])?;
                insert_transitions(db, &c.id, &transitions)?;
                if release {
                    db.prepare_cached(
                        "UPDATE connections SET lease_owner = NULL, lease_until = NULL WHERE id = ?1",
                    )?
                    .execute([&c.id])?;
                    return Ok(None);
                }
                decode_lease(&format!("connection {}", c.id), lease_owner.as_deref(), lease_until.as_deref())
            })
            .await
            .map_err(|f| f.into_store(OPERATION))?;
        let mut written = connection.clone();
        written.version = new_version;
        written.lease = lease;
        Ok(written)
    }

    async fn acquire_lease(
        &self,
        id: &ConnectionId,
        owner: &LeaseOwner,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseAttempt, StoreError> {
        const OPERATION: &str = "taking a refresh lease";
        let expires_at = now.checked_add_signed(ttl).ok_or_else(|| {
            StoreError::Unavailable(format!(
                "{OPERATION}: a lease of {ttl} from {now} ends out of range"
            ))
        })?;
        let (id, owner) = (id.to_string(), owner.clone());
        self.write(move |db| {
            let Some(row) = select_connection(db, &id)? else {
                return Ok(LeaseAttempt::Missing);
            };
            if let Some(held) = row.lease()?.filter(|lease| lease.expires_at > now) {
                return Ok(LeaseAttempt::Busy { until: held.expires_at });
            }
            let mut connection = row.decode()?;
            connection.version = next_version(connection.version, &id)?;
            db.prepare_cached(
                "UPDATE connections SET lease_owner = ?2, lease_until = ?3, version = ?4 WHERE id = ?1",
            )?
            .execute(params![
                id,
                owner.as_str(),
                time_key(expires_at),
                version_column(connection.version, &id)?
            ])?;
            connection.lease = Some(Lease { owner: owner.clone(), expires_at });
            Ok(LeaseAttempt::Acquired(connection))
        })
        .await
        .map_err(|f| f.into_store(OPERATION))
    }

    async fn release_lease(&self, id: &ConnectionId, owner: &LeaseOwner) -> Result<(), StoreError> {
        let (id, owner) = (id.to_string(), owner.to_string());
        self.write(move |db| {
            db.prepare_cached(
                "UPDATE connections SET lease_owner = NULL, lease_until = NULL WHERE id = ?1 AND lease_owner = ?2",
            )?
            .execute(params![id, owner])?;
            Ok(())
        })
        .await
        .map_err(|f| f.into_store("releasing a refresh lease"))
    }

    async fn list_connections(
        &self,
        tenant: &TenantId,
        page: PageRequest,
    ) -> Result<Page<Connection>, StoreError> {
        let tenant = tenant.to_string();
        let after = Cursor::of_request(&page, |cursor| match cursor {
            Cursor::Connections {
                tenant: t,
                created_at,
                id,
            } if t == tenant => Some((created_at, id)),
            _ => None,
        })?;
        self.read(move |db| {
            let keyset = if after.is_some() {
                "AND (created_at, id) > (?2, ?3)"
            } else {
                ""
            };
            let sql = format!(
                "SELECT {CONNECTION_COLUMNS}, created_at FROM connections
                 WHERE tenant = ?1 {keyset} ORDER BY created_at, id LIMIT ?4"
            );
            let (after_at, after_id) = after.clone().unzip();
            let mut query = db.prepare_cached(&sql)?;
            let rows = query.query_map(
                params![tenant, after_at, after_id, rows_to_fetch(&page)],
                |r| Ok((ConnectionRow::read(r)?, r.get::<_, String>(5)?)),
            )?;
            let mut items = Vec::new();
            for row in rows {
                let (row, created_at) = row?;
                let cursor = Cursor::Connections {
                    tenant: tenant.clone(),
                    created_at,
                    id: row.id.clone(),
                };
                items.push((row.decode()?, cursor));
            }
            page_of(items, &page)
        })
        .await
        .map_err(|f| f.into_store("listing a tenant's connections"))
    }

    async fn due_for_refresh(
        &self,
        due_by: DateTime<Utc>,
        page: PageRequest,
    ) -> Result<Page<DueConnection>, StoreError> {
        let after = Cursor::of_request(&page, |cursor| match cursor {
            Cursor::Due {
                next_refresh_at,
                id,
            } => Some((next_refresh_at, id)),
            _ => None,
        })?;
        let due_by = time_key(due_by);
        self.read(move |db| {
            let (after_at, after_id) = after.clone().unzip();
            let keyset = if after.is_some() {
                "AND (next_refresh_at, id) > (?2, ?3)"
            } else {
                ""
            };
            let mut query = db.prepare_cached(&format!(
                "SELECT id, tenant, next_refresh_at FROM connections
                 WHERE next_refresh_at IS NOT NULL AND next_refresh_at <= ?1 {keyset}
                 ORDER BY next_refresh_at, id LIMIT ?4"
            ))?;
            let params = params![due_by, after_at, after_id, rows_to_fetch(&page)];
            let rows = query.query_map(params, |r| r.try_into())?;
            let mut items = Vec::new();
            for row in rows {
                let (id, tenant, at): (String, String, String) = row?;
                let (parsed_id, tenant, next_refresh_at) =
                    scheduled(&id, tenant, &at, "next_refresh_at")?;
                let due = DueConnection {
                    id: parsed_id,
                    tenant,
                    next_refresh_at,
                };
                items.push((
                    due,
                    Cursor::Due {
                        next_refresh_at: at,
                        id,
                    },
                ));
            }
            page_of(items, &page)
        })
        .await
        .map_err(|f| f.into_store("listing connections due for refresh"))
    }

    async fn awaiting_person(
        &self,
        page: PageRequest,
    ) -> Result<Page<AwaitingConnection>, StoreError> {
        let after = Cursor::of_request(&page, |cursor| match cursor {
            Cursor::Awaiting { since, id } => Some((since, id)),
            _ => None,
        })?;
        self.read(move |db| {
            let (after_since, after_id) = after.clone().unzip();
            let keyset = if after.is_some() {
                "AND (awaiting_since, id) > (?1, ?2)"
            } else {
                ""
            };
            let mut query = db.prepare_cached(&format!(
                "SELECT id, tenant, awaiting_since FROM connections
                 WHERE awaiting_since IS NOT NULL {keyset}
                 ORDER BY awaiting_since, id LIMIT ?3"
            ))?;
            let params = params![after_since, after_id, rows_to_fetch(&page)];
            let rows = query.query_map(params, |r| r.try_into())?;
            let mut items = Vec::new();
            for row in rows {
                let (id, tenant, since): (String, String, String) = row?;
                let (parsed_id, tenant, at) = scheduled(&id, tenant, &since, "awaiting_since")?;
                let awaiting = AwaitingConnection {
                    id: parsed_id,
                    tenant,
                    since: at,
                };
                items.push((awaiting, Cursor::Awaiting { since, id }));
            }
            page_of(items, &page)
        })
        .await
        .map_err(|f| f.into_store("listing connections awaiting a person"))
    }

    async fn list_transitions(
        &self,
        id: &ConnectionId,
        page: PageRequest,
    ) -> Result<Page<StatusTransition>, StoreError> {
        let id = id.to_string();
        let after = Cursor::of_request(&page, |cursor| match cursor {
            Cursor::Transitions {
                connection,
                at,
                seq,
            } if connection == id => Some((at, seq)),
            _ => None,
        })?;
        self.read(move |db| {
            let (after_at, after_seq) = after.clone().unzip();
            let keyset = if after.is_some() {
                "AND (at, seq) > (?2, ?3)"
            } else {
                ""
            };
            let mut query = db.prepare_cached(&format!(
                "SELECT seq, at, data FROM transitions
                 WHERE connection = ?1 {keyset} ORDER BY at, seq LIMIT ?4"
            ))?;
            let rows = query.query_map(
                params![id, after_at, after_seq, rows_to_fetch(&page)],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )?;
            let mut items = Vec::new();
            for row in rows {
                let (seq, at, data) = row?;
                let transition = decode(&data, &format!("transition {seq} of connection {id}"))?;
                items.push((
                    transition,
                    Cursor::Transitions {
                        connection: id.clone(),
                        at,
                        seq,
                    },
                ));
            }
            page_of(items, &page)
        })
        .await
        .map_err(|f| f.into_store("listing a connection's transitions"))
    }
}

/// A row of a schedule index: the connection's `id`, its `tenant`, and `at`, the time in `column`
/// that the index orders by.
fn scheduled(
    id: &str,
    tenant: String,
    at: &str,
    column: &str,
) -> Result<(ConnectionId, TenantId, DateTime<Utc>), Failure> {
    let what = format!("connection {id}");
    let id = ConnectionId::parse(id)
        .map_err(|_| Failure::Corrupt(format!("{what}: the id is malformed")))?;
    let tenant = TenantId::parse(tenant)
        .map_err(|_| Failure::Corrupt(format!("{what}: the tenant is malformed")))?;
    let at = parse_time_key(at, &format!("{what}: {column}"))?;
    Ok((id, tenant, at))
}
