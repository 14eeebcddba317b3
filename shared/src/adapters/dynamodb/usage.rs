//! Usage counters shared across connections: one item per counter window,
//! `pk = USAGE#<tenant>#<app>#<provider user>`, `sk = <counter>#<window start>`, with `used` (N),
//! `window_end` (epoch millis) and the table's `ttl` (a day after the window ends).
//!
//! A take is one `UpdateItem` that `ADD`s 1 under the condition `used < limit` (or no item yet), so
//! DynamoDB serialises concurrent takers on the item and grants no more than the limit. The window is
//! in the key, so a new window starts at zero whatever TTL has or has not deleted yet. The user is the
//! last part of `pk` (tenant and app never contain `#`), so no user id can make two keys collide.

use super::errors::unavailable;
use super::keys::*;
use super::records::*;
use super::{DynamoStore, Item};
use crate::ports::{StoreError, UsageKey, UsageStore, UsageTake, UsageWindow};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};

const USED: &str = "used";
const WINDOW_END: &str = "window_end";

fn usage_pk(key: &UsageKey) -> String {
    format!("USAGE#{}#{}#{}", key.tenant, key.app, key.user())
}

fn usage_sk(key: &UsageKey, window: UsageWindow) -> String {
    format!("{}#{}", key.counter.as_str(), time_key(window.start))
}

fn used_of(item: Option<&Item>) -> Result<u32, StoreError> {
    match item.and_then(|item| item.get(USED)) {
        None => Ok(0),
        Some(AttributeValue::N(value)) => value
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("a usage counter holds {value:?}"))),
        Some(_) => Err(StoreError::Corrupt(
            "a usage counter's count is not a number".into(),
        )),
    }
}

#[async_trait]
impl UsageStore for DynamoStore {
    async fn take_unit(
        &self,
        key: &UsageKey,
        window: UsageWindow,
        limit: u32,
    ) -> Result<UsageTake, StoreError> {
        if limit == 0 {
            let used = self.units_used(key, window).await?;
            return Ok(UsageTake::Refused { used });
        }
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(usage_pk(key), &usage_sk(key, window))))
            .update_expression(
                "ADD #used :one SET #entity = :entity, #window_end = :window_end, #ttl = :ttl",
            )
            .condition_expression("attribute_not_exists(#used) OR #used < :limit")
            .expression_attribute_names("#used", USED)
            .expression_attribute_names("#entity", ENTITY)
            .expression_attribute_names("#window_end", WINDOW_END)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_values(":one", n("1"))
            .expression_attribute_values(":limit", n(limit.to_string()))
            .expression_attribute_values(":entity", s("usage"))
            .expression_attribute_values(":window_end", n(epoch_millis(window.end)))
            .expression_attribute_values(":ttl", n(ttl_seconds(window.expires_at())))
            .return_values(ReturnValue::UpdatedNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match updated {
            Ok(out) => Ok(UsageTake::Granted {
                used: used_of(out.attributes.as_ref())?,
            }),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                let old = e
                    .as_service_error()
                    .and_then(|e| match e {
                        aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => c.item.clone(),
                        _ => None,
                    });
                Ok(UsageTake::Refused {
                    used: used_of(old.as_ref())?.max(limit),
                })
            }
            Err(e) => Err(unavailable("UpdateItem (usage counter)", &e)),
        }
    }

    async fn units_used(&self, key: &UsageKey, window: UsageWindow) -> Result<u32, StoreError> {
        let item = self
            .get_item(
                usage_pk(key),
                &usage_sk(key, window),
                "GetItem (usage counter)",
            )
            .await?;
        used_of(item.as_ref())
    }
}
