//! The OAuth 2.0 client every provider shares: authorization URL, code exchange, refresh.
//!
//! The `oauth2` crate builds the authorization URL and the PKCE challenge. The token POST is done here
//! with reqwest, because the crate's token response types refuse what providers really send and what the
//! broker must not lose: Exact's `expires_in` is a JSON string, and an error answer can carry a new
//! refresh token (the crate's error type drops the body's tokens), and the error classes need the raw
//! status, headers and body (Exact's 401 "Old refresh token used.", `Retry-After`).

use super::catalogue::{ClientAuth, ResolvedProvider, RANDOM_PARAM};
use super::error::{ErrorClass, Operation, ProviderError, RecoveredTokens, Redactor};
use super::http::ProviderHttp;
use super::id_token::{check_id_token, Expectations, IdTokenClaims, Jwks};
use super::metadata::MetadataCache;
use super::token_response::ParsedTokens;
use crate::clock::Clock;
use crate::domain::{OAuthApp, ProviderKind, RedirectUri, TokenSet};
use crate::secret::{
    random_urlsafe, AccessToken, AuthorizationCode, ClientSecret, OneTimeSecret, PkceVerifier,
    RefreshToken,
};
use chrono::{DateTime, Duration, Utc};
use std::fmt;
use std::sync::Arc;
use url::Url;

/// An app's credentials at its provider.
#[derive(Debug, Clone)]
pub struct AppRegistration {
    pub client_id: String,
    pub client_secret: ClientSecret,
    pub redirect_uri: RedirectUri,
    /// Empty: the definition's default scopes.
    pub scopes: Vec<String>,
}

impl AppRegistration {
    pub fn from_app(app: &OAuthApp, client_secret: ClientSecret) -> Self {
        Self {
            client_id: app.client_id.clone(),
            client_secret,
            redirect_uri: app.redirect_uri.clone(),
            scopes: app.scopes.clone(),
        }
    }
}

/// Where to send the browser, and what the callback needs to finish. Keep `pkce_verifier` and `nonce`
/// server-side with the state.
pub struct AuthorizationRequest {
    pub url: Url,
    pub pkce_verifier: Option<PkceVerifier>,
    pub nonce: Option<String>,
}

impl fmt::Debug for AuthorizationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The query holds the state: print the endpoint only.
        let mut endpoint = self.url.clone();
        endpoint.set_query(None);
        f.debug_struct("AuthorizationRequest")
            .field("url", &format_args!("{endpoint}?[redacted]"))
            .field("pkce_verifier", &self.pkce_verifier)
            .field("nonce", &self.nonce.as_ref().map(|_| "[set]"))
            .finish()
    }
}

/// The result of a code exchange.
#[derive(Debug, Clone)]
pub struct Authorized {
    pub tokens: TokenSet,
    /// Claims of the id_token, when one came.
    pub id_token: Option<IdTokenClaims>,
}

/// One refresh-token grant's answer, before it is merged with the stored set.
#[derive(Debug, Clone)]
pub struct Refreshed {
    pub access_token: AccessToken,
    /// From `expires_in`, or the definition's default lifetime.
    pub expires_in: Duration,
    /// `None` when the answer carried none: the old one stays.
    pub refresh_token: Option<RefreshToken>,
    /// When the provider tells (`refresh_expires_in`).
    pub refresh_expires_in: Option<Duration>,
    pub scope: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// Endpoints and token-endpoint settings in force, after the issuer's discovery document if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveEndpoints {
    pub authorize: Url,
    pub token: Url,
    pub userinfo: Option<Url>,
    pub client_auth: ClientAuth,
    pub pkce: bool,
    /// The issuer an id_token must name: the discovery document's, or the catalogue's.
    pub issuer: Option<String>,
    /// The provider's signing keys (discovery's `jwks_uri`): id_token signatures are checked against them.
    pub jwks: Option<Url>,
    /// RFC 7009 revocation (the catalogue's, or discovery's `revocation_endpoint`).
    pub revocation: Option<Url>,
}

/// One app's OAuth client. Cheap to build; build one per app and call.
pub struct OAuthClient {
    pub(super) provider: Arc<ResolvedProvider>,
    pub(super) app: AppRegistration,
    pub(super) http: ProviderHttp,
    pub(super) clock: Arc<dyn Clock>,
    effective: tokio::sync::OnceCell<Arc<EffectiveEndpoints>>,
    /// Shared across clients made by one [`Providers`], so a discovery document is read once per process.
    pub(super) metadata_cache: Option<MetadataCache>,
}

impl fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthClient")
            .field("provider", &self.provider.definition.id)
            .field("app", &self.app)
            .finish()
    }
}

impl OAuthClient {
    pub fn new(
        provider: ResolvedProvider,
        app: AppRegistration,
        http: ProviderHttp,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            provider: Arc::new(provider),
            app,
            http,
            clock,
            effective: tokio::sync::OnceCell::new(),
            metadata_cache: None,
        }
    }

    pub fn provider(&self) -> &ResolvedProvider {
        &self.provider
    }

    pub fn kind(&self) -> ProviderKind {
        self.provider.kind()
    }

    pub(super) fn error(
        &self,
        class: ErrorClass,
        operation: Operation,
        detail: impl Into<String>,
    ) -> ProviderError {
        ProviderError::new(class, self.kind(), operation, detail)
    }

    /// The endpoints in force; reads the issuer's discovery document once when the definition needs it.
    pub async fn endpoints(&self) -> Result<Arc<EffectiveEndpoints>, ProviderError> {
        self.effective
            .get_or_try_init(|| self.cached_endpoints())
            .await
            .cloned()
    }

    /// Builds the authorization URL. `state` is the caller's one-time secret (see
    /// `domain::new_one_time_secret`); `extra` adds parameters such as Exact's `force_login`.
    pub async fn authorization_request(
        &self,
        state: &OneTimeSecret,
        extra: &[(&str, &str)],
    ) -> Result<AuthorizationRequest, ProviderError> {
        let endpoints = self.endpoints().await?;
        let redirect = oauth2::RedirectUrl::new(self.app.redirect_uri.as_str().to_string())
            .map_err(|e| {
                self.error(
                    ErrorClass::ClientMisconfigured,
                    Operation::CodeExchange,
                    format!("bad redirect URI: {e}"),
                )
            })?;
        let client =
            oauth2::basic::BasicClient::new(oauth2::ClientId::new(self.app.client_id.clone()))
                .set_auth_uri(oauth2::AuthUrl::from_url(endpoints.authorize.clone()))
                .set_redirect_uri(redirect);
        let state_value = state.expose().to_string();
        let mut request = client.authorize_url(move || oauth2::CsrfToken::new(state_value));
        request = request.add_scopes(self.scopes().into_iter().map(oauth2::Scope::new));
        let mut pkce_verifier = None;
        if endpoints.pkce {
            // 48 random bytes: a 64-character verifier, inside RFC 7636's 43..=128.
            let verifier = oauth2::PkceCodeVerifier::new(random_urlsafe(48));
            request = request.set_pkce_challenge(
                oauth2::PkceCodeChallenge::from_code_verifier_sha256(&verifier),
            );
            pkce_verifier = Some(PkceVerifier::new(verifier.secret().clone()));
        }
        // The nonce binds the id_token to this request, so it is checked only when an id_token is asked
        // for (scope `openid`). A provider that wants one on every request names it in its
        // `authorize_params` (Twinfield); it is sent then, whatever the scopes.
        let wants_id_token = self.wants_id_token();
        let mut nonce = wants_id_token.then(|| random_urlsafe(24));
        for (name, value) in &self.provider.definition.authorize_params {
            let value = match (name.as_str(), value.as_str()) {
                ("nonce", RANDOM_PARAM) => nonce.get_or_insert_with(|| random_urlsafe(24)).clone(),
                (_, RANDOM_PARAM) => random_urlsafe(24),
                ("nonce", fixed) => nonce.insert(fixed.to_string()).clone(),
                (_, fixed) => fixed.to_string(),
            };
            if name != "nonce" {
                request = request.add_extra_param(name.clone(), value);
            }
        }
        if let Some(nonce) = &nonce {
            request = request.add_extra_param("nonce", nonce.clone());
        }
        for (name, value) in extra {
            request = request.add_extra_param(name.to_string(), value.to_string());
        }
        let (url, _) = request.url();
        Ok(AuthorizationRequest {
            url,
            pkce_verifier,
            nonce: nonce.filter(|_| wants_id_token),
        })
    }

    /// Whether the authorization asks for an id_token (OpenID Connect: the `openid` scope).
    pub fn wants_id_token(&self) -> bool {
        self.scopes().iter().any(|s| s == "openid")
    }

    fn scopes(&self) -> Vec<String> {
        if self.app.scopes.is_empty() {
            self.provider.definition.scopes.clone()
        } else {
            self.app.scopes.clone()
        }
    }

    /// Exchanges the callback's code. An id_token in the answer is checked (see [`super::id_token`]);
    /// `expected_nonce` is the nonce sent with the authorization request.
    pub async fn exchange_code(
        &self,
        code: &AuthorizationCode,
        pkce_verifier: Option<&PkceVerifier>,
        expected_nonce: Option<&str>,
    ) -> Result<Authorized, ProviderError> {
        let mut form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.expose().to_string()),
            ("redirect_uri", self.app.redirect_uri.as_str().to_string()),
        ];
        let mut redactor = Redactor::default();
        redactor.add(code.expose());
        if let Some(verifier) = pkce_verifier {
            form.push(("code_verifier", verifier.expose().to_string()));
            redactor.add(verifier.expose());
        }
        let now = self.clock.now();
        let op = Operation::CodeExchange;
        let parsed = self
            .token_request(op, form, redactor, now)
            .await
            .map_err(|f| f.into_error(now, self))?;
        // Tokens from an exchange that fails its checks are not kept: nothing was spent to get them,
        // and they may have been injected.
        let id_token = match parsed.id_token.as_deref() {
            Some(raw) => Some(self.checked_id_token(raw, expected_nonce, now).await?),
            None => None,
        };
        if !parsed.is_bearer() {
            return Err(self.error(
                ErrorClass::Unexpected,
                op,
                "the provider issued a token that is not a bearer token",
            ));
        }
        let tokens = self.token_set(self.refreshed(parsed, now), None, None);
        Ok(Authorized { tokens, id_token })
    }

    /// Refreshes a token set. `authorized_at` is when the grant was first authorized, if known (it bounds
    /// absolute and capped sliding refresh-token lifetimes).
    ///
    /// Before calling the provider it refuses, as `TooEarly`, a refresh the provider's minimum interval
    /// forbids (Exact counts such refusals towards blocking the app). On success the old refresh token is
    /// kept when the answer carries none. An `invalid_grant` after the refresh token's known expiry is
    /// reported as `RefreshTokenExpired`.
    pub async fn refresh(
        &self,
        current: &TokenSet,
        authorized_at: Option<DateTime<Utc>>,
    ) -> Result<TokenSet, ProviderError> {
        let Some(refresh_token) = &current.refresh_token else {
            return Err(self.error(
                ErrorClass::GrantRevoked,
                Operation::Refresh,
                "the connection holds no refresh token (the provider issued none; is offline access granted?)",
            ));
        };
        let now = self.clock.now();
        let policy = &self.provider.definition.refresh;
        let earliest = policy.earliest_refresh(current.received_at);
        if now < earliest {
            let detail = format!(
                "{} allows a refresh only {} s after the previous token was received",
                self.kind().display_name(),
                policy.min_interval_secs.unwrap_or(0)
            );
            let mut e = self.error(ErrorClass::TooEarly, Operation::Refresh, detail);
            e.retry_after = Some(to_std(earliest - now));
            return Err(e);
        }
        match self.refresh_grant(refresh_token).await {
            Ok(refreshed) => Ok(self.token_set(refreshed, Some(current), authorized_at)),
            Err(e) => Err(self.explain_refresh_failure(e, current, authorized_at)),
        }
    }

    /// One refresh-token grant, as the provider answered it; no checks against a stored set. Most callers
    /// want [`OAuthClient::refresh`].
    pub async fn refresh_grant(
        &self,
        refresh_token: &RefreshToken,
    ) -> Result<Refreshed, ProviderError> {
        let now = self.clock.now();
        let form = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", refresh_token.expose().to_string()),
        ];
        let mut redactor = Redactor::default();
        redactor.add(refresh_token.expose());
        let parsed = self
            .token_request(Operation::Refresh, form, redactor, now)
            .await
            .map_err(|f| f.into_error(now, self))?;
        if !parsed.is_bearer() {
            let mut e = self.error(
                ErrorClass::Unexpected,
                Operation::Refresh,
                "the provider issued a token that is not a bearer token",
            );
            // The old refresh token may be spent: a new one must not be lost with the refusal.
            e.recovered = parsed.refresh_token.map(|r| {
                Box::new(RecoveredTokens {
                    refresh_token: r,
                    tokens: None,
                })
            });
            return Err(e);
        }
        Ok(self.refreshed(parsed, now))
    }

    fn explain_refresh_failure(
        &self,
        mut e: ProviderError,
        current: &TokenSet,
        authorized_at: Option<DateTime<Utc>>,
    ) -> ProviderError {
        let now = self.clock.now();
        let policy = &self.provider.definition.refresh;
        // An invalid_grant past the refresh token's known expiry is its expiry, whatever the words.
        if e.class == ErrorClass::GrantRevoked
            && current.refresh_expires_at.is_some_and(|at| at <= now)
        {
            e.class = ErrorClass::RefreshTokenExpired;
        }
        if e.class == ErrorClass::TooEarly && e.retry_after.is_none() {
            let wait = policy.earliest_refresh(current.received_at) - now;
            // Our clock says it is time; the provider's disagrees by a little.
            e.retry_after = Some(if wait > Duration::zero() {
                to_std(wait)
            } else {
                std::time::Duration::from_secs(60)
            });
        }
        if let Some(tokens) = e.recovered.as_mut().and_then(|r| r.tokens.as_mut()) {
            tokens.refresh_expires_at = policy.refresh_expiry(
                tokens.received_at,
                authorized_at,
                current.refresh_expires_at,
            );
            tokens.scope = tokens.scope.take().or_else(|| current.scope.clone());
        }
        e
    }

    fn refreshed(&self, parsed: ParsedTokens, now: DateTime<Utc>) -> Refreshed {
        let default_secs = self.provider.definition.lifetimes.access_token_secs as i64;
        Refreshed {
            access_token: parsed.access_token,
            expires_in: Duration::seconds(
                parsed.expires_in.filter(|s| *s > 0).unwrap_or(default_secs),
            ),
            refresh_token: parsed.refresh_token,
            refresh_expires_in: parsed
                .refresh_expires_in
                .filter(|s| *s > 0)
                .map(Duration::seconds),
            scope: parsed.scope,
            received_at: now,
        }
    }

    /// The set to store: the answer merged with what it replaces.
    fn token_set(
        &self,
        r: Refreshed,
        current: Option<&TokenSet>,
        authorized_at: Option<DateTime<Utc>>,
    ) -> TokenSet {
        let policy = &self.provider.definition.refresh;
        let now = r.received_at;
        let refresh_token = r
            .refresh_token
            .or_else(|| current.and_then(|c| c.refresh_token.clone()));
        let refresh_expires_at = match (r.refresh_expires_in, &refresh_token) {
            (_, None) => None,
            (Some(lifetime), Some(_)) => Some(now + lifetime),
            (None, Some(_)) => policy.refresh_expiry(
                now,
                authorized_at,
                current.and_then(|c| c.refresh_expires_at),
            ),
        };
        TokenSet {
            access_token: r.access_token,
            access_expires_at: now + r.expires_in,
            refresh_token,
            refresh_expires_at,
            scope: r.scope.or_else(|| current.and_then(|c| c.scope.clone())),
            received_at: now,
        }
    }
}

impl OAuthClient {
    /// Checks an id_token from the token endpoint against the issuer, this app, the nonce and, when
    /// the provider publishes them, its signing keys (read fresh, so a rotated key is found).
    async fn checked_id_token(
        &self,
        raw: &str,
        nonce: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<IdTokenClaims, ProviderError> {
        let op = Operation::CodeExchange;
        let endpoints = self.endpoints().await?;
        let refuse = |why: String| {
            self.error(
                ErrorClass::Unexpected,
                op,
                format!("the id_token failed its checks: {why}"),
            )
        };
        let Some(issuer) = endpoints.issuer.as_deref() else {
            return Err(refuse(
                "the catalogue entry names no issuer to check it against (add \"issuer\")".into(),
            ));
        };
        let keys = match &endpoints.jwks {
            Some(url) => {
                let doc = self
                    .get_json(Operation::Metadata, url.clone(), None, &Redactor::default())
                    .await?;
                Some(Jwks::parse(&doc).map_err(refuse)?)
            }
            None => None,
        };
        let expect = Expectations {
            issuer,
            client_id: &self.app.client_id,
            nonce,
            now,
            keys: keys.as_ref(),
        };
        check_id_token(raw, &expect).map_err(refuse)
    }
}

fn to_std(d: Duration) -> std::time::Duration {
    d.to_std().unwrap_or_default()
}
