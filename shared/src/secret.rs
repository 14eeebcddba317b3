//! Redacting types for every secret value the broker handles.
//!
//! A secret can be read only through `expose()`, at the point of use. `Debug` prints the type name and
//! `[redacted]`; there is deliberately no `Display`. The types serialize their value (serde
//! `transparent`) because credentials must reach the vault: serialize them only into vault payloads,
//! never into a log line, an error or an API response other than the session response itself.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! secret_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The secret value. Call it where the value leaves the process (an HTTP request, the
            /// vault), nowhere else.
            pub fn expose(&self) -> &str {
                &self.0
            }

            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

secret_type!(
    /// An OAuth 2.0 access token.
    AccessToken
);
secret_type!(
    /// An OAuth 2.0 refresh token. For rotating providers (Exact Online) it is good for one use only.
    RefreshToken
);
secret_type!(
    /// An OAuth client secret of an app registration.
    ClientSecret
);
secret_type!(
    /// An authorization code returned by a provider; short-lived and single use.
    AuthorizationCode
);
secret_type!(
    /// The PKCE code verifier kept server-side between the redirect and the callback.
    PkceVerifier
);
secret_type!(
    /// A random value that proves possession: OAuth `state`, browser-binding cookie, connect-link token.
    OneTimeSecret
);
secret_type!(
    /// The plaintext of an integration API key, shown to its owner exactly once.
    ApiKeySecret
);
secret_type!(
    /// The key a webhook's deliveries are signed with (HMAC-SHA256), shown to its owner exactly once.
    WebhookSecret
);
secret_type!(
    /// A legacy (OAuth 1.0) Twinfield access token.
    LegacyAccessToken
);
secret_type!(
    /// A legacy (OAuth 1.0) Twinfield access-token secret.
    LegacyAccessSecret
);
secret_type!(
    /// A Twinfield SOAP session id; it grants access like a token does.
    SessionId
);

/// Generates `bytes` bytes from the operating system's CSPRNG, encoded URL-safe base64 without padding.
pub fn random_urlsafe(bytes: usize) -> String {
    use base64::Engine;
    let mut buf = vec![0u8; bytes];
    crate::random::fill(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// SHA-256 of a value, lowercase hex: how one-time secrets and API keys are stored.
pub fn sha256_hex(value: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(value.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let value = "s3cr3t-value-that-must-not-leak";
        let printed = [
            format!("{:?}", AccessToken::new(value)),
            format!("{:?}", RefreshToken::new(value)),
            format!("{:?}", ClientSecret::new(value)),
            format!("{:?}", AuthorizationCode::new(value)),
            format!("{:?}", PkceVerifier::new(value)),
            format!("{:?}", OneTimeSecret::new(value)),
            format!("{:?}", ApiKeySecret::new(value)),
            format!("{:?}", LegacyAccessToken::new(value)),
            format!("{:?}", LegacyAccessSecret::new(value)),
            format!("{:?}", SessionId::new(value)),
            format!("{:#?}", Some(AccessToken::new(value))),
        ];
        for line in printed {
            assert!(!line.contains(value), "leaked: {line}");
            assert!(line.contains("[redacted]"), "not marked redacted: {line}");
        }
    }

    #[test]
    fn random_values_are_distinct_and_long() {
        let a = random_urlsafe(32);
        let b = random_urlsafe(32);
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
    }
}
