//! The fixture every benchmark uses: the provider simulators on a controllable clock, one tenant with
//! an Exact Online app, and connections seeded straight into the stores (minted in process, no HTTP).

use broker_core::backend::Backend as Stores;
use broker_core::clock::Clock;
use broker_core::context::BrokerContext;
use broker_core::domain::*;
use broker_core::ids::{AppId, TenantId};
use broker_core::ports::Fence;
use broker_core::providers::{Catalogue, Providers};
use broker_core::refresh::{EngineSettings, TokenGrant};
use broker_core::secret::{AccessToken, ClientSecret, RefreshToken};
use broker_core::CredentialKeeper;
use chrono::{DateTime, TimeZone, Utc};
use provider_simulators::{
    ClientRegistration, MintRequest, Provider, Simulator, SimulatorConfig, SimulatorHandle,
};
use std::sync::Arc;

pub const REDIRECT: &str = "http://127.0.0.1:9/oauth/callback";
pub const EXACT_CLIENT: &str = "exact-client";
pub const SECRET: &str = "client-secret-value";

pub struct World {
    pub sim: SimulatorHandle,
    pub stores: Stores,
    pub clock: Arc<dyn Clock>,
    pub catalogue: Catalogue,
    pub tenant: TenantId,
    pub app: OAuthApp,
}

impl World {
    pub async fn new(stores: Stores) -> anyhow::Result<Self> {
        Self::starting_at(
            stores,
            Some(Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0).unwrap()),
        )
        .await
    }

    /// `None`: the simulator's clock starts at the real time (for processes that use the system clock).
    pub async fn starting_at(
        stores: Stores,
        start_time: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Self> {
        let config = SimulatorConfig {
            start_time,
            ..SimulatorConfig::default()
        };
        let sim = Simulator::start(config).await?;
        // One demo user stands in for every customer here, and Exact's daily cap is per user.
        sim.update_knobs(|k| k.exact_daily_token_cap = u32::MAX);
        sim.register_exact_client(ClientRegistration {
            client_id: EXACT_CLIENT.into(),
            client_secret: SECRET.into(),
            redirect_uris: vec![REDIRECT.into()],
        });
        let catalogue = broker_tests::providers::catalogue_aimed_at(&sim);
        let tenant = TenantId::parse("acme").unwrap();
        stores
            .store
            .insert_tenant(&Tenant::new(tenant.clone(), "Acme", Utc::now()).unwrap())
            .await?;
        let clock: Arc<dyn Clock> = Arc::new(broker_tests::clock::SimulatorClock(sim.clock()));
        let app = OAuthApp {
            tenant: tenant.clone(),
            id: AppId::parse("exact-nl").unwrap(),
            settings: ProviderSettings::ExactOnline {
                country: ExactCountry::Netherlands,
            },
            client_id: EXACT_CLIENT.into(),
            redirect_uri: RedirectUri::parse(REDIRECT).unwrap(),
            scopes: vec![],
            created_at: Utc::now(),
        };
        stores.store.put_app(&app).await?;
        stores
            .vault
            .put_client_secret(&tenant, &app.id, &ClientSecret::new(SECRET))
            .await?;
        Ok(Self {
            sim,
            stores,
            clock,
            catalogue,
            tenant,
            app,
        })
    }

    /// A broker process: its own provider clients, engine and locks.
    pub fn process(&self, settings: EngineSettings) -> BrokerContext {
        let providers = Providers::new(
            self.catalogue.clone(),
            broker_tests::provider_http(),
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

    /// `n` connected Exact connections with tokens the simulator issued just now, written `parallel`
    /// at a time straight through the store and the credential keeper.
    pub async fn seed(&self, n: usize, parallel: usize) -> anyhow::Result<Vec<Connection>> {
        let ctx = self.process(EngineSettings::default());
        let rules = ctx.providers.rules(&self.app);
        let keeper = Arc::new(CredentialKeeper::new(
            self.stores.store.clone(),
            self.stores.vault.clone(),
        ));
        let mut out = Vec::with_capacity(n);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..n {
            if tasks.len() >= parallel.max(1) {
                out.push(tasks.join_next().await.unwrap()??);
            }
            let minted = self.sim.mint_tokens(MintRequest {
                provider: Provider::Exact,
                location: "nl".into(),
                client_id: EXACT_CLIENT.into(),
                user: "demo.user".into(),
                scope: String::new(),
            })?;
            let now = self.clock.now();
            let tokens = TokenSet {
                access_token: AccessToken::new(minted.access_token),
                access_expires_at: minted.access_expires_at,
                refresh_token: Some(RefreshToken::new(minted.refresh_token)),
                refresh_expires_at: Some(minted.refresh_expires_at),
                scope: None,
                received_at: now,
            };
            let next = rules.next_scheduled_refresh(now, tokens.refresh_expires_at);
            let (store, keeper, tenant, app) = (
                self.stores.store.clone(),
                keeper.clone(),
                self.tenant.clone(),
                self.app.clone(),
            );
            tasks.spawn(async move {
                let mut connection = Connection::new(
                    tenant,
                    app.id.clone(),
                    app.provider(),
                    Recipients::parse(&["ops@example.com"]).unwrap(),
                    now,
                );
                store.insert_connection(&connection, &[]).await?;
                let transition = connection
                    .apply(
                        StatusEvent::Authorized,
                        Actor::EndUser("demo.user".into()),
                        now,
                    )
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                connection.last_refresh_at = Some(now);
                connection.next_refresh_at = Some(next);
                let target = CredentialKeeper::next_target(&connection);
                let saved = keeper
                    .commit(
                        connection,
                        target,
                        &Credentials::OAuth2(tokens),
                        Fence::Version,
                        &[transition],
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                anyhow::Ok(saved)
            });
        }
        while let Some(done) = tasks.join_next().await {
            out.push(done??);
        }
        Ok(out)
    }
}

pub fn embedded_stores() -> Stores {
    let backend = broker_tests::backends::embedded();
    Stores {
        store: backend.store,
        vault: backend.vault,
    }
}
