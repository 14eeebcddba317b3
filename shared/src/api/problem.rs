//! The API's errors as RFC 9457 problems. Every `type` is stable (integrations may match on it) and
//! every `detail` says what to do next. No detail ever carries a token, secret or API key.

use serde::Serialize;

/// The base of every problem `type` URI: `https://broker.example/problems/<code>`.
pub const PROBLEM_BASE: &str = "https://broker.example/problems/";

/// The problem types this API answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// 401: no API key, a malformed one, an unknown one or a revoked one.
    Unauthorized,
    /// 403: the key may not do this (session-only key, a key limited to other connections, or, for
    /// app registrations, a key without the manage_apps scope).
    Forbidden,
    /// 404: no such connection or app registration for this tenant (another tenant's do not exist).
    NotFound,
    /// 405: the path exists, the method does not.
    MethodNotAllowed,
    /// 400: the body is not valid JSON for this request, or has unknown fields.
    InvalidRequest,
    /// 413: the body is larger than 64 KiB.
    PayloadTooLarge,
    /// 415: a body that is not declared `application/json`.
    UnsupportedMediaType,
    /// 422: the request is well-formed but a value is not acceptable (recipients, app id, ...).
    ValidationFailed,
    /// 422: the provider refused the registered credentials (expired code, rejected token pair).
    CredentialsRejected,
    /// 409: the connection has no credentials yet: open its connect link or register credentials.
    NotConnected,
    /// 409: only a person can fix the connection: open the reconnect link.
    ReconnectRequired,
    /// 409: the provider blocked, disabled or deleted the organisation or user.
    ConnectionDisabled,
    /// 409: the connection was disconnected; create a new one.
    ConnectionDisconnected,
    /// 409: the request does not apply to this connection's provider or credential kind.
    NotApplicable,
    /// 409: Twinfield refused the logon for a reason a person must resolve in Twinfield.
    TwinfieldLogonRefused,
    /// 409: the app registration (or its client secret) the connection uses is gone: an operator must
    /// register it again.
    AppNotRegistered,
    /// 409: an app registration by that id exists already: change it with PATCH.
    AppExists,
    /// 409: connections that are not disconnected use the app: disconnect them before deleting it.
    AppInUse,
    /// 429: the provider is rate limiting.
    RateLimited,
    /// 503: the provider, or a refresh under way, keeps us from answering now; retry shortly.
    TemporarilyUnavailable,
    /// 502: the provider answered something the broker cannot use.
    ProviderError,
    /// 500: the broker failed (its store or vault); retry, and report it if it persists.
    Internal,
}

impl ProblemKind {
    pub const ALL: [ProblemKind; 22] = [
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::InvalidRequest,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::ValidationFailed,
        Self::CredentialsRejected,
        Self::NotConnected,
        Self::ReconnectRequired,
        Self::ConnectionDisabled,
        Self::ConnectionDisconnected,
        Self::NotApplicable,
        Self::TwinfieldLogonRefused,
        Self::AppNotRegistered,
        Self::AppExists,
        Self::AppInUse,
        Self::RateLimited,
        Self::TemporarilyUnavailable,
        Self::ProviderError,
        Self::Internal,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::InvalidRequest => "invalid-request",
            Self::PayloadTooLarge => "payload-too-large",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::ValidationFailed => "validation-failed",
            Self::CredentialsRejected => "credentials-rejected",
            Self::NotConnected => "not-connected",
            Self::ReconnectRequired => "reconnect-required",
            Self::ConnectionDisabled => "connection-disabled",
            Self::ConnectionDisconnected => "connection-disconnected",
            Self::NotApplicable => "not-applicable",
            Self::TwinfieldLogonRefused => "twinfield-logon-refused",
            Self::AppNotRegistered => "app-not-registered",
            Self::AppExists => "app-exists",
            Self::AppInUse => "app-in-use",
            Self::RateLimited => "rate-limited",
            Self::TemporarilyUnavailable => "temporarily-unavailable",
            Self::ProviderError => "provider-error",
            Self::Internal => "internal",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::Unauthorized => "Missing or invalid API key",
            Self::Forbidden => "The API key may not do this",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::InvalidRequest => "Invalid request",
            Self::PayloadTooLarge => "Request body too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::ValidationFailed => "Validation failed",
            Self::CredentialsRejected => "The provider rejected the credentials",
            Self::NotConnected => "The connection is not connected yet",
            Self::ReconnectRequired => "The connection must be reconnected",
            Self::ConnectionDisabled => "The connection is disabled at the provider",
            Self::ConnectionDisconnected => "The connection was disconnected",
            Self::NotApplicable => "Not applicable to this connection",
            Self::TwinfieldLogonRefused => "Twinfield refused the logon",
            Self::AppNotRegistered => "The connection's app registration is missing",
            Self::AppExists => "The app registration exists already",
            Self::AppInUse => "Connections still use the app registration",
            Self::RateLimited => "The provider is rate limiting",
            Self::TemporarilyUnavailable => "Temporarily unavailable",
            Self::ProviderError => "The provider gave an unusable answer",
            Self::Internal => "Internal error",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::InvalidRequest => 400,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::ValidationFailed | Self::CredentialsRejected => 422,
            Self::NotConnected
            | Self::ReconnectRequired
            | Self::ConnectionDisabled
            | Self::ConnectionDisconnected
            | Self::NotApplicable
            | Self::TwinfieldLogonRefused
            | Self::AppNotRegistered
            | Self::AppExists
            | Self::AppInUse => 409,
            Self::RateLimited => 429,
            Self::TemporarilyUnavailable => 503,
            Self::ProviderError => 502,
            Self::Internal => 500,
        }
    }

    pub fn type_uri(self) -> String {
        format!("{PROBLEM_BASE}{}", self.code())
    }
}

/// An API failure: its problem type and a detail that says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", kind.code())]
pub struct ApiError {
    pub kind: ProblemKind,
    pub detail: String,
    /// Seconds to wait before retrying, when known (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn unauthorized() -> Self {
        Self::new(
            ProblemKind::Unauthorized,
            "send 'Authorization: Bearer <API key>' with a valid, unrevoked key of your tenant",
        )
    }

    pub fn connection_not_found() -> Self {
        Self::new(
            ProblemKind::NotFound,
            "no such connection: check the connection id (it starts with 'con_') and that it belongs to your tenant",
        )
    }

    /// A failure of the broker's own. A store or vault that is unavailable (throttled, failing,
    /// timing out: nothing was written, or a write is safe to repeat) is a 503 with `Retry-After`,
    /// not a 500: the request is fine and will work shortly.
    pub fn internal<E: std::fmt::Display + 'static>(what: &str, error: E) -> Self {
        // The store's and vault's errors carry no secret (ids and AWS error codes at most).
        if is_unavailable(&error) {
            tracing::warn!(error = %error, "{what}: storage unavailable");
            return Self::new(
                ProblemKind::TemporarilyUnavailable,
                format!("{what}: the broker's storage is busy or unavailable right now; retry after the time in Retry-After"),
            )
            .retry_after(STORAGE_RETRY_AFTER_SECS);
        }
        tracing::error!(error = %error, "{what}");
        Self::new(
            ProblemKind::Internal,
            format!("{what}; retry in a moment, and report it if it persists"),
        )
        .retry_after(5)
    }

    /// A refresh the engine could not carry out: a missing app registration is the operator's to fix
    /// (409, not worth retrying); storage that may recover is a 503; anything else a 500.
    pub fn engine(what: &str, error: crate::refresh::EngineError) -> Self {
        match error {
            crate::refresh::EngineError::AppMissing(app) => Self::new(
                ProblemKind::AppNotRegistered,
                format!(
                    "{what}: the app registration {app} this connection uses is missing; ask the \
                     broker's operator to register it again (broker-admin app register), then retry"
                ),
            ),
            other => Self::internal(what, other),
        }
    }

    pub fn problem(&self) -> Problem {
        Problem {
            type_uri: self.kind.type_uri(),
            title: self.kind.title(),
            status: self.kind.status(),
            detail: self.detail.clone(),
        }
    }
}

/// How long a client waits when storage is unavailable: long enough for the SDK's own retries and a
/// throttled table to recover, short enough for an interactive caller.
pub const STORAGE_RETRY_AFTER_SECS: u64 = 5;

/// Whether `error` is a store or vault failure that may pass (`Unavailable`), whatever layer wraps it.
fn is_unavailable(error: &dyn std::any::Any) -> bool {
    use crate::credential_keeper::KeeperError;
    use crate::ports::{StoreError, VaultError};
    use crate::refresh::EngineError;
    if let Some(e) = error.downcast_ref::<StoreError>() {
        return matches!(e, StoreError::Unavailable(_));
    }
    if let Some(e) = error.downcast_ref::<VaultError>() {
        return matches!(e, VaultError::Unavailable(_));
    }
    if let Some(e) = error.downcast_ref::<EngineError>() {
        return matches!(
            e,
            EngineError::Store(StoreError::Unavailable(_))
                | EngineError::Vault(VaultError::Unavailable(_))
        );
    }
    if let Some(e) = error.downcast_ref::<KeeperError>() {
        return matches!(
            e,
            KeeperError::Store(StoreError::Unavailable(_))
                | KeeperError::Vault(VaultError::Unavailable(_))
        );
    }
    false
}

/// The RFC 9457 body (`application/problem+json`).
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_storage_is_a_503_with_retry_after_and_anything_else_a_500() {
        use crate::ports::{StoreError, VaultError};
        use crate::refresh::EngineError;
        let throttled =
            StoreError::Unavailable("DynamoDB GetItem failed: ThrottlingException".into());
        for error in [
            ApiError::internal("the connection could not be read", throttled.clone()),
            ApiError::internal("x", VaultError::Unavailable("timeout".into())),
            ApiError::internal("x", EngineError::Store(throttled)),
        ] {
            assert_eq!(error.kind.status(), 503, "{error}");
            assert_eq!(error.retry_after, Some(STORAGE_RETRY_AFTER_SECS));
        }
        let corrupt = ApiError::internal("x", StoreError::Corrupt("bad".into()));
        assert_eq!(corrupt.kind.status(), 500);
        assert_eq!(ApiError::internal("x", "plain").kind.status(), 500);
    }

    #[test]
    fn a_missing_app_registration_is_the_operators_to_fix_not_a_retry() {
        use crate::ports::StoreError;
        use crate::refresh::EngineError;
        let missing = ApiError::engine("x", EngineError::AppMissing("exact-nl".into()));
        assert_eq!(missing.kind, ProblemKind::AppNotRegistered);
        assert_eq!(missing.kind.status(), 409);
        assert_eq!(missing.retry_after, None);
        assert!(missing.detail.contains("exact-nl"), "{missing}");
        assert!(
            missing.detail.contains("broker-admin app register"),
            "{missing}"
        );
        let busy = ApiError::engine(
            "x",
            EngineError::Store(StoreError::Unavailable("throttled".into())),
        );
        assert_eq!(busy.kind.status(), 503);
        let broken = ApiError::engine("x", EngineError::Store(StoreError::Corrupt("bad".into())));
        assert_eq!(broken.kind.status(), 500);
    }

    #[test]
    fn problem_types_are_unique_and_say_what_to_do() {
        let mut codes: Vec<&str> = ProblemKind::ALL.iter().map(|k| k.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), ProblemKind::ALL.len());
        let e = ApiError::unauthorized();
        let problem = serde_json::to_value(e.problem()).unwrap();
        assert_eq!(problem["type"], format!("{PROBLEM_BASE}unauthorized"));
        assert_eq!(problem["status"], 401);
        assert!(problem["detail"].as_str().unwrap().contains("Bearer"));
    }
}
