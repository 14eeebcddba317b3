//! [`ConnectionStore`] on the table: connections, their leases, the due index and status transitions.

use super::errors::{
    condition_held, incomplete, transaction_refusal, unavailable, TransactionRefusal,
};
use super::keys::*;
use super::paging::{key_string, Listing};
use super::records::*;
use super::writes::{connection_item, SaveExpression};
use super::DynamoStore;
use crate::domain::{Connection, StatusTransition};
use crate::ids::{ConnectionId, LeaseOwner, TenantId};
use crate::ports::{
    AwaitingConnection, ConnectionStore, DueConnection, Fence, LeaseAttempt, Page, PageRequest,
    StoreError,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use chrono::{DateTime, Duration, Utc};

/// A save whose condition was false: the connection changed, or it was never there.
fn refused_save(id: &ConnectionId, existed: bool) -> StoreError {
    if existed {
        StoreError::Conflict
    } else {
        StoreError::NotFound(format!("connection {id}"))
    }
}

#[async_trait]
impl ConnectionStore for DynamoStore {
    async fn insert_connection(
        &self,
        connection: &Connection,
        transitions: &[StatusTransition],
    ) -> Result<(), StoreError> {
        // A transaction even without transitions: the SDK's idempotency token makes a retried insert
        // that had landed succeed, where a plain conditional put would answer AlreadyExists.
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(connection_item(connection)?))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .map_err(incomplete)?;
        let mut writes = vec![TransactWriteItem::builder().put(put).build()];
        writes.extend(self.transition_writes(&connection.id, connection.version, transitions)?);
        let operation = "TransactWriteItems (insert connection)";
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match transaction_refusal(operation, &e) {
                // Only the connection's put has a condition.
                TransactionRefusal::Condition { .. } => Err(StoreError::AlreadyExists(format!(
                    "connection {}",
                    connection.id
                ))),
                TransactionRefusal::Failed(error) => Err(error),
            },
        }
    }

    async fn get_connection(&self, id: &ConnectionId) -> Result<Option<Connection>, StoreError> {
        self.get_decoded(
            connection_pk(id),
            CONNECTION_SK,
            "GetItem (connection)",
            decode_connection,
        )
        .await
    }

    async fn save_connection(
        &self,
        connection: &Connection,
        fence: Fence<'_>,
        transitions: &[StatusTransition],
    ) -> Result<Connection, StoreError> {
        let expression = SaveExpression::of(connection, fence)?;
        if transitions.is_empty() {
            let operation = "UpdateItem (save connection)";
            let written_data = expression.values.get(":data").cloned();
            let saved = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(Self::connection_key(&connection.id)))
                .update_expression(expression.update)
                .condition_expression(expression.condition)
                .set_expression_attribute_names(Some(expression.names))
                .set_expression_attribute_values(Some(expression.values))
                .return_values(ReturnValue::AllNew)
                // Tells a missing connection from a changed one without a second read.
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            return match saved {
                Ok(out) => decode_connection(&out.attributes.unwrap_or_default()),
                Err(e) => match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                        match failed.item().filter(|old| !old.is_empty()) {
                            // The SDK retried a call whose first attempt had landed (its answer was
                            // lost): the stored item is exactly this save's. A transaction needs no
                            // such check: its idempotency token makes the retry succeed.
                            Some(old)
                                if old.get(VERSION)
                                    == Some(&n((connection.version + 1).to_string()))
                                    && old.get(DATA) == written_data.as_ref() =>
                            {
                                decode_connection(old)
                            }
                            old => Err(refused_save(&connection.id, old.is_some())),
                        }
                    }
                    _ => Err(unavailable(operation, &e)),
                },
            };
        }

        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::connection_key(&connection.id)))
            .update_expression(expression.update)
            .condition_expression(expression.condition)
            .set_expression_attribute_names(Some(expression.names))
            .set_expression_attribute_values(Some(expression.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(incomplete)?;
        let mut writes = vec![TransactWriteItem::builder().update(update).build()];
        writes.extend(self.transition_writes(
            &connection.id,
            connection.version + 1,
            transitions,
        )?);
        let operation = "TransactWriteItems (save connection)";
        if let Err(e) = self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await
        {
            return Err(match transaction_refusal(operation, &e) {
                TransactionRefusal::Condition { existed, .. } => {
                    refused_save(&connection.id, existed)
                }
                TransactionRefusal::Failed(error) => error,
            });
        }
        // A transaction returns no item, so read it back: the lease may have been released since the
        // caller read it (only a save fenced by version can meet that). If someone wrote after us, or
        // the read fails, what we wrote is the input with the next version; its lease is as the caller
        // read it, exact under a lease fence (acquiring bumps the version, and only we could release).
        let mut written = connection.clone();
        written.version = connection.version + 1;
        if let Fence::LeaseReleased(_) = fence {
            written.lease = None;
        }
        match self.get_connection(&connection.id).await {
            Ok(Some(stored)) if stored.version == written.version => Ok(stored),
            _ => Ok(written),
        }
    }

    async fn acquire_lease(
        &self,
        id: &ConnectionId,
        owner: &LeaseOwner,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<LeaseAttempt, StoreError> {
        let operation = "UpdateItem (acquire lease)";
        let until = now + ttl;
        let acquired = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::connection_key(id)))
            .update_expression("SET #owner = :owner, #until = :until, #version = #version + :one")
            .condition_expression(
                "attribute_exists(#pk) AND (attribute_not_exists(#owner) OR #until <= :now)",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#owner", LEASE_OWNER)
            .expression_attribute_names("#until", LEASE_UNTIL)
            .expression_attribute_names("#version", VERSION)
            .expression_attribute_values(":owner", s(owner.as_str()))
            .expression_attribute_values(":until", n(epoch_millis(until)))
            .expression_attribute_values(":now", n(epoch_millis(now)))
            .expression_attribute_values(":one", n("1"))
            .return_values(ReturnValue::AllNew)
            // Tells a missing connection from a busy lease without a second read.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match acquired {
            Ok(out) => Ok(LeaseAttempt::Acquired(decode_connection(
                &out.attributes.unwrap_or_default(),
            )?)),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    match failed.item().filter(|old| !old.is_empty()) {
                        // The SDK retried a call whose first attempt had taken the lease (its
                        // answer was lost): the lease is ours, exactly as this call set it.
                        Some(old)
                            if old.get(LEASE_OWNER) == Some(&s(owner.as_str()))
                                && lease_expiry(old)? == Some(until) =>
                        {
                            Ok(LeaseAttempt::Acquired(decode_connection(old)?))
                        }
                        Some(old) => match lease_expiry(old)? {
                            Some(until) => Ok(LeaseAttempt::Busy { until }),
                            // The condition and the image are one atomic step in DynamoDB, so
                            // this cannot happen there (moto, racing requests, can): read again.
                            None => Err(StoreError::Conflict),
                        },
                        _ => Ok(LeaseAttempt::Missing),
                    }
                }
                _ => Err(unavailable(operation, &e)),
            },
        }
    }

    async fn release_lease(&self, id: &ConnectionId, owner: &LeaseOwner) -> Result<(), StoreError> {
        let released = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::connection_key(id)))
            .update_expression("REMOVE #owner, #until")
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", LEASE_OWNER)
            .expression_attribute_names("#until", LEASE_UNTIL)
            .expression_attribute_values(":owner", s(owner.as_str()))
            .send()
            .await;
        // A failed condition: taken over, released already, or no such connection; nothing of ours
        // to give up.
        condition_held(
            released,
            "UpdateItem (release lease)",
            UpdateItemError::is_conditional_check_failed_exception,
        )
        .map(|_| ())
    }

    async fn list_connections(
        &self,
        tenant: &TenantId,
        page: PageRequest,
    ) -> Result<Page<Connection>, StoreError> {
        let listing = Listing::Connections(tenant.clone());
        let start = listing.start_of(&page)?;
        let query = self.index_query(GSI1, GSI1_PK, tenant_connections_pk(tenant));
        self.page(
            &listing,
            query,
            start,
            page.limit,
            "Query (list connections)",
            decode_connection,
        )
        .await
    }

    async fn due_for_refresh(
        &self,
        due_by: DateTime<Utc>,
        page: PageRequest,
    ) -> Result<Page<DueConnection>, StoreError> {
        let listing = Listing::Due;
        let bound = due_bound(due_by);
        let start = listing.start_of(&page)?;
        // A cursor from a call with a later `due_by` may lie past this call's range; DynamoDB would
        // refuse it as a start key, and nothing at or before `due_by` follows it anyway.
        if start
            .as_ref()
            .and_then(|key| key_string(key, GSI2_SK))
            .is_some_and(|sk| sk >= bound.as_str())
        {
            return Ok(Page {
                items: Vec::new(),
                next_cursor: None,
            });
        }
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI2)
            .key_condition_expression("#pk = :due AND #sk < :bound")
            .expression_attribute_names("#pk", GSI2_PK)
            .expression_attribute_names("#sk", GSI2_SK)
            .expression_attribute_values(":due", s(DUE_PK))
            .expression_attribute_values(":bound", s(bound));
        self.page(
            &listing,
            query,
            start,
            page.limit,
            "Query (due for refresh)",
            decode_due,
        )
        .await
    }

    async fn awaiting_person(
        &self,
        page: PageRequest,
    ) -> Result<Page<AwaitingConnection>, StoreError> {
        let listing = Listing::Awaiting;
        let start = listing.start_of(&page)?;
        let query = self.index_query(GSI2, GSI2_PK, AWAITING_PK.to_string());
        self.page(
            &listing,
            query,
            start,
            page.limit,
            "Query (awaiting a person)",
            decode_awaiting,
        )
        .await
    }

    async fn list_transitions(
        &self,
        id: &ConnectionId,
        page: PageRequest,
    ) -> Result<Page<StatusTransition>, StoreError> {
        let listing = Listing::Transitions(id.clone());
        let start = listing.start_of(&page)?;
        let query = self.prefix_query(connection_pk(id), TRANSITION_SK_PREFIX);
        self.page(
            &listing,
            query,
            start,
            page.limit,
            "Query (list transitions)",
            decode_transition,
        )
        .await
    }
}
