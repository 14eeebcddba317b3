//! What the vault keeps for a connection.

use crate::secret::{AccessToken, LegacyAccessSecret, LegacyAccessToken, RefreshToken};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An OAuth 2.0 token set as the broker keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenSet {
    pub access_token: AccessToken,
    pub access_expires_at: DateTime<Utc>,
    /// Absent when the provider issued none (no `offline_access`).
    pub refresh_token: Option<RefreshToken>,
    /// When the refresh token stops working, if known (from the provider's refresh policy).
    pub refresh_expires_at: Option<DateTime<Utc>>,
    pub scope: Option<String>,
    /// When the broker received this set: Exact Online counts its 570-second minimum from here.
    pub received_at: DateTime<Utc>,
}

/// Twinfield's OAuth 1.0-era credentials, still used with `OAuthLogon` until the organisation moves to
/// OAuth 2.0 (the app's consumer key and secret stay on the app registration).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LegacyTwinfieldCredentials {
    pub access_token: LegacyAccessToken,
    pub access_secret: LegacyAccessSecret,
}

/// One vault payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Credentials {
    OAuth2(TokenSet),
    TwinfieldLegacy(LegacyTwinfieldCredentials),
}

impl Credentials {
    pub fn token_set(&self) -> Option<&TokenSet> {
        match self {
            Self::OAuth2(tokens) => Some(tokens),
            Self::TwinfieldLegacy(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_credentials_hides_every_secret() {
        let now = Utc::now();
        let creds = [
            Credentials::OAuth2(TokenSet {
                access_token: AccessToken::new("access-VALUE-1"),
                access_expires_at: now,
                refresh_token: Some(RefreshToken::new("refresh-VALUE-2")),
                refresh_expires_at: None,
                scope: Some("api".into()),
                received_at: now,
            }),
            Credentials::TwinfieldLegacy(LegacyTwinfieldCredentials {
                access_token: LegacyAccessToken::new("legacy-VALUE-3"),
                access_secret: LegacyAccessSecret::new("legacy-VALUE-4"),
            }),
        ];
        for c in creds {
            let printed = format!("{c:?} {c:#?}");
            assert!(!printed.contains("VALUE"), "{printed}");
        }
    }
}
