//! Domain records to and from items: the JSON in `data` plus the values kept as top-level attributes.

use super::keys::*;
use super::Item;
pub(super) use crate::adapters::json_failure;
use crate::domain::{ApiKeyRecord, Connection, Lease, StatusTransition};
use crate::ids::LeaseOwner;
use crate::ports::{AwaitingConnection, DueConnection, StoreError};
use aws_sdk_dynamodb::types::AttributeValue;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: impl Into<String>) -> AttributeValue {
    AttributeValue::N(value.into())
}

/// A string attribute; `what` names the item in the error.
pub(super) fn string_attr<'a>(
    item: &'a Item,
    name: &str,
    what: &str,
) -> Result<&'a str, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value),
        Some(_) => Err(StoreError::Corrupt(format!(
            "{what}: attribute {name} is not a string"
        ))),
        None => Err(StoreError::Corrupt(format!(
            "{what}: attribute {name} is missing"
        ))),
    }
}

fn optional_number_attr<'a>(
    item: &'a Item,
    name: &str,
    what: &str,
) -> Result<Option<&'a str>, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => Ok(Some(value)),
        Some(_) => Err(StoreError::Corrupt(format!(
            "{what}: attribute {name} is not a number"
        ))),
        None => Ok(None),
    }
}

fn optional_string_attr<'a>(
    item: &'a Item,
    name: &str,
    what: &str,
) -> Result<Option<&'a str>, StoreError> {
    match item.get(name) {
        Some(_) => string_attr(item, name, what).map(Some),
        None => Ok(None),
    }
}

/// What an item is, for error messages: its key, never its content.
pub(super) fn describe(item: &Item) -> String {
    let key = |name| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .map_or("?", String::as_str)
    };
    format!("item {}/{}", key(PK), key(SK))
}

/// `value` as a JSON object, without the fields stored as attributes of their own.
fn encode<T: Serialize>(value: &T, what: &str, without: &[&str]) -> Result<String, StoreError> {
    let mut json =
        serde_json::to_value(value).map_err(|e| StoreError::Corrupt(json_failure(what, &e)))?;
    if let Value::Object(fields) = &mut json {
        for name in without {
            fields.remove(*name);
        }
    }
    Ok(json.to_string())
}

/// The `data` of `item` as a JSON object, to which the caller may add fields back.
fn data_object(item: &Item) -> Result<Map<String, Value>, StoreError> {
    let what = describe(item);
    let data = string_attr(item, DATA, &what)?;
    match serde_json::from_str(data) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(StoreError::Corrupt(format!(
            "{what}: data is not a JSON object"
        ))),
        Err(e) => Err(StoreError::Corrupt(json_failure(&what, &e))),
    }
}

fn decode_object<T: DeserializeOwned>(
    fields: Map<String, Value>,
    what: &str,
) -> Result<T, StoreError> {
    serde_json::from_value(Value::Object(fields))
        .map_err(|e| StoreError::Corrupt(json_failure(what, &e)))
}

/// A record kept whole in `data` (tenant, app, transition, pending authorization).
pub(super) fn encode_data<T: Serialize>(value: &T, what: &str) -> Result<String, StoreError> {
    encode(value, what, &[])
}

pub(super) fn decode_data<T: DeserializeOwned>(item: &Item) -> Result<T, StoreError> {
    decode_object(data_object(item)?, &describe(item))
}

/// A connection's `data`: everything but `version` and `lease`, which are attributes of their own.
pub(super) fn encode_connection_data(connection: &Connection) -> Result<String, StoreError> {
    encode(
        connection,
        &format!("connection {}", connection.id),
        &["version", "lease"],
    )
}

pub(super) fn decode_connection(item: &Item) -> Result<Connection, StoreError> {
    let what = describe(item);
    let version = optional_number_attr(item, VERSION, &what)?
        .ok_or_else(|| StoreError::Corrupt(format!("{what}: attribute {VERSION} is missing")))?;
    let version: u64 = version.parse().map_err(|_| {
        StoreError::Corrupt(format!("{what}: attribute {VERSION} is not a whole number"))
    })?;
    let lease = decode_lease(item, &what)?;
    let mut fields = data_object(item)?;
    fields.insert("version".into(), Value::from(version));
    fields.insert("lease".into(), Value::Null);
    let mut connection: Connection = decode_object(fields, &what)?;
    connection.lease = lease;
    Ok(connection)
}

fn decode_lease(item: &Item, what: &str) -> Result<Option<Lease>, StoreError> {
    let owner = optional_string_attr(item, LEASE_OWNER, what)?;
    let until = optional_number_attr(item, LEASE_UNTIL, what)?;
    match (owner, until) {
        (None, None) => Ok(None),
        (Some(owner), Some(until)) => {
            let owner = LeaseOwner::parse(owner).map_err(|_| {
                StoreError::Corrupt(format!(
                    "{what}: attribute {LEASE_OWNER} is not a lease owner"
                ))
            })?;
            Ok(Some(Lease {
                owner,
                expires_at: lease_until(until, what)?,
            }))
        }
        _ => Err(StoreError::Corrupt(format!(
            "{what}: only one of {LEASE_OWNER} and {LEASE_UNTIL} is set"
        ))),
    }
}

fn lease_until(value: &str, what: &str) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    parse_epoch_millis(value).ok_or_else(|| {
        StoreError::Corrupt(format!("{what}: attribute {LEASE_UNTIL} is not a time"))
    })
}

/// When the lease recorded on `item` (an old image after a refused acquisition) runs out.
pub(super) fn lease_expiry(
    item: &Item,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
    let what = describe(item);
    optional_number_attr(item, LEASE_UNTIL, &what)?
        .map(|until| lease_until(until, &what))
        .transpose()
}

pub(super) fn decode_transition(item: &Item) -> Result<StatusTransition, StoreError> {
    decode_data(item)
}

/// A due-index entry: everything is in the projected keys and `tenant`.
pub(super) fn decode_due(item: &Item) -> Result<DueConnection, StoreError> {
    let (id, tenant, next_refresh_at) = decode_schedule_entry(item)?;
    Ok(DueConnection {
        id,
        tenant,
        next_refresh_at,
    })
}

/// An awaiting-index entry, read like a due one.
pub(super) fn decode_awaiting(item: &Item) -> Result<AwaitingConnection, StoreError> {
    let (id, tenant, since) = decode_schedule_entry(item)?;
    Ok(AwaitingConnection { id, tenant, since })
}

fn decode_schedule_entry(
    item: &Item,
) -> Result<
    (
        crate::ids::ConnectionId,
        crate::ids::TenantId,
        chrono::DateTime<chrono::Utc>,
    ),
    StoreError,
> {
    let what = describe(item);
    let pk = string_attr(item, PK, &what)?;
    let id = connection_id_of_pk(pk)
        .ok_or_else(|| StoreError::Corrupt(format!("{what}: not a connection")))?;
    let tenant = string_attr(item, TENANT, &what)?;
    let tenant = crate::ids::TenantId::parse(tenant).map_err(|_| {
        StoreError::Corrupt(format!("{what}: attribute {TENANT} is not a tenant id"))
    })?;
    let sk = string_attr(item, GSI2_SK, &what)?;
    let at = due_time_of_sk(sk)
        .ok_or_else(|| StoreError::Corrupt(format!("{what}: attribute {GSI2_SK} has no time")))?;
    Ok((id, tenant, at))
}

/// An API key's `data`: everything but `revoked_at`, which revocation sets on its own.
pub(super) fn encode_api_key_data(key: &ApiKeyRecord) -> Result<String, StoreError> {
    encode(
        key,
        &format!("API key {}", key.prefix.as_str()),
        &["revoked_at"],
    )
}

pub(super) fn decode_api_key(item: &Item) -> Result<ApiKeyRecord, StoreError> {
    let what = describe(item);
    let revoked_at = optional_string_attr(item, REVOKED_AT, &what)?
        .map(|at| {
            parse_time_key(at).ok_or_else(|| {
                StoreError::Corrupt(format!("{what}: attribute {REVOKED_AT} is not a time"))
            })
        })
        .transpose()?;
    let mut fields = data_object(item)?;
    fields.insert("revoked_at".into(), Value::Null);
    let mut key: ApiKeyRecord = decode_object(fields, &what)?;
    key.revoked_at = revoked_at;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::ids::{ConnectionId, TenantId};
    use chrono::{Duration, TimeZone, Utc};

    fn connection() -> Connection {
        let now = Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap() + Duration::nanoseconds(7);
        let mut c = crate::fixtures::acme_connection(now);
        c.version = 7;
        c.next_refresh_at = Some(now + Duration::minutes(9));
        c
    }

    fn item(connection: &Connection) -> Item {
        Item::from([
            (PK.to_string(), s(connection_pk(&connection.id))),
            (SK.to_string(), s(CONNECTION_SK)),
            (TENANT.to_string(), s(connection.tenant.as_str())),
            (
                DATA.to_string(),
                s(encode_connection_data(connection).unwrap()),
            ),
            (VERSION.to_string(), n(connection.version.to_string())),
        ])
    }

    #[test]
    fn a_connection_round_trips_with_version_and_lease_kept_outside_data() {
        let mut c = connection();
        let data = encode_connection_data(&c).unwrap();
        assert!(
            !data.contains("\"version\"") && !data.contains("\"lease\""),
            "{data}"
        );
        let mut stored = item(&c);
        assert_eq!(decode_connection(&stored).unwrap(), c);

        let lease = Lease {
            owner: LeaseOwner::generate(),
            expires_at: c.created_at + Duration::seconds(60),
        };
        stored.insert(LEASE_OWNER.into(), s(lease.owner.as_str()));
        stored.insert(LEASE_UNTIL.into(), n(epoch_millis(lease.expires_at)));
        c.lease = Some(lease);
        assert_eq!(decode_connection(&stored).unwrap(), c);
        assert_eq!(
            lease_expiry(&stored).unwrap(),
            c.lease.map(|l| l.expires_at)
        );
    }

    #[test]
    fn a_damaged_item_is_corrupt_and_the_error_does_not_quote_it() {
        let c = connection();
        let mut stored = item(&c);
        stored.insert(DATA.into(), s(r#"{"id": "leaked-value-1""#));
        let err = decode_connection(&stored).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt(m) if m.contains(&connection_pk(&c.id))),
            "{err:?}"
        );
        assert!(!err.to_string().contains("leaked-value-1"), "{err}");

        let mut stored = item(&c);
        stored.insert(DATA.into(), s(r#"{"id": "leaked-value-2"}"#));
        let err = decode_connection(&stored).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt(_)) && !err.to_string().contains("leaked-value-2"),
            "{err}"
        );

        let mut stored = item(&c);
        stored.remove(VERSION);
        assert!(
            matches!(decode_connection(&stored), Err(StoreError::Corrupt(m)) if m.contains("version"))
        );

        let mut stored = item(&c);
        stored.insert(LEASE_OWNER.into(), s(LeaseOwner::generate().as_str()));
        assert!(matches!(
            decode_connection(&stored),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn a_due_entry_is_read_from_its_keys() {
        let c = connection();
        let at = c.next_refresh_at.unwrap();
        let entry = Item::from([
            (PK.to_string(), s(connection_pk(&c.id))),
            (SK.to_string(), s(CONNECTION_SK)),
            (GSI2_PK.to_string(), s(DUE_PK)),
            (GSI2_SK.to_string(), s(due_sk(at, &c.id))),
            (TENANT.to_string(), s("acme")),
        ]);
        let due = decode_due(&entry).unwrap();
        assert_eq!(
            due,
            DueConnection {
                id: c.id.clone(),
                tenant: c.tenant.clone(),
                next_refresh_at: at
            }
        );
    }

    #[test]
    fn an_api_key_keeps_its_revocation_outside_data() {
        let now = Utc::now();
        let mut key = ApiKeyRecord::generate(
            TenantId::parse("acme").unwrap(),
            "ci",
            Default::default(),
            now,
        )
        .record;
        key.revoked_at = Some(now);
        let data = encode_api_key_data(&key).unwrap();
        assert!(!data.contains("revoked_at"));
        let mut stored = Item::from([
            (PK.to_string(), s(api_key_pk(&key.prefix))),
            (SK.to_string(), s(API_KEY_SK)),
            (DATA.to_string(), s(data)),
        ]);
        let unrevoked = decode_api_key(&stored).unwrap();
        assert_eq!(unrevoked.revoked_at, None);
        stored.insert(REVOKED_AT.into(), s(time_key(now)));
        assert_eq!(decode_api_key(&stored).unwrap(), key);
    }

    #[test]
    fn items_are_described_by_their_key() {
        let id = ConnectionId::generate();
        let stored = Item::from([
            (PK.to_string(), s(connection_pk(&id))),
            (SK.to_string(), s(CONNECTION_SK)),
        ]);
        assert_eq!(describe(&stored), format!("item CONN#{id}/CONN"));
    }
}
