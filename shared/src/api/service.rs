//! [`IntegrationApi`]: authentication, the connection operations and the session exchange.

use super::caches::{ApiSettings, CredentialsCache, KeyCache};
use super::problem::{ApiError, ProblemKind};
use super::types::{
    ConnectionPage, ConnectionView, CreateConnection, CreatedConnection, LinkView, SessionGrant,
};
use crate::connect::{issue_link, LINK_LIFETIME};
use crate::context::BrokerContext;
use crate::domain::plain_label;
use crate::domain::ErrorClass;
use crate::domain::OAuthApp;
use crate::domain::ReturnUrl;
use crate::domain::SessionReads;
use crate::domain::{
    Actor, ApiKeyRecord, AuthorizationPurpose, Connection, ConnectionStatus, Credentials, Identity,
    ProviderKind, Recipients, StatusEvent, StatusTransition,
};
use crate::domain::{Locale, TimeZone};
use crate::history::SessionReadLog;
use crate::ids::{AppId, ConnectionId, LeaseOwner, TenantId};
use crate::ports::{Fence, LeaseAttempt, PageRequest, StoreError};
use crate::refresh::rules::access_token_fresh;
use crate::refresh::{Demand, Outcome, Trigger};
use crate::secret::{AccessToken, ApiKeySecret};
use chrono::Duration;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// A session is handed out with a token valid for at least this long, unless the caller names another
/// validity, or the provider's tokens live less than twice as long (then: half their lifetime; see
/// `refresh::rules::required_validity`).
pub(super) const MIN_VALIDITY: Duration = Duration::seconds(60);

/// The longest validity a caller may ask for: longer than most providers' tokens live, so asking for
/// more would only refresh sooner.
pub const MAX_REQUESTED_VALIDITY: Duration = Duration::hours(1);

/// What a session request may say beyond the connection it is for.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// How long the token should stay valid (1 s .. [`MAX_REQUESTED_VALIDITY`]); 60 s when not said.
    pub min_validity: Option<Duration>,
    /// The provider refused this access token, which the broker handed out: a new one is wanted. When
    /// it is still the connection's current token, the broker refreshes once (single flight, within
    /// the provider's minimum interval and the vault write budget); when it is not, the current one is
    /// newer and is handed out.
    pub rejected_token: Option<AccessToken>,
    /// The answer is due by then (the invocation's deadline less the time to answer): a refresh that
    /// could not finish before it is not started, and the caller gets 503 with `Retry-After` instead.
    pub deadline: Option<tokio::time::Instant>,
}

impl SessionOptions {
    pub fn by(deadline: Option<tokio::time::Instant>) -> Self {
        Self {
            deadline,
            ..Self::default()
        }
    }
}

/// The authenticated caller: one API key of one tenant.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: ApiKeyRecord,
}

impl Caller {
    pub fn tenant(&self) -> &TenantId {
        &self.key.tenant
    }

    pub fn prefix(&self) -> &str {
        self.key.prefix.as_str()
    }

    pub(super) fn actor(&self) -> Actor {
        Actor::ApiKey(self.prefix().to_string())
    }

    pub(super) fn require_full_access(&self) -> Result<(), ApiError> {
        if self.key.scope.session_only {
            return Err(ApiError::new(
                ProblemKind::Forbidden,
                "this API key is limited to session requests; use a key without the session-only limit to manage connections",
            ));
        }
        Ok(())
    }

    /// For what reaches beyond named connections (creating one): a key limited to some connections
    /// must not make new ones outside its list.
    pub(super) fn require_tenant_wide_access(&self) -> Result<(), ApiError> {
        self.require_full_access()?;
        if self.key.scope.connections.is_some() {
            return Err(ApiError::new(
                ProblemKind::Forbidden,
                "this API key is limited to some connections and cannot create new ones; use a key without a connection limit",
            ));
        }
        Ok(())
    }
}

/// The integration API. Build one per process (it holds the caches) and share it.
pub struct IntegrationApi {
    pub(super) ctx: BrokerContext,
    settings: ApiSettings,
    keys: KeyCache,
    pub(super) credentials: CredentialsCache,
    /// The token-read audit, counted per key and hour and written in the background.
    reads: Arc<SessionReadLog>,
}

impl IntegrationApi {
    pub fn new(ctx: BrokerContext) -> Self {
        Self::with_settings(ctx, ApiSettings::default())
    }

    pub fn with_settings(ctx: BrokerContext, settings: ApiSettings) -> Self {
        Self {
            keys: KeyCache::new(&settings),
            credentials: CredentialsCache::new(&settings),
            reads: SessionReadLog::new(ctx.backend.store.clone()),
            settings,
            ctx,
        }
    }

    pub fn settings(&self) -> &ApiSettings {
        &self.settings
    }

    pub fn context(&self) -> &BrokerContext {
        &self.ctx
    }

    /// The session-read counts not yet written: flush them before the process ends.
    pub fn session_reads(&self) -> &SessionReadLog {
        &self.reads
    }

    /// Checks `Authorization: Bearer <key>`. Every failure is the same 401, so a caller learns nothing
    /// about which keys exist.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        // Any request may carry the counts of earlier handouts to the store (in the background).
        self.reads.write_if_due();
        let header = authorization.ok_or_else(ApiError::unauthorized)?;
        let (scheme, value) = header
            .trim()
            .split_once(' ')
            .ok_or_else(ApiError::unauthorized)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::unauthorized());
        }
        let presented = ApiKeySecret::new(value.trim());
        let prefix = ApiKeyRecord::prefix_of(&presented).map_err(|_| ApiError::unauthorized())?;
        let record = match self.keys.get(&prefix) {
            Some(record) => record,
            None if self.keys.unknown.missed(&prefix) => return Err(ApiError::unauthorized()),
            None => {
                let read = self
                    .ctx
                    .backend
                    .store
                    .get_api_key(&prefix)
                    .await
                    .map_err(|e| ApiError::internal("the API key could not be checked", e))?;
                let Some(read) = read else {
                    self.keys.unknown.record_miss(prefix);
                    return Err(ApiError::unauthorized());
                };
                self.keys.put(read.clone());
                read
            }
        };
        if !record.accepts(&presented) {
            return Err(ApiError::unauthorized());
        }
        Ok(Caller { key: record })
    }

    /// The connection as this caller may see it: another tenant's is "not found", and a key limited to
    /// other connections is refused before anything is read.
    pub(super) async fn connection_for(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Connection, ApiError> {
        let id = ConnectionId::parse(id).map_err(|_| ApiError::connection_not_found())?;
        if !caller.key.may_use(&id) {
            return Err(ApiError::new(
                ProblemKind::Forbidden,
                "this API key is limited to other connections; use a key that includes this connection",
            ));
        }
        self.ctx
            .backend
            .store
            .get_tenant_connection(caller.tenant(), &id)
            .await
            .map_err(|e| ApiError::internal("the connection could not be read", e))?
            .ok_or_else(ApiError::connection_not_found)
    }

    pub async fn create_connection(
        &self,
        caller: &Caller,
        request: CreateConnection,
    ) -> Result<CreatedConnection, ApiError> {
        caller.require_tenant_wide_access()?;
        let invalid = |detail: String| ApiError::new(ProblemKind::ValidationFailed, detail);
        let app_id = AppId::parse(request.app_id.trim()).map_err(|e| invalid(e.to_string()))?;
        let recipients = Recipients::parse(&request.recipients)
            .map_err(|e| invalid(format!("recipients: {e}")))?;
        // Labels reach pages and emails: no control or bidirectional characters past this point.
        let display_name = request
            .display_name
            .map(|n| plain_label(&n))
            .filter(|n| !n.is_empty());
        if display_name
            .as_ref()
            .is_some_and(|n| n.chars().count() > 200)
        {
            return Err(invalid(
                "display_name is longer than 200 characters: shorten it".into(),
            ));
        }
        let required_identity = match request.required_identity {
            Some(input) => {
                let mut identity = Identity::new(input.subject)
                    .map_err(|e| invalid(format!("required_identity: {e}")))?;
                identity.display_name = input
                    .display_name
                    .map(|n| plain_label(&n))
                    .filter(|n| !n.is_empty());
                Some(identity)
            }
            None => None,
        };
        let app = self
            .ctx
            .backend
            .store
            .get_app(caller.tenant(), &app_id)
            .await
            .map_err(|e| ApiError::internal("the app registration could not be read", e))?
            .ok_or_else(|| {
                invalid(format!(
                    "your tenant has no app registration \"{app_id}\": use the id of one of its registered apps"
                ))
            })?;
        let requested_division = requested_division(&app, request.exact_division)?;
        let locale = request.locale.as_deref().map(Locale::parse).transpose();
        let locale = locale.map_err(|e| invalid(format!("locale: {e}")))?;
        let time_zone = request
            .time_zone
            .as_deref()
            .map(TimeZone::parse)
            .transpose();
        let time_zone = time_zone.map_err(|e| invalid(format!("time_zone: {e}")))?;
        let return_url = match request.return_url {
            Some(url) => Some(self.allowed_return_url(caller, &url).await?),
            None => None,
        };
        let now = self.ctx.clock.now();
        let mut connection = Connection::new(
            caller.tenant().clone(),
            app.id.clone(),
            app.provider(),
            recipients,
            now,
        );
        connection.display_name = display_name;
        connection.required_identity = required_identity;
        connection.requested_division = requested_division;
        connection.allow_user_change = request.allow_user_change;
        connection.return_url = return_url;
        connection.locale = locale;
        connection.time_zone = time_zone;
        self.ctx
            .backend
            .store
            .insert_connection(&connection, &[])
            .await
            .map_err(|e| ApiError::internal("the connection could not be stored", e))?;
        let url = issue_link(
            &self.ctx,
            caller.tenant(),
            &connection.id,
            AuthorizationPurpose::Connect,
        )
        .await
        .map_err(|e| ApiError::internal("the connect link could not be stored", e))?;
        tracing::info!(key_prefix = caller.prefix(), connection = %connection.id, provider = ?connection.provider, "connection created");
        Ok(CreatedConnection {
            connection: ConnectionView::from(&connection),
            connect_link: LinkView {
                url: url.to_string(),
                expires_at: now + LINK_LIFETIME,
            },
        })
    }

    /// A return URL the caller's tenant allows: its origin on the tenant's allow-list. Anything else
    /// is refused, so the connect pages never send a browser to an address the tenant did not name.
    async fn allowed_return_url(
        &self,
        caller: &Caller,
        value: &str,
    ) -> Result<ReturnUrl, ApiError> {
        let invalid = |detail: String| ApiError::new(ProblemKind::ValidationFailed, detail);
        let url = ReturnUrl::parse(value).map_err(|e| invalid(format!("return_url: {e}")))?;
        let tenant = self
            .ctx
            .backend
            .store
            .get_tenant(caller.tenant())
            .await
            .map_err(|e| ApiError::internal("the tenant could not be read", e))?;
        let origins = tenant.map(|t| t.return_origins).unwrap_or_default();
        if !url.allowed_by(&origins) {
            return Err(invalid(format!(
                "return_url: its origin {} is not on your tenant's list of return origins: use an \
                 address on an allowed origin, or ask the broker's operator to allow this one",
                url.origin()
            )));
        }
        Ok(url)
    }

    pub async fn get_connection(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<ConnectionView, ApiError> {
        caller.require_full_access()?;
        Ok(ConnectionView::from(
            &self.connection_for(caller, id).await?,
        ))
    }

    pub async fn list_connections(
        &self,
        caller: &Caller,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> Result<ConnectionPage, ApiError> {
        caller.require_full_access()?;
        let limit = limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(ApiError::new(
                ProblemKind::InvalidRequest,
                "limit must be between 1 and 200",
            ));
        }
        let page = self
            .ctx
            .backend
            .store
            .list_connections(caller.tenant(), PageRequest::after(limit, cursor))
            .await
            .map_err(|e| match e {
                StoreError::InvalidCursor => {
                    ApiError::new(ProblemKind::InvalidRequest, e.to_string())
                }
                other => ApiError::internal("the connections could not be listed", other),
            })?;
        Ok(ConnectionPage {
            connections: page
                .items
                .iter()
                .filter(|c| caller.key.may_use(&c.id))
                .map(ConnectionView::from)
                .collect(),
            next_cursor: page.next_cursor,
        })
    }

    /// Disconnects: no provider here offers revocation, so the tokens are deleted, the status becomes
    /// `disconnected` and the record stays for the audit trail. Taken under the refresh lease, so a
    /// refresh cannot write new tokens behind it. Repeating it is harmless.
    pub async fn disconnect(&self, caller: &Caller, id: &str) -> Result<ConnectionView, ApiError> {
        caller.require_full_access()?;
        let connection = self.connection_for(caller, id).await?;
        let store = &self.ctx.backend.store;
        let connection = if connection.status() == ConnectionStatus::Disconnected {
            connection
        } else {
            let owner = LeaseOwner::generate();
            let now = self.ctx.clock.now();
            let leased = match store
                .acquire_lease(&connection.id, &owner, now, Duration::seconds(30))
                .await
                .map_err(|e| ApiError::internal("the connection could not be locked", e))?
            {
                LeaseAttempt::Acquired(c) => c,
                LeaseAttempt::Busy { .. } => {
                    return Err(ApiError::new(
                        ProblemKind::TemporarilyUnavailable,
                        "a token refresh of this connection is under way: retry the disconnect in a few seconds",
                    )
                    .retry_after(5))
                }
                LeaseAttempt::Missing => return Err(ApiError::connection_not_found()),
            };
            let result = self.disconnect_under_lease(caller, leased, &owner).await;
            if let Err(e) = store.release_lease(&connection.id, &owner).await {
                tracing::warn!(connection = %connection.id, error = %e, "could not release the lease; it will expire");
            }
            result?
        };
        // Also on a repeat: a delete that failed before is tried again.
        self.credentials.forget(&connection.id);
        self.ctx
            .backend
            .vault
            .delete_credentials(&connection.tenant, &connection.id)
            .await
            .map_err(|e| ApiError::internal("the connection's tokens could not be deleted", e))?;
        tracing::info!(key_prefix = caller.prefix(), connection = %connection.id, "connection disconnected");
        Ok(ConnectionView::from(&connection))
    }

    async fn disconnect_under_lease(
        &self,
        caller: &Caller,
        mut connection: Connection,
        owner: &LeaseOwner,
    ) -> Result<Connection, ApiError> {
        // RFC 7009: end the grant at the provider too, while the broker still holds the token.
        let revocation =
            crate::providers::revocation::revoke_connection(&self.ctx, &connection).await;
        let now = self.ctx.clock.now();
        let mut transition = connection
            .disconnect(caller.actor(), now)
            .map_err(|e| ApiError::new(ProblemKind::ConnectionDisconnected, e.to_string()))?;
        transition.reason = format!("{}; {}", transition.reason, revocation.describe());
        self.ctx
            .backend
            .store
            .save_connection(&connection, Fence::Lease(owner), &[transition])
            .await
            .map_err(|e| ApiError::internal("the connection could not be saved", e))
    }

    pub async fn reconnect_link(&self, caller: &Caller, id: &str) -> Result<LinkView, ApiError> {
        caller.require_full_access()?;
        let connection = self.connection_for(caller, id).await?;
        if connection.status() == ConnectionStatus::Disconnected {
            return Err(disconnected());
        }
        let url = issue_link(
            &self.ctx,
            caller.tenant(),
            &connection.id,
            AuthorizationPurpose::Reconnect,
        )
        .await
        .map_err(|e| ApiError::internal("the reconnect link could not be stored", e))?;
        Ok(LinkView {
            url: url.to_string(),
            expires_at: self.ctx.clock.now() + LINK_LIFETIME,
        })
    }

    /// A valid access token with its expiry and context, refreshed on demand (single flight) when it
    /// is expired or expires within a minute. On a warm instance with a fresh token this costs one
    /// connection read and nothing else.
    pub async fn session(&self, caller: &Caller, id: &str) -> Result<SessionGrant, ApiError> {
        self.session_with(caller, id, SessionOptions::default())
            .await
    }

    /// [`Self::session`], with what the request said (validity, a refused token, a deadline).
    pub async fn session_with(
        &self,
        caller: &Caller,
        id: &str,
        options: SessionOptions,
    ) -> Result<SessionGrant, ApiError> {
        if let Some(validity) = options.min_validity {
            if validity < Duration::seconds(1) || validity > MAX_REQUESTED_VALIDITY {
                return Err(ApiError::new(
                    ProblemKind::ValidationFailed,
                    format!(
                        "min_validity_secs must be between 1 and {}: ask for how long you need the token",
                        MAX_REQUESTED_VALIDITY.num_seconds()
                    ),
                ));
            }
        }
        let connection = self.connection_for(caller, id).await?;
        let (connection, credentials) = self.fresh_credentials_for(connection, &options).await?;
        let Credentials::OAuth2(tokens) = credentials else {
            return Err(ApiError::new(
                ProblemKind::NotApplicable,
                "this Twinfield connection holds OAuth 1.0-era credentials, which have no access token: ask POST /v1/connections/{id}/twinfield-session for a SOAP session",
            ));
        };
        let now = self.ctx.clock.now();
        self.record_handout(
            caller,
            &connection.id,
            "access_token",
            now,
            Some(tokens.access_expires_at),
        );
        Ok(SessionGrant {
            connection_id: connection.id.to_string(),
            provider: connection.provider,
            access_token: tokens.access_token.expose().to_string(),
            token_type: "Bearer".into(),
            expires_at: tokens.access_expires_at,
            expires_in: (tokens.access_expires_at - now).num_seconds().max(0),
            context: connection.context.clone(),
        })
    }

    /// The connection's current credentials, with an OAuth 2.0 access token valid for at least what the
    /// request asks ([`MIN_VALIDITY`] by default) or half its lifetime (legacy Twinfield credentials are
    /// returned as they are).
    pub(super) async fn fresh_credentials_for(
        &self,
        connection: Connection,
        options: &SessionOptions,
    ) -> Result<(Connection, Credentials), ApiError> {
        usable(&connection)?;
        let now = self.ctx.clock.now();
        let wanted = options.min_validity.unwrap_or(MIN_VALIDITY);
        let fresh = access_token_fresh(&connection, now, wanted);
        let mut rejected = false;
        if fresh || connection.access_expires_at.is_none() || options.rejected_token.is_some() {
            let credentials = self.current_credentials(&connection).await?;
            rejected = is_current_token(&credentials, options.rejected_token.as_ref());
            if (fresh && !rejected) || credentials.token_set().is_none() {
                return Ok((connection, credentials));
            }
        }
        // A limit the connection records still holds: the engine would only say so.
        if let Some(until) = self.ctx.engine.recorded_budget_limit(&connection, now) {
            return self
                .while_limited(connection, RefreshLimit::VaultWriteBudget, until, rejected)
                .await;
        }
        let mut demand = Demand::valid_for(wanted).by(options.deadline);
        demand = match (&connection.credentials, rejected) {
            (Some(seen), true) => demand.rejected(seen.clone()),
            (seen, _) => demand.after(seen.clone()),
        };
        let report = self
            .ctx
            .engine
            .refresh(&connection.id, Trigger::OnDemand(demand))
            .await
            .map_err(|e| ApiError::engine("the token could not be refreshed", e))?;
        let connection = report.connection;
        match report.outcome {
            Outcome::AlreadyFresh | Outcome::Refreshed | Outcome::Recovered => {}
            // The budget's pace is slower than the provider's tokens live: the current token serves
            // while it is valid (checked below), and after that the caller waits for the budget.
            Outcome::BudgetLimited { until } => {
                return self
                    .while_limited(connection, RefreshLimit::VaultWriteBudget, until, rejected)
                    .await
            }
            // The provider's limit for this user's connections under the app is reached: the
            // current token serves while it is valid, then the caller waits for the limit's window.
            Outcome::AppUserLimited(hold) => {
                return self
                    .while_limited(
                        connection,
                        RefreshLimit::ProviderPerAppUser,
                        hold.until(),
                        rejected,
                    )
                    .await
            }
            refused => return Err(self.refused_by_engine(refused, &connection)),
        }
        let credentials = self.current_credentials(&connection).await?;
        let now = self.ctx.clock.now();
        if let Some(tokens) = credentials.token_set() {
            if tokens.access_expires_at <= now {
                return Err(ApiError::new(
                    ProblemKind::TemporarilyUnavailable,
                    "the provider does not allow a refresh yet and the current token has expired: retry in a minute",
                )
                .retry_after(60));
            }
        }
        Ok((connection, credentials))
    }

    /// Why the engine's outcome leaves the caller without a token, as the problem to answer.
    fn refused_by_engine(&self, outcome: Outcome, connection: &Connection) -> ApiError {
        match outcome {
            Outcome::OutOfTime => ApiError::new(
                ProblemKind::TemporarilyUnavailable,
                "too little time was left in this request to refresh the token safely: retry in a few seconds",
            )
            .retry_after(2),
            Outcome::NotUsable(_) | Outcome::ReconnectRequired(_) => {
                self.credentials.forget(&connection.id);
                match usable(connection) {
                    Err(status_problem) => status_problem,
                    Ok(()) => ApiError::new(
                        ProblemKind::ReconnectRequired,
                        "the connection needs a person: open its reconnect link",
                    ),
                }
            }
            Outcome::Busy => {
                // An interrupted refresh holds everyone off until its call could no longer be running.
                let wait = connection.refresh_in_flight.as_ref().map_or(5, |marker| {
                    let ends = marker.started_at + self.ctx.engine.settings().call_budget();
                    (ends - self.ctx.clock.now()).num_seconds().clamp(1, 120) as u64
                });
                ApiError::new(
                    ProblemKind::TemporarilyUnavailable,
                    "another worker is refreshing this connection's token: retry after Retry-After",
                )
                .retry_after(wait)
            }
            Outcome::Failed(class) => refresh_failed(class),
            // Cooling down after repeated failures (and anything not yet refreshable).
            _ => ApiError::new(
                ProblemKind::TemporarilyUnavailable,
                "refreshing this connection failed repeatedly in the last hour and is cooling down: retry later",
            )
            .retry_after(300),
        }
    }

    /// While a limit holds the next refresh back (until `until`): the current token as long as it is
    /// valid (and not the one the caller said the provider refused), then a 503 that says which limit
    /// and when to ask again.
    async fn while_limited(
        &self,
        connection: Connection,
        limit: RefreshLimit,
        until: chrono::DateTime<chrono::Utc>,
        rejected: bool,
    ) -> Result<(Connection, Credentials), ApiError> {
        let credentials = self.current_credentials(&connection).await?;
        let now = self.ctx.clock.now();
        if !rejected
            && credentials
                .token_set()
                .is_some_and(|t| t.access_expires_at > now)
        {
            return Ok((connection, credentials));
        }
        let why = match limit {
            RefreshLimit::VaultWriteBudget => "this connection's tokens expire faster than the broker may store new ones (the vault's write budget): the current token has expired and the next refresh is allowed after Retry-After",
            RefreshLimit::ProviderPerAppUser => "the provider's limit on token requests for this user's connections under this app is reached (Exact Online: per app and user, shared by all their connections): the next refresh is allowed after Retry-After",
        };
        Err(ApiError::new(ProblemKind::TemporarilyUnavailable, why)
            .retry_after((until - now).num_seconds().max(1) as u64))
    }

    /// The credentials the connection points at, from the cache when its entry is for that pointer.
    async fn current_credentials(&self, connection: &Connection) -> Result<Credentials, ApiError> {
        let Some(pointer) = &connection.credentials else {
            return Err(ApiError::new(
                ProblemKind::NotConnected,
                "the broker holds no credentials for this connection: open its connect link or register credentials",
            ));
        };
        if let Some(hit) = self.credentials.get(&connection.id, &pointer.write) {
            return Ok(hit);
        }
        let read = self
            .ctx
            .backend
            .vault
            .get_credentials(&connection.tenant, &connection.id, pointer)
            .await
            .map_err(|e| ApiError::internal("the connection's tokens could not be read", e))?
            .ok_or_else(|| {
                ApiError::new(
                    ProblemKind::TemporarilyUnavailable,
                    "the connection's current tokens are being replaced: retry in a moment",
                )
                .retry_after(2)
            })?;
        self.credentials
            .put(&connection.id, &pointer.write, read.clone());
        Ok(read)
    }

    /// Applies a status event and saves it, re-reading on a conflict. An event the current status does
    /// not take (e.g. already disabled) is not an error: the status already says what is needed.
    pub(super) async fn record_event(
        &self,
        caller: &Caller,
        mut connection: Connection,
        event: StatusEvent,
    ) -> Result<Connection, ApiError> {
        let store = &self.ctx.backend.store;
        for _ in 0..3 {
            let now = self.ctx.clock.now();
            let transition: StatusTransition =
                match connection.apply(event.clone(), caller.actor(), now) {
                    Ok(t) => t,
                    Err(_) => return Ok(connection),
                };
            match store
                .save_connection(&connection, Fence::Version, &[transition])
                .await
            {
                Ok(saved) => return Ok(saved),
                Err(StoreError::Conflict) => {
                    connection = store
                        .get_connection(&connection.id)
                        .await
                        .map_err(|e| ApiError::internal("the connection could not be read", e))?
                        .ok_or_else(ApiError::connection_not_found)?;
                }
                Err(e) => return Err(ApiError::internal("the connection could not be saved", e)),
            }
        }
        Err(ApiError::new(
            ProblemKind::TemporarilyUnavailable,
            "the connection is changing under heavy concurrent use: retry in a moment",
        )
        .retry_after(2))
    }
}

impl IntegrationApi {
    /// Every token or session handed out is recorded: which key, which connection, when (never the
    /// token): logged, and counted per key and hour for the connection's history without waiting for
    /// a store write (see [`SessionReadLog`]).
    pub(super) fn record_handout(
        &self,
        caller: &Caller,
        connection: &ConnectionId,
        kind: &str,
        at: chrono::DateTime<chrono::Utc>,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        tracing::info!(
            key_prefix = caller.prefix(),
            at = %at,
            tenant = %caller.tenant(),
            connection = %connection,
            kind,
            expires_at = ?expires_at,
            "credential handed out"
        );
        self.reads.count(SessionReads::one(
            caller.tenant().clone(),
            connection.clone(),
            caller.prefix(),
            at,
        ));
    }
}

pub(super) fn disconnected() -> ApiError {
    ApiError::new(
        ProblemKind::ConnectionDisconnected,
        "this connection was disconnected and its tokens deleted: create a new connection",
    )
}

/// Refuses a connection whose status does not allow handing out tokens, saying what to do.
pub(super) fn usable(connection: &Connection) -> Result<(), ApiError> {
    match &connection.status() {
        ConnectionStatus::Connected | ConnectionStatus::RefreshFailing { .. } => Ok(()),
        ConnectionStatus::NotConnected => Err(ApiError::new(
            ProblemKind::NotConnected,
            "nobody has authorized this connection yet: open its connect link, or register credentials with POST /v1/connections/{id}/credentials",
        )),
        ConnectionStatus::ReconnectRequired { reason } => Err(ApiError::new(
            ProblemKind::ReconnectRequired,
            format!(
                "{} Ask POST /v1/connections/{{id}}/reconnect-link for a link.",
                reason.explain()
            ),
        )),
        ConnectionStatus::Disabled { reason } => Err(ApiError::new(
            ProblemKind::ConnectionDisabled,
            format!("{reason} Resolve it with the provider, then reconnect."),
        )),
        ConnectionStatus::Disconnected => Err(disconnected()),
    }
}

fn refresh_failed(class: ErrorClass) -> ApiError {
    match class {
        ErrorClass::RateLimited => ApiError::new(
            ProblemKind::RateLimited,
            "the provider is rate limiting token refreshes: retry later",
        )
        .retry_after(60),
        ErrorClass::TooEarly => ApiError::new(
            ProblemKind::TemporarilyUnavailable,
            "the provider does not allow a refresh yet: retry in a minute",
        )
        .retry_after(60),
        other => ApiError::new(
            ProblemKind::TemporarilyUnavailable,
            format!(
                "refreshing the token failed ({}); the broker retries on its own: try again later",
                other.as_str()
            ),
        )
        .retry_after(30),
    }
}

/// Whether `refused` is the access token of `credentials` (compared in constant time: it is a secret).
fn is_current_token(credentials: &Credentials, refused: Option<&AccessToken>) -> bool {
    match (credentials.token_set(), refused) {
        (Some(tokens), Some(refused)) => bool::from(
            tokens
                .access_token
                .expose()
                .as_bytes()
                .ct_eq(refused.expose().as_bytes()),
        ),
        _ => false,
    }
}

/// What holds a connection's next refresh back.
#[derive(Debug, Clone, Copy)]
enum RefreshLimit {
    /// The vault's version ceiling, paced per slot (`domain::write_budget`).
    VaultWriteBudget,
    /// A provider's limit per app and user (Exact Online), shared by all that user's connections.
    ProviderPerAppUser,
}

/// The Exact Online division a new connection must be bound to, when the caller names one.
fn requested_division(app: &OAuthApp, code: Option<i64>) -> Result<Option<i64>, ApiError> {
    let invalid = |detail: String| ApiError::new(ProblemKind::ValidationFailed, detail);
    match code {
        None => Ok(None),
        Some(_) if app.provider() != ProviderKind::ExactOnline => Err(invalid(format!(
            "exact_division applies to Exact Online connections only; app \"{}\" is for {}: leave it out",
            app.id,
            app.provider().display_name()
        ))),
        Some(code) if code > 0 => Ok(Some(code)),
        Some(code) => Err(invalid(format!(
            "exact_division {code} is not a division code: give the positive number Exact Online shows for the division"
        ))),
    }
}
