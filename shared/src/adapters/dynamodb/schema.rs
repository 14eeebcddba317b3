//! The table's schema, for tests and the local runner (production declares the same in the SAM
//! template).

use super::errors::{incomplete, unavailable};
use super::keys::*;
use super::DynamoStore;
use crate::ports::StoreError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement, KeyType,
    Projection, ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
    TimeToLiveStatus,
};
use aws_sdk_dynamodb::Client;
use std::time::Duration;

const ACTIVE_WITHIN: Duration = Duration::from_secs(120);
const POLL_EVERY: Duration = Duration::from_millis(250);

impl DynamoStore {
    /// Creates the table (on demand, keys `pk`/`sk`, indexes `gsi1` and `gsi2`, TTL on `ttl`) and waits
    /// until it and its indexes are ACTIVE. A table that already exists is left as it is (its TTL is
    /// enabled if it is not yet).
    pub async fn create_table(client: &Client, table_name: &str) -> Result<(), StoreError> {
        let created = client
            .create_table()
            .table_name(table_name)
            .billing_mode(BillingMode::PayPerRequest)
            .set_attribute_definitions(Some(
                [PK, SK, GSI1_PK, GSI1_SK, GSI2_PK, GSI2_SK]
                    .into_iter()
                    .map(|name| {
                        AttributeDefinition::builder()
                            .attribute_name(name)
                            .attribute_type(ScalarAttributeType::S)
                            .build()
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(incomplete)?,
            ))
            .set_key_schema(Some(key_schema(PK, SK)?))
            .global_secondary_indexes(index(
                GSI1,
                GSI1_PK,
                GSI1_SK,
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )?)
            .global_secondary_indexes(index(
                GSI2,
                GSI2_PK,
                GSI2_SK,
                Projection::builder()
                    .projection_type(ProjectionType::Include)
                    .non_key_attributes(TENANT)
                    .build(),
            )?)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) => {}
            Err(e) => return Err(unavailable("CreateTable", &e)),
        }
        wait_until_active(client, table_name).await?;
        enable_ttl(client, table_name).await
    }
}

fn key_schema(partition: &str, sort: &str) -> Result<Vec<KeySchemaElement>, StoreError> {
    [(partition, KeyType::Hash), (sort, KeyType::Range)]
        .into_iter()
        .map(|(name, key_type)| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
        })
        .collect::<Result<_, _>>()
        .map_err(incomplete)
}

fn index(
    name: &str,
    partition: &str,
    sort: &str,
    projection: Projection,
) -> Result<GlobalSecondaryIndex, StoreError> {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .set_key_schema(Some(key_schema(partition, sort)?))
        .projection(projection)
        .build()
        .map_err(incomplete)
}

async fn wait_until_active(client: &Client, table_name: &str) -> Result<(), StoreError> {
    let deadline = tokio::time::Instant::now() + ACTIVE_WITHIN;
    loop {
        let described = client
            .describe_table()
            .table_name(table_name)
            .send()
            .await
            .map_err(|e| unavailable("DescribeTable", &e))?;
        let table = described.table();
        let active = table.and_then(|t| t.table_status()) == Some(&TableStatus::Active)
            && table
                .map(|t| t.global_secondary_indexes())
                .unwrap_or_default()
                .iter()
                .all(|index| index.index_status() == Some(&IndexStatus::Active));
        if active {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StoreError::Unavailable(format!(
                "table {table_name} did not become ACTIVE within {} s",
                ACTIVE_WITHIN.as_secs()
            )));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

async fn enable_ttl(client: &Client, table_name: &str) -> Result<(), StoreError> {
    let described = client
        .describe_time_to_live()
        .table_name(table_name)
        .send()
        .await
        .map_err(|e| unavailable("DescribeTimeToLive", &e))?;
    let current = described.time_to_live_description();
    match current.and_then(|d| d.time_to_live_status()) {
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling) => {
            let attribute = current.and_then(|d| d.attribute_name()).unwrap_or_default();
            if attribute == TTL {
                Ok(())
            } else {
                Err(StoreError::Unavailable(format!(
                    "table {table_name} expires items by attribute {attribute:?}, not {TTL:?}: it was not created by this broker"
                )))
            }
        }
        _ => {
            let specification = TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(TTL)
                .build()
                .map_err(incomplete)?;
            client
                .update_time_to_live()
                .table_name(table_name)
                .time_to_live_specification(specification)
                .send()
                .await
                .map_err(|e| unavailable("UpdateTimeToLive", &e))?;
            Ok(())
        }
    }
}
