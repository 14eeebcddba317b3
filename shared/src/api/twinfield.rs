//! `POST /v1/connections/{id}/twinfield-session`: a Twinfield SOAP session, opened with
//! `AccessTokenLogon` (OAuth 2.0 connections) or `OAuthLogon` (OAuth 1.0-era credentials, with the
//! app's client id and secret as consumer key and secret). Every `LogonResult` maps to an answer:
//!
//! | result | answer |
//! |---|---|
//! | `Ok` (nextAction `None`) | the session id and cluster |
//! | `Ok` with nextAction `SMSLogon` / `ChangePassword` | `twinfield-logon-refused`, naming it |
//! | `TokenInvalid`, `Invalid`, `OAuth2AuthenticationRequired` | status `reconnect_required`; `reconnect-required` |
//! | `Blocked`, `Disabled`, `Deleted`, `OrganisationInactive` | status `disabled`; `connection-disabled` |
//! | `NoAvailableCompanies`, `ClientInvalid`, `Untrusted` | `twinfield-logon-refused`, naming the cause |
//! | `Failed` | `temporarily-unavailable` |

use super::problem::{ApiError, ProblemKind};
use super::service::{record_handout, Caller, IntegrationApi};
use super::types::TwinfieldSessionGrant;
use crate::domain::{
    Connection, Credentials, ProviderKind, ReconnectKind, ReconnectReason, StatusEvent,
};
use crate::providers::{LegacyConsumer, Logon, LogonResult, NextAction, SessionError};

impl IntegrationApi {
    pub async fn twinfield_session(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<TwinfieldSessionGrant, ApiError> {
        let connection = self.connection_for(caller, id).await?;
        if connection.provider != ProviderKind::Twinfield {
            return Err(ApiError::new(
                ProblemKind::NotApplicable,
                format!(
                    "this is a {} connection; SOAP sessions exist only for Twinfield: ask POST /v1/connections/{{id}}/session for an access token",
                    connection.provider.display_name()
                ),
            ));
        }
        let (connection, credentials) = self.fresh_credentials(connection).await?;
        let sessions = self.ctx.providers.twinfield_sessions().map_err(|e| {
            ApiError::internal("the Twinfield session client could not be built", e)
        })?;
        let (answer, logon_kind) = match &credentials {
            Credentials::OAuth2(tokens) => (
                sessions.access_token_logon(&tokens.access_token).await,
                "oauth2",
            ),
            Credentials::TwinfieldLegacy(legacy) => {
                let consumer = self.legacy_consumer(&connection).await?;
                (sessions.oauth_logon(&consumer, legacy).await, "legacy")
            }
        };
        let logon = match answer {
            Ok(logon) => logon,
            Err(SessionError::AccessTokenInvalid { message }) => {
                let reason = ReconnectReason::new(ReconnectKind::GrantRevoked, message);
                return Err(self.reconnect(caller, connection, reason).await);
            }
            Err(e) => return Err(session_error_problem(&e)),
        };
        self.map_logon(caller, connection, logon, logon_kind).await
    }

    async fn legacy_consumer(&self, connection: &Connection) -> Result<LegacyConsumer, ApiError> {
        let store = &self.ctx.backend.store;
        let app = store
            .get_app(&connection.tenant, &connection.app)
            .await
            .map_err(|e| ApiError::internal("the app registration could not be read", e))?;
        let secret = self
            .ctx
            .backend
            .vault
            .get_client_secret(&connection.tenant, &connection.app)
            .await
            .map_err(|e| ApiError::internal("the app's client secret could not be read", e))?;
        match (app, secret) {
            (Some(app), Some(secret)) => Ok(LegacyConsumer {
                client_token: app.client_id,
                client_secret: secret,
            }),
            _ => Err(ApiError::new(
                ProblemKind::ValidationFailed,
                format!(
                    "the connection's app registration {} (or its client secret) is missing: register the app again",
                    connection.app
                ),
            )),
        }
    }

    async fn map_logon(
        &self,
        caller: &Caller,
        connection: Connection,
        logon: Logon,
        logon_kind: &str,
    ) -> Result<TwinfieldSessionGrant, ApiError> {
        use LogonResult as R;
        let result = logon.result;
        let refused = |cause: String| ApiError::new(ProblemKind::TwinfieldLogonRefused, cause);
        match result {
            R::Ok => match logon.next_action {
                NextAction::SMSLogon => Err(refused(
                    "Twinfield requires this user to complete an SMS log-on first (nextAction SMSLogon): the user must log on to Twinfield interactively, then retry".into(),
                )),
                NextAction::ChangePassword => Err(refused(
                    "Twinfield requires this user to change their password first (nextAction ChangePassword): the user must do so in Twinfield, then retry".into(),
                )),
                NextAction::None => match logon.session() {
                    Some(session) => {
                        record_handout(
                            caller,
                            &connection.id,
                            "twinfield_session",
                            self.ctx.clock.now(),
                            None,
                        );
                        Ok(TwinfieldSessionGrant {
                            connection_id: connection.id.to_string(),
                            session_id: session.session_id.expose().to_string(),
                            cluster_url: session.cluster_url.base().to_string(),
                            logon: logon_kind.into(),
                        })
                    }
                    None => Err(ApiError::new(
                        ProblemKind::ProviderError,
                        "Twinfield answered Ok but sent no session id or cluster: retry",
                    )),
                },
            },
            R::TokenInvalid | R::Invalid | R::OAuth2AuthenticationRequired => {
                let kind = if result == R::OAuth2AuthenticationRequired {
                    ReconnectKind::LegacyCredentialsRetired
                } else {
                    ReconnectKind::GrantRevoked
                };
                let reason = ReconnectReason::new(
                    kind,
                    format!("Twinfield answered {result}: {}", result.explain()),
                );
                Err(self.reconnect(caller, connection, reason).await)
            }
            R::Blocked | R::Disabled | R::Deleted | R::OrganisationInactive => {
                let reason = format!("Twinfield answered {result}: {}", result.explain());
                let event = StatusEvent::ProviderDisabled {
                    reason: reason.clone(),
                };
                self.credentials.forget(&connection.id);
                self.record_event(caller, connection, event).await?;
                Err(ApiError::new(
                    ProblemKind::ConnectionDisabled,
                    format!("{reason} Resolve it in Twinfield, then reconnect the connection."),
                ))
            }
            R::NoAvailableCompanies | R::ClientInvalid | R::Untrusted => Err(refused(format!(
                "Twinfield refused the logon with {result}: {}",
                result.explain()
            ))),
            R::Failed => Err(ApiError::new(
                ProblemKind::TemporarilyUnavailable,
                "Twinfield answered Failed: the log-on failed at Twinfield; retry later",
            )
            .retry_after(30)),
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
