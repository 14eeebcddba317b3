//! [`TenantStore`], [`ApiKeyStore`] and [`AuthorizationStateStore`]: records kept whole in `data`.

use super::codec::{decode, encode, parse_time_key, time_key};
use super::{EmbeddedStore, Failure};
use crate::domain::{
    ApiKeyPrefix, ApiKeyRecord, Consumed, OAuthApp, OneTimeKey, PendingAuthorization, Tenant,
};
use crate::ids::{AppId, TenantId};
use crate::ports::{ApiKeyStore, AuthorizationStateStore, StoreError, TenantStore};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use rusqlite::{params, Connection as Db, OptionalExtension, Params};
use serde::de::DeserializeOwned;

/// How long an expired pending authorization stays (answering `Expired`) before a later
/// `put_pending` sweeps it away (then it is `Unknown`), as DynamoDB's TTL deletes within a day or two.
const PENDING_KEPT_AFTER_EXPIRY: Duration = Duration::days(1);

/// Adds a row to a one-time table (`pending_authorizations`, `connect_links`: `key`, `expires_at`,
/// `data`) unless its key is taken, first sweeping rows that expired by `sweep_before`.
pub(super) fn insert_one_time(
    db: &Db,
    table: &str,
    sweep_before: Option<&str>,
    (key, expires_at, data): (&str, &str, &str),
    what: &str,
) -> Result<(), Failure> {
    if let Some(before) = sweep_before {
        db.prepare_cached(&format!("DELETE FROM {table} WHERE expires_at <= ?1"))?
            .execute([before])?;
    }
    let inserted = db
        .prepare_cached(&format!(
            "INSERT INTO {table} (key, expires_at, data) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO NOTHING"
        ))?
        .execute(params![key, expires_at, data])?;
    if inserted == 0 {
        return Err(Failure::Refused(StoreError::AlreadyExists(what.into())));
    }
    Ok(())
}

/// What a one-time table's row (`expires_at`, `data`) answers at `now`.
pub(super) fn one_time<T: DeserializeOwned>(
    row: Option<(String, String)>,
    now: DateTime<Utc>,
    what: &str,
) -> Result<Consumed<T>, Failure> {
    let Some((expires_at, data)) = row else {
        return Ok(Consumed::Unknown);
    };
    if parse_time_key(&expires_at, &format!("{what}'s expires_at"))? <= now {
        return Ok(Consumed::Expired);
    }
    Ok(Consumed::Fresh(decode(&data, what)?))
}

/// The `data` of at most one row.
fn one<T: DeserializeOwned>(
    db: &Db,
    sql: &str,
    params: impl Params,
    what: &str,
) -> Result<Option<T>, Failure> {
    let data: Option<String> = db
        .prepare_cached(sql)?
        .query_row(params, |r| r.get(0))
        .optional()?;
    data.map(|data| decode(&data, what)).transpose()
}

/// The `data` of every row, in the query's order.
fn all<T: DeserializeOwned>(
    db: &Db,
    sql: &str,
    params: impl Params,
    what: &str,
) -> Result<Vec<T>, Failure> {
    let mut query = db.prepare_cached(sql)?;
    let rows = query.query_map(params, |r| r.get::<_, String>(0))?;
    rows.map(|data| decode(&data?, what)).collect()
}

#[async_trait]
impl TenantStore for EmbeddedStore {
    async fn insert_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        const OPERATION: &str = "inserting a tenant";
        let id = tenant.id.to_string();
        let data =
            encode(tenant, &format!("tenant {id}"), &[]).map_err(|f| f.into_store(OPERATION))?;
        self.write(move |db| {
            let inserted = db
                .prepare_cached(
                    "INSERT INTO tenants (id, data) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![id, data])?;
            if inserted == 0 {
                return Err(Failure::Refused(StoreError::AlreadyExists(format!(
                    "tenant {id}"
                ))));
            }
            Ok(())
        })
        .await
        .map_err(|f| f.into_store(OPERATION))
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        let id = id.to_string();
        self.read(move |db| {
            one(
                db,
                "SELECT data FROM tenants WHERE id = ?1",
                [&id],
                &format!("tenant {id}"),
            )
        })
        .await
        .map_err(|f| f.into_store("reading a tenant"))
    }

    async fn put_app(&self, app: &OAuthApp) -> Result<(), StoreError> {
        const OPERATION: &str = "storing an app registration";
        let (tenant, id) = (app.tenant.to_string(), app.id.to_string());
        let data =
            encode(app, &format!("app {tenant}/{id}"), &[]).map_err(|f| f.into_store(OPERATION))?;
        self.write(move |db| {
            db.prepare_cached(
                "INSERT INTO apps (tenant, id, data) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant, id) DO UPDATE SET data = excluded.data",
            )?
            .execute(params![tenant, id, data])?;
            Ok(())
        })
        .await
        .map_err(|f| f.into_store(OPERATION))
    }

    async fn get_app(&self, tenant: &TenantId, id: &AppId) -> Result<Option<OAuthApp>, StoreError> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.read(move |db| {
            let what = format!("app {tenant}/{id}");
            one(
                db,
                "SELECT data FROM apps WHERE tenant = ?1 AND id = ?2",
                [&tenant, &id],
                &what,
            )
        })
        .await
        .map_err(|f| f.into_store("reading an app registration"))
    }

    async fn list_apps(&self, tenant: &TenantId) -> Result<Vec<OAuthApp>, StoreError> {
        let tenant = tenant.to_string();
        self.read(move |db| {
            let what = format!("an app of tenant {tenant}");
            all(
                db,
                "SELECT data FROM apps WHERE tenant = ?1 ORDER BY id",
                [&tenant],
                &what,
            )
        })
        .await
        .map_err(|f| f.into_store("listing a tenant's app registrations"))
    }

    async fn delete_app(&self, tenant: &TenantId, id: &AppId) -> Result<bool, StoreError> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.write(move |db| {
            let deleted = db
                .prepare_cached("DELETE FROM apps WHERE tenant = ?1 AND id = ?2")?
                .execute(params![tenant, id])?;
            Ok(deleted > 0)
        })
        .await
        .map_err(|f| f.into_store("deleting an app registration"))
    }
}

#[async_trait]
impl ApiKeyStore for EmbeddedStore {
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        const OPERATION: &str = "inserting an API key";
        let (prefix, tenant) = (key.prefix.as_str().to_string(), key.tenant.to_string());
        let data =
            encode(key, &format!("API key {prefix}"), &[]).map_err(|f| f.into_store(OPERATION))?;
        self.write(move |db| {
            let inserted = db
                .prepare_cached(
                    "INSERT INTO api_keys (prefix, tenant, data) VALUES (?1, ?2, ?3) ON CONFLICT (prefix) DO NOTHING",
                )?
                .execute(params![prefix, tenant, data])?;
            if inserted == 0 {
                return Err(Failure::Refused(StoreError::AlreadyExists(format!("API key {prefix}"))));
            }
            Ok(())
        })
        .await
        .map_err(|f| f.into_store(OPERATION))
    }

    async fn get_api_key(&self, prefix: &ApiKeyPrefix) -> Result<Option<ApiKeyRecord>, StoreError> {
        let prefix = prefix.as_str().to_string();
        self.read(move |db| {
            one(
                db,
                "SELECT data FROM api_keys WHERE prefix = ?1",
                [&prefix],
                &format!("API key {prefix}"),
            )
        })
        .await
        .map_err(|f| f.into_store("reading an API key"))
    }

    /// A key already revoked keeps its first revocation time (and the answer is still `true`).
    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        prefix: &ApiKeyPrefix,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (tenant, prefix) = (tenant.to_string(), prefix.as_str().to_string());
        self.write(move |db| {
            let what = format!("API key {prefix}");
            let sql = "SELECT data FROM api_keys WHERE prefix = ?1 AND tenant = ?2";
            let Some(mut key) = one::<ApiKeyRecord>(db, sql, [&prefix, &tenant], &what)? else {
                return Ok(false);
            };
            if key.revoked_at.is_none() {
                key.revoked_at = Some(at);
                let data = encode(&key, &what, &[])?;
                db.prepare_cached("UPDATE api_keys SET data = ?2 WHERE prefix = ?1")?
                    .execute(params![prefix, data])?;
            }
            Ok(true)
        })
        .await
        .map_err(|f| f.into_store("revoking an API key"))
    }

    async fn list_api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let tenant = tenant.to_string();
        self.read(move |db| {
            let what = format!("an API key of tenant {tenant}");
            all(
                db,
                "SELECT data FROM api_keys WHERE tenant = ?1 ORDER BY prefix",
                [&tenant],
                &what,
            )
        })
        .await
        .map_err(|f| f.into_store("listing a tenant's API keys"))
    }
}

#[async_trait]
impl AuthorizationStateStore for EmbeddedStore {
    async fn put_pending(
        &self,
        key: &OneTimeKey,
        pending: &PendingAuthorization,
    ) -> Result<(), StoreError> {
        const OPERATION: &str = "storing a pending authorization";
        let key = key.as_str().to_string();
        let data =
            encode(pending, "a pending authorization", &[]).map_err(|f| f.into_store(OPERATION))?;
        let expires_at = time_key(pending.expires_at);
        // Swept relative to the new entry's creation, not the wall clock, so tests that drive time agree.
        let sweep_before = pending
            .created_at
            .checked_sub_signed(PENDING_KEPT_AFTER_EXPIRY)
            .map(time_key);
        self.write(move |db| {
            let row = (key.as_str(), expires_at.as_str(), data.as_str());
            let what = "the authorization state";
            insert_one_time(
                db,
                "pending_authorizations",
                sweep_before.as_deref(),
                row,
                what,
            )
        })
        .await
        .map_err(|f| f.into_store(OPERATION))
    }

    async fn consume_pending(
        &self,
        key: &OneTimeKey,
        now: DateTime<Utc>,
    ) -> Result<Consumed<PendingAuthorization>, StoreError> {
        let key = key.as_str().to_string();
        self.write(move |db| {
            let row: Option<(String, String)> = db
                .prepare_cached(
                    "DELETE FROM pending_authorizations WHERE key = ?1 RETURNING expires_at, data",
                )?
                .query_row([&key], |r| r.try_into())
                .optional()?;
            one_time(row, now, "a pending authorization")
        })
        .await
        .map_err(|f| f.into_store("consuming a pending authorization"))
    }
}
