//! The browser's part of connecting and reconnecting: a connect link starts the OAuth
//! authorization-code flow, the provider's redirect back completes it.
//!
//! - [`ConnectFlow::start`] resolves the link, creates a single-use `state` (stored only as its hash,
//!   with the PKCE verifier and Twinfield's nonce, for [`STATE_LIFETIME`]) bound to this browser by a
//!   random cookie, and names the provider URL to send the browser to.
//! - [`ConnectFlow::complete`] consumes the state atomically, checks the cookie, handles the
//!   provider's `error`, exchanges the code, runs the provider's discovery step, refuses a reconnect
//!   that lands on another organisation or is authorized by the wrong person (for Exact Online: by
//!   another Exact user, or without the bound division; see `domain::binding`), and otherwise stores
//!   the tokens (vault first, into the non-current slot, then the fenced metadata) with an
//!   `Authorized` transition. A refused attempt changes nothing: no token is written anywhere.
//!
//! No HTTP framework type appears here: the oauth-callback function maps requests onto these calls
//! and the typed outcomes onto pages.

mod browser;
pub mod division;
mod error;
pub mod onboarding;
pub mod standing;

pub use browser::{
    BrowserCookies, CallbackQuery, SetCookies, BINDING_COOKIE, LINK_COOKIE, MAX_PARAM_BYTES,
    MAX_QUERY_BYTES,
};
pub use error::{ConnectError, ConnectFailure};
pub use standing::{Audience, LinkPage, LinkUse, ReconnectWhy, Standing};

use crate::api::caches::NegativeCache;
use crate::context::BrokerContext;
use crate::credential_keeper::CredentialKeeper;
use crate::domain::{
    bind_authorization, new_one_time_secret, Actor, ConnectLink, Connection, ConnectionStatus,
    Consumed, Credentials, Identity, NewGrant, OAuthApp, OneTimeKey, PendingAuthorization,
    ProviderContext, ProviderKind, StatusKind,
};
use crate::ids::{ConnectionId, TenantId};
use crate::ports::Fence;
use crate::providers::{Authorized, Discovered, OAuthClient};
use crate::refresh::TokenGrant;
use crate::secret::OneTimeSecret;
use browser::is_local_http;
use chrono::{DateTime, Duration, Utc};
use subtle::ConstantTimeEq;
use url::Url;

/// How long a browser has between opening the link and coming back from the provider. Long enough
/// to sign in (with a second factor) and read a consent page; short enough that a leaked `state` is
/// useless soon after.
pub const STATE_LIFETIME: Duration = Duration::minutes(10);
/// Where to send the browser after opening a link, and the cookies binding it to the state.
#[derive(Debug)]
pub struct Started {
    pub redirect: Url,
    pub cookies: SetCookies,
    pub provider: ProviderKind,
}

/// A completed connect or reconnect.
#[derive(Debug, Clone)]
pub struct Completed {
    pub connection: ConnectionId,
    pub provider: ProviderKind,
    /// The connection's label, if the integration gave one.
    pub display_name: Option<String>,
    pub context: ProviderContext,
    pub authorized_by: Option<Identity>,
    /// The status before: `NotConnected` for a first connect, anything else for a reconnect.
    pub previous: StatusKind,
    pub next_refresh_at: DateTime<Utc>,
    /// Exact Online: the granted divisions to choose from, when the binding was a guess among several.
    pub division_choice: Option<division::DivisionOffer>,
    pub audience: Audience,
}

impl Completed {
    pub fn was_reconnect(&self) -> bool {
        self.previous != StatusKind::NotConnected
    }
}
/// The connect / reconnect flow over one [`BrokerContext`].
#[derive(Clone)]
pub struct ConnectFlow {
    ctx: BrokerContext,
    /// Link tokens no link has, refused without a store read for a minute after the first miss
    /// (bounded): a browser or a bot retrying a dead link costs one read a minute.
    unknown_links: std::sync::Arc<NegativeCache<OneTimeKey>>,
}

/// A connection with the app registration and the OAuth client to authorize it with.
struct Target {
    connection: Connection,
    app: OAuthApp,
    client: OAuthClient,
    audience: Audience,
}

impl ConnectFlow {
    pub fn new(ctx: BrokerContext) -> Self {
        Self {
            ctx,
            unknown_links: std::sync::Arc::new(NegativeCache::new(
                std::time::Duration::from_secs(60),
                10_000,
            )),
        }
    }

    pub fn context(&self) -> &BrokerContext {
        &self.ctx
    }

    /// The redirect URI the broker answers at; app registrations name it at their provider.
    pub fn callback_url(&self) -> Url {
        self.ctx.public_url(crate::context::CALLBACK_PATH)
    }

    /// The connect link for a token (to offer it again).
    fn link_url(&self, token: &str) -> Url {
        self.ctx.public_url(&format!("connect/{token}"))
    }

    /// A browser opened a connect link: prepare the authorization and say where to send it.
    pub async fn start(&self, link_token: &str) -> Result<Started, ConnectFailure> {
        let link = self.live_link_named(link_token).await?;
        let target = self.target(&link.tenant, &link.connection).await?;
        if let Some(error) = link_no_longer_current(&target.connection, &link) {
            return Err(ConnectFailure {
                error,
                provider: Some(target.connection.provider),
                try_again: None,
                state_consumed: false,
                audience: Some(target.audience.clone()),
            });
        }
        let provider = target.connection.provider;
        if target.app.needs_instance_of(&target.connection) {
            // The page shows the settings form, not the button, until the instance is known.
            return Err(ConnectFailure {
                error: ConnectError::MalformedRequest(
                    "fill in the form on the connection page first".into(),
                ),
                provider: Some(provider),
                try_again: Some(self.link_url(link_token)),
                state_consumed: false,
                audience: Some(target.audience.clone()),
            });
        }
        let fail = |error: ConnectError| ConnectFailure {
            error,
            provider: Some(provider),
            try_again: Some(self.link_url(link_token)),
            state_consumed: false,
            audience: Some(target.audience.clone()),
        };
        if target.app.redirect_uri.as_str() != self.callback_url().as_str() {
            // Not fatal (a proxy may rewrite the path), but the usual cause of "redirect_uri mismatch".
            tracing::warn!(
                app = %target.app.id.as_str(),
                registered = target.app.redirect_uri.as_str(),
                expected = self.callback_url().as_str(),
                "the app's redirect URI is not this broker's callback URL"
            );
        }
        let (state, state_key) = new_one_time_secret();
        let (binding, binding_key) = new_one_time_secret();
        let request = target
            .client
            .authorization_request(&state, &[])
            .await
            .map_err(|e| fail(e.into()))?;
        let now = self.ctx.clock.now();
        let pending = PendingAuthorization {
            tenant: link.tenant.clone(),
            connection: link.connection.clone(),
            purpose: link.purpose,
            pkce_verifier: request.pkce_verifier,
            nonce: request.nonce,
            browser_binding: binding_key,
            created_at: now,
            expires_at: now + STATE_LIFETIME,
        };
        self.ctx
            .backend
            .store
            .put_pending(&state_key, &pending)
            .await
            .map_err(|e| fail(e.into()))?;
        tracing::info!(
            connection = %link.connection.as_str(),
            provider = provider.display_name(),
            purpose = ?link.purpose,
            "authorization started"
        );
        Ok(Started {
            redirect: request.url,
            cookies: self.cookies(Some((&binding, link_token))),
            provider,
        })
    }

    /// The link a token names, while it works. Unknown tokens are remembered for a while, so a flood
    /// of made-up links costs no store reads.
    async fn live_link_named(&self, link_token: &str) -> Result<ConnectLink, ConnectFailure> {
        let Some(key) = super::links::link_key(link_token) else {
            return Err(ConnectError::LinkUnknown.into());
        };
        if self.unknown_links.missed(&key) {
            return Err(ConnectError::LinkUnknown.into());
        }
        match self
            .ctx
            .backend
            .store
            .get_link(&key, self.ctx.clock.now())
            .await?
        {
            Consumed::Fresh(link) => Ok(link),
            Consumed::Expired => Err(ConnectError::LinkExpired.into()),
            Consumed::Unknown => {
                self.unknown_links.record_miss(key);
                Err(ConnectError::LinkUnknown.into())
            }
        }
    }

    /// `Set-Cookie` values that remove the flow's cookies (after a callback, whatever its outcome).
    pub fn clearing_cookies(&self) -> SetCookies {
        self.cookies(None)
    }

    fn cookies(&self, values: Option<(&OneTimeSecret, &str)>) -> SetCookies {
        let path = self.callback_url().path().to_string();
        // `Secure` keeps the cookie off plain http. A browser never stores a Secure cookie set over
        // http, so a local run on http://127.0.0.1 could not complete; only there (http on a loopback
        // host, where nothing crosses a network) is the attribute left off.
        let secure = !is_local_http(&self.ctx.public_base_url);
        let attributes = |max_age: i64| {
            format!(
                "; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
                if secure { "; Secure" } else { "" }
            )
        };
        let lifetime = STATE_LIFETIME.num_seconds();
        let cookies = match values {
            Some((binding, link)) => vec![
                format!(
                    "{BINDING_COOKIE}={}{}",
                    binding.expose(),
                    attributes(lifetime)
                ),
                format!("{LINK_COOKIE}={link}{}", attributes(lifetime)),
            ],
            None => vec![
                format!("{BINDING_COOKIE}={}", attributes(0)),
                format!("{LINK_COOKIE}={}", attributes(0)),
            ],
        };
        SetCookies(cookies)
    }

    /// The provider sent the browser back: finish the authorization. Four steps: redeem the state
    /// this browser started with, authorize at the provider, check that the authorization fits the
    /// connection, and store the new grant.
    pub async fn complete(
        &self,
        raw_query: Option<&str>,
        cookies: &BrowserCookies,
    ) -> Result<Completed, ConnectFailure> {
        let (query, pending, try_again) = self.redeem_state(raw_query, cookies).await?;
        let target = self
            .target(&pending.tenant, &pending.connection)
            .await
            .map_err(|mut f| {
                f.try_again = None;
                f.state_consumed = true;
                f
            })?;
        let refuse = |error: ConnectError| {
            tracing::info!(
                connection = %target.connection.id.as_str(),
                provider = target.connection.provider.display_name(),
                reason = error.label(),
                detail = %error,
                "authorization refused; the connection is unchanged"
            );
            ConnectFailure {
                error,
                provider: Some(target.connection.provider),
                try_again: try_again.clone(),
                state_consumed: true,
                audience: Some(target.audience.clone()),
            }
        };
        let (authorized, discovered) = Self::authorize_at_provider(&target, &query, &pending)
            .await
            .map_err(refuse)?;
        let context = check_reconnect_target(&target.connection, &discovered).map_err(refuse)?;
        self.store_grant(&target, authorized, discovered, context)
            .await
            .map_err(|error| ConnectFailure {
                error,
                provider: Some(target.connection.provider),
                try_again: try_again.clone(),
                state_consumed: true,
                audience: Some(target.audience.clone()),
            })
    }

    /// Consumes the state the callback carries, once, and checks it was issued to this browser.
    /// Answers the callback's parameters, the pending authorization, and the link to offer again if
    /// the authorization fails (only if it is the same connection's: the link cookie alone proves
    /// nothing).
    async fn redeem_state(
        &self,
        raw_query: Option<&str>,
        cookies: &BrowserCookies,
    ) -> Result<(CallbackQuery, PendingAuthorization, Option<Url>), ConnectFailure> {
        let try_again = self.live_link(cookies).await;
        let with_retry = |error: ConnectError| ConnectFailure {
            error,
            provider: None,
            try_again: try_again.as_ref().map(|(url, _)| url.clone()),
            state_consumed: false,
            audience: None,
        };
        let query = CallbackQuery::parse(raw_query).map_err(with_retry)?;
        let Some(state) = &query.state else {
            return Err(with_retry(ConnectError::MalformedRequest(
                "it carries no state".into(),
            )));
        };
        let now = self.ctx.clock.now();
        let pending = match self
            .ctx
            .backend
            .store
            .consume_pending(&OneTimeKey::of(state), now)
            .await?
        {
            Consumed::Fresh(pending) => pending,
            Consumed::Expired => return Err(with_retry(ConnectError::StateExpired)),
            Consumed::Unknown => return Err(with_retry(ConnectError::StateUnknown)),
        };
        let same_browser = cookies.binding.as_ref().is_some_and(|b| {
            let presented = OneTimeKey::of(b);
            bool::from(
                presented
                    .as_str()
                    .as_bytes()
                    .ct_eq(pending.browser_binding.as_str().as_bytes()),
            )
        });
        if !same_browser {
            tracing::info!(connection = %pending.connection.as_str(), reason = "wrong_browser", "authorization refused");
            // Another browser holding the state (a leaked or planted link) gets no retry link.
            return Err(ConnectFailure {
                error: ConnectError::WrongBrowser,
                provider: None,
                try_again: None,
                state_consumed: true,
                audience: None,
            });
        }
        let try_again = try_again
            .filter(|(_, link)| link.connection == pending.connection)
            .map(|(url, _)| url);
        Ok((query, pending, try_again))
    }

    /// The provider's answer to the authorization: the person's refusal, or the code exchanged for
    /// tokens and what the provider tells about whom and what they authorized.
    async fn authorize_at_provider(
        target: &Target,
        query: &CallbackQuery,
        pending: &PendingAuthorization,
    ) -> Result<(Authorized, Discovered), ConnectError> {
        let provider = target.connection.provider;
        if let Some(error) = &query.error {
            let description = query.error_description.clone();
            return Err(if error.eq_ignore_ascii_case("access_denied") {
                ConnectError::Denied {
                    provider,
                    description,
                }
            } else {
                ConnectError::ProviderRefused {
                    provider,
                    error: error.clone(),
                    description,
                }
            });
        }
        let Some(code) = &query.code else {
            return Err(ConnectError::MalformedRequest(
                "it carries neither a code nor an error".into(),
            ));
        };
        let authorized = target
            .client
            .exchange_code(
                code,
                pending.pkce_verifier.as_ref(),
                pending.nonce.as_deref(),
            )
            .await?;
        // exchange_code compares the id_token's nonce with ours; an answer without an id_token would
        // skip that check, so a flow that asked for an id_token (and so kept a nonce) insists on one.
        if pending.nonce.is_some() && authorized.id_token.is_none() {
            return Err(ConnectError::NonceUnverified { provider });
        }
        let discovered = target
            .client
            .discover_for(&authorized, &target.connection.known_divisions())
            .await?;
        Ok((authorized, discovered))
    }

    /// Stores the new grant: the connection authorized (its transition recorded with it), its tokens
    /// in the vault, every link issued so far spent.
    async fn store_grant(
        &self,
        target: &Target,
        authorized: Authorized,
        discovered: Discovered,
        context: ProviderContext,
    ) -> Result<Completed, ConnectError> {
        let now = self.ctx.clock.now();
        let mut connection = target.connection.clone();
        let previous = connection.status().kind();
        let actor = Actor::EndUser(
            discovered
                .identity
                .as_ref()
                .map_or_else(|| "unidentified".to_string(), |i| i.subject.clone()),
        );
        let tokens = authorized.tokens;
        let rules = self.ctx.providers.rules(&target.app);
        let next_refresh_at =
            rules.next_scheduled_refresh(tokens.received_at, tokens.refresh_expires_at);
        // Spends every link issued so far (a forwarded one cannot authorize it again) and forgets a
        // refresh interrupted on the old grant: this grant replaces it.
        let transition = connection
            .authorized(
                NewGrant {
                    context: Some(context.clone()),
                    authorized_by: discovered.identity.clone(),
                    schedule: Some((tokens.received_at, next_refresh_at)),
                },
                actor,
                now,
            )
            .map_err(|_| ConnectError::ConnectionGone)?;
        let offer = self.division_offer(&target.connection, &context, now);
        connection.division_choice = offer.as_ref().map(|(choice, _)| choice.clone());
        let keeper = CredentialKeeper::new(
            self.ctx.backend.store.clone(),
            self.ctx.backend.vault.clone(),
        );
        let slot = CredentialKeeper::next_target(&connection);
        let stored = keeper
            .commit(
                connection,
                slot,
                &Credentials::OAuth2(tokens),
                Fence::Version,
                &[transition],
            )
            .await?;
        tracing::info!(
            connection = %stored.id.as_str(),
            provider = stored.provider.display_name(),
            from = %previous,
            organisation = %context.describe(),
            "connection authorized"
        );
        Ok(Completed {
            connection: stored.id,
            provider: stored.provider,
            display_name: stored.display_name,
            context,
            authorized_by: discovered.identity,
            previous,
            next_refresh_at,
            division_choice: offer.map(|(_, offer)| offer),
            audience: target.audience.clone(),
        })
    }

    /// The link named by the link cookie, if it still works.
    async fn live_link(&self, cookies: &BrowserCookies) -> Option<(Url, ConnectLink)> {
        let token = cookies.link.as_deref()?;
        match super::resolve_link(&self.ctx, token).await {
            Ok(Consumed::Fresh(link)) => Some((self.link_url(token), link)),
            _ => None,
        }
    }

    async fn target(
        &self,
        tenant: &TenantId,
        connection: &ConnectionId,
    ) -> Result<Target, ConnectFailure> {
        let store = &self.ctx.backend.store;
        let connection = store
            .get_tenant_connection(tenant, connection)
            .await?
            .ok_or(ConnectError::LinkUnknown)?;
        let tenant = store.get_tenant(&connection.tenant).await?;
        let audience = Audience::of(&connection, tenant.as_ref());
        if matches!(connection.status(), ConnectionStatus::Disconnected) {
            return Err(ConnectFailure {
                error: ConnectError::ConnectionGone,
                provider: Some(connection.provider),
                try_again: None,
                state_consumed: false,
                audience: Some(audience),
            });
        }
        let misconfigured = |why: String| ConnectFailure {
            error: ConnectError::Misconfigured(why),
            provider: Some(connection.provider),
            try_again: None,
            state_consumed: false,
            audience: Some(audience.clone()),
        };
        let app = store
            .get_app(&connection.tenant, &connection.app)
            .await?
            .ok_or_else(|| {
                misconfigured("the connection's app registration does not exist".into())
            })?
            .for_connection(&connection);
        let secret = self
            .ctx
            .backend
            .vault
            .get_client_secret(&app.tenant, &app.id)
            .await?
            .ok_or_else(|| misconfigured("the app registration has no client secret".into()))?;
        let client = self
            .ctx
            .providers
            .oauth_client(&app, secret)
            .map_err(|e| misconfigured(e.to_string()))?;
        Ok(Target {
            connection,
            app,
            client,
            audience,
        })
    }
}

/// Why a link may no longer start an authorization: spent when a person authorized the connection
/// after it was issued, or replaced by a newer link. The answer names the connection's status.
fn link_no_longer_current(connection: &Connection, link: &ConnectLink) -> Option<ConnectError> {
    if connection.link_is_current(link.generation) {
        return None;
    }
    let spent = connection
        .authorized_at
        .is_some_and(|at| at >= link.created_at);
    let (provider, name) = (connection.provider, connection.display_name.clone());
    let status = connection.status().kind().to_string().replace('_', " ");
    Some(if spent {
        ConnectError::LinkSpent {
            provider,
            name,
            status,
        }
    } else {
        ConnectError::LinkReplaced {
            provider,
            name,
            status,
        }
    })
}

/// Whether an authorization fits the connection it is for: the person the connection requires, and
/// an organisation, division, tenant or account it may be bound to (a reconnect never moves a
/// connection to another organisation). Answers what the connection is bound to.
fn check_reconnect_target(
    connection: &Connection,
    discovered: &Discovered,
) -> Result<ProviderContext, ConnectError> {
    if let Some(required) = &connection.required_identity {
        let matches = discovered
            .identity
            .as_ref()
            .is_some_and(|who| who.same_person(required));
        if !matches {
            return Err(ConnectError::IdentityMismatch {
                provider: connection.provider,
                required: required.describe(),
                actual: discovered
                    .identity
                    .as_ref()
                    .map_or_else(|| "an unidentified user".into(), Identity::describe),
            });
        }
    }
    bind_authorization(
        connection,
        discovered.context.clone(),
        discovered.identity.as_ref(),
    )
    .map_err(|why| ConnectError::refused_binding(connection.provider, why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Recipients, ServiceUrl, StatusEvent};
    use crate::ids::AppId;

    fn twinfield(organisation: &str) -> ProviderContext {
        ProviderContext::Twinfield {
            cluster_url: ServiceUrl::parse("https://accounting.twinfield.com").unwrap(),
            organisation_code: organisation.into(),
            organisation_id: None,
        }
    }

    fn discovered(organisation: &str, subject: &str) -> Discovered {
        Discovered {
            context: twinfield(organisation),
            identity: Some(Identity::new(subject).unwrap()),
        }
    }

    fn connection() -> Connection {
        Connection::new(
            TenantId::parse("acme").unwrap(),
            AppId::parse("twinfield").unwrap(),
            ProviderKind::Twinfield,
            Recipients::parse(&["finance@example.com"]).unwrap(),
            chrono::Utc::now(),
        )
    }

    #[test]
    fn a_first_authorization_binds_the_connection_to_what_was_authorized() {
        let bound = check_reconnect_target(&connection(), &discovered("NL-001", "jan")).unwrap();
        assert_eq!(bound, twinfield("NL-001"));
    }

    #[test]
    fn the_required_person_must_be_the_one_who_authorized() {
        let mut c = connection();
        c.required_identity = Some(Identity::new("JAN").unwrap());
        assert!(check_reconnect_target(&c, &discovered("NL-001", "jan")).is_ok());
        let refused = check_reconnect_target(&c, &discovered("NL-001", "piet")).unwrap_err();
        assert!(
            matches!(&refused, ConnectError::IdentityMismatch { required, actual, .. }
                if required == "JAN" && actual == "piet"),
            "{refused:?}"
        );
    }

    #[test]
    fn a_reconnect_never_moves_the_connection_to_another_organisation() {
        let mut c = connection();
        c.context = Some(twinfield("NL-001"));
        assert!(check_reconnect_target(&c, &discovered("NL-001", "jan")).is_ok());
        assert!(check_reconnect_target(&c, &discovered("NL-002", "jan")).is_err());
    }

    fn link_for(c: &Connection, issued: chrono::DateTime<chrono::Utc>) -> ConnectLink {
        ConnectLink {
            tenant: c.tenant.clone(),
            connection: c.id.clone(),
            purpose: crate::domain::AuthorizationPurpose::Reconnect,
            generation: c.link_generation,
            created_at: issued,
            expires_at: issued + Duration::days(7),
        }
    }

    #[test]
    fn a_link_is_spent_by_an_authorization_after_it_and_replaced_by_a_newer_link() {
        let issued = chrono::Utc::now();
        let mut c = connection();
        let link = link_for(&c, issued);
        assert!(link_no_longer_current(&c, &link).is_none());

        // A newer link for the same connection replaces it.
        let mut replaced = c.clone();
        replaced.link_generation += 1;
        assert!(matches!(
            link_no_longer_current(&replaced, &link),
            Some(ConnectError::LinkReplaced { .. })
        ));

        // A person authorized after it was issued: spent, and the page names the status.
        c.apply(
            StatusEvent::Authorized,
            Actor::System("test".into()),
            issued + Duration::minutes(5),
        )
        .unwrap();
        c.spend_links();
        assert!(matches!(
            link_no_longer_current(&c, &link),
            Some(ConnectError::LinkSpent { status, .. }) if status == "connected"
        ));
    }
}
