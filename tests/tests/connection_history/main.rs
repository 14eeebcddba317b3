//! Connection changes (`PATCH /v1/connections/{id}`) and a connection's history
//! (`GET /v1/connections/{id}/events`) end to end over HTTP: the session-exchange router on loopback,
//! the Exact Online simulator, both storage backends, and the notifier writing to an outbox folder.

use broker_core::adapters::OutboxMailer;
use broker_core::api::{ApiSettings, IntegrationApi, ProblemKind, PROBLEM_BASE};
use broker_core::backend::Backend as CoreBackend;
use broker_core::clock::Clock;
use broker_core::context::BrokerContext;
use broker_core::domain::{
    Actor, ApiKeyRecord, ApiKeyScope, EmailAddress, ExactCountry, OAuthApp, ProviderSettings,
    ReconnectKind, ReconnectReason, RedirectUri, StatusEvent, Tenant,
};
use broker_core::ids::{AppId, ConnectionId, TenantId};
use broker_core::notify::{Notifier, NotifySettings};
use broker_core::ports::Fence;
use broker_core::providers::Providers;
use broker_core::refresh::EngineSettings;
use broker_core::secret::ClientSecret;
use broker_tests::backends::Backend;
use chrono::{Duration, TimeZone, Utc};
use provider_simulators as sim;
use provider_simulators::{
    ClientRegistration, MintRequest, Simulator, SimulatorConfig, SimulatorHandle,
};
use serde_json::{json, Value};
use std::sync::Arc;

mod changes;
mod events;

const REDIRECT: &str = "http://localhost:9/callback";
const EX_ID: &str = "ex-client";
const EX_SECRET: &str = "ex-secret-value";

struct Env {
    sim: SimulatorHandle,
    ctx: BrokerContext,
    api: Arc<IntegrationApi>,
    base: String,
    http: reqwest::Client,
    /// Two full keys of acme, a session-only one, and the other tenant's.
    key: String,
    key_prefix: String,
    second_key: String,
    second_prefix: String,
    session_only_key: String,
    other_key: String,
}

struct Reply {
    status: u16,
    text: String,
    json: Value,
}

impl Reply {
    fn ok(&self) -> &Value {
        assert_eq!(self.status, 200, "{}", self.text);
        &self.json
    }

    /// An RFC 9457 problem of `kind` whose detail mentions `says`.
    fn problem(&self, kind: ProblemKind, says: &str) {
        assert_eq!(self.status, kind.status(), "{}", self.text);
        assert_eq!(
            self.json["type"],
            format!("{PROBLEM_BASE}{}", kind.code()),
            "{}",
            self.text
        );
        let detail = self.json["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{says:?} not in {detail:?}");
    }
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

async fn env(backend: Backend) -> Env {
    let mut config = SimulatorConfig {
        start_time: Some(Utc.with_ymd_and_hms(2025, 6, 2, 12, 0, 0).unwrap()),
        ..SimulatorConfig::default()
    };
    config.knobs.auto_consent = true;
    let sim = Simulator::start(config)
        .await
        .expect("the simulator starts");
    sim.register_exact_client(ClientRegistration {
        client_id: EX_ID.into(),
        client_secret: EX_SECRET.into(),
        redirect_uris: vec![REDIRECT.into()],
    });
    let catalogue = broker_tests::providers::catalogue_aimed_at(&sim);
    let clock: Arc<dyn Clock> = Arc::new(broker_tests::clock::SimulatorClock(sim.clock()));
    let providers = Providers::new(catalogue, broker_tests::provider_http(), clock.clone());
    let ctx = BrokerContext::new(
        CoreBackend {
            store: backend.store.clone(),
            vault: backend.vault.clone(),
        },
        providers,
        clock.clone(),
        url::Url::parse("https://broker.test").unwrap(),
        EngineSettings::default(),
    );
    let now = clock.now();
    let store = &ctx.backend.store;
    for t in ["acme", "other"] {
        store
            .insert_tenant(&Tenant::new(tenant(t), "Acme Integrations", now).unwrap())
            .await
            .unwrap();
        let app = OAuthApp {
            tenant: tenant(t),
            id: AppId::parse("ex").unwrap(),
            settings: ProviderSettings::ExactOnline {
                country: ExactCountry::Netherlands,
            },
            client_id: EX_ID.into(),
            redirect_uri: RedirectUri::parse(REDIRECT).unwrap(),
            scopes: vec![],
            created_at: now,
        };
        store.put_app(&app).await.unwrap();
        ctx.backend
            .vault
            .put_client_secret(&tenant(t), &app.id, &ClientSecret::new(EX_SECRET))
            .await
            .unwrap();
    }
    let mut keys = Vec::new();
    for (t, session_only) in [
        ("acme", false),
        ("acme", false),
        ("acme", true),
        ("other", false),
    ] {
        let scope = ApiKeyScope {
            session_only,
            ..ApiKeyScope::default()
        };
        let new = ApiKeyRecord::generate(tenant(t), "test", scope, now);
        store.insert_api_key(&new.record).await.unwrap();
        keys.push((
            new.plaintext.expose().to_string(),
            new.record.prefix.as_str().to_string(),
        ));
    }
    let api = Arc::new(IntegrationApi::with_settings(
        ctx.clone(),
        ApiSettings::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = session_exchange::router_with(api.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let [(key, key_prefix), (second_key, second_prefix), (session_only_key, _), (other_key, _)] =
        <[(String, String); 4]>::try_from(keys).unwrap();
    Env {
        sim,
        ctx,
        api,
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        key,
        key_prefix,
        second_key,
        second_prefix,
        session_only_key,
        other_key,
    }
}

impl Env {
    async fn call_as(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {key}"));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, text, json }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.call_as(&self.key, method, path, body).await
    }

    async fn patch(&self, id: &str, body: Value) -> Reply {
        self.call("PATCH", &format!("/v1/connections/{id}"), Some(body))
            .await
    }

    async fn create(&self) -> String {
        let reply = self
            .call(
                "POST",
                "/v1/connections",
                Some(json!({
                    "app_id": "ex",
                    "display_name": "Acme books",
                    "recipients": ["finance@example.com"],
                })),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        reply.json["connection"]["id"].as_str().unwrap().to_string()
    }

    /// A connection with pre-authenticated Exact credentials registered.
    async fn connected(&self) -> String {
        let id = self.create().await;
        let minted = self
            .sim
            .mint_tokens(MintRequest {
                provider: sim::Provider::Exact,
                location: "nl".into(),
                client_id: EX_ID.into(),
                user: "demo.user".into(),
                scope: String::new(),
            })
            .unwrap();
        let reply = self
            .call(
                "POST",
                &format!("/v1/connections/{id}/credentials"),
                Some(json!({
                    "access_token": minted.access_token,
                    "refresh_token": minted.refresh_token,
                    "access_token_expires_at": minted.access_expires_at,
                })),
            )
            .await;
        assert_eq!(reply.json["status"], "connected", "{}", reply.text);
        id
    }

    async fn session_as(&self, key: &str, id: &str) {
        let reply = self
            .call_as(key, "POST", &format!("/v1/connections/{id}/session"), None)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }

    fn advance(&self, secs: i64) {
        self.sim.clock().advance(Duration::seconds(secs));
    }

    /// What the refresh engine stores when the provider revoked the grant.
    async fn reconnect_needed(&self, id: &str) {
        let store = &self.ctx.backend.store;
        let mut c = store
            .get_connection(&ConnectionId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap();
        let t = c
            .apply(
                StatusEvent::ReconnectNeeded(ReconnectReason::new(
                    ReconnectKind::GrantRevoked,
                    "invalid_grant",
                )),
                Actor::System("token-refresh".into()),
                self.ctx.clock.now(),
            )
            .unwrap();
        store
            .save_connection(&c, Fence::Version, &[t])
            .await
            .unwrap();
    }

    /// Sends every owed notice to an outbox folder; the `.eml` files written.
    async fn send_notices(&self) -> Vec<String> {
        let outbox = broker_tests::backends::temp_dir("outbox");
        let notifier = Notifier::new(
            self.ctx.clone(),
            Arc::new(OutboxMailer::new(&outbox)),
            NotifySettings::new(EmailAddress::parse("broker@example.com").unwrap()),
        );
        notifier.drain_outbox().await.unwrap();
        std::fs::read_dir(&outbox)
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect()
    }

    /// Every page of the connection's history, `limit` at a time.
    async fn history(&self, id: &str, limit: u32) -> Vec<Value> {
        let mut events = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/connections/{id}/events?limit={limit}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.call("GET", &path, None).await;
            let page = page.ok();
            let items = page["events"].as_array().unwrap();
            assert!(items.len() <= limit as usize);
            events.extend(items.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return events,
            }
        }
    }
}
