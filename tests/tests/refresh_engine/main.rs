//! The refresh engine and the scheduled run against the provider simulators, on both store backends:
//! single flight across callers and "processes", fencing of a lease holder that outlived its lease,
//! crashes at every step, the known loss cases, months of simulated time, cool-down, and scale.

use async_trait::async_trait;
use broker_core::adapters::OutboxMailer;
use broker_core::api::IntegrationApi;
use broker_core::backend::Backend as Stores;
use broker_core::clock::Clock;
use broker_core::context::BrokerContext;
use broker_core::domain::ErrorClass;
use broker_core::domain::*;
use broker_core::ids::{ConnectionId, TenantId};
use broker_core::notify::{Notifier, NotifySettings};
use broker_core::ports::{Fence, TokenVault};
use broker_core::providers::{Catalogue, HttpSettings, ProviderHttp, Providers};
use broker_core::refresh::app_user::AppUserHold;
use broker_core::refresh::{
    EngineSettings, Outcome, OutcomeKind, RunSettings, TokenGrant, Trigger,
};
use broker_core::secret::{ClientSecret, RefreshToken};
use broker_core::CredentialKeeper;
use broker_tests::backends::Backend;
use chrono::{Duration, TimeZone, Utc};
use provider_simulators::{
    AcumaticaRefreshPolicy, ExactUser, FaultAction, FaultRule, Provider, SimulatorHandle,
};
use std::sync::Arc;

mod crashes;
mod exact_limits;
mod lifetimes;
mod runs;
mod single_flight;

const REDIRECT: &str = "http://127.0.0.1:9/oauth/callback";
const EXACT_CLIENT: &str = "exact-client";
const ACU_CLIENT: &str = "0b9d7a52-3f7e-4c55-9a3e-7d8f1c2b4e6a@Company";
const SECRET: &str = "client-secret-value";

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
        let start = Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0).unwrap();
        let sim = broker_tests::world::start_simulator(Some(start), false).await;
        sim.register_exact_client(broker_tests::world::registration(
            EXACT_CLIENT,
            SECRET,
            REDIRECT,
        ));
        for country in ExactCountry::ALL {
            let canonical = format!("https://start.exactonline.{}", country.tld());
            catalogue
                .override_base_url(&canonical, &sim.exact_base(country.tld()))
                .unwrap();
        }
        let stores = backend.stores();
        let tenant = broker_tests::world::add_tenant(&stores, "acme", "Acme", Utc::now()).await;
        let clock: Arc<dyn Clock> = Arc::new(broker_tests::clock::SimulatorClock(sim.clock()));
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
        let http = ProviderHttp::new(HttpSettings {
            total_timeout: std::time::Duration::from_secs(4),
            ..broker_tests::provider_http_settings()
        })
        .unwrap();
        let (stores, catalogue) = (&self.stores, self.catalogue.clone());
        broker_tests::world::process(stores, catalogue, http, self.clock.clone(), settings)
    }

    async fn register_app(
        &self,
        id: &str,
        settings: ProviderSettings,
        client_id: &str,
    ) -> OAuthApp {
        let now = Utc::now();
        let app = broker_tests::world::app(&self.tenant, id, settings, client_id, REDIRECT, now);
        broker_tests::world::register_app(&self.stores, &app, SECRET).await;
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
                broker_tests::world::acumatica_registration(ACU_CLIENT, SECRET, REDIRECT, policy),
            )
            .unwrap();
        let instance = ServiceUrl::parse(&self.sim.acumatica_instance_url("demo")).unwrap();
        self.register_app(
            "acumatica",
            ProviderSettings::Acumatica {
                instance_url: instance,
                tenant: "Company".into(),
                refresh_tokens,
                instance_per_connection: false,
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
        connection: Connection,
        user: &str,
    ) -> Connection {
        let location = match app.provider() {
            ProviderKind::Acumatica => "demo",
            _ => "nl",
        };
        let minted = broker_tests::world::mint(&self.sim, app, location, user);
        let now = self.clock.now();
        let rules = self.process(settings()).providers.rules(app);
        let tokens = broker_tests::world::token_set(minted, now);
        let next = rules.next_scheduled_refresh(now, tokens.refresh_expires_at);
        broker_tests::world::authorized(&self.stores, connection, user, tokens, next).await
    }

    /// A world with an Exact app and a connection of it whose access token (600 s) has expired.
    async fn with_expired_exact_token(backend: Backend) -> (Self, Connection) {
        let world = Self::new(backend).await;
        let app = world.exact_app().await;
        let connection = world.connected(&app).await;
        world.advance(Duration::seconds(700));
        (world, connection)
    }

    /// Saves `c` as it is, fenced by its version, with no transition.
    async fn save(&self, c: &Connection) -> Connection {
        self.stores
            .store
            .save_connection(c, Fence::Version, &[])
            .await
            .unwrap()
    }

    async fn current(&self, id: &ConnectionId) -> (Connection, Option<TokenSet>) {
        broker_tests::world::stored_with_tokens(&self.stores, id).await
    }

    fn advance(&self, by: Duration) {
        self.sim.clock().advance(by);
    }

    fn max_presentations(&self) -> u32 {
        self.sim.max_presentations_of_any_refresh_token()
    }
}

/// A scheduled run that uses all the time it is given.
fn whole_run() -> RunSettings {
    RunSettings {
        stop_margin: std::time::Duration::ZERO,
        ..RunSettings::default()
    }
}

/// The outcome of one refresh of `id` by `ctx`'s engine.
async fn refresh(ctx: &BrokerContext, id: &ConnectionId, trigger: Trigger) -> Outcome {
    ctx.engine.refresh(id, trigger).await.unwrap().outcome
}

fn on_demand() -> Trigger {
    Trigger::on_demand(Duration::seconds(60))
}
