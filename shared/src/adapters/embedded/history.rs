//! [`HistoryStore`] on the `connection_changes` and `session_reads` tables (schema version 6), beside
//! the `transitions` and `notices` tables the history also reads.
//!
//! A change is inserted in the same `BEGIN IMMEDIATE` transaction as the connection save it belongs
//! to, under the same checks as [`crate::ports::ConnectionStore::save_connection`]'s, so a refused save
//! records nothing. Session-read counts are upserted (`count + n`, `min(first)`, `max(last)`), and
//! counts past their `expires_at` are deleted by the next write of counts, as DynamoDB's TTL would.

use super::codec::{decode, decode_lease, encode, encode_connection, time_key, version_column};
use super::{EmbeddedStore, Failure};
use crate::domain::{Connection, ConnectionChange, ScheduleEntry, SessionReads, StatusTransition};
use crate::ids::ConnectionId;
use crate::notify::{NoticeKey, NoticeRecord};
use crate::ports::{Fence, HistoryStore, Keyed, NotificationStore, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

/// Version 6: a connection's API changes and its session-read counts; notices by connection.
pub(super) const SCHEMA_V6_HISTORY: &str = "
CREATE TABLE IF NOT EXISTS connection_changes (
    connection TEXT NOT NULL,
    version    INTEGER NOT NULL,
    at         TEXT NOT NULL,
    data       TEXT NOT NULL,
    PRIMARY KEY (connection, version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS connection_changes_by_time ON connection_changes (connection, at, version);

CREATE TABLE IF NOT EXISTS session_reads (
    connection TEXT NOT NULL,
    hour       TEXT NOT NULL,
    key_prefix TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    count      INTEGER NOT NULL CHECK (count > 0),
    first      TEXT NOT NULL,
    last       TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (connection, hour, key_prefix)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS session_reads_by_expiry ON session_reads (expires_at);

CREATE INDEX IF NOT EXISTS notices_by_connection ON notices (connection);
";

/// A position id that sorts like the number (the history merges ids as text).
fn padded(n: i64) -> String {
    format!("{n:020}")
}

/// `until` as an inclusive bound on a time column (`None`: no bound).
fn bound(until: Option<DateTime<Utc>>) -> String {
    until.map_or_else(|| "~".to_string(), time_key)
}

#[async_trait]
impl HistoryStore for EmbeddedStore {
    async fn save_connection_change(
        &self,
        connection: &Connection,
        fence: Fence<'_>,
        change: &ConnectionChange,
    ) -> Result<Connection, StoreError> {
        const OPERATION: &str = "saving a connection change";
        let id = connection.id.to_string();
        let what = format!("connection {id}");
        let prepared = (|| {
            let new_version = connection
                .version
                .checked_add(1)
                .ok_or_else(|| Failure::Corrupt(format!("{what}: version at its ceiling")))?;
            Ok::<_, Failure>((
                encode_connection(connection)?,
                version_column(connection.version, &what)?,
                version_column(new_version, &what)?,
                encode(change, "a connection change", &[])?,
            ))
        })()
        .map_err(|f| f.into_store(OPERATION))?;
        let (data, version, new_version, change_data) = prepared;
        let tenant = connection.tenant.to_string();
        let created_at = time_key(connection.created_at);
        let (next_refresh_at, awaiting_since) = match connection.schedule_entry() {
            Some(ScheduleEntry::Due(at)) => (Some(time_key(at)), None),
            Some(ScheduleEntry::Awaiting(since)) => (None, Some(time_key(since))),
            None => (None, None),
        };
        let change_at = time_key(change.at);
        let fence_owner = fence.owner().map(|owner| owner.to_string());
        let release = matches!(fence, Fence::LeaseReleased(_));
        let lease = self
            .write(move |db| {
                type Stored = (String, i64, Option<String>, Option<String>);
                let stored: Option<Stored> = db
                    .prepare_cached(
                        "SELECT tenant, version, lease_owner, lease_until FROM connections WHERE id = ?1",
                    )?
                    .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .optional()?;
                let Some((stored_tenant, stored_version, lease_owner, lease_until)) = stored else {
                    return Err(Failure::Refused(StoreError::NotFound(format!("connection {id}"))));
                };
                let fenced = fence_owner
                    .as_ref()
                    .is_some_and(|owner| lease_owner.as_ref() != Some(owner));
                if stored_tenant != tenant || stored_version != version || fenced {
                    return Err(Failure::Refused(StoreError::Conflict));
                }
                db.prepare_cached(
                    "UPDATE connections SET data = ?2, version = ?3, created_at = ?4, next_refresh_at = ?5,
                         awaiting_since = ?6
                     WHERE id = ?1",
                )?
                .execute(params![id, data, new_version, created_at, next_refresh_at, awaiting_since])?;
                db.prepare_cached(
                    "INSERT INTO connection_changes (connection, version, at, data) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![id, new_version, change_at, change_data])?;
                if release {
                    db.prepare_cached(
                        "UPDATE connections SET lease_owner = NULL, lease_until = NULL WHERE id = ?1",
                    )?
                    .execute([&id])?;
                    return Ok(None);
                }
                decode_lease(&format!("connection {id}"), lease_owner.as_deref(), lease_until.as_deref())
            })
            .await
            .map_err(|f| f.into_store(OPERATION))?;
        let mut written = connection.clone();
        written.version = connection.version + 1;
        written.lease = lease;
        Ok(written)
    }

    async fn list_changes(
        &self,
        id: &ConnectionId,
        until: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Keyed<ConnectionChange>>, StoreError> {
        let id = id.to_string();
        self.read(move |db| {
            let mut query = db.prepare_cached(
                "SELECT version, data FROM connection_changes WHERE connection = ?1 AND at <= ?2
                 ORDER BY at DESC, version DESC LIMIT ?3",
            )?;
            let rows = query.query_map(params![id, bound(until), i64::from(limit)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            rows.map(|row| {
                let (version, data) = row?;
                Ok(Keyed {
                    id: padded(version),
                    item: decode(&data, &format!("change {version} of connection {id}"))?,
                })
            })
            .collect()
        })
        .await
        .map_err(|f| f.into_store("listing a connection's changes"))
    }

    async fn list_recent_transitions(
        &self,
        id: &ConnectionId,
        until: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Keyed<StatusTransition>>, StoreError> {
        let id = id.to_string();
        self.read(move |db| {
            let mut query = db.prepare_cached(
                "SELECT seq, data FROM transitions WHERE connection = ?1 AND at <= ?2
                 ORDER BY at DESC, seq DESC LIMIT ?3",
            )?;
            let rows = query.query_map(params![id, bound(until), i64::from(limit)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            rows.map(|row| {
                let (seq, data) = row?;
                Ok(Keyed {
                    id: padded(seq),
                    item: decode(&data, &format!("transition {seq} of connection {id}"))?,
                })
            })
            .collect()
        })
        .await
        .map_err(|f| f.into_store("listing a connection's recent transitions"))
    }

    async fn add_session_reads(&self, reads: &[SessionReads]) -> Result<(), StoreError> {
        let Some(latest) = reads.iter().map(|r| r.last).max() else {
            return Ok(());
        };
        let rows: Vec<[String; 7]> = reads
            .iter()
            .map(|r| {
                [
                    r.connection.to_string(),
                    time_key(r.hour),
                    r.key_prefix.clone(),
                    r.tenant.to_string(),
                    time_key(r.first),
                    time_key(r.last),
                    time_key(r.expires_at()),
                ]
            })
            .collect();
        let counts: Vec<i64> = reads
            .iter()
            .map(|r| i64::try_from(r.count).unwrap_or(i64::MAX))
            .collect();
        self.write(move |db| {
            let mut upsert = db.prepare_cached(
                "INSERT INTO session_reads
                     (connection, hour, key_prefix, tenant, count, first, last, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?8, ?5, ?6, ?7)
                 ON CONFLICT (connection, hour, key_prefix) DO UPDATE SET
                     count = count + excluded.count,
                     first = min(first, excluded.first),
                     last = max(last, excluded.last)",
            )?;
            for (row, count) in rows.iter().zip(&counts) {
                let [connection, hour, prefix, tenant, first, last, expires] = row;
                upsert.execute(params![
                    connection, hour, prefix, tenant, first, last, expires, count
                ])?;
            }
            db.prepare_cached("DELETE FROM session_reads WHERE expires_at < ?1")?
                .execute([time_key(latest)])?;
            Ok(())
        })
        .await
        .map_err(|f| f.into_store("counting session reads"))
    }

    async fn list_session_reads(
        &self,
        id: &ConnectionId,
        until: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Keyed<SessionReads>>, StoreError> {
        let id = id.to_string();
        self.read(move |db| {
            let mut query = db.prepare_cached(
                "SELECT hour, key_prefix, tenant, count, first, last FROM session_reads
                 WHERE connection = ?1 AND hour <= ?2
                 ORDER BY hour DESC, key_prefix DESC LIMIT ?3",
            )?;
            let rows = query.query_map(params![id, bound(until), i64::from(limit)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?;
            rows.map(|row| {
                let (hour, key_prefix, tenant, count, first, last) = row?;
                let what = format!("session reads of connection {id}");
                let time = |value: &str| super::codec::parse_time_key(value, &what);
                Ok(Keyed {
                    id: key_prefix.clone(),
                    item: SessionReads {
                        connection: ConnectionId::parse(&id).map_err(|_| {
                            Failure::Corrupt(format!("{what}: not a connection id"))
                        })?,
                        tenant: crate::ids::TenantId::parse(&tenant)
                            .map_err(|_| Failure::Corrupt(format!("{what}: not a tenant id")))?,
                        key_prefix,
                        hour: time(&hour)?,
                        count: u64::try_from(count).unwrap_or(0),
                        first: time(&first)?,
                        last: time(&last)?,
                    },
                })
            })
            .collect()
        })
        .await
        .map_err(|f| f.into_store("listing a connection's session reads"))
    }

    async fn list_connection_notices(
        &self,
        id: &ConnectionId,
    ) -> Result<Vec<NoticeRecord>, StoreError> {
        let connection = id.to_string();
        let keys = self
            .read(move |db| {
                let mut query =
                    db.prepare_cached("SELECT key FROM notices WHERE connection = ?1")?;
                let keys = query
                    .query_map([&connection], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(keys)
            })
            .await
            .map_err(|f| f.into_store("listing a connection's notices"))?;
        let mut notices = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(notice) = self.get_notice(&NoticeKey::new(key)).await? {
                notices.push(notice);
            }
        }
        Ok(notices)
    }
}
