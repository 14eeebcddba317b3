//! Attribute names, key formats and time encodings of the table (documented in the parent module).

use crate::domain::{ApiKeyPrefix, OneTimeKey};
use crate::ids::{AppId, ConnectionId, TenantId};
use chrono::{DateTime, Utc};

// Key attributes and indexes.
pub(super) const PK: &str = "pk";
pub(super) const SK: &str = "sk";
pub(super) const GSI1: &str = "gsi1";
pub(super) const GSI1_PK: &str = "gsi1pk";
pub(super) const GSI1_SK: &str = "gsi1sk";
pub(super) const GSI2: &str = "gsi2";
pub(super) const GSI2_PK: &str = "gsi2pk";
pub(super) const GSI2_SK: &str = "gsi2sk";

// Other attributes.
pub(super) const ENTITY: &str = "entity";
pub(super) const DATA: &str = "data";
pub(super) const TENANT: &str = "tenant";
pub(super) const VERSION: &str = "version";
pub(super) const UPDATED_AT: &str = "updated_at";
pub(super) const LEASE_OWNER: &str = "lease_owner";
pub(super) const LEASE_UNTIL: &str = "lease_until";
pub(super) const REVOKED_AT: &str = "revoked_at";
pub(super) const EXPIRES_AT: &str = "expires_at";
pub(super) const TTL: &str = "ttl";

// Fixed sort keys and prefixes.
pub(super) const TENANT_SK: &str = "TENANT";
pub(super) const APP_SK_PREFIX: &str = "APP#";
pub(super) const CONNECTION_SK: &str = "CONN";
pub(super) const TRANSITION_SK_PREFIX: &str = "TRANSITION#";
pub(super) const API_KEY_SK: &str = "APIKEY";
pub(super) const STATE_SK: &str = "STATE";
pub(super) const DUE_PK: &str = "DUE";
pub(super) const AWAITING_PK: &str = "AWAITING";
const CONNECTION_PK_PREFIX: &str = "CONN#";

pub(super) fn tenant_pk(tenant: &TenantId) -> String {
    format!("TENANT#{tenant}")
}

pub(super) fn app_sk(app: &AppId) -> String {
    format!("{APP_SK_PREFIX}{app}")
}

pub(super) fn connection_pk(id: &ConnectionId) -> String {
    format!("{CONNECTION_PK_PREFIX}{id}")
}

pub(super) fn connection_id_of_pk(pk: &str) -> Option<ConnectionId> {
    pk.strip_prefix(CONNECTION_PK_PREFIX)
        .and_then(|id| ConnectionId::parse(id).ok())
}

/// `gsi1pk` of a tenant's connections.
pub(super) fn tenant_connections_pk(tenant: &TenantId) -> String {
    format!("TENANT#{tenant}#CONN")
}

/// `gsi1sk` of a connection: oldest first, ties broken by id.
pub(super) fn connection_listing_sk(created_at: DateTime<Utc>, id: &ConnectionId) -> String {
    format!("{}#{id}", time_key(created_at))
}

/// `gsi2sk` of a connection that is due at `at` (or, in the `AWAITING` partition, has waited for a
/// person since `at`).
pub(super) fn due_sk(at: DateTime<Utc>, id: &ConnectionId) -> String {
    format!("{}#{id}", time_key(at))
}

/// The exclusive upper bound of the due index entries at or before `due_by`: `$` sorts right after `#`.
pub(super) fn due_bound(due_by: DateTime<Utc>) -> String {
    format!("{}$", time_key(due_by))
}

/// The time of a due index entry.
pub(super) fn due_time_of_sk(sk: &str) -> Option<DateTime<Utc>> {
    sk.split_once('#')
        .and_then(|(time, _)| parse_time_key(time))
}

/// A transition's sort key: by time, then by the connection version its write produced (unique per
/// write), then by its position in that write.
pub(super) fn transition_sk(at: DateTime<Utc>, version: u64, position: usize) -> String {
    format!(
        "{TRANSITION_SK_PREFIX}{}#{version:020}#{position:04}",
        time_key(at)
    )
}

pub(super) fn api_key_pk(prefix: &ApiKeyPrefix) -> String {
    format!("APIKEY#{}", prefix.as_str())
}

/// `gsi1pk` of a tenant's API keys (`gsi1sk` is the prefix).
pub(super) fn tenant_api_keys_pk(tenant: &TenantId) -> String {
    format!("TENANT#{tenant}#APIKEY")
}

pub(super) fn state_pk(key: &OneTimeKey) -> String {
    format!("STATE#{}", key.as_str())
}

/// A time in a key: RFC 3339, UTC, nine fractional digits. Fixed width (for years 0 to 9999), so the
/// string order is the time order.
pub(super) fn time_key(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

pub(super) fn parse_time_key(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

const NANOS_PER_MILLI: i128 = 1_000_000;

/// A time as a DynamoDB number: epoch milliseconds, the sub-millisecond part as decimals. Exact.
pub(super) fn epoch_millis(at: DateTime<Utc>) -> String {
    let nanos =
        i128::from(at.timestamp()) * 1_000_000_000 + i128::from(at.timestamp_subsec_nanos());
    let sign = if nanos < 0 { "-" } else { "" };
    let nanos = nanos.abs();
    format!(
        "{sign}{}.{:06}",
        nanos / NANOS_PER_MILLI,
        nanos % NANOS_PER_MILLI
    )
}

/// Reads a number written by [`epoch_millis`] (DynamoDB returns it normalised: `5.1`, `5`, `-5.25`).
pub(super) fn parse_epoch_millis(value: &str) -> Option<DateTime<Utc>> {
    let (negative, digits) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (whole, fraction) = match digits.split_once('.') {
        Some((_, "")) => return None,
        Some(parts) => parts,
        None => (digits, ""),
    };
    let all_digits = whole
        .bytes()
        .chain(fraction.bytes())
        .all(|b| b.is_ascii_digit());
    if whole.is_empty() || fraction.len() > 6 || !all_digits {
        return None;
    }
    let whole: i128 = whole.parse().ok()?;
    let fraction: i128 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<6}").parse().ok()?
    };
    let nanos = whole.checked_mul(NANOS_PER_MILLI)?.checked_add(fraction)?;
    let nanos = if negative { -nanos } else { nanos };
    let seconds = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let subsec = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
    DateTime::from_timestamp(seconds, subsec)
}

/// The TTL attribute's value: whole epoch seconds, rounded up so the entry outlives its expiry.
pub(super) fn ttl_seconds(expires_at: DateTime<Utc>) -> String {
    let seconds = expires_at.timestamp() + i64::from(expires_at.timestamp_subsec_nanos() > 0);
    seconds.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn t(seconds: i64, nanos: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, nanos).unwrap()
    }

    #[test]
    fn time_keys_are_fixed_width_exact_and_sort_like_time() {
        let times = [
            Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap() + Duration::nanoseconds(1),
            Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap() + Duration::milliseconds(100),
            Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 1).unwrap(),
        ];
        let keys: Vec<String> = times.iter().map(|t| time_key(*t)).collect();
        assert_eq!(keys[1], "2026-11-01T09:00:00.000000000Z");
        assert!(keys.iter().all(|k| k.len() == 30));
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        for (time, key) in times.iter().zip(&keys) {
            assert_eq!(parse_time_key(key), Some(*time));
        }
    }

    #[test]
    fn due_keys_carry_their_time_and_the_bound_includes_equal_times() {
        let id = ConnectionId::generate();
        let at = t(1_793_523_600, 123_456_789);
        let sk = due_sk(at, &id);
        assert_eq!(due_time_of_sk(&sk), Some(at));
        assert!(
            sk < due_bound(at),
            "an entry due exactly at due_by is included"
        );
        assert!(sk > due_bound(at - Duration::nanoseconds(1)));
        assert!(due_sk(at + Duration::nanoseconds(1), &id) > due_bound(at));
    }

    #[test]
    fn transition_keys_sort_by_time_then_write_then_position() {
        let at = t(1_793_523_600, 0);
        let keys = [
            transition_sk(at, 0, 0),
            transition_sk(at, 0, 1),
            transition_sk(at, 1, 0),
            transition_sk(at + Duration::nanoseconds(1), 0, 0),
        ];
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert!(keys.iter().all(|k| k.starts_with(TRANSITION_SK_PREFIX)));
    }

    #[test]
    fn epoch_millis_numbers_are_exact_both_ways() {
        for (time, text) in [
            (t(1_793_523_600, 0), "1793523600000.000000"),
            (t(1_793_523_600, 1), "1793523600000.000001"),
            (t(1_793_523_600, 123_456_789), "1793523600123.456789"),
            (t(0, 0), "0.000000"),
            (t(-1, 999_999_999), "-0.000001"),
        ] {
            assert_eq!(epoch_millis(time), text);
            assert_eq!(parse_epoch_millis(text), Some(time), "{text}");
        }
        // DynamoDB normalises numbers; those read back too.
        assert_eq!(
            parse_epoch_millis("1793523600000"),
            Some(t(1_793_523_600, 0))
        );
        assert_eq!(
            parse_epoch_millis("1793523600123.4"),
            Some(t(1_793_523_600, 123_400_000))
        );
        assert_eq!(parse_epoch_millis("-1.5"), Some(t(-1, 998_500_000)));
        for bad in ["", "-", "1.", ".5", "1e3", "1.2345678", "abc", "1.-2"] {
            assert_eq!(parse_epoch_millis(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ttl_rounds_up() {
        assert_eq!(ttl_seconds(t(100, 0)), "100");
        assert_eq!(ttl_seconds(t(100, 1)), "101");
    }

    #[test]
    fn keys_embed_ids_that_can_be_read_back() {
        let id = ConnectionId::generate();
        assert_eq!(connection_id_of_pk(&connection_pk(&id)), Some(id));
        assert_eq!(connection_id_of_pk("TENANT#acme"), None);
        let tenant = TenantId::parse("acme").unwrap();
        assert_eq!(tenant_pk(&tenant), "TENANT#acme");
        assert_eq!(tenant_connections_pk(&tenant), "TENANT#acme#CONN");
        assert_eq!(tenant_api_keys_pk(&tenant), "TENANT#acme#APIKEY");
        assert_eq!(app_sk(&AppId::parse("exact-nl").unwrap()), "APP#exact-nl");
    }
}
