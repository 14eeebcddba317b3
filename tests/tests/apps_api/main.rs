//! App registrations through the integration API (`/v1/apps`) over HTTP, on both backends: the
//! session-exchange router for the API, the oauth-callback router at the broker's public URL for the
//! browser, and the Acumatica simulator with one instance per customer. No answer and no log line
//! carries a client secret.

use broker_core::api::{IntegrationApi, ProblemKind, PROBLEM_BASE};
use broker_core::clock::Clock;
use broker_core::context::BrokerContext;
use broker_core::domain::{ApiKeyRecord, ApiKeyScope, ConnectionStatus, Tenant};
use broker_core::ids::{AppId, ConnectionId, TenantId};
use broker_core::providers::Providers;
use broker_core::refresh::EngineSettings;
use broker_tests::backends::Backend;
use broker_tests::logs::Captured;
use chrono::{Duration, TimeZone, Utc};
use provider_simulators::{AcumaticaRefreshPolicy, Provider, SimulatorHandle};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

broker_tests::on_both_backends!(
    current_thread:
    each_customers_acumatica_app_is_registered_through_the_api_and_connects,
    registrations_that_could_never_work_are_refused_with_what_to_do,
    only_keys_granted_manage_apps_reach_apps_and_only_their_own_tenants,
    a_rotated_client_secret_is_the_one_the_next_token_call_sends,
    an_app_is_deleted_only_once_no_connection_needs_it,
    an_acumatica_app_may_leave_the_instance_to_each_customer,
);

/// One Acumatica instance per customer, each with its own connected application.
const CUSTOMERS: [(&str, &str, &str); 2] = [
    (
        "northwind",
        "5c1d2e3f-0000-4000-8000-00000000000a@Company",
        "northwind-secret-SENTINEL",
    ),
    (
        "contoso",
        "5c1d2e3f-0000-4000-8000-00000000000b@Company",
        "contoso-secret-SENTINEL",
    ),
];

struct Env {
    sim: SimulatorHandle,
    ctx: BrokerContext,
    /// Where browsers reach the broker (connect links, the OAuth callback).
    public: String,
    api: String,
    http: reqwest::Client,
    /// acme's keys: managing apps, full access without it, session-only and limited ones with it.
    manager: String,
    plain: String,
    session_only: String,
    limited: String,
    /// globex's key that may manage apps.
    other_manager: String,
    logs: Captured,
    _logs_guard: tracing::subscriber::DefaultGuard,
    /// Every reply's text, to check none carries a secret.
    seen: Mutex<String>,
}

struct Reply {
    status: u16,
    json: Value,
    text: String,
}

impl Reply {
    fn problem(&self, kind: ProblemKind, says: &str) {
        assert_eq!(self.status, kind.status(), "{}", self.text);
        assert_eq!(
            self.json["type"],
            format!("{PROBLEM_BASE}{}", kind.code()),
            "{}",
            self.text
        );
        assert!(
            self.json["detail"].as_str().unwrap().contains(says),
            "expected {says:?}: {}",
            self.text
        );
    }
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

async fn env(backend: Backend) -> Env {
    let (logs, guard) = broker_tests::logs::capture(
        "off,broker_core=debug,session_exchange=debug,oauth_callback=debug",
    );
    let public_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://{}", public_listener.local_addr().unwrap());
    let start = Utc.with_ymd_and_hms(2025, 6, 2, 12, 0, 0).unwrap();
    let sim = broker_tests::world::start_simulator(Some(start), true).await;
    for (instance, client_id, secret) in CUSTOMERS {
        register_at_simulator(&sim, &public, instance, client_id, secret);
    }
    let clock: Arc<dyn Clock> = Arc::new(broker_tests::clock::SimulatorClock(sim.clock()));
    let catalogue = broker_tests::providers::catalogue_aimed_at(&sim);
    let providers = Providers::new(catalogue, broker_tests::provider_http(), clock.clone());
    let ctx = BrokerContext::new(
        backend.stores(),
        providers,
        clock.clone(),
        url::Url::parse(&public).unwrap(),
        EngineSettings::default(),
    );
    let now = clock.now();
    for t in ["acme", "globex"] {
        let tenant = Tenant::new(tenant(t), t, now).unwrap();
        ctx.backend.store.insert_tenant(&tenant).await.unwrap();
    }
    let key =
        |t: &str, session_only: bool, connections: Option<Vec<ConnectionId>>, manage_apps: bool| {
            let scope = ApiKeyScope {
                session_only,
                connections,
                manage_apps,
            };
            ApiKeyRecord::generate(tenant(t), "test", scope, now)
        };
    let keys = [
        key("acme", false, None, true),
        key("acme", false, None, false),
        key("acme", true, None, true),
        key("acme", false, Some(vec![ConnectionId::generate()]), true),
        key("globex", false, None, true),
    ];
    for k in &keys {
        ctx.backend.store.insert_api_key(&k.record).await.unwrap();
    }
    let [manager, plain, session_only, limited, other_manager] =
        keys.map(|k| k.plaintext.expose().to_string());
    let router = oauth_callback::router(ctx.clone());
    tokio::spawn(async move { axum::serve(public_listener, router).await.unwrap() });
    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", api_listener.local_addr().unwrap());
    let router = session_exchange::router_with(Arc::new(IntegrationApi::new(ctx.clone())));
    tokio::spawn(async move { axum::serve(api_listener, router).await.unwrap() });
    Env {
        sim,
        ctx,
        public,
        api,
        http: reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        manager,
        plain,
        session_only,
        limited,
        other_manager,
        logs,
        _logs_guard: guard,
        seen: Mutex::new(String::new()),
    }
}

/// The connected application as the customer's Acumatica instance has it (registering it again
/// replaces its secret: a rotation at the provider).
fn register_at_simulator(
    sim: &SimulatorHandle,
    public: &str,
    instance: &str,
    id: &str,
    secret: &str,
) {
    let callback = format!("{public}/oauth/callback");
    let policy = AcumaticaRefreshPolicy::default();
    let registration = broker_tests::world::acumatica_registration(id, secret, &callback, policy);
    sim.register_acumatica_client(instance, registration)
        .unwrap();
}

impl Env {
    async fn call_with(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        self.seen.lock().unwrap().push_str(&text);
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, json, text }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.call_with(&self.manager, method, path, body).await
    }

    /// Registers the customer's Acumatica app under `id`, with the broker's callback by default.
    async fn register(&self, id: &str, customer: usize) -> Reply {
        let (instance, client_id, secret) = CUSTOMERS[customer];
        let body = json!({
            "id": id,
            "provider": "acumatica",
            "instance_url": self.sim.acumatica_instance_url(instance),
            "acumatica_tenant": "Company",
            "client_id": client_id,
            "client_secret": secret,
        });
        self.call("POST", "/v1/apps", Some(body)).await
    }

    async fn new_connection(&self, app: &str) -> (String, String) {
        let body = json!({"app_id": app, "recipients": ["it@example.com"]});
        let reply = self.call("POST", "/v1/connections", Some(body)).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let id = reply.json["connection"]["id"].as_str().unwrap().to_string();
        (
            id,
            reply.json["connect_link"]["url"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    }

    /// A person opens the connect link and consents at the provider; the callback's page status.
    async fn authorize(&self, link: &str) -> u16 {
        assert!(link.starts_with(&self.public), "{link}");
        let page = self.http.get(link).send().await.unwrap();
        assert_eq!(page.status().as_u16(), 200, "the link shows its page");
        // The page's button posts to the link itself.
        let to_provider = self.http.post(link).send().await.unwrap();
        assert_eq!(
            to_provider.status().as_u16(),
            302,
            "the button redirects to the provider"
        );
        let location = to_provider.headers()["location"]
            .to_str()
            .unwrap()
            .to_string();
        let back = self.http.get(location).send().await.unwrap();
        assert_eq!(back.status().as_u16(), 302, "the provider redirects back");
        let callback = back.headers()["location"].to_str().unwrap().to_string();
        assert!(
            callback.starts_with(&format!("{}/oauth/callback", self.public)),
            "{callback}"
        );
        let page = self.http.get(callback).send().await.unwrap();
        let status = page.status().as_u16();
        let html = page.text().await.unwrap();
        self.seen.lock().unwrap().push_str(&html);
        status
    }

    async fn status_of(&self, connection: &str) -> String {
        let reply = self
            .call("GET", &format!("/v1/connections/{connection}"), None)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json["status"].as_str().unwrap().to_string()
    }

    async fn stored_secret(&self, t: &str, app: &str) -> Option<String> {
        let id = AppId::parse(app).unwrap();
        let secret = self
            .ctx
            .backend
            .vault
            .get_client_secret(&tenant(t), &id)
            .await
            .unwrap();
        secret.map(|s| s.expose().to_string())
    }

    /// Ends a test: no answer, page or log line carried a client secret.
    fn check_no_secret_shown(&self, secrets: &[&str]) {
        let seen = self.seen.lock().unwrap();
        let logs = self.logs.text();
        assert!(
            logs.contains("app registered"),
            "the broker logged its outcomes"
        );
        for secret in secrets {
            assert!(!seen.contains(secret), "an answer shows {secret}");
            assert!(!logs.contains(secret), "a log line shows {secret}");
        }
    }
}

mod scenarios;
use scenarios::*;
