//! [`HistoryStore`] on the table. Everything a connection's history reads lives in the connection's
//! own partition, so each part of a page is one `Query` (newest first, `ScanIndexForward = false`):
//!
//! | item             | `pk`         | `sk`                                  | other attributes |
//! |------------------|--------------|---------------------------------------|------------------|
//! | API change       | `CONN#<id>`  | `CHANGE#<at>#<version>`               | `data` |
//! | session reads    | `CONN#<id>`  | `READS#<hour>#<key prefix>`           | `tenant`, `count` (N), `first`, `last` (time keys), `ttl` (N) |
//!
//! A change is a `Put` in the same `TransactWriteItems` as the connection update it belongs to (the
//! update is a save's, fenced the same way), so a refused save records nothing; `<version>` is the
//! version that write produced, unique per connection. Session reads are counted with one `UpdateItem`
//! per key and hour (`ADD count`); `first` and `last` are set when absent and moved by a conditional
//! update only when a batch holds an earlier first or later last read (rare: batches of one process
//! arrive in order). They carry `ttl` ([`SessionReads::expires_at`]): DynamoDB deletes them lazily.

use super::errors::{incomplete, transaction_refusal, unavailable, TransactionRefusal};
use super::keys::*;
use super::records::*;
use super::stream::notice_key;
use super::writes::SaveExpression;
use super::{DynamoStore, Item};
use crate::domain::{Connection, ConnectionChange, SessionReads, StatusTransition};
use crate::ids::{ConnectionId, TenantId};
use crate::notify::NoticeRecord;
use crate::ports::{ConnectionStore, Fence, HistoryStore, Keyed, NotificationStore, StoreError};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem, Update};
use chrono::{DateTime, Utc};

const CHANGE_SK_PREFIX: &str = "CHANGE#";
const READS_SK_PREFIX: &str = "READS#";
const COUNT: &str = "count";
const FIRST: &str = "first";
const LAST: &str = "last";
const NOTICE_STATE: &str = "notice_state";

/// The width of a time key: what follows it in a sort key is the entry's id.
const TIME_KEY_LEN: usize = 30;

fn change_sk(at: DateTime<Utc>, version: u64) -> String {
    format!("{CHANGE_SK_PREFIX}{}#{version:020}", time_key(at))
}

fn reads_sk(hour: DateTime<Utc>, key_prefix: &str) -> String {
    format!("{READS_SK_PREFIX}{}#{key_prefix}", time_key(hour))
}

/// The id of an entry: what follows `<prefix><time>#` in its sort key.
fn id_of(item: &Item, prefix: &str) -> Result<String, StoreError> {
    let sk = string_attr(item, SK, &describe(item))?;
    sk.get(prefix.len() + TIME_KEY_LEN + 1..)
        .map(str::to_string)
        .ok_or_else(|| StoreError::Corrupt(format!("{}: sort key too short", describe(item))))
}

fn time_attr(item: &Item, name: &str) -> Result<DateTime<Utc>, StoreError> {
    let what = describe(item);
    parse_time_key(string_attr(item, name, &what)?)
        .ok_or_else(|| StoreError::Corrupt(format!("{what}: {name} is not a time")))
}

fn decode_reads(id: &ConnectionId, item: &Item) -> Result<Keyed<SessionReads>, StoreError> {
    let what = describe(item);
    let key_prefix = id_of(item, READS_SK_PREFIX)?;
    let sk = string_attr(item, SK, &what)?;
    let hour = parse_time_key(&sk[READS_SK_PREFIX.len()..READS_SK_PREFIX.len() + TIME_KEY_LEN])
        .ok_or_else(|| StoreError::Corrupt(format!("{what}: no hour in the sort key")))?;
    let count = match item.get(COUNT) {
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("{what}: count is not a number")))?,
        _ => return Err(StoreError::Corrupt(format!("{what}: no count"))),
    };
    Ok(Keyed {
        id: key_prefix.clone(),
        item: SessionReads {
            connection: id.clone(),
            tenant: TenantId::parse(string_attr(item, TENANT, &what)?)
                .map_err(|_| StoreError::Corrupt(format!("{what}: not a tenant id")))?,
            key_prefix,
            hour,
            count,
            first: time_attr(item, FIRST)?,
            last: time_attr(item, LAST)?,
        },
    })
}

impl DynamoStore {
    /// Up to `limit` items of the connection's partition under `prefix`, newest first, at or before
    /// `until`.
    async fn newest(
        &self,
        id: &ConnectionId,
        prefix: &str,
        until: Option<DateTime<Utc>>,
        limit: u32,
        operation: &str,
    ) -> Result<Vec<Item>, StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .scan_index_forward(false)
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(connection_pk(id)))
            .expression_attribute_values(":prefix", s(prefix));
        query = match until {
            // `$` sorts right after `#`: every entry of that very time is included.
            Some(until) => query
                .key_condition_expression("#pk = :pk AND #sk BETWEEN :prefix AND :bound")
                .expression_attribute_values(":bound", s(format!("{prefix}{}$", time_key(until)))),
            None => query.key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)"),
        };
        let wanted = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut start = None;
        while items.len() < wanted {
            let left = i32::try_from(wanted - items.len()).unwrap_or(i32::MAX);
            let out = query
                .clone()
                .limit(left)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable(operation, &e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(items)
    }

    /// Moves `first` earlier or `last` later, if this count's are; a stored one already beyond it
    /// fails the condition, which is the answer.
    async fn widen_reads(
        &self,
        key: Item,
        name: &str,
        value: DateTime<Utc>,
        comparison: &str,
    ) -> Result<(), StoreError> {
        let operation = "UpdateItem (session reads span)";
        let written = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression("SET #at = :at")
            .condition_expression(format!("#at {comparison} :at"))
            .expression_attribute_names("#at", name)
            .expression_attribute_values(":at", s(time_key(value)))
            .send()
            .await;
        match written {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable(operation, &e)),
        }
    }
}

#[async_trait]
impl HistoryStore for DynamoStore {
    async fn save_connection_change(
        &self,
        connection: &Connection,
        fence: Fence<'_>,
        change: &ConnectionChange,
    ) -> Result<Connection, StoreError> {
        let expression = SaveExpression::of(connection, fence)?;
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::connection_key(&connection.id)))
            .update_expression(expression.update)
            .condition_expression(expression.condition)
            .set_expression_attribute_names(Some(expression.names))
            .set_expression_attribute_values(Some(expression.values))
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .build()
            .map_err(incomplete)?;
        let version = connection.version + 1;
        let record = Put::builder()
            .table_name(&self.table)
            .set_item(Some(Item::from([
                (PK.to_string(), s(connection_pk(&connection.id))),
                (SK.to_string(), s(change_sk(change.at, version))),
                (ENTITY.to_string(), s("change")),
                (
                    DATA.to_string(),
                    s(encode_data(change, "connection change")?),
                ),
            ])))
            .build()
            .map_err(incomplete)?;
        let operation = "TransactWriteItems (save connection change)";
        if let Err(e) = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(update).build())
            .transact_items(TransactWriteItem::builder().put(record).build())
            .send()
            .await
        {
            return Err(match transaction_refusal(operation, &e) {
                TransactionRefusal::Condition { existed, .. } if existed => StoreError::Conflict,
                TransactionRefusal::Condition { .. } => {
                    StoreError::NotFound(format!("connection {}", connection.id))
                }
                TransactionRefusal::Failed(error) => error,
            });
        }
        // A transaction returns no item: what was written is the input at the next version, with
        // the lease as read (exact under a lease fence), or none once released.
        let mut written = connection.clone();
        written.version = version;
        if let Fence::LeaseReleased(_) = fence {
            written.lease = None;
        }
        match self.get_connection(&connection.id).await {
            Ok(Some(stored)) if stored.version == written.version => Ok(stored),
            _ => Ok(written),
        }
    }

    async fn list_changes(
        &self,
        id: &ConnectionId,
        until: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Keyed<ConnectionChange>>, StoreError> {
        let items = self
            .newest(
                id,
                CHANGE_SK_PREFIX,
                until,
                limit,
                "Query (connection changes)",
            )
            .await?;
        items
            .iter()
            .map(|item| {
                Ok(Keyed {
                    id: id_of(item, CHANGE_SK_PREFIX)?,
                    item: decode_data(item)?,
                })
            })
            .collect()
    }

    async fn list_recent_transitions(
        &self,
        id: &ConnectionId,
        until: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Keyed<StatusTransition>>, StoreError> {
        let items = self
            .newest(
                id,
                TRANSITION_SK_PREFIX,
                until,
                limit,
                "Query (recent transitions)",
            )
            .await?;
        items
            .iter()
            .map(|item| {
                Ok(Keyed {
                    id: id_of(item, TRANSITION_SK_PREFIX)?,
                    item: decode_transition(item)?,
                })
            })
            .collect()
    }

    async fn add_session_reads(&self, reads: &[SessionReads]) -> Result<(), StoreError> {
        let operation = "UpdateItem (count session reads)";
        for read in reads {
            let key = Self::key(
                connection_pk(&read.connection),
                &reads_sk(read.hour, &read.key_prefix),
            );
            let out = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .update_expression(
                    "ADD #count :n SET #entity = :entity, #tenant = :tenant, \
                     #first = if_not_exists(#first, :first), #last = if_not_exists(#last, :last), \
                     #ttl = :ttl",
                )
                .expression_attribute_names("#count", COUNT)
                .expression_attribute_names("#entity", ENTITY)
                .expression_attribute_names("#tenant", TENANT)
                .expression_attribute_names("#first", FIRST)
                .expression_attribute_names("#last", LAST)
                .expression_attribute_names("#ttl", TTL)
                .expression_attribute_values(":n", n(read.count.to_string()))
                .expression_attribute_values(":entity", s("session_reads"))
                .expression_attribute_values(":tenant", s(read.tenant.as_str()))
                .expression_attribute_values(":first", s(time_key(read.first)))
                .expression_attribute_values(":last", s(time_key(read.last)))
                .expression_attribute_values(":ttl", n(ttl_seconds(read.expires_at())))
                .return_values(ReturnValue::AllNew)
                .send()
                .await
                .map_err(|e| unavailable(operation, &e))?;
            let stored = out.attributes.unwrap_or_default();
            if time_attr(&stored, FIRST)? > read.first {
                self.widen_reads(key.clone(), FIRST, read.first, ">")
                    .await?;
            }
            if time_attr(&stored, LAST)? < read.last {
                self.widen_reads(key, LAST, read.last, "<").await?;
            }
        }
        Ok(())
    }

    async fn list_session_reads(
        &self,
        id: &ConnectionId,
        until: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Keyed<SessionReads>>, StoreError> {
        let items = self
            .newest(id, READS_SK_PREFIX, until, limit, "Query (session reads)")
            .await?;
        items.iter().map(|item| decode_reads(id, item)).collect()
    }

    async fn list_connection_notices(
        &self,
        id: &ConnectionId,
    ) -> Result<Vec<NoticeRecord>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("#pk = :pk")
            .filter_expression("attribute_exists(#state)")
            .projection_expression("#pk, #sk")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_names("#state", NOTICE_STATE)
            .expression_attribute_values(":pk", s(connection_pk(id)));
        let keys = self.query_all(query, "Query (connection notices)").await?;
        let mut notices = Vec::with_capacity(keys.len());
        for key in &keys {
            let what = describe(key);
            let key = notice_key(string_attr(key, PK, &what)?, string_attr(key, SK, &what)?);
            if let Some(notice) = self.get_notice(&key).await? {
                notices.push(notice);
            }
        }
        Ok(notices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keys_sort_by_time_and_carry_their_ids() {
        let at = DateTime::from_timestamp(1_793_523_600, 0).unwrap();
        let change = change_sk(at, 7);
        let item = Item::from([(SK.to_string(), s(change.clone()))]);
        assert_eq!(
            id_of(&item, CHANGE_SK_PREFIX).unwrap(),
            format!("{:020}", 7)
        );
        assert!(change < change_sk(at + chrono::Duration::nanoseconds(1), 0));
        let reads = reads_sk(at, "abcdefghijkl");
        let item = Item::from([(SK.to_string(), s(reads))]);
        assert_eq!(id_of(&item, READS_SK_PREFIX).unwrap(), "abcdefghijkl");
    }
}
