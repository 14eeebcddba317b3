//! Connect links in the `connect_links` table, keyed by the hash of their token.

use super::codec::{encode, time_key};
use super::records::{insert_one_time, one_time};
use super::EmbeddedStore;
use crate::domain::{ConnectLink, Consumed, OneTimeKey};
use crate::ports::{ConnectLinkStore, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;

#[async_trait]
impl ConnectLinkStore for EmbeddedStore {
    async fn put_link(&self, key: &OneTimeKey, link: &ConnectLink) -> Result<(), StoreError> {
        const OPERATION: &str = "storing a connect link";
        let key = key.as_str().to_string();
        let data = encode(link, "a connect link", &[]).map_err(|f| f.into_store(OPERATION))?;
        let expires_at = time_key(link.expires_at);
        let now = time_key(link.created_at);
        self.write(move |db| {
            // Links long expired are of no use to anyone: sweep them as new ones arrive.
            let row = (key.as_str(), expires_at.as_str(), data.as_str());
            insert_one_time(db, "connect_links", Some(&now), row, "the connect link")
        })
        .await
        .map_err(|f| f.into_store(OPERATION))
    }

    async fn get_link(
        &self,
        key: &OneTimeKey,
        now: DateTime<Utc>,
    ) -> Result<Consumed<ConnectLink>, StoreError> {
        let key = key.as_str().to_string();
        self.read(move |db| {
            let row: Option<(String, String)> = db
                .prepare_cached("SELECT expires_at, data FROM connect_links WHERE key = ?1")?
                .query_row([&key], |r| r.try_into())
                .optional()?;
            one_time(row, now, "a connect link")
        })
        .await
        .map_err(|f| f.into_store("reading a connect link"))
    }
}
