//! [`TenantStore`], [`ApiKeyStore`] and [`AuthorizationStateStore`] on the table.

use super::errors::{condition_held, unavailable};
use super::keys::*;
use super::records::*;
use super::{DynamoStore, Item};
use crate::domain::{
    ApiKeyPrefix, ApiKeyRecord, Consumed, OAuthApp, OneTimeKey, PendingAuthorization, Tenant,
};
use crate::ids::{AppId, TenantId};
use crate::ports::{ApiKeyStore, AuthorizationStateStore, StoreError, TenantStore};
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, Utc};

#[async_trait]
impl TenantStore for DynamoStore {
    async fn insert_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        let item = Item::from([
            (PK.to_string(), s(tenant_pk(&tenant.id))),
            (SK.to_string(), s(TENANT_SK)),
            (ENTITY.to_string(), s("tenant")),
            (DATA.to_string(), s(encode_data(tenant, "tenant")?)),
        ]);
        self.put_new(item, "PutItem (insert tenant)", || {
            format!("tenant {}", tenant.id)
        })
        .await
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        self.get_decoded(tenant_pk(id), TENANT_SK, "GetItem (tenant)", decode_data)
            .await
    }

    async fn put_app(&self, app: &OAuthApp) -> Result<(), StoreError> {
        let item = Item::from([
            (PK.to_string(), s(tenant_pk(&app.tenant))),
            (SK.to_string(), s(app_sk(&app.id))),
            (ENTITY.to_string(), s("app")),
            (DATA.to_string(), s(encode_data(app, "app")?)),
        ]);
        self.put_item(item, "PutItem (app)").await
    }

    async fn get_app(&self, tenant: &TenantId, id: &AppId) -> Result<Option<OAuthApp>, StoreError> {
        self.get_decoded(tenant_pk(tenant), &app_sk(id), "GetItem (app)", decode_data)
            .await
    }

    async fn list_apps(&self, tenant: &TenantId) -> Result<Vec<OAuthApp>, StoreError> {
        let query = self.prefix_query(tenant_pk(tenant), APP_SK_PREFIX);
        let items = self.query_all(query, "Query (list apps)").await?;
        items.iter().map(decode_data).collect()
    }

    async fn delete_app(&self, tenant: &TenantId, id: &AppId) -> Result<bool, StoreError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(tenant_pk(tenant), &app_sk(id))))
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await;
        condition_held(
            deleted,
            "DeleteItem (app)",
            DeleteItemError::is_conditional_check_failed_exception,
        )
    }
}

#[async_trait]
impl ApiKeyStore for DynamoStore {
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let mut item = Item::from([
            (PK.to_string(), s(api_key_pk(&key.prefix))),
            (SK.to_string(), s(API_KEY_SK)),
            (ENTITY.to_string(), s("api_key")),
            (TENANT.to_string(), s(key.tenant.as_str())),
            (DATA.to_string(), s(encode_api_key_data(key)?)),
            (GSI1_PK.to_string(), s(tenant_api_keys_pk(&key.tenant))),
            (GSI1_SK.to_string(), s(key.prefix.as_str())),
        ]);
        if let Some(at) = key.revoked_at {
            item.insert(REVOKED_AT.into(), s(time_key(at)));
        }
        self.put_new(item, "PutItem (insert API key)", || {
            format!("API key {}", key.prefix.as_str())
        })
        .await
    }

    async fn get_api_key(&self, prefix: &ApiKeyPrefix) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.get_decoded(
            api_key_pk(prefix),
            API_KEY_SK,
            "GetItem (API key)",
            decode_api_key,
        )
        .await
    }

    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        prefix: &ApiKeyPrefix,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let revoked = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(api_key_pk(prefix), API_KEY_SK)))
            // Revoking twice keeps the first time: the audit trail says when the key stopped working.
            .update_expression("SET #revoked_at = if_not_exists(#revoked_at, :at)")
            .condition_expression("attribute_exists(#pk) AND #tenant = :tenant")
            .expression_attribute_names("#revoked_at", REVOKED_AT)
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#tenant", TENANT)
            .expression_attribute_values(":at", s(time_key(at)))
            .expression_attribute_values(":tenant", s(tenant.as_str()))
            .send()
            .await;
        condition_held(
            revoked,
            "UpdateItem (revoke API key)",
            UpdateItemError::is_conditional_check_failed_exception,
        )
    }

    async fn list_api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let query = self.index_query(GSI1, GSI1_PK, tenant_api_keys_pk(tenant));
        let items = self.query_all(query, "Query (list API keys)").await?;
        items.iter().map(decode_api_key).collect()
    }
}

#[async_trait]
impl AuthorizationStateStore for DynamoStore {
    async fn put_pending(
        &self,
        key: &OneTimeKey,
        pending: &PendingAuthorization,
    ) -> Result<(), StoreError> {
        let item = Item::from([
            (PK.to_string(), s(state_pk(key))),
            (SK.to_string(), s(STATE_SK)),
            (ENTITY.to_string(), s("pending")),
            (
                DATA.to_string(),
                s(encode_data(pending, "pending authorization")?),
            ),
            (EXPIRES_AT.to_string(), n(epoch_millis(pending.expires_at))),
            (TTL.to_string(), n(ttl_seconds(pending.expires_at))),
        ]);
        self.put_new(item, "PutItem (pending authorization)", || {
            "the authorization state".to_string()
        })
        .await
    }

    async fn consume_pending(
        &self,
        key: &OneTimeKey,
        now: DateTime<Utc>,
    ) -> Result<Consumed<PendingAuthorization>, StoreError> {
        // One conditional delete: of concurrent consumers exactly one deletes the item and gets it.
        // The condition checks the expiry itself because TTL deletion lags (by up to days).
        let consumed = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(state_pk(key), STATE_SK)))
            .condition_expression("attribute_exists(#pk) AND #expires_at > :now")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#expires_at", EXPIRES_AT)
            .expression_attribute_values(":now", n(epoch_millis(now)))
            .return_values(ReturnValue::AllOld)
            // Tells an expired entry from an unknown (or already used) one without a second read.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match consumed {
            // No old image means this call removed nothing (DynamoDB always returns it; moto, racing
            // concurrent deletes, can answer without it): someone else consumed the entry.
            Ok(out) => match out.attributes.filter(|old| !old.is_empty()) {
                Some(old) => Ok(Consumed::Fresh(decode_data(&old)?)),
                None => Ok(Consumed::Unknown),
            },
            Err(e) => match e.as_service_error() {
                Some(DeleteItemError::ConditionalCheckFailedException(failed)) => {
                    if failed.item().is_none_or(|old| old.is_empty()) {
                        return Ok(Consumed::Unknown);
                    }
                    // Expired but not yet removed by TTL: remove it now. If that fails, TTL will.
                    let removed = self
                        .client
                        .delete_item()
                        .table_name(&self.table)
                        .set_key(Some(Self::key(state_pk(key), STATE_SK)))
                        .send()
                        .await;
                    if let Err(e) = removed {
                        tracing::warn!(error = %unavailable("DeleteItem (expired authorization state)", &e), "an expired authorization state was left for TTL to remove");
                    }
                    Ok(Consumed::Expired)
                }
                _ => Err(unavailable("DeleteItem (consume authorization state)", &e)),
            },
        }
    }
}
