//! Steps the scenario worlds of several test files take the same way: starting the simulators,
//! storing a tenant and its app registrations, building a broker process, storing what a callback
//! stores when a person authorizes, and reading a connection back with its tokens.

use broker_core::backend::Backend as Stores;
use broker_core::clock::Clock;
use broker_core::context::BrokerContext;
use broker_core::domain::{
    Actor, Connection, Credentials, ExactCountry, OAuthApp, ProviderKind, ProviderSettings,
    Recipients, ReconnectKind, ReconnectReason, RedirectUri, StatusEvent, StatusTransition, Tenant,
    TokenSet,
};
use broker_core::ids::{AppId, ConnectionId, TenantId};
use broker_core::ports::Fence;
use broker_core::providers::{Catalogue, ProviderHttp, Providers};
use broker_core::refresh::{run_scheduled, EngineSettings, RunSettings, RunSummary};
use broker_core::secret::{AccessToken, ClientSecret, RefreshToken};
use broker_core::CredentialKeeper;
use chrono::{DateTime, Utc};
use provider_simulators::{
    AcumaticaClientRegistration, AcumaticaRefreshPolicy, ClientRegistration, Knobs, MintRequest,
    MintedTokens, Provider, Simulator, SimulatorConfig, SimulatorHandle,
};
use std::sync::Arc;

/// Writes `tokens` to the connection's next vault slot and saves it with `transition`, fenced by its
/// version, as the callback does after an authorization.
pub async fn store_authorized(
    stores: &Stores,
    connection: Connection,
    tokens: TokenSet,
    transition: StatusTransition,
) -> Connection {
    let keeper = CredentialKeeper::new(stores.store.clone(), stores.vault.clone());
    let target = CredentialKeeper::next_target(&connection);
    keeper
        .commit(
            connection,
            target,
            &Credentials::OAuth2(tokens),
            Fence::Version,
            &[transition],
        )
        .await
        .unwrap()
}

/// The connection as stored, and the tokens its credentials pointer leads to.
pub async fn stored_with_tokens(
    stores: &Stores,
    id: &ConnectionId,
) -> (Connection, Option<TokenSet>) {
    let connection = stores.store.get_connection(id).await.unwrap().unwrap();
    let keeper = CredentialKeeper::new(stores.store.clone(), stores.vault.clone());
    let tokens = keeper
        .current(&connection)
        .await
        .unwrap()
        .and_then(|c| c.token_set().cloned());
    (connection, tokens)
}

/// The simulators on a clock starting at `start_time` (`None`: the real time, for processes that use
/// the system clock); `auto_consent` for flows that go through the provider's pages without a person.
pub async fn start_simulator(
    start_time: Option<DateTime<Utc>>,
    auto_consent: bool,
) -> SimulatorHandle {
    let mut config = SimulatorConfig {
        start_time,
        ..SimulatorConfig::default()
    };
    config.knobs.auto_consent = auto_consent;
    Simulator::start(config)
        .await
        .expect("the simulator starts")
}

/// An OAuth client at a simulator, with its one redirect URI.
pub fn registration(client_id: &str, client_secret: &str, redirect: &str) -> ClientRegistration {
    ClientRegistration {
        client_id: client_id.into(),
        client_secret: client_secret.into(),
        redirect_uris: vec![redirect.into()],
    }
}

/// A tenant stored under `id`, created `now`.
pub async fn add_tenant(stores: &Stores, id: &str, name: &str, now: DateTime<Utc>) -> TenantId {
    let tenant = TenantId::parse(id).unwrap();
    stores
        .store
        .insert_tenant(&Tenant::new(tenant.clone(), name, now).unwrap())
        .await
        .unwrap();
    tenant
}

/// An app registration with no extra scopes.
pub fn app(
    tenant: &TenantId,
    id: &str,
    settings: ProviderSettings,
    client_id: &str,
    redirect: &str,
    created_at: DateTime<Utc>,
) -> OAuthApp {
    OAuthApp {
        tenant: tenant.clone(),
        id: AppId::parse(id).unwrap(),
        settings,
        client_id: client_id.into(),
        redirect_uri: RedirectUri::parse(redirect).unwrap(),
        scopes: vec![],
        created_at,
    }
}

/// An Exact Online app in the Netherlands, the country most scenarios use.
pub fn exact_nl_app(
    tenant: &TenantId,
    id: &str,
    client_id: &str,
    redirect: &str,
    created_at: DateTime<Utc>,
) -> OAuthApp {
    let settings = ProviderSettings::ExactOnline {
        country: ExactCountry::Netherlands,
    };
    app(tenant, id, settings, client_id, redirect, created_at)
}

/// Stores the registration and its client secret, as registering an app through the API does.
pub async fn register_app(stores: &Stores, app: &OAuthApp, client_secret: &str) {
    stores.store.put_app(app).await.unwrap();
    stores
        .vault
        .put_client_secret(&app.tenant, &app.id, &ClientSecret::new(client_secret))
        .await
        .unwrap();
}

/// A broker process on `stores`: its own provider clients and engine (so its own in-process locks),
/// with a public address nothing listens on (these processes serve no browser).
pub fn process(
    stores: &Stores,
    catalogue: Catalogue,
    http: ProviderHttp,
    clock: Arc<dyn Clock>,
    settings: EngineSettings,
) -> BrokerContext {
    let providers = Providers::new(catalogue, http, clock.clone());
    BrokerContext::new(
        stores.clone(),
        providers,
        clock,
        reqwest::Url::parse("http://127.0.0.1:9").unwrap(),
        settings,
    )
}

/// One scheduled run of `ctx`'s engine over its store, given `within` of real time.
pub async fn run_scheduled_within(
    ctx: &BrokerContext,
    within: std::time::Duration,
    settings: &RunSettings,
) -> RunSummary {
    let deadline = tokio::time::Instant::now() + within;
    run_scheduled(
        ctx.engine.clone(),
        ctx.backend.store.clone(),
        ctx.clock.clone(),
        deadline,
        settings,
    )
    .await
}

/// Tokens a simulator minted, as the broker keeps them when it received them `now`.
pub fn token_set(minted: MintedTokens, now: DateTime<Utc>) -> TokenSet {
    TokenSet {
        access_token: AccessToken::new(minted.access_token),
        access_expires_at: minted.access_expires_at,
        refresh_token: Some(RefreshToken::new(minted.refresh_token)),
        refresh_expires_at: Some(minted.refresh_expires_at),
        scope: None,
        received_at: now,
    }
}

/// What the refresh engine records when the provider answers `invalid_grant`.
pub fn grant_revoked() -> StatusEvent {
    StatusEvent::ReconnectNeeded(ReconnectReason::new(
        ReconnectKind::GrantRevoked,
        "invalid_grant",
    ))
}

/// Records `event`, a status only a person can end, as `actor` (the refresh engine) does: nothing is
/// scheduled for the connection until someone acts.
pub fn waits_for_person(
    connection: &mut Connection,
    event: StatusEvent,
    actor: &str,
    now: DateTime<Utc>,
) -> StatusTransition {
    let transition = connection
        .apply(event, Actor::System(actor.into()), now)
        .unwrap();
    connection.next_refresh_at = None;
    transition
}

/// Moves the connection to "needs a reconnect", as the refresh engine does on `invalid_grant`.
pub fn revoke_grant(
    connection: &mut Connection,
    actor: &str,
    now: DateTime<Utc>,
) -> StatusTransition {
    waits_for_person(connection, grant_revoked(), actor, now)
}

/// A new connection of `app`, stored, with ops as the one recipient of its notices.
pub async fn new_connection(stores: &Stores, app: &OAuthApp, now: DateTime<Utc>) -> Connection {
    let connection = Connection::new(
        app.tenant.clone(),
        app.id.clone(),
        app.provider(),
        Recipients::parse(&["ops@example.com"]).unwrap(),
        now,
    );
    stores
        .store
        .insert_connection(&connection, &[])
        .await
        .unwrap();
    connection
}

/// Tokens the simulator issues `user` for `app`'s client at `location` (an Exact Online country's
/// top-level domain or an Acumatica instance), as if that user had just authorized.
pub fn mint(sim: &SimulatorHandle, app: &OAuthApp, location: &str, user: &str) -> MintedTokens {
    let provider = match app.provider() {
        ProviderKind::ExactOnline => Provider::Exact,
        ProviderKind::Acumatica => Provider::Acumatica,
        other => panic!("the simulators mint no tokens for {other:?}"),
    };
    sim.mint_tokens(MintRequest {
        provider,
        location: location.into(),
        client_id: app.client_id.clone(),
        user: user.into(),
        scope: String::new(),
    })
    .expect("the simulator mints tokens for a registered client")
}

/// What the callback records when `user` authorizes: the connection connected with `tokens`, refreshed
/// when they were received and due again at `next_refresh_at`.
pub async fn authorized(
    stores: &Stores,
    mut connection: Connection,
    user: &str,
    tokens: TokenSet,
    next_refresh_at: DateTime<Utc>,
) -> Connection {
    let now = tokens.received_at;
    let transition = connection
        .apply(StatusEvent::Authorized, Actor::EndUser(user.into()), now)
        .unwrap();
    connection.last_refresh_at = Some(now);
    connection.next_refresh_at = Some(next_refresh_at);
    store_authorized(stores, connection, tokens, transition).await
}

/// A connected application at an Acumatica instance, rotating refresh tokens and expiring them by
/// `policy`.
pub fn acumatica_registration(
    client_id: &str,
    client_secret: &str,
    redirect: &str,
    policy: AcumaticaRefreshPolicy,
) -> AcumaticaClientRegistration {
    AcumaticaClientRegistration {
        client_id: client_id.into(),
        client_secret: client_secret.into(),
        redirect_uris: vec![redirect.into()],
        refresh_policy: policy,
        rotate_refresh_tokens: true,
    }
}

/// The simulators as the browser-driven worlds use them: started at `start` with automatic consent
/// (and `knobs`), one client each at Twinfield and Exact Online (id, secret) and `acumatica` at the
/// `demo` instance, all sending people back to `redirect`.
pub async fn simulators_with_clients(
    start: DateTime<Utc>,
    knobs: impl FnOnce(&mut Knobs),
    redirect: &str,
    twinfield: (&str, &str),
    exact: (&str, &str),
    acumatica: AcumaticaClientRegistration,
) -> SimulatorHandle {
    let mut config = SimulatorConfig {
        start_time: Some(start),
        ..SimulatorConfig::default()
    };
    config.knobs.auto_consent = true;
    knobs(&mut config.knobs);
    let sim = Simulator::start(config)
        .await
        .expect("the simulator starts");
    sim.register_twinfield_client(registration(twinfield.0, twinfield.1, redirect));
    sim.register_exact_client(registration(exact.0, exact.1, redirect));
    sim.register_acumatica_client("demo", acumatica)
        .expect("the demo instance exists");
    sim
}

/// The clients the API and provider-client tests register at the simulators.
pub mod demo_clients {
    pub const REDIRECT: &str = "http://localhost:9/callback";
    pub const TW_ID: &str = "tw-client";
    pub const TW_SECRET: &str = "tw-secret-value";
    pub const EX_ID: &str = "ex-client";
    pub const EX_SECRET: &str = "ex-secret-value";
    pub const ACU_ID: &str = "0b9d7a52-3f7e-4c55-9a3e-7d8f1c2b4e6a@Company";
    pub const ACU_SECRET: &str = "acu-secret-value";
}

/// The simulators with the [`demo_clients`] registered, consenting automatically, from noon on a
/// Monday (so Exact's daily limits never roll over during a test); `knobs` set before they start.
pub async fn demo_simulators(knobs: impl FnOnce(&mut Knobs)) -> SimulatorHandle {
    use demo_clients::*;
    let start = chrono::TimeZone::with_ymd_and_hms(&Utc, 2025, 6, 2, 12, 0, 0).unwrap();
    let policy = AcumaticaRefreshPolicy::default();
    let acumatica = acumatica_registration(ACU_ID, ACU_SECRET, REDIRECT, policy);
    let (twinfield, exact) = ((TW_ID, TW_SECRET), (EX_ID, EX_SECRET));
    simulators_with_clients(start, knobs, REDIRECT, twinfield, exact, acumatica).await
}

/// An integration API caller of `tenant` holding a full-access key (named "ops") made `now`.
pub fn ops_caller(tenant: &TenantId, now: DateTime<Utc>) -> broker_core::api::Caller {
    let key = broker_core::domain::ApiKeyRecord::generate(
        tenant.clone(),
        "ops",
        broker_core::domain::ApiKeyScope::default(),
        now,
    );
    broker_core::api::Caller { key: key.record }
}
