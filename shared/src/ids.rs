//! Identifiers. Each is validated when parsed, so a value of one of these types is always well formed:
//! safe to embed in a DynamoDB key, a Secrets Manager name or a URL path.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {value:?} is not valid: {rule}")]
pub struct InvalidId {
    pub kind: &'static str,
    pub value: String,
    pub rule: &'static str,
}

const SLUG_RULE: &str =
    "use 1 to 63 characters: lowercase letters, digits and '-', starting with a letter or digit";

fn is_slug(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Lowercase base32 (RFC 4648 alphabet, no padding) of 16 random bytes: 26 characters.
fn random_suffix() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let bytes = crate::random::bytes::<16>();
    let mut out = String::with_capacity(26);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// An identifier's type and what every identifier has beside its `parse`: its text, and serde
/// through `parse`.
macro_rules! text_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, InvalidId> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

macro_rules! slug_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        text_id!($(#[$meta])* $name);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                if is_slug(&value) {
                    Ok(Self(value))
                } else {
                    Err(InvalidId { kind: $kind, value, rule: SLUG_RULE })
                }
            }
        }
    };
}

macro_rules! generated_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        text_id!($(#[$meta])* $name);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new random identifier (128 bits).
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, random_suffix()))
            }

            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                let valid = value
                    .strip_prefix($prefix)
                    .is_some_and(|rest| {
                        rest.len() == 26
                            && rest.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
                    });
                if valid {
                    Ok(Self(value))
                } else {
                    Err(InvalidId {
                        kind: $kind,
                        value,
                        rule: concat!("expected '", $prefix, "' followed by 26 base32 characters"),
                    })
                }
            }
        }
    };
}

slug_id!(
    /// A tenant: one customer of the broker (an integration vendor). Chosen by the operator.
    TenantId,
    "tenant id"
);
slug_id!(
    /// An OAuth app registration within a tenant, e.g. `exact-nl-production`.
    AppId,
    "app id"
);
generated_id!(
    /// A connection: one authorized link between a tenant's app and one provider organisation.
    ConnectionId,
    "con_",
    "connection id"
);
generated_id!(
    /// A tenant's webhook endpoint: an HTTPS URL status-change events are posted to.
    WebhookId,
    "whk_",
    "webhook id"
);
generated_id!(
    /// Identifies one write of credentials to the vault. It is the Secrets Manager
    /// `ClientRequestToken` (and so the version id), which makes a repeated write idempotent.
    WriteId,
    "write_",
    "write id"
);
generated_id!(
    /// The owner token of a refresh lease: only its holder may write under the lease.
    LeaseOwner,
    "lease_",
    "lease owner"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_round_trip_and_are_unique() {
        let a = ConnectionId::generate();
        let b = ConnectionId::generate();
        assert_ne!(a, b);
        assert_eq!(ConnectionId::parse(a.as_str()).unwrap(), a);
        assert!(ConnectionId::parse("con_short").is_err());
        assert!(ConnectionId::parse(a.as_str().replace("con_", "write_")).is_err());
        // Secrets Manager wants a ClientRequestToken of 32 to 64 characters.
        let write = WriteId::generate();
        assert!((32..=64).contains(&write.as_str().len()));
    }

    #[test]
    fn slugs_reject_what_would_break_keys() {
        assert!(TenantId::parse("acme-2").is_ok());
        for bad in ["", "Acme", "-acme", "acme#1", "a/b", &"x".repeat(64)] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?} accepted");
        }
        let err = TenantId::parse("A#").unwrap_err().to_string();
        assert!(err.contains("lowercase letters"), "{err}");
    }
}
