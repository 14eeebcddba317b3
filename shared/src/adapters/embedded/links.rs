//! Connect links in the `connect_links` table, keyed by the hash of their token.

use super::codec::{decode, encode, parse_time_key, time_key};
use super::{EmbeddedStore, Failure};
use crate::domain::{ConnectLink, Consumed, OneTimeKey};
use crate::ports::{ConnectLinkStore, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

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
            db.prepare_cached("DELETE FROM connect_links WHERE expires_at <= ?1")?
                .execute([&now])?;
            let inserted = db
                .prepare_cached(
                    "INSERT INTO connect_links (key, expires_at, data) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO NOTHING",
                )?
                .execute(params![key, expires_at, data])?;
            if inserted == 0 {
                return Err(Failure::Refused(StoreError::AlreadyExists(
                    "the connect link".into(),
                )));
            }
            Ok(())
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
                .query_row([&key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((expires_at, data)) = row else {
                return Ok(Consumed::Unknown);
            };
            if parse_time_key(&expires_at, "a connect link's expires_at")? <= now {
                return Ok(Consumed::Expired);
            }
            Ok(Consumed::Fresh(decode(&data, "a connect link")?))
        })
        .await
        .map_err(|f| f.into_store("reading a connect link"))
    }
}
