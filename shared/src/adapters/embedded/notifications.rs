//! [`NotificationStore`] on the `notices` table. A transition's notice is inserted by the
//! `transitions_outbox` trigger (schema version 2) in the transaction that inserts the transition;
//! warnings are inserted here. Every state change is one conditional `UPDATE` in a `BEGIN IMMEDIATE`
//! transaction, so of concurrent claimants exactly one sees its update change a row.

use super::codec::{decode, encode, parse_time_key, time_key};
use super::{EmbeddedStore, Failure};
use crate::ids::ConnectionId;
use crate::notify::NoticeSubject;
use crate::notify::{Claim, NoticeKey, NoticeOutcome, NoticeRecord, NoticeState, Release};
use crate::ports::{NotificationStore, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection as Db, OptionalExtension};

const COLUMNS: &str = "key, connection, state, claimed_at, attempts, subject, outcome";

type Row = (
    String,
    String,
    String,
    Option<String>,
    i64,
    String,
    Option<String>,
);

fn select(db: &Db, key: &str) -> Result<Option<Row>, Failure> {
    Ok(db
        .prepare_cached(&format!("SELECT {COLUMNS} FROM notices WHERE key = ?1"))?
        .query_row([key], |r| r.try_into())
        .optional()?)
}

fn decode_row(row: Row) -> Result<NoticeRecord, Failure> {
    let (key, connection, state, claimed_at, attempts, subject, outcome) = row;
    let connection = ConnectionId::parse(&connection)
        .map_err(|_| Failure::Corrupt("a notice's connection id is not an id".into()))?;
    let state = match (state.as_str(), claimed_at, outcome) {
        ("pending", _, _) => NoticeState::Pending,
        ("sending", Some(at), _) => NoticeState::Sending {
            claimed_at: parse_time_key(&at, "a notice's claimed_at")?,
        },
        ("settled", _, Some(outcome)) => {
            NoticeState::Settled(decode(&outcome, "a notice's outcome")?)
        }
        _ => return Err(Failure::Corrupt("a notice has an unknown state".into())),
    };
    Ok(NoticeRecord {
        key: NoticeKey::new(key),
        connection,
        subject: decode::<NoticeSubject>(&subject, "a notice's subject")?,
        state,
        attempts: u32::try_from(attempts).unwrap_or(0),
    })
}

#[async_trait]
impl NotificationStore for EmbeddedStore {
    async fn unsettled_notices(&self, limit: u32) -> Result<Vec<NoticeKey>, StoreError> {
        self.read(move |db| {
            let mut query = db.prepare_cached(
                "SELECT key FROM notices WHERE state <> 'settled' ORDER BY created_at, key LIMIT ?1",
            )?;
            let keys = query
                .query_map([i64::from(limit)], |r| r.get::<_, String>(0))?
                .map(|k| k.map(NoticeKey::new))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(keys)
        })
        .await
        .map_err(|f| f.into_store("listing unsettled notices"))
    }

    async fn get_notice(&self, key: &NoticeKey) -> Result<Option<NoticeRecord>, StoreError> {
        let key = key.as_str().to_string();
        self.read(move |db| select(db, &key)?.map(decode_row).transpose())
            .await
            .map_err(|f| f.into_store("reading a notice"))
    }

    async fn create_notice(
        &self,
        connection: &ConnectionId,
        name: &str,
        subject: &NoticeSubject,
    ) -> Result<bool, StoreError> {
        const OPERATION: &str = "creating a notice";
        let key = format!("warning:{connection}:{name}");
        let connection = connection.as_str().to_string();
        let created_at = time_key(subject.created_at());
        let subject = encode(subject, "a notice", &[]).map_err(|f| f.into_store(OPERATION))?;
        self.write(move |db| {
            let inserted = db
                .prepare_cached(
                    "INSERT INTO notices (key, connection, created_at, state, attempts, subject)
                     VALUES (?1, ?2, ?3, 'pending', 0, ?4) ON CONFLICT (key) DO NOTHING",
                )?
                .execute(params![key, connection, created_at, subject])?;
            Ok(inserted == 1)
        })
        .await
        .map_err(|f| f.into_store(OPERATION))
    }

    async fn claim_notice(
        &self,
        key: &NoticeKey,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        let key = key.as_str().to_string();
        let now_key = time_key(now);
        self.write(move |db| {
            let claimed = db
                .prepare_cached(
                    "UPDATE notices SET state = 'sending', claimed_at = ?2
                     WHERE key = ?1 AND state = 'pending'",
                )?
                .execute(params![key, now_key])?;
            let Some(row) = select(db, &key)? else {
                return Ok(Claim::Missing);
            };
            let record = decode_row(row)?;
            Ok(match record.state.clone() {
                NoticeState::Sending { .. } if claimed == 1 => Claim::Claimed(record),
                NoticeState::Sending { claimed_at } if claimed_at < stale_before => {
                    Claim::Stale { claimed_at }
                }
                NoticeState::Sending { .. } => Claim::Busy,
                NoticeState::Settled(outcome) => Claim::Settled(outcome),
                NoticeState::Pending => {
                    return Err(Failure::Corrupt("a claimed notice is still pending".into()))
                }
            })
        })
        .await
        .map_err(|f| f.into_store("claiming a notice"))
    }

    async fn release_notice(
        &self,
        key: &NoticeKey,
        claimed_at: DateTime<Utc>,
        release: &Release,
    ) -> Result<(), StoreError> {
        const OPERATION: &str = "releasing a notice";
        let key = key.as_str().to_string();
        let claimed = time_key(claimed_at);
        let (sql, value): (&str, String) = match release {
            Release::Settle(outcome) => (
                "UPDATE notices SET state = 'settled', claimed_at = NULL, outcome = ?3,
                   attempts = CASE WHEN ?4 >= 0 THEN ?4 ELSE attempts END
                 WHERE key = ?1 AND state = 'sending' AND claimed_at = ?2",
                encode(outcome, "a notice's outcome", &[]).map_err(|f| f.into_store(OPERATION))?,
            ),
            Release::Retry { .. } => (
                "UPDATE notices SET state = 'pending', claimed_at = NULL, attempts = ?4
                 WHERE key = ?1 AND state = 'sending' AND claimed_at = ?2 AND ?3 IS NOT NULL",
                String::new(),
            ),
        };
        let attempts: i64 = match release {
            Release::Retry { attempts } => i64::from(*attempts),
            Release::Settle(NoticeOutcome::Failed { attempts, .. }) => i64::from(*attempts),
            Release::Settle(_) => -1,
        };
        self.write(move |db| {
            let changed = db
                .prepare_cached(sql)?
                .execute(params![key, claimed, value, attempts])?;
            if changed == 0 {
                return Err(Failure::Refused(StoreError::Conflict));
            }
            Ok(())
        })
        .await
        .map_err(|f| f.into_store(OPERATION))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Actor, StatusKind, StatusTransition};

    use crate::ports::ConnectionStore;

    fn temp_file() -> std::path::PathBuf {
        std::env::temp_dir()
            .join(format!(
                "broker-notices-{}-{}",
                std::process::id(),
                crate::notify::mailer::message_token()
            ))
            .join("broker.db")
    }

    /// A file written by schema version 1 (no `notices`, no trigger) opens, is upgraded, and the
    /// transitions written after the upgrade get their notices.
    #[tokio::test]
    async fn a_version_1_file_is_upgraded_in_place() {
        let path = temp_file();
        drop(EmbeddedStore::open(&path).unwrap());
        {
            let db = Db::open(&path).unwrap();
            db.execute_batch(
                "DROP TRIGGER transitions_outbox; DROP TABLE notices;
                 DROP INDEX connections_awaiting; ALTER TABLE connections DROP COLUMN awaiting_since;
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let store = EmbeddedStore::open(&path).unwrap();
        let version: i64 = Db::open(&path)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, super::super::schema::SCHEMA_VERSION);
        let now = Utc::now();
        let c = crate::fixtures::acme_connection(now);
        let t = StatusTransition {
            from: StatusKind::Connected,
            to: StatusKind::Disabled,
            at: now,
            actor: Actor::System("test".into()),
            reason: "Blocked".into(),
        };
        store.insert_connection(&c, &[t]).await.unwrap();
        assert_eq!(store.unsettled_notices(10).await.unwrap().len(), 1);
    }

    /// A file written by schema version 2 (no awaiting index) is upgraded, and the connections that
    /// were already waiting for a person are found there, with the time their wait began.
    #[tokio::test]
    async fn a_version_2_file_gets_its_waiting_connections_indexed() {
        use crate::domain::{ReconnectKind, ReconnectReason, StatusEvent};
        use crate::ports::PageRequest;
        let path = temp_file();
        let store = EmbeddedStore::open(&path).unwrap();
        let began = Utc::now() - chrono::Duration::days(4);
        let connection = |status: Option<StatusEvent>| {
            let mut c = crate::fixtures::acme_connection(began - chrono::Duration::days(1));
            c.apply(
                StatusEvent::Authorized,
                Actor::System("test".into()),
                c.created_at,
            )
            .unwrap();
            if let Some(event) = status {
                c.apply(event, Actor::System("test".into()), began).unwrap();
            } else {
                c.next_refresh_at = Some(began);
            }
            c
        };
        let waiting = connection(Some(StatusEvent::ReconnectNeeded(ReconnectReason::new(
            ReconnectKind::GrantRevoked,
            "invalid_grant",
        ))));
        let scheduled = connection(None);
        for c in [&waiting, &scheduled] {
            store.insert_connection(c, &[]).await.unwrap();
        }
        drop(store);
        {
            let db = Db::open(&path).unwrap();
            db.execute_batch(
                "DROP INDEX connections_awaiting; ALTER TABLE connections DROP COLUMN awaiting_since;
                 PRAGMA user_version = 2;",
            )
            .unwrap();
        }
        let store = EmbeddedStore::open(&path).unwrap();
        let page = store.awaiting_person(PageRequest::first(10)).await.unwrap();
        let listed: Vec<_> = page.items.iter().map(|a| (&a.id, a.since)).collect();
        assert_eq!(listed, vec![(&waiting.id, began)]);
    }
}
