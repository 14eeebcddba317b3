//! What a connection's history keeps beside its status transitions: the changes made to it through the
//! API, and how often each API key was handed its credentials.

use super::status::Actor;
use crate::ids::{ConnectionId, TenantId};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// One change of a connection's settings (display name, recipients, required identity, locale, time
/// zone), stored with the connection write that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionChange {
    pub at: DateTime<Utc>,
    /// Who: an API key by its prefix (never the key itself), or an operator.
    pub actor: Actor,
    /// Each field that changed, from what to what. Never empty: a request that changes nothing
    /// records nothing.
    pub fields: Vec<FieldChange>,
}

/// One field of a [`ConnectionChange`]. Values are as the API shows them (`null` for none).
/// Recipients and identities are personal data, but the tenant's own: its history shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub from: serde_json::Value,
    pub to: serde_json::Value,
}

/// How often one API key was handed a connection's credentials (a token or a Twinfield session) in one
/// UTC hour: the token-read audit, counted rather than written per read so the session path gains no
/// store write of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionReads {
    pub connection: ConnectionId,
    pub tenant: TenantId,
    pub key_prefix: String,
    /// The start of the UTC hour counted.
    pub hour: DateTime<Utc>,
    pub count: u64,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
}

impl SessionReads {
    /// How long stores keep an hour's count: the audit answers "who read this connection's tokens in
    /// the last quarter", and a count per key and hour for ever would outgrow everything else kept
    /// about a busy connection.
    pub const KEPT_FOR: Duration = Duration::days(90);

    /// One read at `at`.
    pub fn one(
        tenant: TenantId,
        connection: ConnectionId,
        key_prefix: &str,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            connection,
            tenant,
            key_prefix: key_prefix.to_string(),
            hour: hour_of(at),
            count: 1,
            first: at,
            last: at,
        }
    }

    /// Adds the reads of `other`, which counts the same key, connection and hour.
    pub fn absorb(&mut self, other: &SessionReads) {
        self.count = self.count.saturating_add(other.count);
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
    }

    /// When a store may forget this count.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.hour + Duration::hours(1) + Self::KEPT_FOR
    }
}

/// The start of the UTC hour `at` falls in.
pub fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp().div_euclid(3600) * 3600, 0)
        .expect("an hour boundary of a valid time is valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn reads_of_one_hour_add_up_with_their_first_and_last() {
        let tenant = TenantId::parse("acme").unwrap();
        let id = ConnectionId::generate();
        let at = Utc.with_ymd_and_hms(2026, 3, 2, 10, 59, 59).unwrap();
        let mut reads = SessionReads::one(tenant.clone(), id.clone(), "abcdefghijkl", at);
        assert_eq!(
            reads.hour,
            Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap()
        );
        let earlier = SessionReads::one(tenant, id, "abcdefghijkl", at - Duration::minutes(30));
        reads.absorb(&earlier);
        assert_eq!(
            (reads.count, reads.first, reads.last),
            (2, at - Duration::minutes(30), at)
        );
        assert_eq!(
            reads.expires_at(),
            Utc.with_ymd_and_hms(2026, 5, 31, 11, 0, 0).unwrap()
        );
    }
}
