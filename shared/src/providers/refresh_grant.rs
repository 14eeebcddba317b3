//! The refresh engine's grant port ([`crate::refresh::TokenGrant`]), implemented by the provider clients:
//! the catalogue's refresh policy becomes the engine's rules, a [`ProviderError`] its failure.

use super::catalogue::{RefreshExpiry, RefreshPolicy, RefreshRotation};
use super::clients::Providers;
use super::error::{ErrorClass, ProviderError};
use crate::domain::{AcumaticaRefreshTokens, OAuthApp, ProviderSettings};
use crate::refresh::{
    AppUserLimits, GrantFailure, GrantedTokens, RefreshRules, RefreshTokenExpiry, TokenGrant,
};
use crate::secret::{ClientSecret, RefreshToken};
use async_trait::async_trait;
use chrono::Duration;

/// The engine's rules for a definition's refresh policy.
pub fn refresh_rules(policy: &RefreshPolicy) -> RefreshRules {
    RefreshRules {
        rotating: policy.rotation == RefreshRotation::SingleUse,
        expiry: match policy.expiry {
            RefreshExpiry::Unknown => RefreshTokenExpiry::Never,
            RefreshExpiry::Idle { days: d } => RefreshTokenExpiry::Idle(days(d)),
            RefreshExpiry::Absolute { days: d } => RefreshTokenExpiry::Absolute(days(d)),
            RefreshExpiry::Sliding {
                days: d,
                absolute_cap_days,
            } => sliding(d, absolute_cap_days),
        },
        min_interval: policy
            .min_interval_secs
            .map(|s| Duration::seconds(s as i64)),
        health_check: policy
            .health_check_secs
            .map(|s| Duration::seconds(s as i64)),
    }
}

/// The refresh-token expiry an Acumatica app's own setting gives, over the catalogue's.
fn acumatica_expiry(mode: AcumaticaRefreshTokens) -> RefreshTokenExpiry {
    match mode {
        AcumaticaRefreshTokens::Absolute { days: d } => RefreshTokenExpiry::Absolute(days(d)),
        AcumaticaRefreshTokens::Sliding {
            days: d,
            absolute_days,
        } => sliding(d, absolute_days),
    }
}

fn days(d: u32) -> Duration {
    Duration::days(i64::from(d))
}

/// A window of `window_days` that each use restarts, within `cap_days` of the grant if set.
fn sliding(window_days: u32, cap_days: Option<u32>) -> RefreshTokenExpiry {
    RefreshTokenExpiry::Sliding {
        window: days(window_days),
        cap: cap_days.map(days),
    }
}

/// The engine's failure for a provider error: class, the provider's words, when to retry, and any new
/// refresh token the failed answer carried.
pub fn grant_failure(error: &ProviderError) -> GrantFailure {
    let words = error.provider_words();
    GrantFailure {
        class: error.class,
        message: if words.is_empty() {
            error.to_string()
        } else {
            words
        },
        retry_after: error.retry_after.and_then(|d| Duration::from_std(d).ok()),
        issued_refresh_token: error.new_refresh_token().cloned(),
    }
}

#[async_trait]
impl TokenGrant for Providers {
    fn rules(&self, app: &OAuthApp) -> RefreshRules {
        match self.catalogue().resolve(&app.settings) {
            Ok(resolved) => {
                let mut rules = refresh_rules(&resolved.definition.refresh);
                if let ProviderSettings::Acumatica {
                    refresh_tokens: Some(mode),
                    ..
                } = &app.settings
                {
                    rules.expiry = acumatica_expiry(*mode);
                }
                rules
            }
            // The refresh itself will fail with the reason; until then, assume the strictest rules.
            Err(_) => RefreshRules {
                rotating: true,
                expiry: RefreshTokenExpiry::Never,
                min_interval: None,
                health_check: None,
            },
        }
    }

    fn max_token_calls_per_day(&self, app: &OAuthApp) -> Option<u32> {
        let resolved = self.catalogue().resolve(&app.settings).ok()?;
        resolved.definition.refresh.max_token_calls_per_day
    }

    fn app_user_limits(&self, app: &OAuthApp) -> AppUserLimits {
        let Ok(resolved) = self.catalogue().resolve(&app.settings) else {
            return AppUserLimits::default();
        };
        let policy = &resolved.definition.refresh;
        AppUserLimits {
            token_calls_per_day: policy.max_token_calls_per_app_user_per_day,
            failed_token_calls_per_hour: policy.max_failed_token_calls_per_app_user_per_hour,
        }
    }

    async fn refresh(
        &self,
        app: &OAuthApp,
        client_secret: &ClientSecret,
        refresh_token: &RefreshToken,
    ) -> Result<GrantedTokens, GrantFailure> {
        let client = self
            .oauth_client(app, client_secret.clone())
            .map_err(|e| GrantFailure::new(ErrorClass::ClientMisconfigured, e.to_string()))?;
        let refreshed = client
            .refresh_grant(refresh_token)
            .await
            .map_err(|e| grant_failure(&e))?;
        Ok(GrantedTokens {
            access_token: refreshed.access_token,
            expires_in: refreshed.expires_in,
            refresh_token: refreshed.refresh_token,
            scope: refreshed.scope,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ExactCountry, ProviderSettings};
    use crate::providers::catalogue::Catalogue;

    #[test]
    fn catalogue_policies_become_engine_rules() {
        let c = Catalogue::built_in();
        let exact = c
            .resolve(&ProviderSettings::ExactOnline {
                country: ExactCountry::Belgium,
            })
            .unwrap();
        let rules = refresh_rules(&exact.definition.refresh);
        assert!(rules.rotating);
        assert_eq!(rules.expiry, RefreshTokenExpiry::Idle(Duration::days(30)));
        assert_eq!(rules.min_interval, Some(Duration::seconds(570)));
        let twinfield = refresh_rules(
            &c.resolve(&ProviderSettings::Twinfield)
                .unwrap()
                .definition
                .refresh,
        );
        assert!(!twinfield.rotating);
        assert_eq!(twinfield.health_check, Some(Duration::days(1)));
    }

    #[test]
    fn provider_errors_become_grant_failures_keeping_new_tokens() {
        let mut e = ProviderError::new(
            ErrorClass::RateLimited,
            crate::domain::ProviderKind::ExactOnline,
            super::super::error::Operation::Refresh,
            "Too many token requests",
        );
        e.error_code = Some("rate_limit_exceeded".into());
        e.retry_after = Some(std::time::Duration::from_secs(90));
        e.recovered = Some(Box::new(super::super::error::RecoveredTokens {
            refresh_token: RefreshToken::new("new-one"),
            tokens: None,
        }));
        let f = grant_failure(&e);
        assert_eq!(f.class, ErrorClass::RateLimited);
        assert_eq!(f.message, "rate_limit_exceeded: Too many token requests");
        assert_eq!(f.retry_after, Some(Duration::seconds(90)));
        assert_eq!(f.issued_refresh_token.unwrap().expose(), "new-one");
    }
}
