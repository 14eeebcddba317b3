//! Token revocation on disconnect (RFC 7009): where the provider offers a revocation endpoint (from the
//! catalogue or its discovery document's `revocation_endpoint`), a disconnect first asks it to revoke
//! the refresh token, so the grant dies at the provider and not only in the broker's vault.
//!
//! Best effort and bounded: one attempt within [`REVOCATION_TIMEOUT`], whatever the answer the
//! disconnect goes on, and the outcome is written into the connection's history. RFC 7009 §2.2: the
//! server answers 200 for a token it revoked and for one that was already invalid, so 200 is success.

use super::error::{tidy, ErrorClass, Operation, ProviderError, Redactor};
use super::oauth::OAuthClient;
use crate::context::BrokerContext;
use crate::credential_keeper::CredentialKeeper;
use crate::domain::Connection;
use crate::secret::RefreshToken;
use std::time::Duration;

/// The longest a disconnect waits for the provider's revocation endpoint.
pub const REVOCATION_TIMEOUT: Duration = Duration::from_secs(10);

/// What became of the provider's copy of the grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// The provider confirmed (HTTP 200).
    Revoked,
    /// The provider offers no revocation endpoint: the grant lives on there until it expires or a
    /// person removes it.
    NotOffered,
    /// The connection held no refresh token to revoke.
    NothingHeld,
    /// The attempt failed; the words say why (never a secret).
    Failed(String),
}

impl Revocation {
    /// One clause for the connection's history.
    pub fn describe(&self) -> String {
        match self {
            Self::Revoked => "the refresh token was revoked at the provider".into(),
            Self::NotOffered => "the provider offers no token revocation; remove the app's access there if it must end now".into(),
            Self::NothingHeld => "no refresh token was held to revoke".into(),
            Self::Failed(why) => format!("revoking the refresh token at the provider failed ({why}); remove the app's access there if it must end now"),
        }
    }
}

impl OAuthClient {
    /// Asks the provider to revoke a refresh token (RFC 7009), authenticating as at the token endpoint.
    pub async fn revoke_refresh_token(
        &self,
        token: &RefreshToken,
    ) -> Result<Revocation, ProviderError> {
        let endpoints = self.endpoints().await?;
        let Some(url) = endpoints.revocation.clone() else {
            return Ok(Revocation::NotOffered);
        };
        let form = vec![
            ("token", token.expose().to_string()),
            ("token_type_hint", "refresh_token".to_string()),
        ];
        let request = self
            .authenticated_form(self.http.client().post(url), endpoints.client_auth, form)
            .map_err(|why| {
                self.error(ErrorClass::ClientMisconfigured, Operation::Revocation, why)
            })?;
        let op = Operation::Revocation;
        let reply = match tokio::time::timeout(REVOCATION_TIMEOUT, self.http.send(request)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(f)) if f.address_refused => {
                return Err(self.error(ErrorClass::ClientMisconfigured, op, f.detail))
            }
            Ok(Err(f)) => return Err(self.error(ErrorClass::ProviderUnavailable, op, f.detail)),
            Err(_) => {
                return Err(self.error(
                    ErrorClass::ProviderUnavailable,
                    op,
                    "the revocation endpoint did not answer in time",
                ))
            }
        };
        if reply.status == 200 {
            return Ok(Revocation::Revoked);
        }
        let mut redactor = Redactor::default();
        redactor.add(token.expose());
        redactor.add(self.app.client_secret.expose());
        let words = redactor.clean(&tidy(&String::from_utf8_lossy(&reply.body), 200));
        let mut e = self.error(ErrorClass::Unexpected, op, words);
        e.status = Some(reply.status);
        Err(e)
    }
}

/// Revokes a connection's refresh token at its provider before the broker forgets it. Never fails:
/// the disconnect proceeds whatever happens here, and the outcome goes into its history.
pub async fn revoke_connection(ctx: &BrokerContext, connection: &Connection) -> Revocation {
    // The whole attempt (a discovery read included) stays inside the bound: the disconnect holds the
    // connection's lease meanwhile.
    let attempt = tokio::time::timeout(REVOCATION_TIMEOUT, try_revoke(ctx, connection));
    let result = attempt.await.unwrap_or_else(|_| {
        Err(format!(
            "no answer within {} s",
            REVOCATION_TIMEOUT.as_secs()
        ))
    });
    match result {
        Ok(outcome) => outcome,
        Err(why) => {
            tracing::warn!(connection = %connection.id, error = %why, "token revocation on disconnect failed");
            Revocation::Failed(why)
        }
    }
}

async fn try_revoke(ctx: &BrokerContext, connection: &Connection) -> Result<Revocation, String> {
    let backend = &ctx.backend;
    let keeper = CredentialKeeper::new(backend.store.clone(), backend.vault.clone());
    let credentials = keeper
        .current(connection)
        .await
        .map_err(|e| e.to_string())?;
    let Some(token) = credentials
        .as_ref()
        .and_then(|c| c.token_set())
        .and_then(|t| t.refresh_token.clone())
    else {
        return Ok(Revocation::NothingHeld);
    };
    let app = backend
        .store
        .get_app(&connection.tenant, &connection.app)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the app registration is missing")?
        .for_connection(connection);
    let secret = backend
        .vault
        .get_client_secret(&app.tenant, &app.id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the app registration has no client secret")?;
    let client = ctx
        .providers
        .oauth_client(&app, secret)
        .map_err(|e| e.to_string())?;
    client
        .revoke_refresh_token(&token)
        .await
        .map_err(|e| e.to_string())
}
