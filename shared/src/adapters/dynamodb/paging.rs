//! Paging: pages of a query, and their cursors.
//!
//! A cursor is the key attributes of the last item returned, as URL-safe base64 of a JSON object.
//!
//! A cursor is opaque to callers but not trusted: decoding checks that it names exactly the key
//! attributes of the listing it is passed to, in that listing's partition, with that listing's sort-key
//! prefix. So a cursor from another listing (another tenant's, another connection's) is
//! [`StoreError::InvalidCursor`] and can never start a query anywhere else.

use super::errors::unavailable;
use super::keys::*;
use super::records::s;
use super::{DynamoStore, Item};
use crate::ids::{ConnectionId, TenantId};
use crate::ports::{Page, PageRequest, StoreError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::collections::BTreeMap;

/// A listing that pages.
#[derive(Debug, Clone)]
pub(super) enum Listing {
    /// A tenant's connections on `gsi1`.
    Connections(TenantId),
    /// The due index, `gsi2`.
    Due,
    /// The awaiting index, `gsi2`.
    Awaiting,
    /// A connection's transitions, on the table.
    Transitions(ConnectionId),
}

impl Listing {
    /// The key attributes DynamoDB needs to resume: the table's key plus the index's.
    fn key_attributes(&self) -> &'static [&'static str] {
        match self {
            Self::Connections(_) => &[PK, SK, GSI1_PK, GSI1_SK],
            Self::Due | Self::Awaiting => &[PK, SK, GSI2_PK, GSI2_SK],
            Self::Transitions(_) => &[PK, SK],
        }
    }

    /// Whether a key (with exactly [`Self::key_attributes`]) lies in this listing.
    fn contains(&self, key: &BTreeMap<String, String>) -> bool {
        let is_connection = || connection_id_of_pk(&key[PK]).is_some() && key[SK] == CONNECTION_SK;
        match self {
            Self::Connections(tenant) => {
                key[GSI1_PK] == tenant_connections_pk(tenant) && is_connection()
            }
            Self::Due => key[GSI2_PK] == DUE_PK && is_connection(),
            Self::Awaiting => key[GSI2_PK] == AWAITING_PK && is_connection(),
            Self::Transitions(id) => {
                key[PK] == connection_pk(id) && key[SK].starts_with(TRANSITION_SK_PREFIX)
            }
        }
    }

    /// The cursor that resumes after `item`, one of this listing's results.
    pub(super) fn cursor_after(&self, item: &Item) -> Result<String, StoreError> {
        let mut key = BTreeMap::new();
        for name in self.key_attributes() {
            let value = item.get(*name).and_then(|v| v.as_s().ok()).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "{}: key attribute {name} is missing",
                    super::records::describe(item)
                ))
            })?;
            key.insert(*name, value.as_str());
        }
        let json = serde_json::to_vec(&key)
            .map_err(|_| StoreError::Corrupt("a page cursor could not be encoded".into()))?;
        Ok(URL_SAFE_NO_PAD.encode(json))
    }

    /// Where a page request starts: after its cursor (checked), or at the beginning.
    pub(super) fn start_of(&self, page: &PageRequest) -> Result<Option<Item>, StoreError> {
        page.cursor
            .as_deref()
            .map(|cursor| self.start_key(cursor))
            .transpose()
    }

    /// The `ExclusiveStartKey` a cursor stands for, if it belongs to this listing.
    pub(super) fn start_key(&self, cursor: &str) -> Result<Item, StoreError> {
        let json = URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| StoreError::InvalidCursor)?;
        let key: BTreeMap<String, String> =
            serde_json::from_slice(&json).map_err(|_| StoreError::InvalidCursor)?;
        let expected = self.key_attributes();
        if key.len() != expected.len() || !expected.iter().all(|name| key.contains_key(*name)) {
            return Err(StoreError::InvalidCursor);
        }
        if !self.contains(&key) {
            return Err(StoreError::InvalidCursor);
        }
        Ok(key
            .into_iter()
            .map(|(name, value)| (name, s(value)))
            .collect())
    }
}

/// The string value of a key attribute of a decoded start key.
pub(super) fn key_string<'a>(key: &'a Item, name: &str) -> Option<&'a str> {
    key.get(name).and_then(|v| match v {
        AttributeValue::S(value) => Some(value.as_str()),
        _ => None,
    })
}

impl DynamoStore {
    /// One page of a listing, its items decoded by `decode`. It asks DynamoDB for one item beyond the
    /// limit, so the cursor is set exactly when more follows, and goes on reading while a page came
    /// back short of that (DynamoDB stops a page at 1 MB).
    pub(super) async fn page<T>(
        &self,
        listing: &Listing,
        query: QueryFluentBuilder,
        mut start: Option<Item>,
        limit: u32,
        operation: &str,
        decode: impl Fn(&Item) -> Result<T, StoreError>,
    ) -> Result<Page<T>, StoreError> {
        let limit = limit.clamp(1, PageRequest::MAX_LIMIT) as usize;
        let mut items: Vec<Item> = Vec::new();
        loop {
            let wanted = i32::try_from(limit + 1 - items.len()).unwrap_or(i32::MAX);
            let out = query
                .clone()
                .limit(wanted)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable(operation, &e))?;
            items.extend(out.items.unwrap_or_default());
            if items.len() > limit {
                items.truncate(limit);
                let cursor = items
                    .last()
                    .map(|last| listing.cursor_after(last))
                    .transpose()?;
                return decoded(&items, cursor, &decode);
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return decoded(&items, None, &decode),
            }
        }
    }
}

fn decoded<T>(
    items: &[Item],
    next_cursor: Option<String>,
    decode: impl Fn(&Item) -> Result<T, StoreError>,
) -> Result<Page<T>, StoreError> {
    let items = items.iter().map(decode).collect::<Result<_, _>>()?;
    Ok(Page { items, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn connection_item(tenant: &TenantId) -> Item {
        let id = ConnectionId::generate();
        Item::from([
            (PK.to_string(), s(connection_pk(&id))),
            (SK.to_string(), s(CONNECTION_SK)),
            (GSI1_PK.to_string(), s(tenant_connections_pk(tenant))),
            (
                GSI1_SK.to_string(),
                s(connection_listing_sk(Utc::now(), &id)),
            ),
            (DATA.to_string(), s("{}")),
        ])
    }

    #[test]
    fn a_cursor_round_trips_to_the_key_of_the_last_item() {
        let acme = TenantId::parse("acme").unwrap();
        let item = connection_item(&acme);
        let listing = Listing::Connections(acme);
        let cursor = listing.cursor_after(&item).unwrap();
        assert!(
            cursor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{cursor}"
        );
        let key = listing.start_key(&cursor).unwrap();
        let mut expected = item.clone();
        expected.remove(DATA);
        assert_eq!(key, expected);
    }

    #[test]
    fn a_cursor_of_another_listing_or_tenant_is_refused() {
        let (acme, globex) = (
            TenantId::parse("acme").unwrap(),
            TenantId::parse("globex").unwrap(),
        );
        let cursor = Listing::Connections(acme.clone())
            .cursor_after(&connection_item(&acme))
            .unwrap();
        assert_eq!(
            Listing::Connections(globex).start_key(&cursor),
            Err(StoreError::InvalidCursor)
        );
        assert_eq!(
            Listing::Due.start_key(&cursor),
            Err(StoreError::InvalidCursor)
        );
        assert_eq!(
            Listing::Transitions(ConnectionId::generate()).start_key(&cursor),
            Err(StoreError::InvalidCursor)
        );

        let id = ConnectionId::generate();
        let transition = Item::from([
            (PK.to_string(), s(connection_pk(&id))),
            (SK.to_string(), s(transition_sk(Utc::now(), 0, 0))),
        ]);
        let cursor = Listing::Transitions(id.clone())
            .cursor_after(&transition)
            .unwrap();
        assert!(Listing::Transitions(id).start_key(&cursor).is_ok());
        assert_eq!(
            Listing::Transitions(ConnectionId::generate()).start_key(&cursor),
            Err(StoreError::InvalidCursor)
        );
    }

    #[test]
    fn garbage_is_refused() {
        let forged_sort_key = URL_SAFE_NO_PAD.encode(r#"{"pk":"CONN#x","sk":"TENANT"}"#);
        for bad in [
            "",
            "not-a-cursor",
            "%%%",
            &URL_SAFE_NO_PAD.encode("[1,2]"),
            &URL_SAFE_NO_PAD.encode("{}"),
            &forged_sort_key,
        ] {
            assert_eq!(
                Listing::Due.start_key(bad),
                Err(StoreError::InvalidCursor),
                "{bad:?}"
            );
        }
        let id = ConnectionId::generate();
        let with_extra = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"pk":"CONN#{id}","sk":"CONN","gsi2pk":"DUE","gsi2sk":"x","data":"y"}}"#
        ));
        assert_eq!(
            Listing::Due.start_key(&with_extra),
            Err(StoreError::InvalidCursor)
        );
        let due = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"pk":"CONN#{id}","sk":"CONN","gsi2pk":"DUE","gsi2sk":"x"}}"#
        ));
        assert!(Listing::Due.start_key(&due).is_ok());
    }
}
