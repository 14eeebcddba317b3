//! The fixture every benchmark uses: the provider simulators on a controllable clock, one tenant with
//! an Exact Online app, and connections seeded straight into the stores (minted in process, no HTTP).

use broker_core::backend::Backend as Stores;
use broker_core::clock::Clock;
use broker_core::context::BrokerContext;
use broker_core::domain::*;
use broker_core::ids::TenantId;
use broker_core::providers::Catalogue;
use broker_core::refresh::{EngineSettings, TokenGrant};
use chrono::{DateTime, TimeZone, Utc};
use provider_simulators::SimulatorHandle;
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
        let sim = broker_tests::world::start_simulator(start_time, false).await;
        // One demo user stands in for every customer here, and Exact's daily cap is per user.
        sim.update_knobs(|k| k.exact_daily_token_cap = u32::MAX);
        sim.register_exact_client(broker_tests::world::registration(
            EXACT_CLIENT,
            SECRET,
            REDIRECT,
        ));
        let catalogue = broker_tests::providers::catalogue_aimed_at(&sim);
        let tenant = broker_tests::world::add_tenant(&stores, "acme", "Acme", Utc::now()).await;
        let clock: Arc<dyn Clock> = Arc::new(broker_tests::clock::SimulatorClock(sim.clock()));
        let app = broker_tests::world::exact_nl_app(
            &tenant,
            "exact-nl",
            EXACT_CLIENT,
            REDIRECT,
            Utc::now(),
        );
        broker_tests::world::register_app(&stores, &app, SECRET).await;
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
        let (stores, catalogue) = (&self.stores, self.catalogue.clone());
        let http = broker_tests::provider_http();
        broker_tests::world::process(stores, catalogue, http, self.clock.clone(), settings)
    }

    /// `n` connected Exact connections with tokens the simulator issued just now, written `parallel`
    /// at a time straight through the store and the credential keeper.
    pub async fn seed(&self, n: usize, parallel: usize) -> anyhow::Result<Vec<Connection>> {
        let ctx = self.process(EngineSettings::default());
        let rules = ctx.providers.rules(&self.app);
        let mut out = Vec::with_capacity(n);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..n {
            if tasks.len() >= parallel.max(1) {
                out.push(tasks.join_next().await.unwrap()?);
            }
            let minted = broker_tests::world::mint(&self.sim, &self.app, "nl", "demo.user");
            let now = self.clock.now();
            let tokens = broker_tests::world::token_set(minted, now);
            let next = rules.next_scheduled_refresh(now, tokens.refresh_expires_at);
            let (stores, app) = (self.stores.clone(), self.app.clone());
            tasks.spawn(async move {
                let connection = broker_tests::world::new_connection(&stores, &app, now).await;
                broker_tests::world::authorized(&stores, connection, "demo.user", tokens, next)
                    .await
            });
        }
        while let Some(done) = tasks.join_next().await {
            out.push(done?);
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
