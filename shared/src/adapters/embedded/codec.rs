//! Rows to and from domain records: time keys, the JSON in `data`, and page cursors.

use super::Failure;
use crate::adapters::json_failure;
use crate::domain::{Connection, Lease};
use crate::ids::LeaseOwner;
use crate::ports::{Page, PageRequest, StoreError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A time as stored: RFC 3339 in UTC with nine fractional digits. Fixed width (for years 0 to 9999), so
/// text order is time order and an index on it sorts by time; exact to the nanosecond, so a value reads
/// back as written. The DynamoDB adapter writes its key times the same way.
pub(super) fn time_key(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

/// A stored time; `what` names the value in the error.
pub(super) fn parse_time_key(value: &str, what: &str) -> Result<DateTime<Utc>, Failure> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| Failure::Corrupt(format!("{what} is not a time")))
}

/// `value` as a JSON object, without the fields kept in columns of their own.
pub(super) fn encode<T: Serialize>(
    value: &T,
    what: &str,
    without: &[&str],
) -> Result<String, Failure> {
    let mut json =
        serde_json::to_value(value).map_err(|e| Failure::Corrupt(json_failure(what, &e)))?;
    if let Value::Object(fields) = &mut json {
        for name in without {
            fields.remove(*name);
        }
    }
    Ok(json.to_string())
}

pub(super) fn decode<T: DeserializeOwned>(data: &str, what: &str) -> Result<T, Failure> {
    serde_json::from_str(data).map_err(|e| Failure::Corrupt(json_failure(what, &e)))
}

fn decode_object(data: &str, what: &str) -> Result<Map<String, Value>, Failure> {
    match serde_json::from_str(data) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(Failure::Corrupt(format!(
            "{what}: data is not a JSON object"
        ))),
        Err(e) => Err(Failure::Corrupt(json_failure(what, &e))),
    }
}

/// The columns every connection query selects, in [`ConnectionRow::read`]'s order.
pub(super) const CONNECTION_COLUMNS: &str = "id, data, version, lease_owner, lease_until";

/// A `connections` row as stored: `data` holds everything but `version` and `lease`, which have
/// columns of their own so that conditions read them and each value has one source of truth.
pub(super) struct ConnectionRow {
    pub id: String,
    pub data: String,
    pub version: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<String>,
}

impl ConnectionRow {
    pub fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            data: row.get(1)?,
            version: row.get(2)?,
            lease_owner: row.get(3)?,
            lease_until: row.get(4)?,
        })
    }

    fn what(&self) -> String {
        format!("connection {}", self.id)
    }

    pub fn version(&self) -> Result<u64, Failure> {
        u64::try_from(self.version)
            .map_err(|_| Failure::Corrupt(format!("{}: version is negative", self.what())))
    }

    pub fn lease(&self) -> Result<Option<Lease>, Failure> {
        decode_lease(
            &self.what(),
            self.lease_owner.as_deref(),
            self.lease_until.as_deref(),
        )
    }

    pub fn decode(&self) -> Result<Connection, Failure> {
        let what = self.what();
        let mut fields = decode_object(&self.data, &what)?;
        fields.insert("version".into(), Value::from(self.version()?));
        fields.insert("lease".into(), Value::Null);
        let mut connection: Connection = serde_json::from_value(Value::Object(fields))
            .map_err(|e| Failure::Corrupt(json_failure(&what, &e)))?;
        connection.lease = self.lease()?;
        Ok(connection)
    }
}

pub(super) fn decode_lease(
    what: &str,
    owner: Option<&str>,
    until: Option<&str>,
) -> Result<Option<Lease>, Failure> {
    match (owner, until) {
        (None, None) => Ok(None),
        (Some(owner), Some(until)) => {
            let owner = LeaseOwner::parse(owner).map_err(|_| {
                Failure::Corrupt(format!("{what}: lease_owner is not a lease owner"))
            })?;
            let expires_at = parse_time_key(until, &format!("{what}: lease_until"))?;
            Ok(Some(Lease { owner, expires_at }))
        }
        _ => Err(Failure::Corrupt(format!(
            "{what}: only one of lease_owner and lease_until is set"
        ))),
    }
}

/// A connection's `data`: everything but `version` and `lease`.
pub(super) fn encode_connection(connection: &Connection) -> Result<String, Failure> {
    encode(
        connection,
        &format!("connection {}", connection.id),
        &["version", "lease"],
    )
}

/// A version as stored. SQLite integers are signed 64-bit: a version past that is refused, never wrapped.
pub(super) fn version_column(version: u64, what: &str) -> Result<i64, Failure> {
    i64::try_from(version)
        .map_err(|_| Failure::Corrupt(format!("{what}: version {version} is out of range")))
}

/// The position after the last item of a page, bound to the listing that made it. Opaque to callers
/// (URL-safe base64 of this as JSON) but checked on the way back in: a cursor of another listing,
/// another tenant's or another connection's is [`StoreError::InvalidCursor`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "listing", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum Cursor {
    Connections {
        tenant: String,
        created_at: String,
        id: String,
    },
    Due {
        next_refresh_at: String,
        id: String,
    },
    Awaiting {
        since: String,
        id: String,
    },
    Transitions {
        connection: String,
        at: String,
        seq: i64,
    },
}

impl Cursor {
    pub fn encode(&self) -> Result<String, Failure> {
        let json = serde_json::to_vec(self)
            .map_err(|e| Failure::Corrupt(json_failure("a page cursor", &e)))?;
        Ok(URL_SAFE_NO_PAD.encode(json))
    }

    pub fn decode(cursor: &str) -> Result<Self, StoreError> {
        let json = URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| StoreError::InvalidCursor)?;
        serde_json::from_slice(&json).map_err(|_| StoreError::InvalidCursor)
    }

    /// The request's cursor, if any, accepted only when `belongs` says it is this listing's.
    pub fn of_request<T>(
        page: &PageRequest,
        belongs: impl FnOnce(Self) -> Option<T>,
    ) -> Result<Option<T>, StoreError> {
        match &page.cursor {
            None => Ok(None),
            Some(cursor) => belongs(Self::decode(cursor)?)
                .map(Some)
                .ok_or(StoreError::InvalidCursor),
        }
    }
}

/// How many rows a page asks for: one past the limit, to know whether more follow.
pub(super) fn rows_to_fetch(page: &PageRequest) -> i64 {
    i64::from(page.limit.clamp(1, PageRequest::MAX_LIMIT)) + 1
}

/// A page from rows fetched with [`rows_to_fetch`]: the extra row, if present, only says that more follow.
pub(super) fn page_of<T>(
    mut rows: Vec<(T, Cursor)>,
    page: &PageRequest,
) -> Result<Page<T>, Failure> {
    let limit = page.limit.clamp(1, PageRequest::MAX_LIMIT) as usize;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = match (more, rows.last()) {
        (true, Some((_, last))) => Some(last.encode()?),
        _ => None,
    };
    Ok(Page {
        items: rows.into_iter().map(|(item, _)| item).collect(),
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    #[test]
    fn time_keys_are_exact_and_sort_like_time() {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap();
        let times = [
            Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 59).unwrap(),
            t0,
            t0 + Duration::nanoseconds(1),
            t0 + Duration::milliseconds(100),
            t0 + Duration::seconds(1),
        ];
        let keys: Vec<String> = times.iter().map(|t| time_key(*t)).collect();
        assert_eq!(keys[1], "2026-11-01T09:00:00.000000000Z");
        assert!(
            keys.windows(2)
                .all(|w| w[0] < w[1] && w[0].len() == w[1].len()),
            "{keys:?}"
        );
        for (time, key) in times.iter().zip(&keys) {
            assert_eq!(parse_time_key(key, "t").unwrap(), *time);
        }
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_invalid() {
        let cursor = Cursor::Due {
            next_refresh_at: time_key(Utc::now()),
            id: "con_x".into(),
        };
        let text = cursor.encode().unwrap();
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{text}"
        );
        assert_eq!(Cursor::decode(&text).unwrap(), cursor);
        for bad in [
            "",
            "not-a-cursor",
            "e30",
            &URL_SAFE_NO_PAD.encode(br#"{"listing":"due","id":"x"}"#),
        ] {
            assert_eq!(
                Cursor::decode(bad).unwrap_err(),
                StoreError::InvalidCursor,
                "{bad}"
            );
        }
    }
}
