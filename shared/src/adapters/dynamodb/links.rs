//! Connect links: `pk = LINK#<sha256 of the token>`, `sk = LINK`, `expires_at` (epoch millis) and the
//! table's `ttl`. Reads check `expires_at` because TTL deletion lags.

use super::keys::*;
use super::records::*;
use super::{DynamoStore, Item};
use crate::domain::{ConnectLink, Consumed, OneTimeKey};
use crate::ports::{ConnectLinkStore, StoreError};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

const LINK_SK: &str = "LINK";

fn link_pk(key: &OneTimeKey) -> String {
    format!("LINK#{}", key.as_str())
}

#[async_trait]
impl ConnectLinkStore for DynamoStore {
    async fn put_link(&self, key: &OneTimeKey, link: &ConnectLink) -> Result<(), StoreError> {
        let item = Item::from([
            (PK.to_string(), s(link_pk(key))),
            (SK.to_string(), s(LINK_SK)),
            (ENTITY.to_string(), s("connect_link")),
            (DATA.to_string(), s(encode_data(link, "connect link")?)),
            (EXPIRES_AT.to_string(), n(epoch_millis(link.expires_at))),
            (TTL.to_string(), n(ttl_seconds(link.expires_at))),
        ]);
        self.put_new(item, "PutItem (connect link)", || {
            "the connect link".to_string()
        })
        .await
    }

    async fn get_link(
        &self,
        key: &OneTimeKey,
        now: DateTime<Utc>,
    ) -> Result<Consumed<ConnectLink>, StoreError> {
        let Some(item) = self
            .get_item(link_pk(key), LINK_SK, "GetItem (connect link)")
            .await?
        else {
            return Ok(Consumed::Unknown);
        };
        let expired = match item.get(EXPIRES_AT) {
            Some(AttributeValue::N(millis)) => {
                parse_epoch_millis(millis).is_none_or(|at| at <= now)
            }
            _ => true,
        };
        if expired {
            return Ok(Consumed::Expired);
        }
        Ok(Consumed::Fresh(decode_data(&item)?))
    }
}
