//! The integration API end to end over HTTP: the session-exchange router served by axum on loopback,
//! the provider simulators, and both storage backends (embedded, and the AWS adapters against moto).

use broker_core::api::{ApiSettings, IntegrationApi, ProblemKind, PROBLEM_BASE};
use broker_core::backend::Backend as CoreBackend;
use broker_core::clock::Clock;
use broker_core::context::BrokerContext;
use broker_core::domain::{
    new_one_time_secret, ApiKeyRecord, ApiKeyScope, CredentialsPointer, ExactCountry, OAuthApp,
    ProviderSettings, RedirectUri, ServiceUrl, StatusKind, Tenant,
};
use broker_core::ids::{AppId, ConnectionId, TenantId, WriteId};
use broker_core::ports::PageRequest;
use broker_core::providers::Providers;
use broker_core::refresh::EngineSettings;
use broker_core::secret::ClientSecret;
use broker_tests::backends::Backend;
use broker_tests::vaults::RecordingVault;
use broker_tests::world::demo_clients::*;
use chrono::{Duration, TimeZone, Utc};
use provider_simulators as sim;
use provider_simulators::{MintRequest, MintedTokens, SimulatorHandle};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

mod connections;
mod lifetimes;
mod routes;
mod tokens;
mod twinfield;
mod twinfield_sessions;

const TW_SCOPE: &str = "openid twf.user twf.organisation twf.organisationUser offline_access";

struct Env {
    sim: SimulatorHandle,
    ctx: BrokerContext,
    /// Records reads and writes, to show the warm path does not call Secrets Manager each time.
    vault: Arc<RecordingVault>,
    base: String,
    http: reqwest::Client,
    /// acme's keys: full access, session-only, and limited to no connection at all.
    key: String,
    key_prefix: String,
    session_only_key: String,
    /// The other tenant's full key.
    other_key: String,
}

struct Reply {
    status: u16,
    retry_after: Option<String>,
    content_type: String,
    text: String,
    json: Value,
}

impl Reply {
    fn problem(&self, kind: ProblemKind) {
        assert_eq!(self.status, kind.status(), "{}", self.text);
        assert_eq!(
            self.content_type, "application/problem+json",
            "{}",
            self.text
        );
        assert_eq!(
            self.json["type"],
            format!("{PROBLEM_BASE}{}", kind.code()),
            "{}",
            self.text
        );
        assert_eq!(self.json["status"], kind.status());
        assert!(self.json["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(self.json["detail"].as_str().is_some_and(|d| d.len() > 10));
    }
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

async fn env(backend: Backend) -> Env {
    env_with(backend, ApiSettings::default()).await
}

async fn env_with(backend: Backend, settings: ApiSettings) -> Env {
    env_with_engine(backend, settings, EngineSettings::default()).await
}

async fn env_with_engine(backend: Backend, settings: ApiSettings, engine: EngineSettings) -> Env {
    let sim = broker_tests::world::demo_simulators(|_| {}).await;
    let catalogue = broker_tests::providers::catalogue_aimed_at(&sim);
    let clock: Arc<dyn Clock> = Arc::new(broker_tests::clock::SimulatorClock(sim.clock()));
    let providers = Providers::new(catalogue, broker_tests::provider_http(), clock.clone());
    let vault = RecordingVault::around(backend.vault.clone(), clock.clone());
    let core = CoreBackend {
        store: backend.store.clone(),
        vault: vault.clone(),
    };
    let ctx = BrokerContext::new(
        core,
        providers,
        clock.clone(),
        url::Url::parse("https://broker.test").unwrap(),
        engine,
    );
    let now = clock.now();
    let store = &ctx.backend.store;
    let acumatica_settings = ProviderSettings::Acumatica {
        instance_url: ServiceUrl::parse(&sim.acumatica_instance_url("demo")).unwrap(),
        tenant: "Company".into(),
        refresh_tokens: None,
        instance_per_connection: false,
    };
    for t in ["acme", "other"] {
        store
            .insert_tenant(&Tenant::new(tenant(t), t, now).unwrap())
            .await
            .unwrap();
        for (app, settings, id, secret) in [
            ("tw", ProviderSettings::Twinfield, TW_ID, TW_SECRET),
            (
                "ex",
                ProviderSettings::ExactOnline {
                    country: ExactCountry::Netherlands,
                },
                EX_ID,
                EX_SECRET,
            ),
            ("acu", acumatica_settings.clone(), ACU_ID, ACU_SECRET),
        ] {
            let app = OAuthApp {
                tenant: tenant(t),
                id: AppId::parse(app).unwrap(),
                settings,
                client_id: id.into(),
                redirect_uri: RedirectUri::parse(REDIRECT).unwrap(),
                scopes: vec![],
                created_at: now,
            };
            store.put_app(&app).await.unwrap();
            ctx.backend
                .vault
                .put_client_secret(&tenant(t), &app.id, &ClientSecret::new(secret))
                .await
                .unwrap();
        }
    }
    let key = |t: &str, scope: ApiKeyScope| {
        let new = ApiKeyRecord::generate(tenant(t), "test", scope, now);
        (new.plaintext.expose().to_string(), new.record)
    };
    let (full, full_record) = key("acme", ApiKeyScope::default());
    let (session_only, session_record) = key(
        "acme",
        ApiKeyScope {
            session_only: true,
            connections: None,
            manage_apps: false,
        },
    );
    let (other, other_record) = key("other", ApiKeyScope::default());
    for record in [&full_record, &session_record, &other_record] {
        store.insert_api_key(record).await.unwrap();
    }

    let api = Arc::new(IntegrationApi::with_settings(ctx.clone(), settings));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, session_exchange::router_with(api))
            .await
            .unwrap();
    });
    Env {
        sim,
        ctx,
        vault,
        base: format!("http://{addr}"),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        key: full,
        key_prefix: full_record.prefix.as_str().to_string(),
        session_only_key: session_only,
        other_key: other,
    }
}

impl Env {
    async fn call_raw(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            retry_after,
            content_type,
            text,
            json,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.call_raw(
            method,
            path,
            Some(&self.key),
            body.map(|b| serde_json::to_vec(&b).unwrap()),
        )
        .await
    }

    async fn create(&self, app: &str) -> String {
        let reply = self
            .call(
                "POST",
                "/v1/connections",
                Some(json!({
                    "app_id": app,
                    "display_name": format!("Acme {app}"),
                    "recipients": ["finance@example.com"],
                })),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(reply.json["connection"]["status"], "not_connected");
        assert!(reply.json["connect_link"]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://broker.test/connect/"));
        reply.json["connection"]["id"].as_str().unwrap().to_string()
    }

    fn mint(&self, app: &str) -> MintedTokens {
        let request = match app {
            "tw" => MintRequest {
                provider: sim::Provider::Twinfield,
                location: String::new(),
                client_id: TW_ID.into(),
                user: "DEMO".into(),
                scope: TW_SCOPE.into(),
            },
            "ex" => MintRequest {
                provider: sim::Provider::Exact,
                location: "nl".into(),
                client_id: EX_ID.into(),
                user: "demo.user".into(),
                scope: String::new(),
            },
            _ => MintRequest {
                provider: sim::Provider::Acumatica,
                location: "demo".into(),
                client_id: ACU_ID.into(),
                user: "admin".into(),
                scope: "api offline_access openid".into(),
            },
        };
        self.sim.mint_tokens(request).unwrap()
    }

    /// A connection with pre-authenticated credentials registered.
    async fn connected(&self, app: &str) -> (String, MintedTokens) {
        let id = self.create(app).await;
        let minted = self.mint(app);
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
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json["status"], "connected");
        (id, minted)
    }

    async fn session(&self, id: &str) -> Reply {
        self.call("POST", &format!("/v1/connections/{id}/session"), None)
            .await
    }

    fn advance(&self, secs: i64) {
        self.sim.clock().advance(Duration::seconds(secs));
    }

    async fn status_of(&self, id: &str) -> String {
        let reply = self
            .call("GET", &format!("/v1/connections/{id}"), None)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json["status"].as_str().unwrap().to_string()
    }

    /// An authorization code from the simulator's (auto-consented) authorization page.
    async fn code_for(&self, app: &str) -> String {
        self.code_and_verifier(app).await.0
    }

    /// The code and, where the provider uses PKCE (Acumatica), its verifier.
    async fn code_and_verifier(&self, app: &str) -> (String, Option<String>) {
        let store = &self.ctx.backend.store;
        let app = store
            .get_app(&tenant("acme"), &AppId::parse(app).unwrap())
            .await
            .unwrap()
            .unwrap();
        let secret = self
            .ctx
            .backend
            .vault
            .get_client_secret(&app.tenant, &app.id)
            .await
            .unwrap()
            .unwrap();
        let client = self.ctx.providers.oauth_client(&app, secret).unwrap();
        let (state, _) = new_one_time_secret();
        let request = client.authorization_request(&state, &[]).await.unwrap();
        let response = self.http.get(request.url.clone()).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 302);
        let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
        let params: HashMap<String, String> = location.query_pairs().into_owned().collect();
        let verifier = request.pkce_verifier.map(|v| v.expose().to_string());
        (params["code"].clone(), verifier)
    }
}

fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
