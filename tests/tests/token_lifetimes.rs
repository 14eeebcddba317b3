//! One refresh per expiry, whatever the provider's access-token lifetime: a real OpenID Connect server
//! (oidc-provider, npm) issuing 60-, 30- and 15-second access tokens with refresh-token rotation and
//! reuse detection that revokes the whole grant. Two broker processes (two contexts, two HTTP routers)
//! share one backend; after each expiry, a burst of concurrent session calls must make exactly one
//! refresh at the provider, and every call must get a token the provider accepts. On both backends.

use broker_core::api::IntegrationApi;
use broker_core::backend::Backend as Stores;
use broker_core::clock::{Clock, SystemClock};
use broker_core::context::BrokerContext;
use broker_core::domain::*;
use broker_core::refresh::EngineSettings;
use broker_tests::backends::Backend;
use broker_tests::oidc::{GrantCounts, OidcProvider};
use chrono::Utc;
use serde_json::Value;
use std::sync::Arc;

const REDIRECT: &str = "http://127.0.0.1:9/oidc/callback";
const BURST: usize = 30;

/// One broker process: its own context (engine, caches) and router on a loopback port.
struct Process {
    base: String,
}

struct World {
    server: OidcProvider,
    processes: [Process; 2],
    key: String,
    connection: ConnectionIdString,
    stores: Stores,
}

type ConnectionIdString = String;

fn engine_settings() -> EngineSettings {
    EngineSettings {
        call_timeout: std::time::Duration::from_secs(5),
        ..EngineSettings::default()
    }
}

impl World {
    /// A connected connection at an oidc-provider issuing access tokens that live `ttl` seconds.
    async fn new(backend: Backend, ttl: u32) -> Self {
        let stores = backend.stores();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let oidc =
            broker_tests::oidc::Connected::start(&stores, clock.clone(), REDIRECT, ttl).await;
        let context = || {
            let http = broker_tests::provider_http();
            let catalogue = oidc.catalogue.clone();
            broker_tests::world::process(&stores, catalogue, http, clock.clone(), engine_settings())
        };
        let new_key = ApiKeyRecord::generate(
            oidc.app.tenant.clone(),
            "test",
            ApiKeyScope::default(),
            clock.now(),
        );
        stores.store.insert_api_key(&new_key.record).await.unwrap();
        let connection = &oidc.connection;

        let serve = |ctx: BrokerContext| async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let api = Arc::new(IntegrationApi::new(ctx));
            tokio::spawn(async move {
                axum::serve(listener, session_exchange::router_with(api))
                    .await
                    .unwrap();
            });
            Process {
                base: format!("http://{addr}"),
            }
        };
        let processes = [serve(context()).await, serve(context()).await];
        Self {
            server: oidc.server,
            processes,
            key: new_key.plaintext.expose().to_string(),
            connection: connection.id.to_string(),
            stores,
        }
    }

    async fn counts(&self) -> GrantCounts {
        self.server.grant_counts().await.unwrap()
    }

    /// Sleeps until the connection's current access token has expired (by the broker's record).
    async fn until_expired(&self) {
        let id = broker_core::ids::ConnectionId::parse(&self.connection).unwrap();
        let connection = self
            .stores
            .store
            .get_connection(&id)
            .await
            .unwrap()
            .unwrap();
        let expires = connection.access_expires_at.expect("an access token");
        let wait = (expires - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait + std::time::Duration::from_millis(500)).await;
    }

    /// `POST /v1/connections/{id}/session` at process `n`: the status and the answer.
    async fn session(&self, n: usize) -> (u16, Value) {
        session_call(
            self.processes[n].base.clone(),
            self.connection.clone(),
            self.key.clone(),
        )
        .await
    }

    /// `BURST` concurrent session calls, alternating between the two processes; every one must answer
    /// 200 with a token the provider accepts. Returns the refreshes the provider saw.
    async fn burst(&self) -> u64 {
        let before = self.counts().await;
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..BURST {
            calls.spawn(session_call(
                self.processes[i % 2].base.clone(),
                self.connection.clone(),
                self.key.clone(),
            ));
        }
        while let Some(answer) = calls.join_next().await {
            let (status, body) = answer.unwrap();
            assert_eq!(status, 200, "{body}");
            let token = body["access_token"].as_str().unwrap();
            assert!(
                self.server.accepts(token).await.unwrap(),
                "the provider refuses a token the broker handed out"
            );
        }
        let after = self.counts().await;
        assert_eq!(after.revoked, 0, "the grant was revoked: {after:?}");
        after.refreshes - before.refreshes
    }
}

async fn session_call(base: String, connection: String, key: String) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/connections/{connection}/session"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// After each expiry: a burst of 30 concurrent calls across two processes → one refresh; then, for
/// the shorter lifetimes, three calls 30 ms apart after the next expiry → one refresh.
async fn one_refresh_per_expiry(backend: Backend, ttl: u32) {
    let world = World::new(backend, ttl).await;
    world.until_expired().await;
    let refreshes = world.burst().await;
    eprintln!("{ttl}-s access tokens: {refreshes} refresh(es) at the provider for a burst of {BURST} concurrent sessions after expiry, two processes");
    assert_eq!(
        refreshes, 1,
        "{ttl}-s tokens: one refresh for a burst of {BURST} after expiry"
    );
    if ttl <= 30 {
        world.until_expired().await;
        let before = world.counts().await;
        for i in 0..3 {
            let (status, body) = world.session(i % 2).await;
            assert_eq!(status, 200, "{body}");
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
        let after = world.counts().await;
        assert_eq!(
            after.refreshes - before.refreshes,
            1,
            "{ttl}-s tokens: three sequential calls after expiry"
        );
        assert_eq!(after.revoked, 0);
    }
}

/// The three lifetimes at once (they wait in parallel), on one backend.
async fn every_lifetime(backend: impl Fn() -> Backend) {
    tokio::join!(
        one_refresh_per_expiry(backend(), 60),
        one_refresh_per_expiry(backend(), 30),
        one_refresh_per_expiry(backend(), 15),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_refresh_per_expiry_on_the_embedded_store() {
    every_lifetime(broker_tests::backends::embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_refresh_per_expiry_on_dynamodb_and_secrets_manager() {
    let backends = [
        broker_tests::backends::aws().await,
        broker_tests::backends::aws().await,
        broker_tests::backends::aws().await,
    ];
    let next = std::sync::Mutex::new(backends.into_iter());
    every_lifetime(|| next.lock().unwrap().next().unwrap()).await;
}
