//! Integration API keys: random, shown once, stored only as a SHA-256 hash and compared in constant time.
//!
//! A key reads `cbk_<prefix>_<secret>`. The prefix (12 characters) identifies the key in lists, logs
//! and audit records and is its lookup key; the secret part (43 characters, 256 random bits) is never
//! stored. SHA-256 without salt or stretching is right here: the input is a 256-bit random value, not a
//! password, so there is nothing to brute-force.

use super::InvalidValue;
use crate::ids::{ConnectionId, TenantId};
use crate::secret::{random_urlsafe, sha256_hex, ApiKeySecret};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

const KEY_PREFIX: &str = "cbk_";

/// The public, loggable part of an API key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ApiKeyPrefix(String);

impl ApiKeyPrefix {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        if value.len() == 12
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            Ok(Self(value.to_string()))
        } else {
            Err(InvalidValue::new(
                "API key prefix",
                format!("{value:?} is not an API key prefix (12 lowercase letters or digits)"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

super::invalid::text_through_parse!(ApiKeyPrefix);

/// What a key may do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyScope {
    /// Only session exchange: no creating, listing or disconnecting connections.
    pub session_only: bool,
    /// When set, the key reaches only these connections.
    pub connections: Option<Vec<ConnectionId>>,
    /// May register, change and delete the tenant's OAuth app registrations (`/v1/apps`). Keys made
    /// before this existed read as `false`: managing apps is granted, never assumed.
    #[serde(default)]
    pub manage_apps: bool,
}

/// The stored form of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub prefix: ApiKeyPrefix,
    pub tenant: TenantId,
    pub label: String,
    /// SHA-256 of the whole key, lowercase hex.
    pub hash: String,
    pub scope: ApiKeyScope,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A freshly generated key: the plaintext to show once, and the record to store.
pub struct NewApiKey {
    pub plaintext: ApiKeySecret,
    pub record: ApiKeyRecord,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyFormatError {
    #[error("the API key is malformed: send 'Authorization: Bearer cbk_…' with the key exactly as it was issued")]
    Malformed,
}

impl ApiKeyRecord {
    pub fn generate(
        tenant: TenantId,
        label: &str,
        scope: ApiKeyScope,
        now: DateTime<Utc>,
    ) -> NewApiKey {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let raw = crate::random::bytes::<12>();
        // 256 is not a multiple of 36; the slight bias only affects the public prefix.
        let prefix: String = raw
            .iter()
            .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
            .collect();
        let plaintext = format!("{KEY_PREFIX}{prefix}_{}", random_urlsafe(32));
        let record = ApiKeyRecord {
            prefix: ApiKeyPrefix(prefix),
            tenant,
            label: super::people::plain_label(label),
            hash: sha256_hex(&plaintext),
            scope,
            created_at: now,
            revoked_at: None,
        };
        NewApiKey {
            plaintext: ApiKeySecret::new(plaintext),
            record,
        }
    }

    /// Splits a presented key into its lookup prefix. Does not check the secret part.
    pub fn prefix_of(presented: &ApiKeySecret) -> Result<ApiKeyPrefix, ApiKeyFormatError> {
        let rest = presented
            .expose()
            .strip_prefix(KEY_PREFIX)
            .ok_or(ApiKeyFormatError::Malformed)?;
        let (prefix, secret) = rest.split_once('_').ok_or(ApiKeyFormatError::Malformed)?;
        if secret.len() != 43 {
            return Err(ApiKeyFormatError::Malformed);
        }
        ApiKeyPrefix::parse(prefix).map_err(|_| ApiKeyFormatError::Malformed)
    }

    /// Whether `presented` is this key and still valid. The hash comparison runs in constant time.
    pub fn accepts(&self, presented: &ApiKeySecret) -> bool {
        let presented_hash = sha256_hex(presented.expose());
        let matches: bool = presented_hash.as_bytes().ct_eq(self.hash.as_bytes()).into();
        matches && self.revoked_at.is_none()
    }

    pub fn may_use(&self, connection: &ConnectionId) -> bool {
        self.scope
            .connections
            .as_ref()
            .is_none_or(|allowed| allowed.contains(connection))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    #[test]
    fn a_generated_key_is_accepted_and_only_its_hash_is_stored() {
        let key = ApiKeyRecord::generate(tenant(), "ci", ApiKeyScope::default(), Utc::now());
        assert!(key.record.accepts(&key.plaintext));
        assert_eq!(
            ApiKeyRecord::prefix_of(&key.plaintext).unwrap(),
            key.record.prefix
        );
        let stored = serde_json::to_string(&key.record).unwrap();
        assert!(!stored.contains(key.plaintext.expose()));
        assert!(!format!("{:?}", key.plaintext).contains(key.plaintext.expose()));
    }

    #[test]
    fn wrong_revoked_and_malformed_keys_are_refused() {
        let mut key = ApiKeyRecord::generate(tenant(), "ci", ApiKeyScope::default(), Utc::now());
        let other = ApiKeyRecord::generate(tenant(), "ci", ApiKeyScope::default(), Utc::now());
        assert!(!key.record.accepts(&other.plaintext));
        for bad in [
            "",
            "cbk_",
            "Bearer x",
            "cbk_abc_def",
            "cbk_abcdefghijkl_short",
        ] {
            assert!(
                ApiKeyRecord::prefix_of(&ApiKeySecret::new(bad)).is_err(),
                "{bad}"
            );
        }
        key.record.revoked_at = Some(Utc::now());
        assert!(!key.record.accepts(&key.plaintext));
    }

    #[test]
    fn connection_limits_apply() {
        let allowed = ConnectionId::generate();
        let scope = ApiKeyScope {
            session_only: true,
            connections: Some(vec![allowed.clone()]),
            manage_apps: false,
        };
        let key = ApiKeyRecord::generate(tenant(), "ci", scope, Utc::now());
        assert!(key.record.may_use(&allowed));
        assert!(!key.record.may_use(&ConnectionId::generate()));
    }
}
