//! Usage counters shared across connections in `usage_counters`, one row per counter window. A take
//! is one upsert that adds 1 only while the count is below the limit, run by the store's one writer
//! inside its `BEGIN IMMEDIATE` transaction, so concurrent takers (of this process or another on the
//! same file) are serialised and no more than the limit are granted.

use super::codec::time_key;
use super::EmbeddedStore;
use crate::ports::{StoreError, UsageKey, UsageStore, UsageTake, UsageWindow};
use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

/// A counter's key as the columns `tenant`, `app`, `provider_user`, `counter`.
fn key_columns(key: &UsageKey) -> (String, String, String, &'static str) {
    (
        key.tenant.to_string(),
        key.app.to_string(),
        key.user().to_string(),
        key.counter.as_str(),
    )
}

/// What a counter's window `start` has used: nothing if it has no row.
fn used(
    db: &rusqlite::Connection,
    (tenant, app, user, counter): &(String, String, String, &'static str),
    start: &str,
) -> Result<u32, super::Failure> {
    let used: Option<i64> = db
        .prepare_cached(
            "SELECT used FROM usage_counters
             WHERE tenant = ?1 AND app = ?2 AND provider_user = ?3 AND counter = ?4 AND window_start = ?5",
        )?
        .query_row(params![tenant, app, user, counter, start], |r| r.get(0))
        .optional()?;
    u32::try_from(used.unwrap_or(0))
        .map_err(|_| super::Failure::Corrupt("a usage counter's count is out of range".into()))
}

#[async_trait]
impl UsageStore for EmbeddedStore {
    async fn take_unit(
        &self,
        key: &UsageKey,
        window: UsageWindow,
        limit: u32,
    ) -> Result<UsageTake, StoreError> {
        const OPERATION: &str = "taking from a usage counter";
        let columns = key_columns(key);
        let (start, expires_at) = (time_key(window.start), time_key(window.expires_at()));
        self.write(move |db| {
            // Windows that ended long before this one are of no use: sweep them as new takes arrive.
            db.prepare_cached("DELETE FROM usage_counters WHERE expires_at <= ?1")?
                .execute([&start])?;
            let (tenant, app, user, counter) = &columns;
            let taken = db
                .prepare_cached(
                    "INSERT INTO usage_counters (tenant, app, provider_user, counter, window_start, used, expires_at)
                     SELECT ?1, ?2, ?3, ?4, ?5, 1, ?6 WHERE ?7 > 0
                     ON CONFLICT (tenant, app, provider_user, counter, window_start)
                     DO UPDATE SET used = used + 1 WHERE used < ?7",
                )?
                .execute(params![tenant, app, user, counter, start, expires_at, limit])?;
            let used = used(db, &columns, &start)?;
            Ok(if taken == 1 {
                UsageTake::Granted { used }
            } else {
                UsageTake::Refused { used }
            })
        })
        .await
        .map_err(|f| f.into_store(OPERATION))
    }

    async fn units_used(&self, key: &UsageKey, window: UsageWindow) -> Result<u32, StoreError> {
        let columns = key_columns(key);
        let start = time_key(window.start);
        self.read(move |db| used(db, &columns, &start))
            .await
            .map_err(|f| f.into_store("reading a usage counter"))
    }
}
