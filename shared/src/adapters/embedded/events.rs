//! [`EventStore`] on `status_events`, `event_deliveries` and `webhooks` (schema version 6). An event is
//! inserted by the `transitions_events` trigger in the transaction that inserts its transition; each
//! state change of a delivery is one conditional `UPDATE` in a `BEGIN IMMEDIATE` transaction, so of
//! concurrent claimants exactly one sees its update change a row.
//!
//! A webhook's signing secret is kept sealed in `client_secrets`, under the name `webhook:<id>`, which
//! no app id can take (app ids are slugs): the vault key seals it, bound to that name, like any
//! client secret.

use super::codec::{decode, encode, parse_time_key, time_key};
use super::sealing::{Entry, Stored};
use super::{EmbeddedStore, Failure};
use crate::domain::StatusTransition;
use crate::events::{
    DeliveryClaim, DeliveryKey, DeliveryRecord, DeliverySettle, DeliveryState, DeliveryTicket,
    PendingEvent, Webhook,
};
use crate::ids::{ConnectionId, TenantId, WebhookId};
use crate::ports::{EventStore, StoreError, VaultError};
use crate::secret::WebhookSecret;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection as Db, OptionalExtension};

const KEY_PREFIX: &str = "transition:";
const DELIVERY_COLUMNS: &str =
    "state, due_at, claimed_at, settled_at, attempts, last_error, ticket";

type Row = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    Option<String>,
    String,
);

fn select_delivery(db: &Db, key: &str) -> Result<Option<Row>, Failure> {
    Ok(db
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM event_deliveries WHERE key = ?1"
        ))?
        .query_row([key], read_row)
        .optional()?)
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn decode_delivery(row: Row) -> Result<DeliveryRecord, Failure> {
    let (state, due_at, claimed_at, settled_at, attempts, last_error, ticket) = row;
    let time = |value: Option<String>, what: &str| match value {
        Some(v) => parse_time_key(&v, what),
        None => Err(Failure::Corrupt(format!("a delivery lacks its {what}"))),
    };
    let state = match state.as_str() {
        "pending" => DeliveryState::Pending {
            due_at: time(due_at, "due time")?,
        },
        "sending" => DeliveryState::Sending {
            claimed_at: time(claimed_at, "claim time")?,
        },
        "delivered" => DeliveryState::Delivered {
            at: time(settled_at, "settle time")?,
        },
        "dead" => DeliveryState::Dead {
            at: time(settled_at, "settle time")?,
        },
        "dropped" => DeliveryState::Dropped {
            at: time(settled_at, "settle time")?,
        },
        _ => return Err(Failure::Corrupt("a delivery has an unknown state".into())),
    };
    Ok(DeliveryRecord {
        ticket: decode::<DeliveryTicket>(&ticket, "a delivery's ticket")?,
        state,
        attempts: u32::try_from(attempts).unwrap_or(0),
        last_error,
    })
}

fn secret_name(webhook: &WebhookId) -> String {
    format!("webhook:{webhook}")
}

#[async_trait]
impl EventStore for EmbeddedStore {
    async fn pending_events(&self, limit: u32) -> Result<Vec<PendingEvent>, StoreError> {
        self.read(move |db| {
            let mut query = db.prepare_cached(
                "SELECT e.seq, t.connection, t.data FROM status_events e
                 JOIN transitions t ON t.seq = e.seq
                 WHERE e.fanned_out = 0 ORDER BY e.seq LIMIT ?1",
            )?;
            let rows = query.query_map([i64::from(limit)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            let mut pending = Vec::new();
            for row in rows {
                let (seq, connection, data) = row?;
                pending.push(PendingEvent {
                    key: format!("{KEY_PREFIX}{seq}"),
                    connection: ConnectionId::parse(&connection).map_err(|_| {
                        Failure::Corrupt("a transition's connection id is not an id".into())
                    })?,
                    transition: decode::<StatusTransition>(&data, "a transition")?,
                });
            }
            Ok(pending)
        })
        .await
        .map_err(|f| f.into_store("listing pending events"))
    }

    async fn fan_out_event(
        &self,
        key: &str,
        deliveries: &[DeliveryTicket],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        const OPERATION: &str = "fanning out an event";
        let seq: i64 = key
            .strip_prefix(KEY_PREFIX)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StoreError::NotFound(format!("event {key}")))?;
        let rows = deliveries
            .iter()
            .map(|t| {
                Ok((
                    t.key().to_string(),
                    t.tenant.to_string(),
                    encode(t, "a delivery's ticket", &[])?,
                ))
            })
            .collect::<Result<Vec<_>, Failure>>()
            .map_err(|f| f.into_store(OPERATION))?;
        let due = time_key(now);
        self.write(move |db| {
            let marked = db
                .prepare_cached(
                    "UPDATE status_events SET fanned_out = 1 WHERE seq = ?1 AND fanned_out = 0",
                )?
                .execute([seq])?;
            if marked == 0 {
                return Ok(false);
            }
            let mut insert = db.prepare_cached(
                "INSERT INTO event_deliveries (key, tenant, state, due_at, attempts, ticket)
                 VALUES (?1, ?2, 'pending', ?3, 0, ?4) ON CONFLICT (key) DO NOTHING",
            )?;
            for (key, tenant, ticket) in &rows {
                insert.execute(params![key, tenant, due, ticket])?;
            }
            Ok(true)
        })
        .await
        .map_err(|f| f.into_store(OPERATION))
    }

    async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DeliveryKey>, StoreError> {
        let now = time_key(now);
        self.read(move |db| {
            let mut query = db.prepare_cached(
                "SELECT key FROM event_deliveries
                 WHERE state IN ('pending', 'sending') AND due_at <= ?1
                 ORDER BY due_at, key LIMIT ?2",
            )?;
            let keys = query
                .query_map(params![now, i64::from(limit)], |r| r.get::<_, String>(0))?
                .map(|k| k.map(DeliveryKey::new))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(keys)
        })
        .await
        .map_err(|f| f.into_store("listing due deliveries"))
    }

    async fn claim_delivery(
        &self,
        key: &DeliveryKey,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<DeliveryClaim, StoreError> {
        let key = key.as_str().to_string();
        let now_key = time_key(now);
        // A claim's `due_at` is when it goes stale, so the due listing finds an abandoned one.
        let stale_at = time_key(now + (now - stale_before));
        let stale_before = time_key(stale_before);
        self.write(move |db| {
            let claimed = db
                .prepare_cached(
                    "UPDATE event_deliveries SET state = 'sending', claimed_at = ?2, due_at = ?3
                     WHERE key = ?1 AND ((state = 'pending' AND due_at <= ?2)
                                         OR (state = 'sending' AND claimed_at < ?4))",
                )?
                .execute(params![key, now_key, stale_at, stale_before])?;
            let Some(row) = select_delivery(db, &key)? else {
                return Ok(DeliveryClaim::Missing);
            };
            let record = decode_delivery(row)?;
            Ok(match record.state {
                DeliveryState::Sending { .. } if claimed == 1 => DeliveryClaim::Claimed(record),
                DeliveryState::Sending { .. } => DeliveryClaim::Busy,
                DeliveryState::Pending { .. } => DeliveryClaim::NotDue,
                _ => DeliveryClaim::Settled,
            })
        })
        .await
        .map_err(|f| f.into_store("claiming a delivery"))
    }

    async fn settle_delivery(
        &self,
        key: &DeliveryKey,
        claimed_at: DateTime<Utc>,
        settle: &DeliverySettle,
    ) -> Result<(), StoreError> {
        let key = key.as_str().to_string();
        let claimed = time_key(claimed_at);
        let (state, due_at, settled_at) = match settle.state() {
            DeliveryState::Pending { due_at } => ("pending", Some(time_key(due_at)), None),
            DeliveryState::Delivered { at } => ("delivered", None, Some(time_key(at))),
            DeliveryState::Dead { at } => ("dead", None, Some(time_key(at))),
            DeliveryState::Dropped { at } => ("dropped", None, Some(time_key(at))),
            DeliveryState::Sending { .. } => {
                return Err(StoreError::Corrupt("a settle cannot claim".into()))
            }
        };
        let last_error = settle.last_error().map(str::to_string);
        let attempts: Option<i64> = match settle {
            DeliverySettle::Dropped { .. } => None,
            other => Some(i64::from(other.attempts(0))),
        };
        self.write(move |db| {
            let changed = db
                .prepare_cached(
                    "UPDATE event_deliveries SET state = ?3, due_at = ?4, settled_at = ?5,
                       claimed_at = NULL, attempts = COALESCE(?6, attempts),
                       last_error = COALESCE(?7, last_error)
                     WHERE key = ?1 AND state = 'sending' AND claimed_at = ?2",
                )?
                .execute(params![
                    key, claimed, state, due_at, settled_at, attempts, last_error
                ])?;
            if changed == 0 {
                return Err(Failure::Refused(StoreError::Conflict));
            }
            Ok(())
        })
        .await
        .map_err(|f| f.into_store("settling a delivery"))
    }

    async fn get_delivery(&self, key: &DeliveryKey) -> Result<Option<DeliveryRecord>, StoreError> {
        let key = key.as_str().to_string();
        self.read(move |db| select_delivery(db, &key)?.map(decode_delivery).transpose())
            .await
            .map_err(|f| f.into_store("reading a delivery"))
    }

    async fn dead_letters(
        &self,
        tenant: &TenantId,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let tenant = tenant.to_string();
        self.read(move |db| {
            let mut query = db.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM event_deliveries
                 WHERE tenant = ?1 AND state = 'dead' ORDER BY settled_at DESC, key LIMIT ?2"
            ))?;
            let rows = query.query_map(params![tenant, i64::from(limit)], read_row)?;
            rows.map(|row| decode_delivery(row?)).collect()
        })
        .await
        .map_err(|f| f.into_store("listing dead letters"))
    }

    async fn insert_webhook(&self, webhook: &Webhook) -> Result<(), StoreError> {
        const OPERATION: &str = "registering a webhook";
        let data = encode(webhook, "a webhook", &[]).map_err(|f| f.into_store(OPERATION))?;
        let (tenant, id) = (webhook.tenant.to_string(), webhook.id.to_string());
        let created_at = time_key(webhook.created_at);
        self.write(move |db| {
            let inserted = db
                .prepare_cached(
                    "INSERT INTO webhooks (tenant, id, created_at, data) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![tenant, id, created_at, data])?;
            if inserted == 0 {
                return Err(Failure::Refused(StoreError::AlreadyExists(format!(
                    "webhook {id}"
                ))));
            }
            Ok(())
        })
        .await
        .map_err(|f| f.into_store(OPERATION))
    }

    async fn list_webhooks(&self, tenant: &TenantId) -> Result<Vec<Webhook>, StoreError> {
        let tenant = tenant.to_string();
        self.read(move |db| {
            let mut query = db.prepare_cached(
                "SELECT data FROM webhooks WHERE tenant = ?1 ORDER BY created_at, id",
            )?;
            let rows = query.query_map([&tenant], |r| r.get::<_, String>(0))?;
            rows.map(|data| decode::<Webhook>(&data?, "a webhook"))
                .collect()
        })
        .await
        .map_err(|f| f.into_store("listing webhooks"))
    }

    async fn delete_webhook(&self, tenant: &TenantId, id: &WebhookId) -> Result<bool, StoreError> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.write(move |db| {
            Ok(db
                .prepare_cached("DELETE FROM webhooks WHERE tenant = ?1 AND id = ?2")?
                .execute(params![tenant, id])?
                == 1)
        })
        .await
        .map_err(|f| f.into_store("deleting a webhook"))
    }
}

impl EmbeddedStore {
    pub(super) async fn put_sealed_webhook_secret(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
        secret: &WebhookSecret,
    ) -> Result<(), VaultError> {
        const OPERATION: &str = "storing a webhook's signing secret";
        let (tenant, name) = (tenant.to_string(), secret_name(webhook));
        let content = self
            .vault_key()
            .seal(
                Entry::client_secret(&tenant, &name),
                secret.expose().as_bytes(),
            )
            .map_err(|f| f.into_vault(OPERATION))?;
        self.write_and_scrub(move |db| {
            db.prepare_cached(
                "INSERT INTO client_secrets (tenant, app, content, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant, app) DO UPDATE SET content = excluded.content, updated_at = excluded.updated_at",
            )?
            .execute(params![tenant, name, content, time_key(Utc::now())])?;
            Ok(())
        })
        .await
        .map_err(|f| f.into_vault(OPERATION))
    }

    pub(super) async fn get_sealed_webhook_secret(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
    ) -> Result<Option<WebhookSecret>, VaultError> {
        let (tenant, name) = (tenant.to_string(), secret_name(webhook));
        let key = self.vault_key();
        self.read(move |db| {
            let stored: Option<Stored> = db
                .prepare_cached(
                    "SELECT content FROM client_secrets WHERE tenant = ?1 AND app = ?2",
                )?
                .query_row(params![tenant, name], |r| r.get(0))
                .optional()?;
            stored
                .map(|stored| {
                    key.reveal(Entry::client_secret(&tenant, &name), stored)
                        .map(WebhookSecret::new)
                })
                .transpose()
        })
        .await
        .map_err(|f| f.into_vault("reading a webhook's signing secret"))
    }

    pub(super) async fn delete_sealed_webhook_secret(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
    ) -> Result<(), VaultError> {
        let (tenant, name) = (tenant.to_string(), secret_name(webhook));
        self.write_and_scrub(move |db| {
            db.prepare_cached("DELETE FROM client_secrets WHERE tenant = ?1 AND app = ?2")?
                .execute(params![tenant, name])?;
            Ok(())
        })
        .await
        .map_err(|f| f.into_vault("deleting a webhook's signing secret"))
    }
}
