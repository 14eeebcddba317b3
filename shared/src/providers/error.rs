//! How a provider call failed, in classes a caller can act on, with the provider's own words (never
//! a secret) kept for people.

use crate::domain::{ProviderKind, ReconnectKind, ReconnectReason, TokenSet};
use crate::secret::RefreshToken;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// What a failure means for the caller. The first four need a person (see [`ErrorClass::reconnect_kind`]);
/// the rest pass with time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

    fn explain(self) -> &'static str {
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

/// Which call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    CodeExchange,
    Refresh,
    /// Reading the OpenID Connect discovery document of a generic provider.
    Metadata,
    /// The post-authorization discovery step (Twinfield token validation, Exact `current/Me`, userinfo).
    Discovery,
    /// RFC 7009 token revocation on disconnect.
    Revocation,
}

impl Operation {
    fn describe(self) -> &'static str {
        match self {
            Self::CodeExchange => "the authorization code exchange",
            Self::Refresh => "the token refresh",
            Self::Metadata => "reading the discovery document",
            Self::Discovery => "the post-authorization lookup",
            Self::Revocation => "the token revocation",
        }
    }
}

/// Tokens found in a reply that was nevertheless a failure (Exact can rotate and still refuse, e.g. for a
/// rate limit). The old refresh token may already be spent: store these.
#[derive(Debug, Clone)]
pub struct RecoveredTokens {
    pub refresh_token: RefreshToken,
    /// The whole set, when the reply also carried an access token.
    pub tokens: Option<TokenSet>,
}

/// A failed provider call. `Display` and `Debug` never contain a token or secret: the detail is taken from
/// the provider's error fields, and any secret the request carried is blanked out of it.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ProviderError {
    pub class: ErrorClass,
    pub provider: ProviderKind,
    pub operation: Operation,
    /// The HTTP status, when an answer arrived.
    pub status: Option<u16>,
    /// The provider's error code (`invalid_grant`, ...), when it sent one.
    pub error_code: Option<String>,
    /// The provider's own text, or what went wrong in transport, for people.
    pub detail: String,
    /// When to try again, if the provider said (`Retry-After`) or the client knows (minimum interval).
    pub retry_after: Option<Duration>,
    /// The request may have reached the provider and been acted on (timeout after sending, 5xx, answer
    /// lost): a single-use refresh token may be spent and a new one issued that never arrived.
    pub outcome_unknown: bool,
    /// A new refresh token (and maybe a whole set) that came with the failure: never throw it away.
    pub recovered: Option<Box<RecoveredTokens>>,
}

impl ProviderError {
    pub(crate) fn new(
        class: ErrorClass,
        provider: ProviderKind,
        operation: Operation,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            class,
            provider,
            operation,
            status: None,
            error_code: None,
            detail: detail.into(),
            retry_after: None,
            outcome_unknown: false,
            recovered: None,
        }
    }

    /// The refresh token to store, if the failed reply carried one.
    pub fn new_refresh_token(&self) -> Option<&RefreshToken> {
        self.recovered.as_ref().map(|r| &r.refresh_token)
    }

    /// The reason to record when only a person can fix this.
    pub fn reconnect_reason(&self) -> Option<ReconnectReason> {
        let kind = self.class.reconnect_kind()?;
        Some(ReconnectReason::new(kind, self.provider_words()))
    }

    /// The provider's error code and text, as one line for people.
    pub fn provider_words(&self) -> String {
        match (&self.error_code, self.detail.is_empty()) {
            (Some(code), false) => format!("{code}: {}", self.detail),
            (Some(code), true) => code.clone(),
            (None, _) => self.detail.clone(),
        }
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed at {}: {}",
            self.operation.describe(),
            self.provider.display_name(),
            self.class.explain()
        )?;
        if let Some(status) = self.status {
            write!(f, " (HTTP {status})")?;
        }
        let words = self.provider_words();
        if !words.is_empty() {
            write!(f, ": {words}")?;
        }
        if let Some(after) = self.retry_after {
            write!(f, "; retry after {} s", after.as_secs())?;
        }
        if self.recovered.is_some() {
            f.write_str("; the reply carried a new refresh token, which must be stored")?;
        }
        Ok(())
    }
}

/// Maps a provider's error answer to a class, for rules a definition adds before the RFC 6749 defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRule {
    /// HTTP status to match, if any.
    #[serde(default)]
    pub status: Option<u16>,
    /// The `error` field to match (case-insensitive), if any.
    #[serde(default)]
    pub error: Option<String>,
    /// Text the description must contain (case-insensitive), if any.
    #[serde(default)]
    pub description_contains: Option<String>,
    pub class: ErrorClass,
}

impl ErrorRule {
    fn matches(&self, status: u16, error: Option<&str>, description: &str) -> bool {
        self.status.is_none_or(|s| s == status)
            && self
                .error
                .as_deref()
                .is_none_or(|e| error.is_some_and(|got| got.eq_ignore_ascii_case(e)))
            && self
                .description_contains
                .as_deref()
                .is_none_or(|needle| description.to_lowercase().contains(&needle.to_lowercase()))
    }
}

/// The class of an error answer: the definition's rules first, then RFC 6749 and HTTP semantics.
pub fn classify(
    rules: &[ErrorRule],
    status: u16,
    error: Option<&str>,
    description: &str,
) -> ErrorClass {
    if let Some(rule) = rules.iter().find(|r| r.matches(status, error, description)) {
        return rule.class;
    }
    if status == 429 {
        return ErrorClass::RateLimited;
    }
    if status >= 500 {
        return ErrorClass::ProviderUnavailable;
    }
    match error.map(str::to_ascii_lowercase).as_deref() {
        Some("invalid_grant" | "access_denied") => ErrorClass::GrantRevoked,
        Some(
            "invalid_client" | "unauthorized_client" | "unsupported_grant_type" | "invalid_scope",
        ) => ErrorClass::ClientMisconfigured,
        Some("temporarily_unavailable" | "server_error") => ErrorClass::ProviderUnavailable,
        Some("slow_down") => ErrorClass::RateLimited,
        // Anything else is not recognised, a bare 401 included: Exact's refusal of a refresh within
        // 570 s is undocumented and may look like one. Only a recognised revocation, expiry, reuse or
        // client error may end a connection; an unknown answer is retried later, bounded.
        _ => ErrorClass::Unexpected,
    }
}

/// Blanks out the secrets a request carried wherever they appear in text from the provider (an echoing
/// error page must not carry them into a log).
#[derive(Default)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn add(&mut self, secret: &str) {
        // Short values would blank out ordinary words; real secrets are long.
        if secret.len() >= 6 {
            self.secrets.push(secret.to_string());
        }
    }

    pub fn clean(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "[redacted]");
            }
        }
        // Text cut short (see `tidy`) may end with the start of a secret.
        let (mut body, ellipsis) = match out.strip_suffix('…') {
            Some(body) => (body.to_string(), "…"),
            None => (out.clone(), ""),
        };
        for secret in &self.secrets {
            let cut = (4..secret.len())
                .rev()
                .filter(|n| secret.is_char_boundary(*n))
                .find(|n| body.ends_with(&secret[..*n]));
            if let Some(n) = cut {
                body.truncate(body.len() - n);
                body.push_str("[redacted]");
            }
        }
        format!("{body}{ellipsis}")
    }
}

/// Text from a provider, made fit for a log line: control characters folded, length bounded.
pub(crate) fn tidy(text: &str, max_chars: usize) -> String {
    let folded: String = text
        .chars()
        .filter(|c| !crate::domain::is_bidi_control(*c))
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let collapsed = folded.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() > max_chars {
        let cut: String = collapsed.chars().take(max_chars).collect();
        format!("{cut}…")
    } else {
        collapsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_come_before_the_rfc_defaults() {
        let rules = vec![ErrorRule {
            status: None,
            error: Some("unauthorized_client".into()),
            description_contains: Some("old refresh token".into()),
            class: ErrorClass::RefreshTokenReused,
        }];
        assert_eq!(
            classify(
                &rules,
                401,
                Some("unauthorized_client"),
                "Old refresh token used."
            ),
            ErrorClass::RefreshTokenReused
        );
        assert_eq!(
            classify(&rules, 401, Some("unauthorized_client"), ""),
            ErrorClass::ClientMisconfigured
        );
        assert_eq!(
            classify(&[], 400, Some("INVALID_GRANT"), ""),
            ErrorClass::GrantRevoked
        );
        assert_eq!(
            classify(&[], 503, None, ""),
            ErrorClass::ProviderUnavailable
        );
        assert_eq!(
            classify(&[], 429, Some("invalid_grant"), ""),
            ErrorClass::RateLimited
        );
        assert_eq!(
            classify(&[], 400, Some("invalid_request"), ""),
            ErrorClass::Unexpected
        );
    }

    #[test]
    fn an_unrecognised_refusal_is_unknown_not_a_misconfigured_client() {
        // A bare 401 (no `error` field), as Exact may answer a refresh within 570 s.
        assert_eq!(
            classify(&[], 401, None, "Access denied."),
            ErrorClass::Unexpected
        );
        assert_eq!(ErrorClass::Unexpected.reconnect_kind(), None);
        assert_eq!(
            classify(&[], 401, Some("invalid_client"), ""),
            ErrorClass::ClientMisconfigured
        );
    }

    #[test]
    fn the_redactor_blanks_every_secret() {
        let mut r = Redactor::default();
        r.add("refresh-secret-123");
        r.add("abc");
        assert_eq!(
            r.clean("got refresh-secret-123 and abc"),
            "got [redacted] and abc"
        );
        assert_eq!(
            r.clean(&tidy("cut off at refresh-secret-123", 20)),
            "cut off at [redacted]…"
        );
    }

    #[test]
    fn tidy_bounds_and_folds() {
        assert_eq!(tidy("a\n\tb   c", 10), "a b c");
        assert_eq!(tidy("abcdefghijkl", 5), "abcde…");
    }
}
