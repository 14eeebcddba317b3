//! What the refresh engine needs from a provider: one refresh-token grant, and the provider's rules.
//! The provider clients implement it; tests may wrap it to inject faults.

use super::rules::RefreshRules;
use crate::domain::{ErrorClass, OAuthApp};
use crate::secret::{AccessToken, ClientSecret, RefreshToken};
use async_trait::async_trait;
use chrono::Duration;

/// A successful refresh, as the provider answered it.
#[derive(Debug, Clone)]
pub struct GrantedTokens {
    pub access_token: AccessToken,
    pub expires_in: Duration,
    /// `None` when the provider sent no new refresh token: the old one stays.
    pub refresh_token: Option<RefreshToken>,
    pub scope: Option<String>,
}

/// A failed refresh. `issued_refresh_token` carries a new refresh token found in an error reply
/// (Exact can rate-limit a request and still rotate the token): it must be kept.
#[derive(Debug, Clone)]
pub struct GrantFailure {
    pub class: ErrorClass,
    /// The provider's own words, without secrets.
    pub message: String,
    pub retry_after: Option<Duration>,
    pub issued_refresh_token: Option<RefreshToken>,
}

impl GrantFailure {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
            retry_after: None,
            issued_refresh_token: None,
        }
    }
}

/// A provider's limits per app and user, less room (see [`super::app_user`]). `None`: no such limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppUserLimits {
    /// Token-endpoint calls per UTC day.
    pub token_calls_per_day: Option<u32>,
    /// Failed token-endpoint calls in the current and the previous UTC hour together.
    pub failed_token_calls_per_hour: Option<u32>,
}

#[async_trait]
pub trait TokenGrant: Send + Sync {
    /// The provider's refresh rules for this app.
    fn rules(&self, app: &OAuthApp) -> RefreshRules;

    /// Token-endpoint calls one connection may make per UTC day (a provider's daily cap, less room).
    fn max_token_calls_per_day(&self, _app: &OAuthApp) -> Option<u32> {
        None
    }

    /// Limits the provider sets per app and user, held for all of one user's connections under the app.
    fn app_user_limits(&self, _app: &OAuthApp) -> AppUserLimits {
        AppUserLimits::default()
    }

    /// One refresh-token grant. Must be bounded by the client's own timeouts.
    async fn refresh(
        &self,
        app: &OAuthApp,
        client_secret: &ClientSecret,
        refresh_token: &RefreshToken,
    ) -> Result<GrantedTokens, GrantFailure>;
}
