//! [`EventStore`] on the table.
//!
//! | item            | `pk`                  | `sk`              | other attributes |
//! |-----------------|-----------------------|-------------------|------------------|
//! | event (pending) | the transition's item | —                 | `event_state = pending`, `gsi1pk = EVENTS`, `gsi1sk = <at>#<connection>` |
//! | delivery        | `DELIVERY#<key>`      | `DELIVERY`        | `tenant`, `data` (the ticket), `delivery_state`, `due_at`, `claimed_at`?, `claim_token`?, `settled_at`?, `attempts` (N), `last_error`?, `gsi2pk = DELIVER` + `gsi2sk = <due_at>#<key>` while unsettled, `gsi1pk = TENANT#<tenant>#DEAD` + `gsi1sk = <settled_at>#<key>` once dead |
//! | webhook         | `TENANT#<tenant>`     | `WEBHOOK#<id>`    | `data` |
//!
//! A transition that changes the status is marked as a pending event on its own item, in the
//! transaction that writes it ([`mark_for_event`]). Fanning it out is one `TransactWriteItems`: the
//! transition's update (conditioned on `event_state = pending`, it REMOVEs the `EVENTS` index entry)
//! and one conditional put per delivery — at most 99, so a tenant has at most
//! [`crate::events::webhook::MAX_WEBHOOKS_PER_TENANT`] endpoints. While a delivery is claimed its
//! `due_at` is when the claim goes stale, so the due listing finds an abandoned claim.

use super::errors::{incomplete, transaction_refusal, unavailable, TransactionRefusal};
use super::keys::*;
use super::records::*;
use super::{DynamoStore, Item};
use crate::domain::StatusTransition;
use crate::events::{
    is_status_change, DeliveryClaim, DeliveryKey, DeliveryRecord, DeliverySettle, DeliveryState,
    DeliveryTicket, PendingEvent, Webhook,
};
use crate::ids::{ConnectionId, TenantId, WebhookId};
use crate::ports::{EventStore, StoreError};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem, Update};
use chrono::{DateTime, Utc};

const EVENTS_PK: &str = "EVENTS";
const DELIVER_PK: &str = "DELIVER";
const EVENT_STATE: &str = "event_state";
const DELIVERY_SK: &str = "DELIVERY";
const WEBHOOK_SK_PREFIX: &str = "WEBHOOK#";
const STATE: &str = "delivery_state";
const DUE_AT: &str = "due_at";
const CLAIMED_AT: &str = "claimed_at";
const CLAIM_TOKEN: &str = "claim_token";
const SETTLED_AT: &str = "settled_at";
const ATTEMPTS: &str = "attempts";
const LAST_ERROR: &str = "last_error";

/// Makes a transition item a pending event when it changes the status.
pub(super) fn mark_for_event(item: &mut Item, id: &ConnectionId, transition: &StatusTransition) {
    if is_status_change(transition) {
        item.insert(EVENT_STATE.into(), s("pending"));
        item.insert(GSI1_PK.into(), s(EVENTS_PK));
        item.insert(
            GSI1_SK.into(),
            s(format!("{}#{id}", time_key(transition.at))),
        );
    }
}

fn delivery_pk(key: &DeliveryKey) -> String {
    format!("DELIVERY#{key}")
}

fn dead_pk(tenant: &TenantId) -> String {
    format!("TENANT#{tenant}#DEAD")
}

fn index_sk(at: DateTime<Utc>, key: &DeliveryKey) -> String {
    format!("{}#{key}", time_key(at))
}

fn time_attr(item: &Item, name: &str, what: &str) -> Result<DateTime<Utc>, StoreError> {
    parse_time_key(string_attr(item, name, what)?)
        .ok_or_else(|| StoreError::Corrupt(format!("{what}: {name} is not a time")))
}

fn decode_delivery(item: &Item) -> Result<DeliveryRecord, StoreError> {
    let what = describe(item);
    let state = match string_attr(item, STATE, &what)? {
        "pending" => DeliveryState::Pending {
            due_at: time_attr(item, DUE_AT, &what)?,
        },
        "sending" => DeliveryState::Sending {
            claimed_at: time_attr(item, CLAIMED_AT, &what)?,
        },
        "delivered" => DeliveryState::Delivered {
            at: time_attr(item, SETTLED_AT, &what)?,
        },
        "dead" => DeliveryState::Dead {
            at: time_attr(item, SETTLED_AT, &what)?,
        },
        "dropped" => DeliveryState::Dropped {
            at: time_attr(item, SETTLED_AT, &what)?,
        },
        _ => {
            return Err(StoreError::Corrupt(format!(
                "{what}: unknown delivery state"
            )))
        }
    };
    Ok(DeliveryRecord {
        ticket: decode_data::<DeliveryTicket>(item)?,
        state,
        attempts: match item.get(ATTEMPTS) {
            Some(AttributeValue::N(v)) => v.parse().unwrap_or(0),
            _ => 0,
        },
        last_error: item.get(LAST_ERROR).and_then(|v| v.as_s().ok()).cloned(),
    })
}

fn is_condition_failure<E, R>(error: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    matches!(error, aws_sdk_dynamodb::error::SdkError::ServiceError(e)
        if e.err().code() == Some("ConditionalCheckFailedException"))
}

impl DynamoStore {
    fn delivery_put(
        &self,
        ticket: &DeliveryTicket,
        now: DateTime<Utc>,
    ) -> Result<TransactWriteItem, StoreError> {
        let key = ticket.key();
        let item = Item::from([
            (PK.to_string(), s(delivery_pk(&key))),
            (SK.to_string(), s(DELIVERY_SK)),
            (ENTITY.to_string(), s("delivery")),
            (TENANT.to_string(), s(ticket.tenant.as_str())),
            (DATA.to_string(), s(encode_data(ticket, "delivery")?)),
            (STATE.to_string(), s("pending")),
            (DUE_AT.to_string(), s(time_key(now))),
            (ATTEMPTS.to_string(), n("0")),
            (GSI2_PK.to_string(), s(DELIVER_PK)),
            (GSI2_SK.to_string(), s(index_sk(now, &key))),
        ]);
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .map_err(incomplete)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    async fn read_delivery(&self, key: &DeliveryKey) -> Result<Option<Item>, StoreError> {
        self.get_item(delivery_pk(key), DELIVERY_SK, "GetItem (delivery)")
            .await
    }
}

#[async_trait]
impl EventStore for DynamoStore {
    async fn pending_events(&self, limit: u32) -> Result<Vec<PendingEvent>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI1)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", GSI1_PK)
            .expression_attribute_values(":pk", s(EVENTS_PK))
            .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
            .send()
            .await
            .map_err(|e| unavailable("Query (event outbox)", &e))?;
        out.items
            .unwrap_or_default()
            .iter()
            .map(|item| {
                let what = describe(item);
                let (pk, sk) = (string_attr(item, PK, &what)?, string_attr(item, SK, &what)?);
                Ok(PendingEvent {
                    key: format!("{pk}|{sk}"),
                    connection: connection_id_of_pk(pk).ok_or_else(|| {
                        StoreError::Corrupt(format!("{what}: not a connection's transition"))
                    })?,
                    transition: decode_transition(item)?,
                })
            })
            .collect()
    }

    async fn fan_out_event(
        &self,
        key: &str,
        deliveries: &[DeliveryTicket],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (pk, sk) = key
            .split_once('|')
            .ok_or_else(|| StoreError::NotFound(format!("event {key}")))?;
        if deliveries.len() > 99 {
            return Err(StoreError::Unavailable(format!(
                "an event fans out to at most 99 deliveries, not {}",
                deliveries.len()
            )));
        }
        let done = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk.to_string(), sk)))
            .update_expression("SET #state = :done REMOVE #gsi1pk, #gsi1sk")
            .condition_expression("#state = :pending")
            .expression_attribute_names("#state", EVENT_STATE)
            .expression_attribute_names("#gsi1pk", GSI1_PK)
            .expression_attribute_names("#gsi1sk", GSI1_SK)
            .expression_attribute_values(":done", s("fanned_out"))
            .expression_attribute_values(":pending", s("pending"))
            .build()
            .map_err(incomplete)?;
        let mut writes = vec![TransactWriteItem::builder().update(done).build()];
        for ticket in deliveries {
            writes.push(self.delivery_put(ticket, now)?);
        }
        let operation = "TransactWriteItems (fan out event)";
        // The token makes an SDK retry of a transaction that landed succeed instead of failing its
        // own condition.
        let token = crate::notify::mailer::message_token();
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .client_request_token(token.as_str())
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match transaction_refusal(operation, &e) {
                TransactionRefusal::Condition { .. } => Ok(false),
                TransactionRefusal::Failed(error) => Err(error),
            },
        }
    }

    async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DeliveryKey>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI2)
            .key_condition_expression("#pk = :pk AND #sk < :bound")
            .expression_attribute_names("#pk", GSI2_PK)
            .expression_attribute_names("#sk", GSI2_SK)
            .expression_attribute_values(":pk", s(DELIVER_PK))
            .expression_attribute_values(":bound", s(due_bound(now)))
            .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
            .send()
            .await
            .map_err(|e| unavailable("Query (due deliveries)", &e))?;
        out.items
            .unwrap_or_default()
            .iter()
            .map(|item| {
                let what = describe(item);
                let pk = string_attr(item, PK, &what)?;
                pk.strip_prefix("DELIVERY#")
                    .map(DeliveryKey::new)
                    .ok_or_else(|| StoreError::Corrupt(format!("{what}: not a delivery")))
            })
            .collect()
    }

    async fn claim_delivery(
        &self,
        key: &DeliveryKey,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<DeliveryClaim, StoreError> {
        let token = crate::notify::mailer::message_token();
        let stale_at = now + (now - stale_before);
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(delivery_pk(key), DELIVERY_SK)))
            .update_expression(
                "SET #state = :sending, #claimed = :now, #token = :token, #due = :stale_at, \
                 #gsi2sk = :stale_sk",
            )
            .condition_expression(
                "(#state = :pending AND #due <= :now) OR (#state = :sending AND #claimed < :stale_before)",
            )
            .expression_attribute_names("#state", STATE)
            .expression_attribute_names("#claimed", CLAIMED_AT)
            .expression_attribute_names("#token", CLAIM_TOKEN)
            .expression_attribute_names("#due", DUE_AT)
            .expression_attribute_names("#gsi2sk", GSI2_SK)
            .expression_attribute_values(":sending", s("sending"))
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":now", s(time_key(now)))
            .expression_attribute_values(":token", s(token.as_str()))
            .expression_attribute_values(":stale_at", s(time_key(stale_at)))
            .expression_attribute_values(":stale_sk", s(index_sk(stale_at, key)))
            .expression_attribute_values(":stale_before", s(time_key(stale_before)))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match updated {
            Ok(out) => {
                return Ok(DeliveryClaim::Claimed(decode_delivery(
                    &out.attributes.unwrap_or_default(),
                )?))
            }
            Err(e) if is_condition_failure(&e) => {}
            Err(e) => return Err(unavailable("UpdateItem (claim delivery)", &e)),
        }
        let Some(item) = self.read_delivery(key).await? else {
            return Ok(DeliveryClaim::Missing);
        };
        let record = decode_delivery(&item)?;
        let ours = item.get(CLAIM_TOKEN).and_then(|v| v.as_s().ok()) == Some(&token);
        Ok(match record.state {
            // Our own claim, landed by an attempt whose answer was lost and retried by the SDK.
            DeliveryState::Sending { .. } if ours => DeliveryClaim::Claimed(record),
            DeliveryState::Sending { .. } => DeliveryClaim::Busy,
            DeliveryState::Pending { .. } => DeliveryClaim::NotDue,
            _ => DeliveryClaim::Settled,
        })
    }

    async fn settle_delivery(
        &self,
        key: &DeliveryKey,
        claimed_at: DateTime<Utc>,
        settle: &DeliverySettle,
    ) -> Result<(), StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(delivery_pk(key), DELIVERY_SK)))
            .condition_expression("#state = :sending AND #claimed = :claimed")
            .expression_attribute_names("#state", STATE)
            .expression_attribute_names("#claimed", CLAIMED_AT)
            .expression_attribute_names("#token", CLAIM_TOKEN)
            .expression_attribute_values(":sending", s("sending"))
            .expression_attribute_values(":claimed", s(time_key(claimed_at)));
        let mut set = vec!["#state = :state"];
        let mut remove = vec!["#claimed", "#token"];
        let attempts = match settle {
            DeliverySettle::Dropped { .. } => None,
            other => Some(other.attempts(0)),
        };
        if let Some(attempts) = attempts {
            set.push("#attempts = :attempts");
            request = request
                .expression_attribute_names("#attempts", ATTEMPTS)
                .expression_attribute_values(":attempts", n(attempts.to_string()));
        }
        if let Some(error) = settle.last_error() {
            set.push("#error = :error");
            request = request
                .expression_attribute_names("#error", LAST_ERROR)
                .expression_attribute_values(":error", s(error));
        }
        // DynamoDB refuses a name placeholder the expressions do not use: each is added with its use.
        request = request
            .expression_attribute_names("#due", DUE_AT)
            .expression_attribute_names("#gsi2sk", GSI2_SK);
        request = match settle.state() {
            DeliveryState::Pending { due_at } => {
                set.extend(["#due = :due", "#gsi2sk = :due_sk"]);
                request
                    .expression_attribute_values(":state", s("pending"))
                    .expression_attribute_values(":due", s(time_key(due_at)))
                    .expression_attribute_values(":due_sk", s(index_sk(due_at, key)))
            }
            settled => {
                let (state, at) = match settled {
                    DeliveryState::Delivered { at } => ("delivered", at),
                    DeliveryState::Dead { at } => ("dead", at),
                    DeliveryState::Dropped { at } => ("dropped", at),
                    _ => return Err(StoreError::Corrupt("a settle cannot claim".into())),
                };
                set.push("#settled = :settled");
                remove.extend(["#due", "#gsi2pk", "#gsi2sk"]);
                let mut request = request
                    .expression_attribute_names("#gsi2pk", GSI2_PK)
                    .expression_attribute_names("#settled", SETTLED_AT)
                    .expression_attribute_values(":state", s(state))
                    .expression_attribute_values(":settled", s(time_key(at)));
                if state == "dead" {
                    // The tenant's dead letters, newest first when read backwards.
                    let record = self.read_delivery(key).await?;
                    let tenant = record
                        .as_ref()
                        .and_then(|item| item.get(TENANT))
                        .and_then(|v| v.as_s().ok())
                        .and_then(|t| TenantId::parse(t.as_str()).ok())
                        .ok_or(StoreError::Conflict)?;
                    set.extend(["#gsi1pk = :dead_pk", "#gsi1sk = :dead_sk"]);
                    request = request
                        .expression_attribute_names("#gsi1pk", GSI1_PK)
                        .expression_attribute_names("#gsi1sk", GSI1_SK)
                        .expression_attribute_values(":dead_pk", s(dead_pk(&tenant)))
                        .expression_attribute_values(":dead_sk", s(index_sk(at, key)));
                }
                request
            }
        };
        let expression = format!("SET {} REMOVE {}", set.join(", "), remove.join(", "));
        let result = request.update_expression(expression).send().await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => {
                // A retried settle whose first attempt landed finds its own result.
                let landed = self
                    .get_delivery(key)
                    .await?
                    .is_some_and(|r| r.state == settle.state());
                if landed {
                    Ok(())
                } else {
                    Err(StoreError::Conflict)
                }
            }
            Err(e) => Err(unavailable("UpdateItem (settle delivery)", &e)),
        }
    }

    async fn get_delivery(&self, key: &DeliveryKey) -> Result<Option<DeliveryRecord>, StoreError> {
        self.read_delivery(key)
            .await?
            .as_ref()
            .map(decode_delivery)
            .transpose()
    }

    async fn dead_letters(
        &self,
        tenant: &TenantId,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI1)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", GSI1_PK)
            .expression_attribute_values(":pk", s(dead_pk(tenant)))
            .scan_index_forward(false)
            .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
            .send()
            .await
            .map_err(|e| unavailable("Query (dead letters)", &e))?;
        out.items
            .unwrap_or_default()
            .iter()
            .map(decode_delivery)
            .collect()
    }

    async fn insert_webhook(&self, webhook: &Webhook) -> Result<(), StoreError> {
        let item = Item::from([
            (PK.to_string(), s(tenant_pk(&webhook.tenant))),
            (
                SK.to_string(),
                s(format!("{WEBHOOK_SK_PREFIX}{}", webhook.id)),
            ),
            (ENTITY.to_string(), s("webhook")),
            (DATA.to_string(), s(encode_data(webhook, "webhook")?)),
        ]);
        self.put_new(item, "PutItem (webhook)", || {
            format!("webhook {}", webhook.id)
        })
        .await
    }

    async fn list_webhooks(&self, tenant: &TenantId) -> Result<Vec<Webhook>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(tenant_pk(tenant)))
            .expression_attribute_values(":prefix", s(WEBHOOK_SK_PREFIX))
            .consistent_read(true);
        let mut hooks = self
            .query_all(query, "Query (webhooks)")
            .await?
            .iter()
            .map(decode_data::<Webhook>)
            .collect::<Result<Vec<_>, _>>()?;
        hooks.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(hooks)
    }

    async fn delete_webhook(&self, tenant: &TenantId, id: &WebhookId) -> Result<bool, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(
                tenant_pk(tenant),
                &format!("{WEBHOOK_SK_PREFIX}{id}"),
            )))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| unavailable("DeleteItem (webhook)", &e))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }
}
