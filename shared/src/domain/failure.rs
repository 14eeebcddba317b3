//! How a provider call failed, in the classes every caller acts on: the refresh engine, the connect
//! flow, the integration API and the scheduled run's counts share this one vocabulary.

use super::ReconnectKind;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a failure means for the caller. The first four need a person (see [`ErrorClass::reconnect_kind`]);
/// the rest pass with time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The grant was revoked, replaced or never valid (RFC 6749 `invalid_grant`, Exact's chainId error).
    GrantRevoked,
    /// The refresh token outlived its lifetime.
    RefreshTokenExpired,
    /// The provider says the refresh token was already used (Exact: "Old refresh token used.").
    RefreshTokenReused,
    /// The provider's rules forbid refreshing yet (Exact: 570 s after the previous token). Retry later.
    TooEarly,
    /// Rate limited; `retry_after` says when to try again if the provider told.
    RateLimited,
    /// 5xx, timeout or connection failure. Retry later; see `outcome_unknown`.
    ProviderUnavailable,
    /// The provider rejects the app's client id or secret, or the app is not allowed this grant; or
    /// the app's provider settings point somewhere the broker does not call (a private address).
    ClientMisconfigured,
    /// Anything else: an answer the client does not recognise. Not a reason to give up on a grant: the
    /// caller keeps the connection, retries later within its bounds and raises an alert.
    Unexpected,
}

impl ErrorClass {
    /// The reconnect reason this class stands for, when only a person can fix it.
    pub fn reconnect_kind(self) -> Option<ReconnectKind> {
        match self {
            Self::GrantRevoked => Some(ReconnectKind::GrantRevoked),
            Self::RefreshTokenExpired => Some(ReconnectKind::RefreshTokenExpired),
            Self::RefreshTokenReused => Some(ReconnectKind::RefreshTokenReused),
            Self::ClientMisconfigured => Some(ReconnectKind::ClientMisconfigured),
            Self::TooEarly | Self::RateLimited | Self::ProviderUnavailable | Self::Unexpected => {
                None
            }
        }
    }

    /// Whether trying again later may succeed without a person.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::TooEarly | Self::RateLimited | Self::ProviderUnavailable
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::GrantRevoked => "grant_revoked",
            Self::RefreshTokenExpired => "refresh_token_expired",
            Self::RefreshTokenReused => "refresh_token_reused",
            Self::TooEarly => "too_early",
            Self::RateLimited => "rate_limited",
            Self::ProviderUnavailable => "provider_unavailable",
            Self::ClientMisconfigured => "client_misconfigured",
            Self::Unexpected => "unexpected",
        }
    }

    pub fn explain(self) -> &'static str {
        match self {
            Self::GrantRevoked => "the authorization was revoked or is no longer valid",
            Self::RefreshTokenExpired => "the refresh token has expired",
            Self::RefreshTokenReused => "the refresh token was already used",
            Self::TooEarly => "it is too early to refresh",
            Self::RateLimited => "the provider is rate limiting",
            Self::ProviderUnavailable => "the provider is unavailable",
            Self::ClientMisconfigured => {
                "the app registration or its provider settings are not accepted"
            }
            Self::Unexpected => "the provider gave an unexpected answer",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
