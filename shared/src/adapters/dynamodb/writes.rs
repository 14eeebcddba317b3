//! How a connection write is expressed: the whole item of a new connection, the update of a save, and
//! the items of the status transitions written with either.

use super::errors::incomplete;
use super::keys::*;
use super::records::*;
use super::{DynamoStore, Item};
use crate::domain::{Connection, ScheduleEntry, StatusTransition};
use crate::ids::ConnectionId;
use crate::ports::{Fence, StoreError};
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use std::collections::HashMap;

/// DynamoDB takes at most 100 writes in one transaction; one of them is the connection.
const MAX_TRANSITIONS_PER_WRITE: usize = 99;

/// The expressions of a connection save.
pub(super) struct SaveExpression {
    pub(super) update: String,
    pub(super) condition: String,
    pub(super) names: HashMap<String, String>,
    pub(super) values: HashMap<String, AttributeValue>,
}

impl SaveExpression {
    /// Sets everything a save owns (never the lease), increments the version, and keeps the due index
    /// entry in step with `next_refresh_at`; only if the version and tenant (and, under a lease fence,
    /// the lease owner) are still the ones read.
    pub(super) fn of(connection: &Connection, fence: Fence<'_>) -> Result<Self, StoreError> {
        let mut names: HashMap<String, String> = [
            ("#data", DATA),
            ("#tenant", TENANT),
            ("#updated_at", UPDATED_AT),
            ("#version", VERSION),
            ("#gsi1pk", GSI1_PK),
            ("#gsi1sk", GSI1_SK),
            ("#gsi2pk", GSI2_PK),
            ("#gsi2sk", GSI2_SK),
        ]
        .into_iter()
        .map(|(placeholder, name)| (placeholder.to_string(), name.to_string()))
        .collect();
        let mut values: HashMap<String, AttributeValue> = [
            (":data", s(encode_connection_data(connection)?)),
            (":tenant", s(connection.tenant.as_str())),
            (":updated_at", s(time_key(connection.updated_at))),
            (":expected", n(connection.version.to_string())),
            (":next", n((connection.version + 1).to_string())),
            (":gsi1pk", s(tenant_connections_pk(&connection.tenant))),
            (
                ":gsi1sk",
                s(connection_listing_sk(connection.created_at, &connection.id)),
            ),
        ]
        .into_iter()
        .map(|(placeholder, value)| (placeholder.to_string(), value))
        .collect();
        let mut update =
            "SET #data = :data, #updated_at = :updated_at, #version = :next, #gsi1pk = :gsi1pk, \
             #gsi1sk = :gsi1sk"
                .to_string();
        let mut removed = Vec::new();
        match schedule_index_entry(connection) {
            Some((pk, sk)) => {
                update.push_str(", #gsi2pk = :gsi2pk, #gsi2sk = :gsi2sk");
                values.insert(":gsi2pk".into(), s(pk));
                values.insert(":gsi2sk".into(), s(sk));
            }
            None => removed.extend(["#gsi2pk", "#gsi2sk"]),
        }
        // The tenant is part of the fence: a connection never moves to another tenant.
        let mut condition = "#version = :expected AND #tenant = :tenant".to_string();
        if let Some(owner) = fence.owner() {
            condition.push_str(" AND #lease_owner = :owner");
            names.insert("#lease_owner".into(), LEASE_OWNER.into());
            values.insert(":owner".into(), s(owner.as_str()));
        }
        if let Fence::LeaseReleased(_) = fence {
            names.insert("#lease_until".into(), LEASE_UNTIL.into());
            removed.extend(["#lease_owner", "#lease_until"]);
        }
        if !removed.is_empty() {
            update.push_str(&format!(" REMOVE {}", removed.join(", ")));
        }
        Ok(Self {
            update,
            condition,
            names,
            values,
        })
    }
}

/// A connection's `gsi2` keys: in the due index while the broker has it scheduled, else in the
/// awaiting index while only a person can fix it, else none.
pub(super) fn schedule_index_entry(connection: &Connection) -> Option<(&'static str, String)> {
    connection.schedule_entry().map(|entry| match entry {
        ScheduleEntry::Due(at) => (DUE_PK, due_sk(at, &connection.id)),
        ScheduleEntry::Awaiting(since) => (AWAITING_PK, due_sk(since, &connection.id)),
    })
}

/// The whole item of a new connection.
pub(super) fn connection_item(connection: &Connection) -> Result<Item, StoreError> {
    let mut item = Item::from([
        (PK.to_string(), s(connection_pk(&connection.id))),
        (SK.to_string(), s(CONNECTION_SK)),
        (ENTITY.to_string(), s("connection")),
        (TENANT.to_string(), s(connection.tenant.as_str())),
        (DATA.to_string(), s(encode_connection_data(connection)?)),
        (VERSION.to_string(), n(connection.version.to_string())),
        (UPDATED_AT.to_string(), s(time_key(connection.updated_at))),
        (
            GSI1_PK.to_string(),
            s(tenant_connections_pk(&connection.tenant)),
        ),
        (
            GSI1_SK.to_string(),
            s(connection_listing_sk(connection.created_at, &connection.id)),
        ),
    ]);
    if let Some((pk, sk)) = schedule_index_entry(connection) {
        item.insert(GSI2_PK.into(), s(pk));
        item.insert(GSI2_SK.into(), s(sk));
    }
    if let Some(lease) = &connection.lease {
        item.insert(LEASE_OWNER.into(), s(lease.owner.as_str()));
        item.insert(LEASE_UNTIL.into(), n(epoch_millis(lease.expires_at)));
    }
    Ok(item)
}

impl DynamoStore {
    pub(super) fn connection_key(id: &ConnectionId) -> Item {
        Self::key(connection_pk(id), CONNECTION_SK)
    }

    /// The puts of the transitions a write producing connection `version` records.
    pub(super) fn transition_writes(
        &self,
        id: &ConnectionId,
        version: u64,
        transitions: &[StatusTransition],
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        if transitions.len() > MAX_TRANSITIONS_PER_WRITE {
            return Err(StoreError::Unavailable(format!(
                "a connection write records at most {MAX_TRANSITIONS_PER_WRITE} transitions, not {}",
                transitions.len()
            )));
        }
        transitions
            .iter()
            .enumerate()
            .map(|(position, transition)| {
                let mut item = Item::from([
                    (PK.to_string(), s(connection_pk(id))),
                    (
                        SK.to_string(),
                        s(transition_sk(transition.at, version, position)),
                    ),
                    (ENTITY.to_string(), s("transition")),
                    (DATA.to_string(), s(encode_data(transition, "transition")?)),
                ]);
                // A transition that needs an email is its own outbox entry, written in this same
                // transaction (see `notifications.rs`).
                super::notifications::mark_for_notice(&mut item, id, transition);
                // A change of status is also its own event outbox entry (see `events.rs`).
                super::events::mark_for_event(&mut item, id, transition);
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .build()
                    .map_err(incomplete)?;
                Ok(TransactWriteItem::builder().put(put).build())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::ids::LeaseOwner;
    use chrono::{Duration, TimeZone, Utc};

    fn connection() -> Connection {
        let now = Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap();
        let mut c = crate::fixtures::acme_connection(now);
        c.version = 4;
        c
    }

    #[test]
    fn a_save_is_fenced_by_version_and_by_lease_owner_and_never_writes_the_lease() {
        let c = connection();
        let by_version = SaveExpression::of(&c, Fence::Version).unwrap();
        assert_eq!(
            by_version.condition,
            "#version = :expected AND #tenant = :tenant"
        );
        assert_eq!(by_version.values[":expected"], n("4"));
        assert_eq!(by_version.values[":next"], n("5"));
        let owner = LeaseOwner::generate();
        let by_lease = SaveExpression::of(&c, Fence::Lease(&owner)).unwrap();
        assert_eq!(
            by_lease.condition,
            "#version = :expected AND #tenant = :tenant AND #lease_owner = :owner"
        );
        assert_eq!(by_lease.values[":owner"], s(owner.as_str()));
        for expression in [&by_version, &by_lease] {
            assert!(
                !expression.update.contains("lease"),
                "{}",
                expression.update
            );
            // Every placeholder used is defined, and every one defined is used (DynamoDB refuses both).
            for placeholder in expression.names.keys().chain(expression.values.keys()) {
                let text = format!("{} {}", expression.update, expression.condition);
                assert!(text.contains(placeholder.as_str()), "{placeholder} unused");
            }
        }
    }

    #[test]
    fn a_save_keeps_the_due_index_in_step_with_next_refresh_at() {
        let mut c = connection();
        let unscheduled = SaveExpression::of(&c, Fence::Version).unwrap();
        assert!(
            unscheduled.update.ends_with(" REMOVE #gsi2pk, #gsi2sk"),
            "{}",
            unscheduled.update
        );
        assert!(!unscheduled.values.contains_key(":gsi2sk"));
        let at = c.created_at + Duration::minutes(9);
        c.next_refresh_at = Some(at);
        let scheduled = SaveExpression::of(&c, Fence::Version).unwrap();
        assert!(!scheduled.update.contains("REMOVE"), "{}", scheduled.update);
        assert_eq!(scheduled.values[":gsi2sk"], s(due_sk(at, &c.id)));
        let item = connection_item(&c).unwrap();
        assert_eq!(item[GSI2_SK], s(due_sk(at, &c.id)));
        assert_eq!(decode_connection(&item).unwrap(), c);
    }
}
