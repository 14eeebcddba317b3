//! `POST /v1/connections/{id}/twinfield-session[?company=CODE]`: a Twinfield SOAP session, opened with
//! `AccessTokenLogon` (OAuth 2.0 connections) or `OAuthLogon` (OAuth 1.0-era credentials, with the
//! app's client id and secret as consumer key and secret), then kept in the process's session pool
//! (see [`crate::providers::twinfield_session::SessionPool`]) and handed out again while Twinfield
//! keeps it alive. The answer says until when it lives unused (`idle_expires_at`). An integration that
//! finds a session dropped names it (`rejected_session_id` in the body) and gets a new one at once.
//!
//! Every `LogonResult` maps to an answer through its [`LogonVerdict`]:
//!
//! | result | answer | connection |
//! |---|---|---|
//! | `Ok` | the session id and cluster | unchanged |
//! | `Ok` with nextAction `SMSLogon` / `ChangePassword` (OAuthLogon) | `twinfield-logon-refused`, naming it | unchanged |
//! | `Untrusted`, `NoAvailableCompanies` | `twinfield-logon-refused`, naming the cause | unchanged |
//! | `Blocked` (maintenance), `Failed` | `temporarily-unavailable` (503, `Retry-After`) | unchanged |
//! | `TokenInvalid`, fault 354 (OAuth 2.0) | the engine replaces the rejected token (once for all who saw it, within the provider's interval, the vault write budget and the request's deadline) and the logon is retried | unchanged unless the refresh fails for good |
//! | `TokenInvalid` (legacy), `Invalid`, `ClientInvalid`, `OAuth2AuthenticationRequired` | `reconnect-required` | `reconnect_required` |
//! | `Disabled`, `Deleted`, `OrganisationInactive` | `connection-disabled` | `disabled` |

use super::problem::{ApiError, ProblemKind};
use super::service::{Caller, IntegrationApi, SessionOptions};
use super::types::TwinfieldSessionGrant;
use crate::domain::{
    Connection, Credentials, ProviderKind, ReconnectKind, ReconnectReason, StatusEvent, TokenSet,
};
use crate::providers::{
    LegacyConsumer, Logon, LogonVerdict, NextAction, PoolKey, PooledSession, SelectCompanyResult,
    SessionError, TwinfieldSession, TwinfieldSessionClient,
};
use crate::secret::SessionId;
use chrono::Duration;

/// Twinfield's session idle time when the catalogue does not say (ASP.NET's default; unpublished).
const DEFAULT_SESSION_IDLE_SECS: u64 = 20 * 60;

/// What a `/twinfield-session` request may say beyond the connection it is for.
#[derive(Debug, Clone, Default)]
pub struct TwinfieldSessionRequest {
    /// A company to select on the session; one pooled session per company.
    pub company: Option<String>,
    /// A session the broker handed out that Twinfield no longer accepts: when it is still the pooled
    /// one it is replaced at once, instead of after the next `KeepAlive` check.
    pub rejected_session: Option<SessionId>,
    /// When the answer is due (the invocation's deadline less the time to answer): a refresh that
    /// could not finish before it is not started.
    pub deadline: Option<tokio::time::Instant>,
}

impl IntegrationApi {
    pub async fn twinfield_session(
        &self,
        caller: &Caller,
        id: &str,
        request: TwinfieldSessionRequest,
    ) -> Result<TwinfieldSessionGrant, ApiError> {
        let connection = self.twinfield_connection(caller, id).await?;
        let company = request.company.as_deref().map(company_code).transpose()?;
        let options = SessionOptions::by(request.deadline);
        let (connection, credentials) = self.fresh_credentials_for(connection, &options).await?;
        let sessions = self.session_client()?;
        let key = PoolKey {
            connection: connection.id.clone(),
            company: company.clone(),
        };
        // Held while the session is checked or opened: one logon per connection and company at a time.
        let slot = self.ctx.providers.twinfield_pool().slot(key);
        let mut pooled = slot.lock().await;
        let wanted = Wanted {
            grant_started_at: connection.grant_started_at(),
            logon: logon_kind(&credentials),
            rejected: request.rejected_session.as_ref(),
        };
        // An outage while checking leaves the entry in place (`?`); a dead, rejected or foreign one goes.
        if let Some(existing) = pooled.clone().filter(|p| wanted.served_by(p)) {
            if let Some(alive) = self.still_alive(&sessions, existing).await? {
                let answer = self.hand_out(caller, &connection, &alive, company);
                *pooled = Some(alive);
                return Ok(answer);
            }
        }
        *pooled = None;
        let (connection, opened) = self
            .open_session(caller, connection, credentials, &sessions, &options)
            .await?;
        if let Some(code) = &company {
            self.select_company(&sessions, &opened, code).await?;
        }
        let fresh = PooledSession {
            session: opened,
            grant_started_at: connection.grant_started_at(),
            logon: wanted.logon,
            touched_at: self.ctx.clock.now(),
        };
        let answer = self.hand_out(caller, &connection, &fresh, company);
        *pooled = Some(fresh);
        Ok(answer)
    }

    /// The caller's connection, if it is a Twinfield one.
    async fn twinfield_connection(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Connection, ApiError> {
        let connection = self.connection_for(caller, id).await?;
        if connection.provider == ProviderKind::Twinfield {
            return Ok(connection);
        }
        Err(ApiError::new(
            ProblemKind::NotApplicable,
            format!(
                "this is a {} connection; SOAP sessions exist only for Twinfield: ask POST /v1/connections/{{id}}/session for an access token",
                connection.provider.display_name()
            ),
        ))
    }

    fn session_client(&self) -> Result<TwinfieldSessionClient, ApiError> {
        self.ctx
            .providers
            .twinfield_sessions()
            .map_err(|e| ApiError::internal("the Twinfield session client could not be built", e))
    }

    /// The pooled session if Twinfield still has it: trusted as it is when the broker touched it a
    /// moment ago, else proven (and its idle time restarted) with `KeepAlive`. `None`: it is gone.
    async fn still_alive(
        &self,
        sessions: &TwinfieldSessionClient,
        mut pooled: PooledSession,
    ) -> Result<Option<PooledSession>, ApiError> {
        let now = self.ctx.clock.now();
        let settings = self.ctx.providers.twinfield_pool().settings();
        if !pooled.needs_recheck(now, settings) {
            return Ok(Some(pooled));
        }
        match sessions.keep_alive(&pooled.session).await {
            Ok(()) => {
                pooled.touched_at = self.ctx.clock.now();
                Ok(Some(pooled))
            }
            // An outage says nothing about the session; the next request checks again.
            Err(e) if e.is_transient() => Err(session_error_problem(&e)),
            Err(_) => Ok(None),
        }
    }

    fn hand_out(
        &self,
        caller: &Caller,
        connection: &Connection,
        pooled: &PooledSession,
        company: Option<String>,
    ) -> TwinfieldSessionGrant {
        let idle = Duration::seconds(self.session_idle_secs() as i64);
        let idle_expires_at = pooled.touched_at + idle;
        self.record_handout(
            caller,
            &connection.id,
            "twinfield_session",
            self.ctx.clock.now(),
            Some(idle_expires_at),
        );
        TwinfieldSessionGrant {
            connection_id: connection.id.to_string(),
            session_id: pooled.session.session_id.expose().to_string(),
            cluster_url: pooled.session.cluster_url.base().to_string(),
            logon: pooled.logon.into(),
            company,
            idle_expires_at,
            idle_timeout_secs: idle.num_seconds(),
        }
    }

    fn session_idle_secs(&self) -> u64 {
        let catalogue = self.ctx.providers.catalogue();
        catalogue
            .get("twinfield")
            .and_then(|d| d.lifetimes.session_idle_secs)
            .unwrap_or(DEFAULT_SESSION_IDLE_SECS)
    }

    /// Logs on and turns the answer into a session, or into the problem (and status change) its
    /// verdict calls for.
    async fn open_session(
        &self,
        caller: &Caller,
        connection: Connection,
        credentials: Credentials,
        sessions: &TwinfieldSessionClient,
        options: &SessionOptions,
    ) -> Result<(Connection, TwinfieldSession), ApiError> {
        let (connection, logon) = match credentials {
            Credentials::OAuth2(tokens) => {
                self.access_token_logon(caller, connection, tokens, sessions, options)
                    .await?
            }
            Credentials::TwinfieldLegacy(legacy) => {
                let consumer = self.legacy_consumer(&connection).await?;
                match sessions.oauth_logon(&consumer, &legacy).await {
                    // Legacy credentials cannot be refreshed: a refused token needs a person.
                    Ok(logon) if logon.verdict() == LogonVerdict::RefreshAccessToken => {
                        let said = format!(
                            "Twinfield answered {}: {}",
                            logon.result,
                            logon.result.explain()
                        );
                        let reason = ReconnectReason::new(ReconnectKind::GrantRevoked, said);
                        return Err(self.reconnect(caller, connection, reason).await);
                    }
                    Ok(logon) => (connection, logon),
                    Err(SessionError::AccessTokenInvalid { message }) => {
                        let reason = ReconnectReason::new(ReconnectKind::GrantRevoked, message);
                        return Err(self.reconnect(caller, connection, reason).await);
                    }
                    Err(e) => return Err(session_error_problem(&e)),
                }
            }
        };
        let session = self.map_logon(caller, connection.clone(), logon).await?;
        Ok((connection, session))
    }

    /// `AccessTokenLogon`; a token Twinfield rejects (`TokenInvalid` or fault 354) is refreshed once
    /// through the refresh engine and the logon tried again. The rejection alone never needs a
    /// person: only the refresh failing for good does, and the engine records that.
    async fn access_token_logon(
        &self,
        caller: &Caller,
        connection: Connection,
        tokens: TokenSet,
        sessions: &TwinfieldSessionClient,
        options: &SessionOptions,
    ) -> Result<(Connection, Logon), ApiError> {
        let first = sessions.access_token_logon(&tokens.access_token).await;
        if !token_rejected(&first) {
            return first
                .map(|logon| (connection, logon))
                .map_err(|e| session_error_problem(&e));
        }
        let rejected = SessionOptions {
            rejected_token: Some(tokens.access_token),
            ..options.clone()
        };
        let (connection, tokens) = self.replace_rejected(caller, connection, &rejected).await?;
        let second = sessions.access_token_logon(&tokens.access_token).await;
        if token_rejected(&second) {
            return Err(ApiError::new(
                ProblemKind::ProviderError,
                "Twinfield rejected the access token again right after it was refreshed; the connection is unchanged: retry later, and report it if it persists",
            )
            .retry_after(60));
        }
        second
            .map(|logon| (connection, logon))
            .map_err(|e| session_error_problem(&e))
    }

    /// The tokens that replace one Twinfield rejected: the engine refreshes once for all who saw that
    /// token rejected (single flight, within the provider's minimum interval and the vault write
    /// budget); a caller that saw an older token rejected gets the current one. A refresh that fails
    /// for good is recorded by the engine (reconnect required); anything else changes nothing.
    async fn replace_rejected(
        &self,
        caller: &Caller,
        connection: Connection,
        options: &SessionOptions,
    ) -> Result<(Connection, TokenSet), ApiError> {
        // The current record: another request may already have replaced the token.
        let current = self.connection_for(caller, connection.id.as_str()).await?;
        let replaced = self.fresh_credentials_for(current, options).await;
        if replaced.is_err() {
            self.forget_sessions(&connection.id);
        }
        match replaced? {
            (connection, Credentials::OAuth2(tokens)) => Ok((connection, tokens)),
            (_, Credentials::TwinfieldLegacy(_)) => Err(ApiError::new(
                ProblemKind::TemporarilyUnavailable,
                "the connection's credentials changed while its session was opened: retry",
            )
            .retry_after(1)),
        }
    }

    async fn select_company(
        &self,
        sessions: &TwinfieldSessionClient,
        session: &TwinfieldSession,
        company: &str,
    ) -> Result<(), ApiError> {
        match sessions.select_company(session, company).await {
            Ok(SelectCompanyResult::Ok) => Ok(()),
            Ok(SelectCompanyResult::Invalid) => Err(ApiError::new(
                ProblemKind::ValidationFailed,
                format!("Twinfield does not know company {company:?} for this connection's user: check the company code"),
            )),
            Err(e) => Err(session_error_problem(&e)),
        }
    }

    async fn legacy_consumer(&self, connection: &Connection) -> Result<LegacyConsumer, ApiError> {
        let (app, secret) = self.app_of(connection).await?;
        Ok(LegacyConsumer {
            client_token: app.client_id,
            client_secret: secret,
        })
    }

    async fn map_logon(
        &self,
        caller: &Caller,
        connection: Connection,
        logon: Logon,
    ) -> Result<TwinfieldSession, ApiError> {
        let result = logon.result;
        let said = || format!("Twinfield answered {result}: {}", result.explain());
        let refused = |cause: String| ApiError::new(ProblemKind::TwinfieldLogonRefused, cause);
        match logon.verdict() {
            LogonVerdict::Ok => logon.session().ok_or_else(|| {
                ApiError::new(
                    ProblemKind::ProviderError,
                    "Twinfield answered Ok but sent no session id or cluster: retry",
                )
            }),
            LogonVerdict::PersonMustAct => Err(refused(next_action_cause(logon.next_action))),
            LogonVerdict::Refused => Err(refused(format!(
                "Twinfield refused the logon with {result}: {}",
                result.explain()
            ))),
            // Maintenance or a passing failure at Twinfield: nothing is wrong with the connection.
            LogonVerdict::RetryLater => {
                let default = if result == crate::providers::LogonResult::Blocked {
                    300
                } else {
                    30
                };
                let wait = logon.retry_after.map_or(default, |d| d.as_secs().max(1));
                Err(ApiError::new(
                    ProblemKind::TemporarilyUnavailable,
                    format!("{} Retry later.", said()),
                )
                .retry_after(wait))
            }
            // Both logons handle a refused token before this point (refresh, or reconnect for legacy);
            // should one still arrive, the connection stays as it is.
            LogonVerdict::RefreshAccessToken => Err(ApiError::new(
                ProblemKind::ProviderError,
                format!("{} The token was just refreshed; retry later.", said()),
            )
            .retry_after(60)),
            LogonVerdict::Reconnect(kind) => {
                let reason = ReconnectReason::new(kind, said());
                Err(self.reconnect(caller, connection, reason).await)
            }
            LogonVerdict::Disabled => Err(self.disable(caller, connection, said()).await),
        }
    }

    async fn disable(&self, caller: &Caller, connection: Connection, reason: String) -> ApiError {
        self.credentials.forget(&connection.id);
        self.forget_sessions(&connection.id);
        let event = StatusEvent::ProviderDisabled {
            reason: reason.clone(),
        };
        match self.record_event(caller, connection, event).await {
            Ok(_) => ApiError::new(
                ProblemKind::ConnectionDisabled,
                format!("{reason} Resolve it in Twinfield, then reconnect the connection."),
            ),
            Err(e) => e,
        }
    }

    /// Marks the connection `reconnect_required` (the notifier hears of the stored transition) and
    /// returns the problem to answer with.
    async fn reconnect(
        &self,
        caller: &Caller,
        connection: Connection,
        reason: ReconnectReason,
    ) -> ApiError {
        self.credentials.forget(&connection.id);
        self.forget_sessions(&connection.id);
        let detail = format!(
            "{} Ask POST /v1/connections/{{id}}/reconnect-link for a link.",
            reason.explain()
        );
        match self
            .record_event(caller, connection, StatusEvent::ReconnectNeeded(reason))
            .await
        {
            Ok(_) => ApiError::new(ProblemKind::ReconnectRequired, detail),
            Err(e) => e,
        }
    }

    fn forget_sessions(&self, connection: &crate::ids::ConnectionId) {
        self.ctx.providers.twinfield_pool().forget(connection);
    }
}

/// What a request can take from the pool: a session of the current grant and credential kind, not the
/// one the caller says Twinfield dropped (one that is no longer pooled was replaced already).
struct Wanted<'a> {
    grant_started_at: chrono::DateTime<chrono::Utc>,
    logon: &'static str,
    rejected: Option<&'a SessionId>,
}

impl Wanted<'_> {
    fn served_by(&self, pooled: &PooledSession) -> bool {
        let rejected = self
            .rejected
            .is_some_and(|r| r.expose() == pooled.session.session_id.expose());
        pooled.serves(self.grant_started_at, self.logon) && !rejected
    }
}

fn logon_kind(credentials: &Credentials) -> &'static str {
    match credentials {
        Credentials::OAuth2(_) => "oauth2",
        Credentials::TwinfieldLegacy(_) => "legacy",
    }
}

/// Twinfield rejected the access token: `TokenInvalid`, or the 354 fault.
fn token_rejected(answer: &Result<Logon, SessionError>) -> bool {
    match answer {
        Ok(logon) => logon.verdict() == LogonVerdict::RefreshAccessToken,
        Err(e) => matches!(e, SessionError::AccessTokenInvalid { .. }),
    }
}

fn next_action_cause(action: NextAction) -> String {
    match action {
        NextAction::SMSLogon => "Twinfield requires this user to complete an SMS log-on first (nextAction SMSLogon): the user must log on to Twinfield interactively, then retry".into(),
        NextAction::ChangePassword => "Twinfield requires this user to change their password first (nextAction ChangePassword): the user must do so in Twinfield, then retry".into(),
        NextAction::None => "Twinfield asked for an action first: log on to Twinfield interactively, then retry".into(),
    }
}

/// A company code as Twinfield's `SelectCompany` takes it.
fn company_code(raw: &str) -> Result<String, ApiError> {
    let code = raw.trim();
    let fine = !code.is_empty()
        && code.len() <= 40
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if fine {
        Ok(code.to_string())
    } else {
        Err(ApiError::new(
            ProblemKind::ValidationFailed,
            "company must be a Twinfield company code (1 to 40 letters, digits, '-', '_' or '.')",
        ))
    }
}

/// A session-service failure as a problem. The errors carry no token or session id.
pub(super) fn session_error_problem(e: &SessionError) -> ApiError {
    match e {
        SessionError::RateLimited { retry_after } => {
            ApiError::new(ProblemKind::RateLimited, format!("{e}: retry later"))
                .retry_after(retry_after.map_or(60, |d| d.as_secs().max(1)))
        }
        SessionError::Unavailable { .. } => ApiError::new(
            ProblemKind::TemporarilyUnavailable,
            format!("{e}: retry shortly"),
        )
        .retry_after(30),
        _ => ApiError::new(
            ProblemKind::ProviderError,
            format!("{e}: retry, and report it if it persists"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn company_codes_are_checked() {
        assert_eq!(company_code(" NL001 ").unwrap(), "NL001");
        for bad in ["", "a b", "x<y>", &"x".repeat(41)] {
            assert!(company_code(bad).is_err(), "{bad:?}");
        }
    }
}
