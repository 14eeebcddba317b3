//! Registering credentials obtained outside the broker (seed 002): an authorization code, an OAuth 2.0
//! token pair, or Twinfield's OAuth 1.0-era access token and secret.
//!
//! A token pair is checked without spending the refresh token needlessly: while the access token is
//! valid (the caller says until when) the provider's discovery step is called with it (Exact:
//! `/current/Me`); otherwise, or when the provider refuses it, the refresh token is spent exactly once
//! and the new pair is kept — even if the discovery after it fails, since the old pair is gone.

use super::problem::{ApiError, ProblemKind};
use super::service::{disconnected, Caller, IntegrationApi, MIN_VALIDITY};
use super::types::{ConnectionView, RegisterCredentials};
use crate::credential_keeper::{CredentialKeeper, KeeperError};
use crate::domain::{
    bind_authorization, BindingRefusal, Connection, ConnectionStatus, Credentials,
    LegacyTwinfieldCredentials, NewGrant, OAuthApp, ProviderContext, ProviderKind, RedirectUri,
    TokenSet,
};
use crate::ports::{Fence, StoreError};
use crate::providers::{
    AppRegistration, Authorized, Discovered, DiscoveryStep, ErrorClass, LegacyConsumer,
    LogonVerdict, OAuthClient, ProviderError,
};
use crate::refresh::TokenGrant;
use crate::secret::{
    AccessToken, AuthorizationCode, ClientSecret, LegacyAccessSecret, LegacyAccessToken,
    PkceVerifier, RefreshToken,
};
use chrono::Duration;

enum Kind {
    Code {
        code: AuthorizationCode,
        redirect_uri: Option<String>,
        verifier: Option<PkceVerifier>,
    },
    Pair {
        access: AccessToken,
        refresh: RefreshToken,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    Legacy(LegacyTwinfieldCredentials),
}

fn classify(request: RegisterCredentials) -> Result<Kind, ApiError> {
    let filled = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let r = request;
    let code = filled(r.authorization_code);
    let access = filled(r.access_token);
    let refresh = filled(r.refresh_token);
    let legacy_token = filled(r.legacy_access_token);
    let legacy_secret = filled(r.legacy_access_secret);
    let one_of = "give exactly one of: authorization_code (with redirect_uri if it is not the app's), access_token with refresh_token, or legacy_access_token with legacy_access_secret";
    let invalid = |detail: &str| ApiError::new(ProblemKind::InvalidRequest, detail.to_string());
    match (code, access, refresh, legacy_token, legacy_secret) {
        (Some(code), None, None, None, None) => Ok(Kind::Code {
            code: AuthorizationCode::new(code),
            redirect_uri: filled(r.redirect_uri),
            verifier: filled(r.code_verifier).map(PkceVerifier::new),
        }),
        (None, Some(access), Some(refresh), None, None)
            if r.redirect_uri.is_none() && r.code_verifier.is_none() =>
        {
            Ok(Kind::Pair {
                access: AccessToken::new(access),
                refresh: RefreshToken::new(refresh),
                expires_at: r.access_token_expires_at,
            })
        }
        (None, None, None, Some(token), Some(secret))
            if r.redirect_uri.is_none() && r.code_verifier.is_none() =>
        {
            Ok(Kind::Legacy(LegacyTwinfieldCredentials {
                access_token: LegacyAccessToken::new(token),
                access_secret: LegacyAccessSecret::new(secret),
            }))
        }
        (None, Some(_), None, None, None) => Err(invalid(
            "an access_token alone cannot be kept alive: send its refresh_token with it",
        )),
        _ => Err(invalid(one_of)),
    }
}

fn rejected(e: &ProviderError, what: &str) -> ApiError {
    if e.class.is_transient() {
        let mut err = ApiError::new(
            if e.class == ErrorClass::RateLimited {
                ProblemKind::RateLimited
            } else {
                ProblemKind::TemporarilyUnavailable
            },
            format!("{e}: try again shortly"),
        );
        err.retry_after = Some(e.retry_after.map_or(30, |d| d.as_secs().max(1)));
        return err;
    }
    ApiError::new(ProblemKind::CredentialsRejected, format!("{what} ({e})"))
}

impl IntegrationApi {
    /// Registers pre-authenticated credentials: checks them with the provider, discovers the
    /// connection's context, stores them (vault first) and marks the connection connected.
    pub async fn register_credentials(
        &self,
        caller: &Caller,
        id: &str,
        request: RegisterCredentials,
    ) -> Result<ConnectionView, ApiError> {
        caller.require_full_access()?;
        let kind = classify(request)?;
        let connection = self.connection_for(caller, id).await?;
        if connection.status() == ConnectionStatus::Disconnected {
            return Err(disconnected());
        }
        let (app, secret) = self.app_of(&connection).await?;

        let (credentials, mut discovered) = match kind {
            Kind::Code {
                code,
                redirect_uri,
                verifier,
            } => {
                let client = self.client(&app, secret, redirect_uri.as_deref())?;
                let authorized = client
                    .exchange_code(&code, verifier.as_ref(), None)
                    .await
                    .map_err(|e| rejected(&e, "the provider refused the authorization code: codes expire within minutes (Exact Online: 3) and work once, so obtain a new one and register it at once"))?;
                let discovered = client
                    .discover_for(&authorized, &connection.known_divisions())
                    .await
                    .map_err(|e| {
                        rejected(
                            &e,
                            "the provider refused the lookup after the code exchange",
                        )
                    })?;
                (Credentials::OAuth2(authorized.tokens), Some(discovered))
            }
            Kind::Pair {
                access,
                refresh,
                expires_at,
            } => {
                let client = self.client(&app, secret, None)?;
                let (tokens, discovered) = self
                    .check_pair(
                        &app,
                        &client,
                        access,
                        refresh,
                        expires_at,
                        &connection.known_divisions(),
                    )
                    .await?;
                (Credentials::OAuth2(tokens), discovered)
            }
            Kind::Legacy(legacy) => {
                self.check_legacy(&app, secret, &legacy).await?;
                (Credentials::TwinfieldLegacy(legacy), None)
            }
        };
        if let Some(found) = &mut discovered {
            found.context = same_place_and_person(&connection, found)?;
        }
        let saved = self
            .store_credentials(caller, &app, connection, &credentials, discovered)
            .await?;
        tracing::info!(key_prefix = caller.prefix(), connection = %saved.id, "credentials registered");
        Ok(ConnectionView::from(&saved))
    }

    fn client(
        &self,
        app: &OAuthApp,
        secret: ClientSecret,
        redirect_uri: Option<&str>,
    ) -> Result<OAuthClient, ApiError> {
        let resolved = self
            .ctx
            .providers
            .catalogue()
            .resolve(&app.settings)
            .map_err(|e| ApiError::new(ProblemKind::ValidationFailed, e.to_string()))?;
        let mut registration = AppRegistration::from_app(app, secret);
        if let Some(uri) = redirect_uri {
            registration.redirect_uri = RedirectUri::parse(uri).map_err(|e| {
                ApiError::new(ProblemKind::ValidationFailed, format!("redirect_uri: {e}"))
            })?;
        }
        Ok(OAuthClient::new(
            resolved,
            registration,
            self.ctx.providers.http().clone(),
            self.ctx.clock.clone(),
        ))
    }

    /// Returns the token set to keep and, when it worked, the discovery. `None` discovery after a
    /// refresh means the new pair must be kept anyway (the old refresh token is spent).
    async fn check_pair(
        &self,
        app: &OAuthApp,
        client: &OAuthClient,
        access: AccessToken,
        refresh: RefreshToken,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
        division_hints: &[i64],
    ) -> Result<(TokenSet, Option<Discovered>), ApiError> {
        let rules = self.ctx.providers.rules(app);
        let lifetime =
            Duration::seconds(client.provider().definition.lifetimes.access_token_secs as i64);
        let now = self.ctx.clock.now();
        if let Some(expires_at) = expires_at.filter(|at| *at - MIN_VALIDITY > now) {
            // Received at most one lifetime before it expires: the estimate Exact's 570 s rule needs.
            let received_at = (expires_at - lifetime).min(now);
            let tokens = TokenSet {
                access_token: access,
                access_expires_at: expires_at.min(now + lifetime),
                refresh_token: Some(refresh.clone()),
                refresh_expires_at: rules.refresh_token_expiry(received_at, received_at),
                scope: None,
                received_at,
            };
            let authorized = Authorized {
                tokens,
                id_token: None,
            };
            // Twinfield's token validation and Exact's /current/Me refuse a bad token; Acumatica's and
            // generic discovery only prove it when userinfo answers with an identity.
            let proves_token = matches!(
                client.provider().definition.discovery,
                DiscoveryStep::TwinfieldAccessTokenValidation | DiscoveryStep::ExactCurrentMe
            );
            match client.discover_for(&authorized, division_hints).await {
                Ok(discovered) if proves_token || discovered.identity.is_some() => {
                    return Ok((authorized.tokens, Some(discovered)))
                }
                Ok(_) => {
                    tracing::info!(
                        "the registered access token could not be verified; refreshing once"
                    );
                }
                Err(e) if e.class.is_transient() => {
                    return Err(rejected(&e, "the provider is unavailable"))
                }
                Err(e) => {
                    tracing::info!(error = %e, "the registered access token was refused; refreshing once");
                }
            }
        }
        let refreshed = client.refresh_grant(&refresh).await.map_err(|e| {
            rejected(
                &e,
                "the provider refused the refresh token: obtain a new token pair (or authorization code) and register it",
            )
        })?;
        let received_at = refreshed.received_at;
        let refresh_expires_at = refreshed
            .refresh_expires_in
            .map(|d| received_at + d)
            .or_else(|| rules.refresh_token_expiry(received_at, received_at));
        let tokens = TokenSet {
            access_token: refreshed.access_token,
            access_expires_at: received_at + refreshed.expires_in,
            refresh_token: refreshed.refresh_token.or(Some(refresh)),
            refresh_expires_at,
            scope: refreshed.scope,
            received_at,
        };
        let authorized = Authorized {
            tokens,
            id_token: None,
        };
        let discovered = match client.discover_for(&authorized, division_hints).await {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!(error = %e, "discovery failed after registering a token pair; the new pair is kept");
                None
            }
        };
        Ok((authorized.tokens, discovered))
    }

    async fn check_legacy(
        &self,
        app: &OAuthApp,
        secret: ClientSecret,
        legacy: &LegacyTwinfieldCredentials,
    ) -> Result<(), ApiError> {
        if app.provider() != ProviderKind::Twinfield {
            return Err(ApiError::new(
                ProblemKind::NotApplicable,
                "legacy (OAuth 1.0) credentials exist only for Twinfield; this connection's app is for another provider",
            ));
        }
        let sessions = self.ctx.providers.twinfield_sessions().map_err(|e| {
            ApiError::internal("the Twinfield session client could not be built", e)
        })?;
        let consumer = LegacyConsumer {
            client_token: app.client_id.clone(),
            client_secret: secret,
        };
        let logon = sessions
            .oauth_logon(&consumer, legacy)
            .await
            .map_err(|e| super::twinfield::session_error_problem(&e))?;
        match logon.verdict() {
            LogonVerdict::Ok | LogonVerdict::PersonMustAct => Ok(()),
            LogonVerdict::RetryLater => Err(ApiError::new(
                ProblemKind::TemporarilyUnavailable,
                format!("{} Try again later.", logon.result.explain()),
            )
            .retry_after(60)),
            _ => Err(ApiError::new(
                ProblemKind::CredentialsRejected,
                format!(
                    "Twinfield answered {} to OAuthLogon: {}",
                    logon.result,
                    logon.result.explain()
                ),
            )),
        }
    }

    async fn store_credentials(
        &self,
        caller: &Caller,
        app: &OAuthApp,
        mut connection: Connection,
        credentials: &Credentials,
        discovered: Option<Discovered>,
    ) -> Result<Connection, ApiError> {
        let keeper = CredentialKeeper::new(
            self.ctx.backend.store.clone(),
            self.ctx.backend.vault.clone(),
        );
        let rules = self.ctx.providers.rules(app);
        for _ in 0..3 {
            let now = self.ctx.clock.now();
            let schedule = credentials.token_set().map(|tokens| {
                let next =
                    rules.next_scheduled_refresh(tokens.received_at, tokens.refresh_expires_at);
                (tokens.received_at, next)
            });
            if schedule.is_none() {
                // Credentials the broker does not refresh (Twinfield's legacy ones) expire unseen.
                connection.access_expires_at = None;
                connection.refresh_expires_at = None;
            }
            let grant = NewGrant {
                context: discovered.as_ref().map(|found| found.context.clone()),
                authorized_by: discovered.as_ref().and_then(|found| found.identity.clone()),
                schedule,
            };
            // Credentials registered here complete the connection: the links issued for it are spent.
            let transition = connection
                .authorized(grant, caller.actor(), now)
                .map_err(|_| disconnected())?;
            let target = CredentialKeeper::next_target(&connection);
            match keeper
                .commit(
                    connection.clone(),
                    target,
                    credentials,
                    Fence::Version,
                    &[transition],
                )
                .await
            {
                Ok(saved) => return Ok(saved),
                Err(KeeperError::Store(StoreError::Conflict)) => {
                    connection = self
                        .ctx
                        .backend
                        .store
                        .get_connection(&connection.id)
                        .await
                        .map_err(|e| ApiError::internal("the connection could not be read", e))?
                        .ok_or_else(ApiError::connection_not_found)?;
                    if connection.status() == ConnectionStatus::Disconnected {
                        return Err(disconnected());
                    }
                }
                Err(e) => return Err(ApiError::internal("the credentials could not be stored", e)),
            }
        }
        Err(ApiError::new(
            ProblemKind::TemporarilyUnavailable,
            "the connection kept changing while the credentials were stored: retry",
        )
        .retry_after(2))
    }
}

impl IntegrationApi {
    /// The connection's app registration and its client secret, both of which it needs to reach the
    /// provider.
    pub(super) async fn app_of(
        &self,
        connection: &Connection,
    ) -> Result<(OAuthApp, ClientSecret), ApiError> {
        let app = self
            .ctx
            .backend
            .store
            .get_app(&connection.tenant, &connection.app)
            .await
            .map_err(|e| ApiError::internal("the app registration could not be read", e))?
            .ok_or_else(|| app_missing(connection))?
            .for_connection(connection);
        let secret = self
            .ctx
            .backend
            .vault
            .get_client_secret(&connection.tenant, &connection.app)
            .await
            .map_err(|e| ApiError::internal("the app's client secret could not be read", e))?
            .ok_or_else(|| app_missing(connection))?;
        Ok((app, secret))
    }
}

fn app_missing(connection: &Connection) -> ApiError {
    ApiError::new(
        ProblemKind::ValidationFailed,
        format!(
            "the connection's app registration {} (or its client secret) is missing: register the app again",
            connection.app
        ),
    )
}

/// Credentials for another organisation (tenant) than the connection already names, for another
/// Exact user or without the Exact division it is bound to, or authorized by someone other than the
/// required person, are refused: the connection would silently start reading someone else's books.
/// Returns the context to store (for Exact Online, with its division bound).
fn same_place_and_person(
    connection: &Connection,
    found: &Discovered,
) -> Result<ProviderContext, ApiError> {
    let refuse = |detail: String| ApiError::new(ProblemKind::ValidationFailed, detail);
    let context = bind_authorization(connection, found.context.clone(), found.identity.as_ref())
        .map_err(|why| match why {
            BindingRefusal::OtherOrganisation { expected, actual } => refuse(format!(
                "these credentials reach {actual}, but this connection is for {expected}: register them on a new connection"
            )),
            BindingRefusal::OtherUser { expected, actual } => refuse(format!(
                "these credentials were issued to Exact Online user {actual}, but this connection is {expected}'s: obtain them as that user, or register them on a new connection"
            )),
            BindingRefusal::DivisionNotGranted { division, granted } => refuse(format!(
                "these credentials do not give access to Exact Online division {division}, which this connection works in (they give access to {granted:?}): authorize that division, or register them on a new connection"
            )),
            BindingRefusal::GrantsUnknown { current_division } => refuse(format!(
                "Exact Online did not say which divisions these credentials give access to (its current division {current_division} is not one of them): create the connection with the division to use (exact_division), or obtain the credentials with a granted division open in Exact Online"
            )),
        })?;
    if let (Some(required), Some(who)) = (&connection.required_identity, &found.identity) {
        if !required.same_person(who) {
            return Err(ApiError::new(
                ProblemKind::ValidationFailed,
                format!(
                    "this connection must be authorized by {}, but these credentials were issued to {}: obtain them as the required user",
                    required.subject, who.subject
                ),
            ));
        }
    }
    Ok(context)
}
