//! The refresh engine and the scheduled run against the provider simulators, on both store backends:
//! single flight across callers and "processes", fencing of a lease holder that outlived its lease,
//! crashes at every step, the known loss cases, months of simulated time, cool-down, and scale.

use async_trait::async_trait;
use broker_core::adapters::OutboxMailer;
use broker_core::api::{Caller, IntegrationApi};
use broker_core::backend::Backend as Stores;
use broker_core::clock::Clock;
use broker_core::context::BrokerContext;
use broker_core::domain::ErrorClass;
use broker_core::domain::*;
use broker_core::ids::{AppId, ConnectionId, TenantId, WriteId};
use broker_core::notify::{Notifier, NotifySettings};
use broker_core::ports::{Fence, TokenVault, VaultError};
use broker_core::providers::{Catalogue, HttpSettings, ProviderHttp, Providers};
use broker_core::refresh::app_user::AppUserHold;
use broker_core::refresh::{
    run_scheduled, EngineSettings, Outcome, OutcomeKind, RunSettings, TokenGrant, Trigger,
};
use broker_core::secret::{AccessToken, ClientSecret, RefreshToken};
use broker_core::CredentialKeeper;
use broker_tests::backends::Backend;
use chrono::{Duration, TimeZone, Utc};
use provider_simulators::{
    AcumaticaClientRegistration, AcumaticaRefreshPolicy, ClientRegistration, ExactUser,
    FaultAction, FaultRule, MintRequest, Provider, Simulator, SimulatorConfig, SimulatorHandle,
};
use std::sync::Arc;

const REDIRECT: &str = "http://127.0.0.1:9/oauth/callback";
const EXACT_CLIENT: &str = "exact-client";
const ACU_CLIENT: &str = "0b9d7a52-3f7e-4c55-9a3e-7d8f1c2b4e6a@Company";
const SECRET: &str = "client-secret-value";

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(broker_tests::backends::embedded()).await;
                }
            )*
        }
        mod aws {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(broker_tests::backends::aws().await).await;
                }
            )*
        }
    };
}

on_both_backends!(
    fifty_callers_and_a_scheduled_run_cause_exactly_one_refresh,
    a_lease_holder_that_outlives_its_lease_cannot_overwrite_and_no_token_is_spent_twice,
    a_refresh_that_outlives_a_disconnect_leaves_no_tokens_behind,
    a_crash_before_the_provider_call_ends_in_a_working_connection,
    a_crash_after_the_answer_before_the_vault_write_ends_in_reconnect_required_once,
    a_crash_after_the_vault_write_before_the_metadata_is_recovered,
    issue_then_500_on_a_single_use_token_is_not_retried_at_once_and_ends_in_one_clear_reconnect,
    a_dropped_connection_of_a_single_use_token_is_retried_later_not_at_once,
    an_idle_exact_connection_survives_ninety_days,
    acumatica_absolute_expiry_is_marked_ahead_and_ends_in_reconnect_required,
    acumatica_absolute_expiry_counts_from_the_latest_authorization,
    acumatica_sliding_expiry_stays_alive,
    acumatica_capped_sliding_expiry_is_warned_of_and_ends_at_its_cap,
    a_revoked_connection_is_not_retried_and_an_outage_is_cooled_down,
    one_exact_users_connections_stop_together_at_the_shared_daily_cap,
    failed_calls_across_one_users_connections_stop_before_exacts_block,
);

struct World {
    sim: SimulatorHandle,
    stores: Stores,
    clock: Arc<dyn Clock>,
    catalogue: Catalogue,
    tenant: TenantId,
}

fn settings() -> EngineSettings {
    EngineSettings {
        call_timeout: std::time::Duration::from_secs(5),
        wait_for_other_worker: std::time::Duration::from_secs(20),
        ..EngineSettings::default()
    }
}

impl World {
    async fn new(backend: Backend) -> Self {
        Self::with_catalogue(backend, Catalogue::built_in()).await
    }

    async fn with_catalogue(backend: Backend, mut catalogue: Catalogue) -> Self {
        let config = SimulatorConfig {
            start_time: Some(Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0).unwrap()),
            ..SimulatorConfig::default()
        };
        let sim = Simulator::start(config)
            .await
            .expect("the simulator starts");
        sim.register_exact_client(ClientRegistration {
            client_id: EXACT_CLIENT.into(),
            client_secret: SECRET.into(),
            redirect_uris: vec![REDIRECT.into()],
        });
        for country in ExactCountry::ALL {
            let canonical = format!("https://start.exactonline.{}", country.tld());
            catalogue
                .override_base_url(&canonical, &sim.exact_base(country.tld()))
                .unwrap();
        }
        let tenant = TenantId::parse("acme").unwrap();
        backend
            .store
            .insert_tenant(&Tenant::new(tenant.clone(), "Acme", Utc::now()).unwrap())
            .await
            .unwrap();
        let clock: Arc<dyn Clock> = Arc::new(broker_tests::clock::SimulatorClock(sim.clock()));
        let stores = Stores {
            store: backend.store.clone(),
            vault: backend.vault.clone(),
        };
        Self {
            sim,
            stores,
            clock,
            catalogue,
            tenant,
        }
    }

    /// A broker process: its own provider clients and engine (so its own in-process locks).
    fn process(&self, settings: EngineSettings) -> BrokerContext {
        let providers = Providers::new(
            self.catalogue.clone(),
            ProviderHttp::new(HttpSettings {
                total_timeout: std::time::Duration::from_secs(4),
                ..broker_tests::provider_http_settings()
            })
            .unwrap(),
            self.clock.clone(),
        );
        BrokerContext::new(
            self.stores.clone(),
            providers,
            self.clock.clone(),
            url::Url::parse("http://127.0.0.1:9").unwrap(),
            settings,
        )
    }

    async fn register_app(
        &self,
        id: &str,
        settings: ProviderSettings,
        client_id: &str,
    ) -> OAuthApp {
        let app = OAuthApp {
            tenant: self.tenant.clone(),
            id: AppId::parse(id).unwrap(),
            settings,
            client_id: client_id.into(),
            redirect_uri: RedirectUri::parse(REDIRECT).unwrap(),
            scopes: vec![],
            created_at: Utc::now(),
        };
        self.stores.store.put_app(&app).await.unwrap();
        self.stores
            .vault
            .put_client_secret(&self.tenant, &app.id, &ClientSecret::new(SECRET))
            .await
            .unwrap();
        app
    }

    async fn exact_app(&self) -> OAuthApp {
        self.register_app(
            "exact-nl",
            ProviderSettings::ExactOnline {
                country: ExactCountry::Netherlands,
            },
            EXACT_CLIENT,
        )
        .await
    }

    /// An Acumatica instance whose connected application expires refresh tokens by `policy`, and its
    /// app registration, which says so when it is not the default (absolute, 30 days).
    async fn acumatica_app(&self, policy: AcumaticaRefreshPolicy) -> OAuthApp {
        let days = |secs: i64| u32::try_from(secs / 86_400).unwrap();
        let refresh_tokens = match policy {
            AcumaticaRefreshPolicy::Sliding {
                sliding_secs,
                absolute_cap_secs,
            } => Some(AcumaticaRefreshTokens::Sliding {
                days: days(sliding_secs),
                absolute_days: absolute_cap_secs.map(days),
            }),
            AcumaticaRefreshPolicy::Absolute { lifetime_secs } if days(lifetime_secs) != 30 => {
                Some(AcumaticaRefreshTokens::Absolute {
                    days: days(lifetime_secs),
                })
            }
            _ => None,
        };
        self.sim
            .register_acumatica_client(
                "demo",
                AcumaticaClientRegistration {
                    client_id: ACU_CLIENT.into(),
                    client_secret: SECRET.into(),
                    redirect_uris: vec![REDIRECT.into()],
                    refresh_policy: policy,
                    rotate_refresh_tokens: true,
                },
            )
            .unwrap();
        let instance = ServiceUrl::parse(&self.sim.acumatica_instance_url("demo")).unwrap();
        self.register_app(
            "acumatica",
            ProviderSettings::Acumatica {
                instance_url: instance,
                tenant: "Company".into(),
                refresh_tokens,
            },
            ACU_CLIENT,
        )
        .await
    }

    /// A connected connection whose tokens the simulator issued just now.
    async fn connected(&self, app: &OAuthApp) -> Connection {
        let connection = Connection::new(
            self.tenant.clone(),
            app.id.clone(),
            app.provider(),
            Recipients::parse(&["ops@example.com"]).unwrap(),
            self.clock.now(),
        );
        self.stores
            .store
            .insert_connection(&connection, &[])
            .await
            .unwrap();
        self.authorized(app, connection).await
    }

    /// What the callback records when a person authorizes (again): a new grant, its tokens issued by
    /// the simulator just now.
    async fn authorized(&self, app: &OAuthApp, connection: Connection) -> Connection {
        let user = match app.provider() {
            ProviderKind::ExactOnline => "demo.user",
            ProviderKind::Acumatica => "admin",
            other => panic!("no minting for {other:?}"),
        };
        self.authorized_by(app, connection, user).await
    }

    /// An Exact connection authorized by the simulator's `user` and bound to that user and to
    /// `division`, as the callback binds it (`domain::binding`).
    async fn connected_as(&self, app: &OAuthApp, user: &str, division: i64) -> Connection {
        if user != "demo.user" {
            self.sim.add_exact_user(ExactUser {
                user_name: user.into(),
                full_name: String::new(),
                current_division: division,
                divisions: vec![division],
            });
        }
        let mut connection = Connection::new(
            self.tenant.clone(),
            app.id.clone(),
            app.provider(),
            Recipients::parse(&["ops@example.com"]).unwrap(),
            self.clock.now(),
        );
        connection.context = Some(ProviderContext::ExactOnline {
            base_url: ServiceUrl::parse("https://start.exactonline.nl").unwrap(),
            division,
            user_id: Some(format!("{user}-guid")),
            divisions: vec![ExactDivision {
                code: division,
                name: None,
            }],
        });
        self.stores
            .store
            .insert_connection(&connection, &[])
            .await
            .unwrap();
        self.authorized_by(app, connection, user).await
    }

    async fn authorized_by(
        &self,
        app: &OAuthApp,
        mut connection: Connection,
        user: &str,
    ) -> Connection {
        let (provider, location) = match app.provider() {
            ProviderKind::ExactOnline => (Provider::Exact, "nl"),
            ProviderKind::Acumatica => (Provider::Acumatica, "demo"),
            other => panic!("no minting for {other:?}"),
        };
        let minted = self
            .sim
            .mint_tokens(MintRequest {
                provider,
                location: location.into(),
                client_id: app.client_id.clone(),
                user: user.into(),
                scope: String::new(),
            })
            .unwrap();
        let now = self.clock.now();
        let ctx = self.process(settings());
        let rules = ctx.providers.rules(app);
        let tokens = TokenSet {
            access_token: AccessToken::new(minted.access_token),
            access_expires_at: minted.access_expires_at,
            refresh_token: Some(RefreshToken::new(minted.refresh_token)),
            refresh_expires_at: Some(minted.refresh_expires_at),
            scope: None,
            received_at: now,
        };
        let transition = connection
            .apply(StatusEvent::Authorized, Actor::EndUser(user.into()), now)
            .unwrap();
        connection.last_refresh_at = Some(now);
        connection.next_refresh_at =
            Some(rules.next_scheduled_refresh(now, tokens.refresh_expires_at));
        let keeper = CredentialKeeper::new(self.stores.store.clone(), self.stores.vault.clone());
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

    async fn current(&self, id: &ConnectionId) -> (Connection, Option<TokenSet>) {
        let connection = self.stores.store.get_connection(id).await.unwrap().unwrap();
        let keeper = CredentialKeeper::new(self.stores.store.clone(), self.stores.vault.clone());
        let tokens = keeper
            .current(&connection)
            .await
            .unwrap()
            .and_then(|c| c.token_set().cloned());
        (connection, tokens)
    }

    fn advance(&self, by: Duration) {
        self.sim.clock().advance(by);
    }

    fn max_presentations(&self) -> u32 {
        self.sim.max_presentations_of_any_refresh_token()
    }
}

fn on_demand() -> Trigger {
    Trigger::on_demand(Duration::seconds(60))
}

async fn fifty_callers_and_a_scheduled_run_cause_exactly_one_refresh(backend: Backend) {
    let world = World::new(backend).await;
    let app = world.exact_app().await;
    let connection = world.connected(&app).await;
    world.advance(Duration::seconds(700)); // the access token (600 s) has expired
    let before = world.sim.token_calls(Provider::Exact);
    // Two broker processes share the stores, each with its own engine; plus a third for the schedule.
    let (a, b, scheduler) = (
        world.process(settings()),
        world.process(settings()),
        world.process(settings()),
    );
    let mut tasks = Vec::new();
    for i in 0..50 {
        let ctx = if i % 2 == 0 { a.clone() } else { b.clone() };
        let id = connection.id.clone();
        tasks.push(tokio::spawn(async move {
            let report = ctx.engine.refresh(&id, on_demand()).await.unwrap();
            let tokens = ctx
                .engine
                .credentials(&report.connection)
                .await
                .unwrap()
                .unwrap();
            (
                report.outcome,
                tokens
                    .token_set()
                    .unwrap()
                    .access_token
                    .expose()
                    .to_string(),
            )
        }));
    }
    // The scheduled run sees the connection as due too.
    let mut due = world
        .stores
        .store
        .get_connection(&connection.id)
        .await
        .unwrap()
        .unwrap();
    due.next_refresh_at = Some(world.clock.now() - Duration::seconds(1));
    let _ = world
        .stores
        .store
        .save_connection(&due, Fence::Version, &[])
        .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    let summary = run_scheduled(
        scheduler.engine.clone(),
        world.stores.store.clone(),
        world.clock.clone(),
        deadline,
        &RunSettings {
            stop_margin: std::time::Duration::ZERO,
            ..RunSettings::default()
        },
    )
    .await;
    let mut tokens = std::collections::HashSet::new();
    let mut refreshed = 0;
    for task in tasks {
        let (outcome, token) = task.await.unwrap();
        refreshed += usize::from(outcome == Outcome::Refreshed);
        tokens.insert(token);
    }
    refreshed += summary.count(OutcomeKind::Refreshed);
    assert_eq!(
        world.sim.token_calls(Provider::Exact) - before,
        1,
        "the provider saw exactly one refresh"
    );
    assert_eq!(
        refreshed, 1,
        "one caller refreshed; the others used its result ({summary:?})"
    );
    assert_eq!(tokens.len(), 1, "every caller got the same access token");
    let token = tokens.into_iter().next().unwrap();
    assert!(
        world.sim.is_access_token_valid(&token),
        "the simulator accepts it"
    );
    assert_eq!(world.max_presentations(), 1);
}

async fn a_lease_holder_that_outlives_its_lease_cannot_overwrite_and_no_token_is_spent_twice(
    backend: Backend,
) {
    let world = World::new(backend).await;
    let app = world.exact_app().await;
    let connection = world.connected(&app).await;
    world.advance(Duration::seconds(700));
    // The slow worker's lease lasts 0.5 s but the provider takes 1.5 s to answer.
    world
        .sim
        .set_route_latency("exact.token", std::time::Duration::from_millis(1500));
    let slow = world.process(EngineSettings {
        retries_when_unavailable: 0,
        lease_margin: Duration::milliseconds(-4_500),
        ..settings()
    });
    let other = world.process(settings());
    let id = connection.id.clone();
    let slow_task = {
        let (slow, id) = (slow.clone(), id.clone());
        tokio::spawn(async move { slow.engine.refresh(&id, on_demand()).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    // The lease has expired; the other worker takes it over while the slow call is still running.
    let report = other.engine.refresh(&id, on_demand()).await.unwrap();
    let slow_report = slow_task.await.unwrap().unwrap();
    assert!(
        matches!(report.outcome, Outcome::Recovered | Outcome::AlreadyFresh),
        "{:?}",
        report.outcome
    );
    assert!(
        matches!(
            slow_report.outcome,
            Outcome::Recovered | Outcome::AlreadyFresh
        ),
        "{:?}",
        slow_report.outcome
    );
    assert_eq!(
        world.max_presentations(),
        1,
        "no refresh token was presented twice"
    );
    assert_eq!(world.sim.token_calls(Provider::Exact), 1);
    let (stored, tokens) = world.current(&id).await;
    assert_eq!(stored.status(), ConnectionStatus::Connected);
    assert!(stored.refresh_in_flight.is_none());
    assert!(world
        .sim
        .is_access_token_valid(tokens.unwrap().access_token.expose()));
}

/// A refresh still waiting for the provider when its lease ends and the connection is disconnected:
/// its late vault write is fenced off and deleted again, so no token outlives the disconnect.
async fn a_refresh_that_outlives_a_disconnect_leaves_no_tokens_behind(backend: Backend) {
    let world = World::new(backend).await;
    let app = world.exact_app().await;
    let connection = world.connected(&app).await;
    world.advance(Duration::seconds(700));
    world
        .sim
        .set_route_latency("exact.token", std::time::Duration::from_millis(1500));
    let slow = world.process(EngineSettings {
        retries_when_unavailable: 0,
        lease_margin: Duration::milliseconds(-4_500),
        ..settings()
    });
    let id = connection.id.clone();
    let slow_task = {
        let (slow, id) = (slow.clone(), id.clone());
        tokio::spawn(async move { slow.engine.refresh(&id, on_demand()).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (in_flight, _) = world.current(&id).await;
    let late_write = in_flight
        .refresh_in_flight
        .expect("the refresh recorded where it will write")
        .target;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // The slow worker's lease has expired: the disconnect takes it and deletes the tokens.
    let api = IntegrationApi::new(world.process(settings()));
    let caller = Caller {
        key: ApiKeyRecord::generate(
            world.tenant.clone(),
            "ops",
            ApiKeyScope::default(),
            world.clock.now(),
        )
        .record,
    };
    let view = api.disconnect(&caller, id.as_str()).await.unwrap();
    assert_eq!(view.status, "disconnected");
    let _ = slow_task.await.unwrap();
    let (stored, _) = world.current(&id).await;
    assert_eq!(stored.status(), ConnectionStatus::Disconnected);
    for pointer in [connection.credentials.clone().unwrap(), late_write] {
        assert!(
            world
                .stores
                .vault
                .get_credentials(&world.tenant, &id, &pointer)
                .await
                .unwrap()
                .is_none(),
            "{pointer:?} still holds tokens"
        );
    }
}

/// Wraps the provider grant: `Crash::BeforeCall` never reaches the provider, `Crash::AfterAnswer`
/// gets the answer and then never returns — as a worker that died at that point.
#[derive(Clone, Copy, PartialEq)]
enum Crash {
    BeforeCall,
    AfterAnswer,
}

struct CrashingGrant {
    inner: Arc<Providers>,
    crash: Crash,
}

#[async_trait]
impl TokenGrant for CrashingGrant {
    fn rules(&self, app: &OAuthApp) -> broker_core::refresh::RefreshRules {
        self.inner.rules(app)
    }
    async fn refresh(
        &self,
        app: &OAuthApp,
        secret: &ClientSecret,
        token: &RefreshToken,
    ) -> Result<broker_core::refresh::GrantedTokens, broker_core::refresh::GrantFailure> {
        if self.crash == Crash::AfterAnswer {
            let _ = self.inner.refresh(app, secret, token).await;
        }
        std::future::pending().await
    }
}

/// A vault whose credential writes land and then never return.
struct CrashAfterVaultWrite(Arc<dyn TokenVault>);

#[async_trait]
impl TokenVault for CrashAfterVaultWrite {
    async fn put_credentials(
        &self,
        t: &TenantId,
        c: &ConnectionId,
        s: VaultSlot,
        w: &WriteId,
        cr: &Credentials,
    ) -> Result<(), VaultError> {
        self.0.put_credentials(t, c, s, w, cr).await?;
        std::future::pending().await
    }
    async fn get_credentials(
        &self,
        t: &TenantId,
        c: &ConnectionId,
        p: &CredentialsPointer,
    ) -> Result<Option<Credentials>, VaultError> {
        self.0.get_credentials(t, c, p).await
    }
    async fn delete_credentials(&self, t: &TenantId, c: &ConnectionId) -> Result<(), VaultError> {
        self.0.delete_credentials(t, c).await
    }
    async fn put_client_secret(
        &self,
        t: &TenantId,
        a: &AppId,
        s: &ClientSecret,
    ) -> Result<(), VaultError> {
        self.0.put_client_secret(t, a, s).await
    }
    async fn get_client_secret(
        &self,
        t: &TenantId,
        a: &AppId,
    ) -> Result<Option<ClientSecret>, VaultError> {
        self.0.get_client_secret(t, a).await
    }
    async fn delete_client_secret(&self, t: &TenantId, a: &AppId) -> Result<(), VaultError> {
        self.0.delete_client_secret(t, a).await
    }
}

/// Runs a refresh that "dies" (its task is aborted) once it has recorded its in-flight marker and done
/// whatever the crash point allows.
async fn refresh_and_die(
    world: &World,
    id: &ConnectionId,
    engine: broker_core::refresh::RefreshEngine,
) {
    let engine = Arc::new(engine);
    let task = {
        let (engine, id) = (engine.clone(), id.clone());
        tokio::spawn(async move { engine.refresh(&id, Trigger::Scheduled).await })
    };
    // Wait until the marker is down (and, for the later crash points, the provider has answered).
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let c = world
            .stores
            .store
            .get_connection(id)
            .await
            .unwrap()
            .unwrap();
        if c.refresh_in_flight.is_some() && world.sim.token_calls(Provider::Exact) > 0 {
            break;
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    task.abort();
    let _ = task.await;
}

fn crashing_engine(
    world: &World,
    grant: Arc<dyn TokenGrant>,
    vault: Arc<dyn TokenVault>,
) -> broker_core::refresh::RefreshEngine {
    broker_core::refresh::RefreshEngine::new(
        world.stores.store.clone(),
        vault,
        grant,
        world.clock.clone(),
        settings(),
    )
}

async fn due_now(world: &World, id: &ConnectionId) {
    let mut c = world
        .stores
        .store
        .get_connection(id)
        .await
        .unwrap()
        .unwrap();
    c.next_refresh_at = Some(world.clock.now() - Duration::seconds(1));
    world
        .stores
        .store
        .save_connection(&c, Fence::Version, &[])
        .await
        .unwrap();
}

async fn a_crash_before_the_provider_call_ends_in_a_working_connection(backend: Backend) {
    let world = World::new(backend).await;
    let app = world.exact_app().await;
    let connection = world.connected(&app).await;
    world.advance(Duration::seconds(700));
    due_now(&world, &connection.id).await;
    let ctx = world.process(settings());
    let grant = Arc::new(CrashingGrant {
        inner: ctx.providers.clone(),
        crash: Crash::BeforeCall,
    });
    let engine = crashing_engine(&world, grant, world.stores.vault.clone());
    let engine = Arc::new(engine);
    let task = {
        let (engine, id) = (engine.clone(), connection.id.clone());
        tokio::spawn(async move { engine.refresh(&id, Trigger::Scheduled).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    task.abort();
    let (stuck, _) = world.current(&connection.id).await;
    assert!(
        stuck.refresh_in_flight.is_some(),
        "the marker was written before the call"
    );
    // While the dead worker's call could still be running, nobody presents its token.
    let early = ctx
        .engine
        .refresh(&connection.id, Trigger::Scheduled)
        .await
        .unwrap();
    assert_eq!(early.outcome, Outcome::Busy);
    world.advance(ctx.engine.settings().lease_ttl() + Duration::seconds(1));
    let report = ctx
        .engine
        .refresh(&connection.id, Trigger::Scheduled)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Refreshed);
    let (stored, tokens) = world.current(&connection.id).await;
    assert_eq!(stored.status(), ConnectionStatus::Connected);
    assert!(world
        .sim
        .is_access_token_valid(tokens.unwrap().access_token.expose()));
    assert_eq!(world.max_presentations(), 1);
}

async fn a_crash_after_the_answer_before_the_vault_write_ends_in_reconnect_required_once(
    backend: Backend,
) {
    let world = World::new(backend).await;
    let app = world.exact_app().await;
    let connection = world.connected(&app).await;
    world.advance(Duration::seconds(700));
    due_now(&world, &connection.id).await;
    let ctx = world.process(settings());
    let grant = Arc::new(CrashingGrant {
        inner: ctx.providers.clone(),
        crash: Crash::AfterAnswer,
    });
    refresh_and_die(
        &world,
        &connection.id,
        crashing_engine(&world, grant, world.stores.vault.clone()),
    )
    .await;
    assert_eq!(
        world.sim.token_calls(Provider::Exact),
        1,
        "the provider answered the dead worker"
    );
    world.advance(ctx.engine.settings().lease_ttl() + Duration::seconds(1));
    // The new pair died with the worker; the old refresh token is spent. Said once, clearly.
    let report = ctx
        .engine
        .refresh(&connection.id, Trigger::Scheduled)
        .await
        .unwrap();
    assert_eq!(
        report.outcome,
        Outcome::ReconnectRequired(ReconnectKind::RefreshInterrupted)
    );
    let (stored, _) = world.current(&connection.id).await;
    let ConnectionStatus::ReconnectRequired { reason } = &stored.status() else {
        panic!("{:?}", stored.status())
    };
    assert!(
        reason.explain().contains("interrupted"),
        "{}",
        reason.explain()
    );
    assert!(
        stored.next_refresh_at.is_none(),
        "out of the schedule: no retry loop"
    );
    let history = world
        .stores
        .store
        .list_transitions(&connection.id, broker_core::ports::PageRequest::first(50))
        .await
        .unwrap();
    assert!(
        history.items.last().unwrap().needs_notification(),
        "a notification is queued with the transition"
    );
    // Never a loop: later runs leave it alone.
    let again = ctx
        .engine
        .refresh(&connection.id, Trigger::Scheduled)
        .await
        .unwrap();
    assert_eq!(
        again.outcome,
        Outcome::NotUsable(StatusKind::ReconnectRequired)
    );
    assert_eq!(world.sim.token_calls(Provider::Exact), 2);
}

async fn a_crash_after_the_vault_write_before_the_metadata_is_recovered(backend: Backend) {
    let world = World::new(backend).await;
    let app = world.exact_app().await;
    let connection = world.connected(&app).await;
    world.advance(Duration::seconds(700));
    due_now(&world, &connection.id).await;
    let ctx = world.process(settings());
    let vault: Arc<dyn TokenVault> = Arc::new(CrashAfterVaultWrite(world.stores.vault.clone()));
    refresh_and_die(
        &world,
        &connection.id,
        crashing_engine(&world, ctx.providers.clone(), vault),
    )
    .await;
    let (stuck, old) = world.current(&connection.id).await;
    assert!(stuck.refresh_in_flight.is_some());
    assert!(old.is_some(), "the old credentials are intact");
    world.advance(ctx.engine.settings().lease_ttl() + Duration::seconds(1));
    let report = ctx
        .engine
        .refresh(&connection.id, Trigger::Scheduled)
        .await
        .unwrap();
    assert_eq!(
        report.outcome,
        Outcome::Recovered,
        "the stored answer is adopted"
    );
    let (stored, tokens) = world.current(&connection.id).await;
    assert_eq!(stored.status(), ConnectionStatus::Connected);
    assert!(stored.refresh_in_flight.is_none());
    assert!(world
        .sim
        .is_access_token_valid(tokens.unwrap().access_token.expose()));
    assert_eq!(
        world.sim.token_calls(Provider::Exact),
        1,
        "no second refresh was needed"
    );
    assert_eq!(world.max_presentations(), 1);
}

async fn issue_then_500_on_a_single_use_token_is_not_retried_at_once_and_ends_in_one_clear_reconnect(
    backend: Backend,
) {
    let world = World::new(backend).await;
    let app = world.exact_app().await;
    let lost = world.connected(&app).await;
    world.advance(Duration::seconds(700));
    world
        .sim
        .inject_fault(FaultRule::next("exact.token", 1, FaultAction::IssueThen500));
    let ctx = world.process(settings());
    let calls = world.sim.token_calls(Provider::Exact);
    let report = ctx.engine.refresh(&lost.id, on_demand()).await.unwrap();
    assert_eq!(
        report.outcome,
        Outcome::Failed(ErrorClass::ProviderUnavailable)
    );
    assert_eq!(
        world.sim.token_calls(Provider::Exact) - calls,
        1,
        "the spent token is not presented again at once"
    );
    let (stored, _) = world.current(&lost.id).await;
    assert!(
        matches!(stored.status(), ConnectionStatus::RefreshFailing { .. }),
        "{:?}",
        stored.status()
    );
    // The pair Exact issued never arrived and no public source says it honours the old token again:
    // the spaced retry learns it was spent, and the connection asks for a person, once.
    world.advance(Duration::minutes(3));
    let report = ctx.engine.refresh(&lost.id, on_demand()).await.unwrap();
    assert_eq!(
        report.outcome,
        Outcome::ReconnectRequired(ReconnectKind::RefreshTokenReused)
    );
    let report = ctx.engine.refresh(&lost.id, on_demand()).await.unwrap();
    assert!(matches!(report.outcome, Outcome::NotUsable(_)));
    assert_eq!(world.sim.token_calls(Provider::Exact) - calls, 2);
}

async fn a_dropped_connection_of_a_single_use_token_is_retried_later_not_at_once(backend: Backend) {
    let world = World::new(backend).await;
    let app = world.exact_app().await;
    let connection = world.connected(&app).await;
    world.advance(Duration::seconds(700));
    world
        .sim
        .inject_fault(FaultRule::next("exact.token", 1, FaultAction::Drop));
    let ctx = world.process(settings());
    let calls = world.sim.token_calls(Provider::Exact);
    let report = ctx
        .engine
        .refresh(&connection.id, on_demand())
        .await
        .unwrap();
    assert_eq!(
        report.outcome,
        Outcome::Failed(ErrorClass::ProviderUnavailable)
    );
    assert_eq!(world.sim.token_calls(Provider::Exact) - calls, 1);
    let next = report.connection.next_refresh_at.unwrap();
    assert!(
        next >= world.clock.now() + Duration::seconds(30),
        "the retry is spaced: {next}"
    );
    world.advance(Duration::minutes(2));
    let report = ctx
        .engine
        .refresh(&connection.id, on_demand())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Refreshed);
    let (_, tokens) = world.current(&connection.id).await;
    assert!(world
        .sim
        .is_access_token_valid(tokens.unwrap().access_token.expose()));
    assert_eq!(
        world.max_presentations(),
        1,
        "the dropped request never reached the token logic"
    );
}

/// Exact's refusal of a refresh within 570 s is undocumented: whatever shape it takes, the broker keeps
/// the connection and tries again later. The simulator's interval is set longer than the broker's, as
/// when the two clocks disagree, so the provider refuses a refresh the broker thought allowed.
async fn an_unrecognised_early_refusal_keeps_the_connection(status: u16, body: serde_json::Value) {
    let world = World::new(broker_tests::backends::embedded()).await;
    world.sim.update_knobs(|k| {
        k.exact_min_refresh_interval_secs = 900;
        k.exact_early_refresh_status = status;
        k.exact_early_refresh_body = body.clone();
    });
    let app = world.exact_app().await;
    let connection = world.connected(&app).await;
    world.advance(Duration::seconds(700));
    let ctx = world.process(settings());
    let report = ctx
        .engine
        .refresh(&connection.id, on_demand())
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, Outcome::Failed(_)),
        "{body}: {:?}",
        report.outcome
    );
    let (stored, tokens) = world.current(&connection.id).await;
    assert!(stored.status().is_usable(), "{body}: {:?}", stored.status());
    assert!(tokens.is_some(), "the tokens are kept");
    world.advance(Duration::seconds(300));
    let report = ctx
        .engine
        .refresh(&connection.id, on_demand())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Refreshed, "{body}");
    assert_eq!(report.connection.status(), ConnectionStatus::Connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_early_refusal_with_an_error_field_keeps_the_connection() {
    an_unrecognised_early_refusal_keeps_the_connection(
        400,
        serde_json::json!({"error": "invalid_request", "error_description": "Access token is not yet expired."}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_early_refusal_without_an_error_field_keeps_the_connection() {
    an_unrecognised_early_refusal_keeps_the_connection(
        401,
        serde_json::json!({"message": "Access denied."}),
    )
    .await;
}

/// Exact caps token calls per app and user per day: the engine stops at the catalogue's budget, below
/// the provider's cap, instead of being refused at it; the next UTC day it goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daily_token_call_budget_is_never_exceeded() {
    let mut catalogue = Catalogue::built_in();
    catalogue
        .merge_json(
            r#"{"definitions":[{"id":"exact_online.nl","extends":"exact_online.nl",
                "refresh":{"rotation":"single_use","expiry":{"kind":"idle","days":30},
                           "min_interval_secs":570,"max_token_calls_per_day":3}}]}"#,
        )
        .unwrap();
    let world = World::with_catalogue(broker_tests::backends::embedded(), catalogue).await;
    world.sim.update_knobs(|k| k.exact_daily_token_cap = 3);
    let app = world.exact_app().await;
    let connection = world.connected(&app).await;
    let ctx = world.process(settings());
    for _ in 0..3 {
        world.advance(Duration::seconds(600));
        let report = ctx
            .engine
            .refresh(&connection.id, on_demand())
            .await
            .unwrap();
        assert_eq!(report.outcome, Outcome::Refreshed);
    }
    let calls = world.sim.token_calls(Provider::Exact);
    world.advance(Duration::seconds(600));
    let report = ctx
        .engine
        .refresh(&connection.id, on_demand())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::CoolingDown);
    assert_eq!(
        world.sim.token_calls(Provider::Exact),
        calls,
        "no call made"
    );
    world.advance(Duration::hours(12));
    let report = ctx
        .engine
        .refresh(&connection.id, on_demand())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Refreshed, "a new day");
    assert_eq!(report.connection.status(), ConnectionStatus::Connected);
}

/// Runs the schedule once a day (as a stand-in for every few minutes) for `days` days.
async fn run_daily(
    world: &World,
    ctx: &BrokerContext,
    days: i64,
) -> Vec<broker_core::refresh::RunSummary> {
    let mut summaries = Vec::new();
    for _ in 0..days {
        world.advance(Duration::days(1));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let settings = RunSettings {
            stop_margin: std::time::Duration::ZERO,
            ..RunSettings::default()
        };
        summaries.push(
            run_scheduled(
                ctx.engine.clone(),
                world.stores.store.clone(),
                world.clock.clone(),
                deadline,
                &settings,
            )
            .await,
        );
    }
    summaries
}

async fn an_idle_exact_connection_survives_ninety_days(backend: Backend) {
    let world = World::new(backend).await;
    let app = world.exact_app().await;
    let connection = world.connected(&app).await;
    let ctx = world.process(settings());
    let summaries = run_daily(&world, &ctx, 90).await;
    let refreshed: usize = summaries
        .iter()
        .map(|s| s.count(OutcomeKind::Refreshed))
        .sum();
    assert!(
        (3..=4).contains(&refreshed),
        "kept alive every ~25 days, not more: {refreshed}"
    );
    let (stored, tokens) = world.current(&connection.id).await;
    assert_eq!(stored.status(), ConnectionStatus::Connected);
    let tokens = tokens.unwrap();
    assert!(
        tokens.refresh_expires_at.unwrap() > world.clock.now() + Duration::days(4),
        "never near idle expiry"
    );
    // Still good: an on-demand refresh now works against the simulator.
    world.advance(Duration::seconds(700));
    let report = ctx
        .engine
        .refresh(&connection.id, on_demand())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Refreshed);
    assert_eq!(world.max_presentations(), 1);
}

async fn acumatica_absolute_expiry_is_marked_ahead_and_ends_in_reconnect_required(
    backend: Backend,
) {
    let world = World::new(backend).await;
    let app = world
        .acumatica_app(AcumaticaRefreshPolicy::Absolute {
            lifetime_secs: 30 * 86_400,
        })
        .await;
    let connection = world.connected(&app).await;
    let start = world.clock.now();
    let ctx = world.process(settings());
    let summaries = run_daily(&world, &ctx, 25).await;
    assert!(summaries.iter().all(|s| s.errors == 0));
    let (stored, _) = world.current(&connection.id).await;
    assert_eq!(stored.status(), ConnectionStatus::Connected);
    let end = stored
        .refresh_expires_at
        .expect("the absolute end is known ahead, for the notifier");
    assert!(
        (end - (start + Duration::days(30))).num_minutes().abs() < 5,
        "{end} vs {start}"
    );
    run_daily(&world, &ctx, 10).await;
    let (stored, _) = world.current(&connection.id).await;
    let ConnectionStatus::ReconnectRequired { reason } = &stored.status() else {
        panic!("{:?}", stored.status())
    };
    assert_eq!(
        reason.kind,
        ReconnectKind::RefreshTokenExpired,
        "{reason:?}"
    );
}

/// Acumatica's 30 days run from each authorization: after a reconnect the new grant gets its own 30
/// days, not what was left of the connection's first.
async fn acumatica_absolute_expiry_counts_from_the_latest_authorization(backend: Backend) {
    let world = World::new(backend).await;
    let app = world
        .acumatica_app(AcumaticaRefreshPolicy::Absolute {
            lifetime_secs: 30 * 86_400,
        })
        .await;
    let connection = world.connected(&app).await;
    let ctx = world.process(settings());
    run_daily(&world, &ctx, 31).await;
    let (expired, _) = world.current(&connection.id).await;
    assert!(matches!(
        expired.status(),
        ConnectionStatus::ReconnectRequired { .. }
    ));
    let reconnected_at = world.clock.now();
    world.authorized(&app, expired).await;
    let summaries = run_daily(&world, &ctx, 25).await;
    assert!(summaries.iter().all(|s| s.errors == 0));
    assert!(
        summaries
            .iter()
            .map(|s| s.count(OutcomeKind::Refreshed))
            .sum::<usize>()
            > 0,
        "the new grant was refreshed: {summaries:?}"
    );
    let (stored, tokens) = world.current(&connection.id).await;
    assert_eq!(
        stored.status(),
        ConnectionStatus::Connected,
        "{:?}",
        stored.status()
    );
    let end = stored.refresh_expires_at.unwrap();
    assert!(
        (end - (reconnected_at + Duration::days(30)))
            .num_minutes()
            .abs()
            < 5,
        "{end} vs reconnected at {reconnected_at}"
    );
    assert_eq!(tokens.unwrap().refresh_expires_at, Some(end));
    run_daily(&world, &ctx, 10).await;
    let (stored, _) = world.current(&connection.id).await;
    assert!(matches!(
        stored.status(),
        ConnectionStatus::ReconnectRequired { .. }
    ));
}

/// Refresh and the notifier's sweep, once a day for `days` days; the days on which an email was
/// written to `outbox`.
async fn daily_with_notifier(
    world: &World,
    ctx: &BrokerContext,
    outbox: &std::path::Path,
    days: i64,
) -> Vec<i64> {
    let notifier = Notifier::new(
        ctx.clone(),
        Arc::new(OutboxMailer::new(outbox)),
        NotifySettings::new(EmailAddress::parse("broker@example.com").unwrap()),
    );
    let emails = || std::fs::read_dir(outbox).map(|d| d.count()).unwrap_or(0);
    let mut mailed = Vec::new();
    for day in 1..=days {
        let before = emails();
        run_daily(world, ctx, 1).await;
        notifier.daily().await.unwrap();
        if emails() > before {
            mailed.push(day);
        }
    }
    mailed
}

/// An instance whose connected application uses sliding expiration (registered so with the app):
/// refreshing keeps it alive for good, and nobody is told to reconnect at day 30.
async fn acumatica_sliding_expiry_stays_alive(backend: Backend) {
    let world = World::new(backend).await;
    let app = world
        .acumatica_app(AcumaticaRefreshPolicy::Sliding {
            sliding_secs: 15 * 86_400,
            absolute_cap_secs: None,
        })
        .await;
    let connection = world.connected(&app).await;
    let ctx = world.process(settings());
    let outbox = broker_tests::backends::temp_dir("outbox");
    let mailed = daily_with_notifier(&world, &ctx, &outbox, 90).await;
    assert!(mailed.is_empty(), "emails on days {mailed:?}");
    let (stored, tokens) = world.current(&connection.id).await;
    assert_eq!(
        stored.status(),
        ConnectionStatus::Connected,
        "{:?}",
        stored.status()
    );
    assert!(
        tokens.unwrap().refresh_expires_at.unwrap() > world.clock.now(),
        "the sliding window moved on"
    );
    world.advance(Duration::hours(2));
    let report = ctx
        .engine
        .refresh(&connection.id, on_demand())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Refreshed);
}

/// Sliding, but at most 45 days after authorization: once the window reaches the cap the end is
/// fixed, so the people on it are warned at the lead times (7 days, a reminder 3 days later, 1 day)
/// and told to reconnect when it ends (then reminded 3 days later).
async fn acumatica_capped_sliding_expiry_is_warned_of_and_ends_at_its_cap(backend: Backend) {
    let world = World::new(backend).await;
    let app = world
        .acumatica_app(AcumaticaRefreshPolicy::Sliding {
            sliding_secs: 15 * 86_400,
            absolute_cap_secs: Some(45 * 86_400),
        })
        .await;
    let connection = world.connected(&app).await;
    let ctx = world.process(settings());
    let outbox = broker_tests::backends::temp_dir("outbox");
    let mailed = daily_with_notifier(&world, &ctx, &outbox, 50).await;
    assert_eq!(mailed, vec![38, 41, 44, 45, 48]);
    let (stored, _) = world.current(&connection.id).await;
    assert!(
        matches!(stored.status(), ConnectionStatus::ReconnectRequired { .. }),
        "{:?}",
        stored.status()
    );
}

async fn a_revoked_connection_is_not_retried_and_an_outage_is_cooled_down(backend: Backend) {
    let world = World::new(backend).await;
    let app = world.exact_app().await;
    let ctx = world.process(settings());
    // Revoked: one attempt, then reconnect required and no more calls however often it is asked.
    let revoked = world.connected(&app).await;
    world.sim.revoke_grant(Provider::Exact, "demo.user", None);
    world.advance(Duration::seconds(700));
    let calls = world.sim.token_calls(Provider::Exact);
    for _ in 0..20 {
        let _ = ctx.engine.refresh(&revoked.id, on_demand()).await.unwrap();
        world.advance(Duration::minutes(10));
    }
    assert_eq!(
        world.sim.token_calls(Provider::Exact) - calls,
        1,
        "a revoked grant is asked once"
    );
    let (stored, _) = world.current(&revoked.id).await;
    assert!(
        matches!(stored.status(), ConnectionStatus::ReconnectRequired { .. }),
        "{:?}",
        stored.status()
    );
    // An outage: attempts per hour stay under the ceiling, whatever the callers do.
    let broken = world.connected(&app).await;
    world.advance(Duration::seconds(700));
    world.sim.inject_fault(FaultRule::always(
        "exact.token",
        FaultAction::Status {
            status: 503,
            body: "down".into(),
            content_type: Some("text/plain".into()),
        },
    ));
    let calls = world.sim.token_calls(Provider::Exact);
    for _ in 0..120 {
        let _ = ctx.engine.refresh(&broken.id, on_demand()).await.unwrap();
        world.advance(Duration::seconds(30));
    }
    let attempts = world.sim.token_calls(Provider::Exact) - calls;
    let ceiling = (ctx.engine.settings().max_failures_per_hour as u64)
        * (1 + u64::from(ctx.engine.settings().retries_when_unavailable));
    assert!(
        attempts <= ceiling,
        "{attempts} calls in an hour of outage (ceiling {ceiling})"
    );
    let (stored, _) = world.current(&broken.id).await;
    assert!(
        matches!(stored.status(), ConnectionStatus::RefreshFailing { .. }),
        "{:?}",
        stored.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_due_connections_are_refreshed_in_one_run_and_all_accounted_for() {
    let world = World::new(broker_tests::backends::embedded()).await;
    // One demo user stands in for a thousand customers here; Exact's cap is per user.
    world.sim.update_knobs(|k| k.exact_daily_token_cap = 10_000);
    let app = world.exact_app().await;
    let mut ids = Vec::new();
    for _ in 0..1000 {
        ids.push(world.connected(&app).await.id);
    }
    world.advance(Duration::days(26));
    world
        .sim
        .set_route_latency("exact.token", std::time::Duration::from_millis(50));
    let ctx = world.process(settings());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(600);
    let started = std::time::Instant::now();
    let summary = run_scheduled(
        ctx.engine.clone(),
        world.stores.store.clone(),
        world.clock.clone(),
        deadline,
        &RunSettings {
            stop_margin: std::time::Duration::ZERO,
            ..RunSettings::default()
        },
    )
    .await;
    println!(
        "1000 refreshes at 50 ms provider latency: {:?}, {summary:?}",
        started.elapsed()
    );
    assert_eq!(summary.taken, 1000);
    assert_eq!(
        summary.errors + summary.outcomes.values().sum::<usize>(),
        1000,
        "every connection accounted for"
    );
    assert_eq!(summary.count(OutcomeKind::Refreshed), 1000, "{summary:?}");
    assert_eq!(world.max_presentations(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_refreshes_never_trigger_oidc_provider_reuse_detection() {
    use broker_core::clock::SystemClock;
    use broker_tests::oidc::OidcProvider;
    const REDIRECT: &str = "http://127.0.0.1:9/oidc/callback";
    let server = tokio::task::spawn_blocking(|| OidcProvider::start(REDIRECT))
        .await
        .unwrap()
        .expect("oidc-provider starts");
    let mut catalogue = Catalogue::built_in();
    let definition = serde_json::json!({ "definitions": [{
        "id": "oidc-provider", "kind": "generic", "display_name": "oidc-provider",
        "issuer": server.issuer,
        "scopes": ["openid", "offline_access", "profile"],
        "authorize_params": { "prompt": "consent", "nonce": "{random}" },
        "lifetimes": { "access_token_secs": 3600 },
        "refresh": { "rotation": "single_use", "expiry": { "kind": "idle", "days": 1 } },
        "discovery": "userinfo"
    }]});
    catalogue.merge_json(&definition.to_string()).unwrap();
    let backend = broker_tests::backends::embedded();
    let stores = Stores {
        store: backend.store.clone(),
        vault: backend.vault.clone(),
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let providers = Providers::new(catalogue, broker_tests::provider_http(), clock.clone());
    let ctx = BrokerContext::new(
        stores.clone(),
        providers,
        clock.clone(),
        url::Url::parse("http://127.0.0.1:9").unwrap(),
        settings(),
    );
    let tenant = TenantId::parse("acme").unwrap();
    let app = OAuthApp {
        tenant: tenant.clone(),
        id: AppId::parse("oidc").unwrap(),
        settings: ProviderSettings::Generic {
            definition: "oidc-provider".into(),
        },
        client_id: server.client_id.clone(),
        redirect_uri: RedirectUri::parse(REDIRECT).unwrap(),
        scopes: vec![],
        created_at: Utc::now(),
    };
    stores.store.put_app(&app).await.unwrap();
    stores
        .vault
        .put_client_secret(
            &tenant,
            &app.id,
            &ClientSecret::new(server.client_secret.clone()),
        )
        .await
        .unwrap();
    // Authorize through the real server.
    let client = ctx
        .providers
        .oauth_client(&app, ClientSecret::new(server.client_secret.clone()))
        .unwrap();
    let authorized = server.authorize_with(&client).await.unwrap();
    let now = clock.now();
    let mut connection = Connection::new(
        tenant.clone(),
        app.id.clone(),
        ProviderKind::Generic,
        Recipients::default(),
        now,
    );
    stores
        .store
        .insert_connection(&connection, &[])
        .await
        .unwrap();
    let transition = connection
        .apply(
            StatusEvent::Authorized,
            Actor::EndUser("test-user".into()),
            now,
        )
        .unwrap();
    connection.last_refresh_at = Some(now);
    let keeper = CredentialKeeper::new(stores.store.clone(), stores.vault.clone());
    let target = CredentialKeeper::next_target(&connection);
    let mut connection = keeper
        .commit(
            connection,
            target,
            &Credentials::OAuth2(authorized.tokens.clone()),
            Fence::Version,
            &[transition],
        )
        .await
        .unwrap();
    // Pretend the access token expired, then 20 callers need a token at once, three times over.
    for round in 0..3 {
        connection.access_expires_at = Some(clock.now() - Duration::seconds(1));
        connection = stores
            .store
            .save_connection(&connection, Fence::Version, &[])
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (ctx, id) = (ctx.clone(), connection.id.clone());
            tasks.push(tokio::spawn(async move {
                ctx.engine.refresh(&id, on_demand()).await.unwrap().outcome
            }));
        }
        let mut refreshed = 0;
        for task in tasks {
            refreshed += usize::from(task.await.unwrap() == Outcome::Refreshed);
        }
        assert_eq!(
            refreshed, 1,
            "round {round}: one refresh for twenty callers"
        );
        connection = stores
            .store
            .get_connection(&connection.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(connection.status(), ConnectionStatus::Connected);
    }
    // The grant is intact: a reuse would have made oidc-provider revoke it, failing this refresh.
    let tokens = keeper
        .current(&connection)
        .await
        .unwrap()
        .unwrap()
        .token_set()
        .cloned()
        .unwrap();
    let refreshed = client.refresh(&tokens, None).await;
    assert!(
        refreshed.is_ok(),
        "the grant survived: {:?}",
        refreshed.err().map(|e| e.to_string())
    );
}

/// Short-lived access tokens that nobody asks for are not chased by the schedule: runs every five
/// minutes for two days of 60-s tokens refresh only to keep the refresh token alive (Acumatica with a
/// 2-day sliding window: at half the window, once), never once per access-token expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_schedule_keeps_the_refresh_token_alive_and_ignores_idle_short_access_tokens() {
    let world = World::new(broker_tests::backends::embedded()).await;
    world
        .sim
        .update_knobs(|k| k.acumatica_access_token_lifetime_secs = 60);
    let app = world
        .acumatica_app(AcumaticaRefreshPolicy::Sliding {
            sliding_secs: 2 * 86_400,
            absolute_cap_secs: None,
        })
        .await;
    let connection = world.connected(&app).await;
    let ctx = world.process(settings());
    let calls = world.sim.token_calls(Provider::Acumatica);
    let mut refreshed = 0;
    for _ in 0..(2 * 24 * 12) {
        world.advance(Duration::minutes(5));
        let summary = run_scheduled(
            ctx.engine.clone(),
            world.stores.store.clone(),
            world.clock.clone(),
            tokio::time::Instant::now() + std::time::Duration::from_secs(60),
            &RunSettings {
                stop_margin: std::time::Duration::ZERO,
                ..RunSettings::default()
            },
        )
        .await;
        refreshed += summary.count(OutcomeKind::Refreshed);
    }
    let token_calls = world.sim.token_calls(Provider::Acumatica) - calls;
    assert_eq!(u64::try_from(refreshed).unwrap(), token_calls);
    assert!(
        (1..=2).contains(&token_calls),
        "{token_calls} refreshes in two days of 60-s tokens nobody asked for"
    );
    let (stored, tokens) = world.current(&connection.id).await;
    assert_eq!(stored.status(), ConnectionStatus::Connected);
    assert!(tokens.unwrap().refresh_expires_at.unwrap() > world.clock.now());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_on_demand_refresh_that_cannot_finish_before_its_deadline_is_not_started() {
    use broker_core::refresh::Demand;
    let world = World::new(broker_tests::backends::embedded()).await;
    let app = world.exact_app().await;
    let connection = world.connected(&app).await;
    world.advance(Duration::seconds(700)); // expired
    let ctx = world.process(settings()); // 5-s calls, 4 s kept for the writes after them
    let calls = world.sim.token_calls(Provider::Exact);
    let soon = tokio::time::Instant::now() + std::time::Duration::from_secs(8);
    let trigger = Trigger::OnDemand(Demand::valid_for(Duration::seconds(60)).by(Some(soon)));
    let report = ctx.engine.refresh(&connection.id, trigger).await.unwrap();
    assert_eq!(report.outcome, Outcome::OutOfTime);
    assert_eq!(
        world.sim.token_calls(Provider::Exact),
        calls,
        "no call started"
    );
    assert!(
        report.connection.refresh_in_flight.is_none(),
        "no marker left"
    );
    // With time for a whole call, it refreshes.
    let later = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let trigger = Trigger::OnDemand(Demand::valid_for(Duration::seconds(60)).by(Some(later)));
    let report = ctx.engine.refresh(&connection.id, trigger).await.unwrap();
    assert_eq!(report.outcome, Outcome::Refreshed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_stops_taking_work_before_its_deadline_and_the_next_run_finishes_it() {
    let world = World::new(broker_tests::backends::embedded()).await;
    let app = world.exact_app().await;
    for _ in 0..40 {
        world.connected(&app).await;
    }
    world.advance(Duration::days(26));
    world
        .sim
        .set_route_latency("exact.token", std::time::Duration::from_millis(200));
    let ctx = world.process(settings());
    let settings = RunSettings {
        concurrency: 2,
        stop_margin: std::time::Duration::from_millis(500),
        ..RunSettings::default()
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(1500);
    let first = run_scheduled(
        ctx.engine.clone(),
        world.stores.store.clone(),
        world.clock.clone(),
        deadline,
        &settings,
    )
    .await;
    assert!(first.stopped_early, "{first:?}");
    assert!(first.taken < 40 && first.taken > 0, "{first:?}");
    assert_eq!(
        first.outcomes.values().sum::<usize>() + first.errors,
        first.taken,
        "all it took is accounted for"
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    let second = run_scheduled(
        ctx.engine.clone(),
        world.stores.store.clone(),
        world.clock.clone(),
        deadline,
        &settings,
    )
    .await;
    assert!(!second.stopped_early);
    assert_eq!(
        first.count(OutcomeKind::Refreshed) + second.count(OutcomeKind::Refreshed),
        40,
        "{first:?} {second:?}"
    );
}

/// Exact counts token calls per app and user, and one user may connect several divisions: their
/// connections share one daily budget, kept in the store, so two broker processes (each with its own
/// engine) stop together, while another user's connection goes on.
async fn one_exact_users_connections_stop_together_at_the_shared_daily_cap(backend: Backend) {
    let mut catalogue = Catalogue::built_in();
    catalogue
        .merge_json(
            r#"{"definitions":[{"id":"exact_online.nl","extends":"exact_online.nl",
                "refresh":{"rotation":"single_use","expiry":{"kind":"idle","days":30},
                           "min_interval_secs":570,"max_token_calls_per_day":180,
                           "max_token_calls_per_app_user_per_day":4,
                           "max_failed_token_calls_per_app_user_per_hour":8}}]}"#,
        )
        .unwrap();
    let world = World::with_catalogue(backend, catalogue).await;
    // Exact's own cap, scaled down with the broker's: the broker must stop at it, never be refused.
    world.sim.update_knobs(|k| k.exact_daily_token_cap = 4);
    let app = world.exact_app().await;
    let first = world.connected_as(&app, "demo.user", 100).await;
    let second = world.connected_as(&app, "demo.user", 200).await;
    let other_user = world.connected_as(&app, "other.user", 300).await;
    let (one, two) = (world.process(settings()), world.process(settings()));
    for _ in 0..2 {
        for (ctx, connection) in [(&one, &first), (&two, &second)] {
            world.advance(Duration::seconds(600));
            let report = ctx
                .engine
                .refresh(&connection.id, on_demand())
                .await
                .unwrap();
            assert_eq!(report.outcome, Outcome::Refreshed);
        }
    }
    let calls = world.sim.token_calls(Provider::Exact);
    let midnight = Utc.with_ymd_and_hms(2026, 3, 3, 0, 0, 0).unwrap();
    world.advance(Duration::seconds(600));
    let held = Outcome::AppUserLimited(AppUserHold::DailyCalls { until: midnight });
    for (ctx, connection) in [(&one, &first), (&two, &second)] {
        let report = ctx
            .engine
            .refresh(&connection.id, on_demand())
            .await
            .unwrap();
        assert_eq!(report.outcome, held, "each connection kept to its own 180");
    }
    // The scheduled run (here for the keep-alive refresh that falls due) holds it too, and looks
    // again when the day's budget is back.
    let (mut due, _) = world.current(&second.id).await;
    due.next_refresh_at = Some(world.clock.now());
    world
        .stores
        .store
        .save_connection(&due, Fence::Version, &[])
        .await
        .unwrap();
    let report = world
        .process(settings())
        .engine
        .refresh(&second.id, Trigger::Scheduled)
        .await
        .unwrap();
    assert_eq!(report.outcome, held);
    assert_eq!(report.connection.next_refresh_at, Some(midnight));
    assert_eq!(report.connection.status(), ConnectionStatus::Connected);
    assert_eq!(
        world.sim.token_calls(Provider::Exact),
        calls,
        "no call made past the shared cap"
    );
    let report = two
        .engine
        .refresh(&other_user.id, on_demand())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Refreshed, "another user goes on");
    world.advance(Duration::hours(12));
    let report = one.engine.refresh(&first.id, on_demand()).await.unwrap();
    assert_eq!(report.outcome, Outcome::Refreshed, "a new day");
}

/// Exact blocks an app for an hour after more than 10 failed token calls per app and user in an hour.
/// Two connections of one user each stay below their own ceiling (6 an hour) yet would pass 10
/// together; counted together in the store, they stop at 8, and the simulator never blocks the app.
async fn failed_calls_across_one_users_connections_stop_before_exacts_block(backend: Backend) {
    let world = World::new(backend).await;
    let app = world.exact_app().await;
    let first = world.connected_as(&app, "demo.user", 100).await;
    let second = world.connected_as(&app, "demo.user", 200).await;
    let other_user = world.connected_as(&app, "other.user", 300).await;
    // Exact refuses every refresh as too early (a 400 it counts toward its block).
    world
        .sim
        .update_knobs(|k| k.exact_min_refresh_interval_secs = 7_200);
    world.advance(Duration::seconds(600));
    let (one, two) = (world.process(settings()), world.process(settings()));
    let calls = world.sim.token_calls(Provider::Exact);
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        for (ctx, connection) in [(&one, &first), (&two, &second)] {
            world.advance(Duration::seconds(30));
            let report = ctx
                .engine
                .refresh(&connection.id, on_demand())
                .await
                .unwrap();
            outcomes.push(report.outcome);
        }
    }
    // All eight fell in one clock hour, so they count through the next one as well.
    let next_hour_end = Utc.with_ymd_and_hms(2026, 3, 2, 14, 0, 0).unwrap();
    let held = Outcome::AppUserLimited(AppUserHold::FailedCalls {
        until: next_hour_end,
    });
    let mut expected = vec![Outcome::Failed(ErrorClass::TooEarly); 8];
    expected.extend([held; 4]);
    assert_eq!(outcomes, expected);
    assert_eq!(world.sim.token_calls(Provider::Exact) - calls, 8);
    // Another user's connection still calls.
    let report = two
        .engine
        .refresh(&other_user.id, on_demand())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Failed(ErrorClass::TooEarly));
    // The failures stay counted into the next hour; two hours on, the user's connections call again,
    // and Exact never blocked the app.
    world
        .sim
        .update_knobs(|k| k.exact_min_refresh_interval_secs = 570);
    world.advance(Duration::hours(1));
    let report = one.engine.refresh(&first.id, on_demand()).await.unwrap();
    assert!(
        matches!(
            report.outcome,
            Outcome::AppUserLimited(AppUserHold::FailedCalls { .. })
        ),
        "{:?}",
        report.outcome
    );
    world.advance(Duration::hours(1));
    for (ctx, connection) in [(&one, &first), (&two, &second)] {
        let report = ctx
            .engine
            .refresh(&connection.id, on_demand())
            .await
            .unwrap();
        assert_eq!(report.outcome, Outcome::Refreshed);
    }
}
