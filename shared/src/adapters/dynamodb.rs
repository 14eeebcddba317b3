//! DynamoDB metadata store: tenants, apps, connections with their status history, API keys and pending
//! authorizations, all in ONE table. This comment is the reference for the table's design; the SAM
//! template and [`DynamoStore::create_table`] declare exactly this schema.
//!
//! # Table
//!
//! - Primary key `pk` (S, partition key) + `sk` (S, sort key); billing mode `PAY_PER_REQUEST`.
//! - TTL attribute `ttl` (N, epoch seconds), set on pending authorizations, connect links and usage
//!   counter windows.
//! - Every item has `entity` (S: `tenant`, `app`, `connection`, `transition`, `api_key`, `pending`,
//!   `usage`), so exports and the console tell items apart without parsing keys, and `data` (S): the
//!   record as JSON (serde of the domain type); a usage counter is only its count. A value that a condition or an index needs lives in its own top-level
//!   attribute and is left *out* of `data`, so every value has exactly one source of truth.
//!
//! | item                  | `pk`                       | `sk`                            | other attributes |
//! |-----------------------|----------------------------|---------------------------------|------------------|
//! | tenant                | `TENANT#<tenant>`          | `TENANT`                        | `data` |
//! | app                   | `TENANT#<tenant>`          | `APP#<app>`                     | `data` |
//! | connection            | `CONN#<id>`                | `CONN`                          | `tenant`, `data` (without `version`, `lease`), `version` (N), `updated_at`, `lease_owner`?, `lease_until`? (N), `gsi1pk`, `gsi1sk`, `gsi2pk`?, `gsi2sk`? |
//! | status transition     | `CONN#<id>`                | `TRANSITION#<at>#<version>#<n>` | `data` |
//! | API key               | `APIKEY#<prefix>`          | `APIKEY`                        | `tenant`, `data` (without `revoked_at`), `revoked_at`?, `gsi1pk`, `gsi1sk` |
//! | pending authorization | `STATE#<sha256 of state>`  | `STATE`                         | `data`, `expires_at` (N), `ttl` (N) |
//! | usage counter window  | `USAGE#<tenant>#<app>#<provider user>` | `<counter>#<window start>` | `used` (N), `window_end` (N), `ttl` (N) |
//! | API change            | `CONN#<id>`                | `CHANGE#<at>#<version>`         | `data` (see `history.rs`) |
//! | session reads         | `CONN#<id>`                | `READS#<hour>#<key prefix>`     | `tenant`, `count` (N), `first`, `last`, `ttl` (N) |
//! | event delivery, webhook | `DELIVERY#<key>`, `TENANT#<tenant>` | `DELIVERY`, `WEBHOOK#<id>` | see `events.rs` (a pending event is marked on its transition item) |
//!
//! Identifiers are validated slugs or generated ids ([`crate::ids`]) and never contain `#`.
//!
//! # Time
//!
//! - In keys a time is RFC 3339 in UTC with nine fractional digits (`2026-11-01T09:00:00.000000000Z`):
//!   fixed width, so string order is time order; exact to the nanosecond; readable in the console.
//! - Times that conditions compare (`lease_until`, `expires_at`) are numbers: epoch milliseconds, with
//!   the sub-millisecond part as decimals (`1793523600000.000001`). Compared numerically by DynamoDB,
//!   and exact, so a value reads back as written (`LeaseAttempt::Busy { until }` equals the
//!   `now + ttl` of the winner).
//! - `ttl` is whole epoch seconds, rounded up, so DynamoDB never deletes an entry before it expires.
//!
//! # Connections
//!
//! - `version` is the optimistic-concurrency counter. A save is an update conditioned on
//!   `version = <version read> AND tenant = <tenant read>` (and, under a lease fence,
//!   `lease_owner = <writer>`) that increments it. A refused save whose old image is empty was saving a
//!   connection that does not exist: `NotFound`, not `Conflict`.
//! - `lease_owner` / `lease_until` are set only by `acquire_lease` (conditioned on the lease being absent
//!   or expired; it also increments `version`, fencing off every writer that read before) and removed
//!   only by `release_lease`. A save never touches them; reads put them back into `Connection::lease`.
//! - Status transitions are items in the connection's partition, written in the same
//!   `TransactWriteItems` as the connection change they belong to, so a refused save writes none. The
//!   sort key orders them by time, then by the connection version their write produced (unique per
//!   write), then by position within the write.
//!
//! # Indexes
//!
//! - `gsi1` (`gsi1pk`, `gsi1sk`), projection ALL: a tenant's listings.
//!   Connections: `TENANT#<tenant>#CONN` / `<created_at>#<id>` (oldest first).
//!   API keys: `TENANT#<tenant>#APIKEY` / `<prefix>`.
//!   ALL because listings return whole records (KEYS_ONLY would add a BatchGetItem per page); the price is
//!   one index write per connection save (~150 a day for an Exact connection in continuous use).
//! - `gsi2` (`gsi2pk`, `gsi2sk`), projection INCLUDE `tenant`: the due index, sparse.
//!   `DUE` / `<next_refresh_at>#<id>`, present only while `next_refresh_at` is set (a save REMOVEs both
//!   attributes otherwise). A `DueConnection` is built from the projected keys and `tenant`.
//!   All entries share the partition `DUE`, and one index partition takes about 1,000 writes per second.
//!   Moving an entry (a changed `next_refresh_at`) costs 2 index writes, so the ceiling is ~500
//!   reschedules per second: ~300,000 connections refreshing every 10 minutes, far beyond the broker's
//!   scale. Past it, index throttling would also throttle the table's writes; the remedy is to shard the
//!   partition (`DUE#<n>`) and query the shards in turn.
//!
//! - `gsi2` partition `AWAITING` / `<status_since>#<id>`: connections only a person can fix (reconnect
//!   required, disabled), longest waiting first, for the notifier's reminders. A connection has at most
//!   one `gsi2` entry: `DUE` while it is scheduled, else `AWAITING` while it waits for a person, else
//!   none; every save sets or REMOVEs the keys accordingly (`writes::schedule_index_entry`).
//!
//! - `gsi2` partition `NOTIFY` / `<time>#<id>`: the notification outbox, sparse. A status transition
//!   that needs an email (`crate::notify::notice_kind_of`) is written with `notice_state = pending`,
//!   `attempts` and these index keys; the daily sweep's warnings are items `CONN#<id>` /
//!   `NOTICE#<name>` with the same attributes. Settling a notice REMOVEs the index keys, so the
//!   partition holds only unsettled notices (see `notifications.rs`).
//!
//! # Consistency and paging
//!
//! Reads of the table (`get_*`, `list_transitions`, `list_apps`, every condition) are strongly
//! consistent. Index reads (`list_connections`, `list_api_keys`, `due_for_refresh`, `awaiting_person`) are eventually
//! consistent, typically by well under a second; callers of `due_for_refresh` re-read before acting.
//! A page cursor is the URL-safe base64 of the JSON of the last returned item's key attributes, checked
//! against the listing it is passed to (see `paging`). Each page asks for one item beyond its limit, so
//! `next_cursor` is `None` exactly when nothing follows; a page DynamoDB cut short at 1 MB is continued
//! within the same call.
//!
//! # Failures
//!
//! A failed condition is `Conflict` (or `NotFound`, `AlreadyExists`, `Busy`, `Expired`, ...: whatever
//! the port says). Anything else the SDK reports (throttling, a `TransactionConflict` with a concurrent
//! transaction, a network error) is `Unavailable`, and retrying is safe: every write is conditional.
//!
//! The SDK itself retries a call whose answer was lost, and the retry of a write that had landed would
//! fail its own condition. So every `TransactWriteItems` (connection inserts, saves with transitions)
//! carries the SDK's idempotency token, which makes such a retry succeed; and a single-item save or lease
//! acquisition recognises its own write in the old image that comes with the refused condition
//! (`ReturnValuesOnConditionCheckFailure = ALL_OLD`: same version and `data`, or same lease owner and
//! expiry) and succeeds. Consuming an authorization state cannot tell: a retried consume whose first
//! attempt landed answers `Unknown`, and the person starts the authorization again.

mod accounts;
mod connections;
mod errors;
mod events;
mod history;
mod keys;
mod links;
mod notifications;
mod paging;
mod records;
mod schema;
pub mod stream;
mod usage;
mod writes;

use crate::ports::StoreError;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use errors::{condition_held, unavailable};
use keys::{PK, SK};
use records::s;
use std::collections::HashMap;

/// One DynamoDB item, or one item key.
type Item = HashMap<String, AttributeValue>;

/// The metadata store on one DynamoDB table (see the module documentation for its design).
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    /// A store on an existing table with the schema above. The client should be built once per process,
    /// with operation timeouts set (the SDK sets none by default).
    pub fn new(client: Client, table_name: impl Into<String>) -> Self {
        Self {
            client,
            table: table_name.into(),
        }
    }

    pub fn table_name(&self) -> &str {
        &self.table
    }
}

// Plumbing shared by the port implementations.
impl DynamoStore {
    fn key(pk: String, sk: &str) -> Item {
        Item::from([(PK.to_string(), s(pk)), (SK.to_string(), s(sk))])
    }

    /// A strongly consistent read of one item.
    async fn get_item(
        &self,
        pk: String,
        sk: &str,
        operation: &str,
    ) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable(operation, &e))?;
        Ok(out.item.filter(|item| !item.is_empty()))
    }

    /// As [`DynamoStore::get_item`], the item decoded by `decode`.
    async fn get_decoded<T>(
        &self,
        pk: String,
        sk: &str,
        operation: &str,
        decode: impl Fn(&Item) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let item = self.get_item(pk, sk, operation).await?;
        item.as_ref().map(decode).transpose()
    }

    /// Writes `item`, replacing whatever has its key.
    async fn put_item(&self, item: Item, operation: &str) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| unavailable(operation, &e))?;
        Ok(())
    }

    /// Writes `item` if nothing has its key yet; [`StoreError::AlreadyExists`] naming `what` otherwise.
    async fn put_new(
        &self,
        item: Item,
        operation: &str,
        what: impl FnOnce() -> String,
    ) -> Result<(), StoreError> {
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await;
        if condition_held(written, operation, |e| {
            e.is_conditional_check_failed_exception()
        })? {
            Ok(())
        } else {
            Err(StoreError::AlreadyExists(what()))
        }
    }

    /// A query of the items of the partition `pk` of `index`, whose partition key is `pk_attribute`.
    fn index_query(&self, index: &str, pk_attribute: &str, pk: String) -> QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", pk_attribute)
            .expression_attribute_values(":pk", s(pk))
    }

    /// A strongly consistent query of the items of partition `pk` whose sort key starts with `prefix`.
    fn prefix_query(&self, pk: String, prefix: &str) -> QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":prefix", s(prefix))
    }

    /// Every item a query finds, following DynamoDB's pages (for the short, unpaged listings).
    async fn query_all(
        &self,
        query: QueryFluentBuilder,
        operation: &str,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = query
                .clone()
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable(operation, &e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }
}
