//! Connect and reconnect in the browser, over HTTP: the oauth-callback router served on loopback, a
//! browser with a cookie jar, and the provider simulators (Twinfield, Exact Online in two countries,
//! Acumatica) and oidc-provider on the other side; on both store backends.
//!
//! Every refusal leaves the connection as it was (status, version, credentials, transitions) and shows
//! a page that says what to do; no page and no log line carries a secret.

use broker_core::backend::Backend as CoreBackend;
use broker_core::clock::{Clock, ManualClock};
use broker_core::connect::issue_link;
use broker_core::context::BrokerContext;
use broker_core::domain::{
    Actor, AuthorizationPurpose, Connection, Credentials, CredentialsPointer, ExactCountry,
    Identity, LegacyTwinfieldCredentials, OAuthApp, ProviderContext, ProviderSettings, Recipients,
    ReconnectKind, ReconnectReason, RedirectUri, ServiceUrl, StatusEvent, StatusKind,
    StatusTransition, Tenant,
};
use broker_core::ids::{AppId, TenantId};
use broker_core::ports::{Fence, PageRequest};
use broker_core::providers::{Catalogue, Providers};
use broker_core::refresh::EngineSettings;
use broker_core::secret::{ClientSecret, LegacyAccessSecret, LegacyAccessToken};
use broker_core::CredentialKeeper;
use broker_tests::backends::Backend;
use broker_tests::logs::Captured;
use broker_tests::oidc::OidcProvider;
use chrono::{Duration, TimeZone, Utc};
use provider_simulators::{
    AcumaticaRefreshPolicy, ConsentDecision, ConsentOverride, FaultAction, FaultRule,
    SimulatorHandle,
};
use reqwest::StatusCode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

mod connecting;
mod divisions;
mod reconnecting;
mod refusals;

const TW_ID: &str = "tw-client";
const EX_ID: &str = "ex-client";
const ACU_ID: &str = "0b9d7a52-3f7e-4c55-9a3e-7d8f1c2b4e6a@Company";
const CLIENT_SECRET: &str = "client-secret-value-7f3a";

// ---------------------------------------------------------------------------------------------------
// The world of one test.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Twinfield,
    Exact(ExactCountry),
    Acumatica,
}

enum Provider {
    Sim(SimulatorHandle),
    Oidc(OidcProvider),
}

struct World {
    ctx: BrokerContext,
    clock: Arc<ManualClock>,
    base: String,
    provider: Provider,
    tenant: TenantId,
    app: AppId,
    logs: Captured,
    _log_guard: tracing::subscriber::DefaultGuard,
    /// Secret values seen during the test: none may appear in a page or a log line.
    secrets: Mutex<Vec<String>>,
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn serve() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    (listener, base)
}

fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    broker_tests::logs::capture("off,broker_core=debug,oauth_callback=debug")
}

async fn world(backend: Backend, which: Which) -> World {
    let (logs, guard) = capture_logs();
    let (listener, base) = serve().await;
    let redirect = format!("{base}/oauth/callback");
    let start = Utc.with_ymd_and_hms(2025, 6, 2, 12, 0, 0).unwrap();
    let policy = AcumaticaRefreshPolicy::default();
    let acumatica =
        broker_tests::world::acumatica_registration(ACU_ID, CLIENT_SECRET, &redirect, policy);
    let (twinfield, exact) = ((TW_ID, CLIENT_SECRET), (EX_ID, CLIENT_SECRET));
    let sim = broker_tests::world::simulators_with_clients(
        start,
        |_| {},
        &redirect,
        twinfield,
        exact,
        acumatica,
    )
    .await;
    let catalogue = broker_tests::providers::catalogue_aimed_at(&sim);
    let (settings, client_id) = match which {
        Which::Twinfield => (ProviderSettings::Twinfield, TW_ID),
        Which::Exact(country) => (ProviderSettings::ExactOnline { country }, EX_ID),
        Which::Acumatica => (
            ProviderSettings::Acumatica {
                instance_url: ServiceUrl::parse(&sim.acumatica_instance_url("demo")).unwrap(),
                tenant: "Company".into(),
                refresh_tokens: None,
                instance_per_connection: false,
            },
            ACU_ID,
        ),
    };
    finish_world(
        backend,
        listener,
        base,
        catalogue,
        settings,
        client_id,
        CLIENT_SECRET,
        Provider::Sim(sim),
        logs,
        guard,
    )
    .await
}

async fn oidc_world(backend: Backend) -> World {
    let (logs, guard) = capture_logs();
    let (listener, base) = serve().await;
    let redirect = format!("{base}/oauth/callback");
    let server = OidcProvider::launch(&redirect, 600).await;
    let catalogue = server.catalogue(&["openid", "offline_access", "profile", "email"], 3600);
    let settings = ProviderSettings::Generic {
        definition: "oidc-provider".into(),
    };
    let (client_id, secret) = (server.client_id.clone(), server.client_secret.clone());
    finish_world(
        backend,
        listener,
        base,
        catalogue,
        settings,
        &client_id,
        &secret,
        Provider::Oidc(server),
        logs,
        guard,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn finish_world(
    backend: Backend,
    listener: tokio::net::TcpListener,
    base: String,
    catalogue: Catalogue,
    settings: ProviderSettings,
    client_id: &str,
    client_secret: &str,
    provider: Provider,
    logs: Captured,
    guard: tracing::subscriber::DefaultGuard,
) -> World {
    let clock = Arc::new(ManualClock::starting_at(
        Utc.with_ymd_and_hms(2025, 6, 2, 12, 0, 0).unwrap(),
    ));
    let dyn_clock: Arc<dyn Clock> = clock.clone();
    let providers = Providers::new(catalogue, broker_tests::provider_http(), dyn_clock.clone());
    let ctx = BrokerContext::new(
        CoreBackend {
            store: backend.store.clone(),
            vault: backend.vault.clone(),
        },
        providers,
        dyn_clock,
        url::Url::parse(&base).unwrap(),
        EngineSettings::default(),
    );
    let tenant = TenantId::parse("acme").unwrap();
    let app = AppId::parse("app").unwrap();
    let now = clock.now();
    ctx.backend
        .store
        .insert_tenant(&Tenant::new(tenant.clone(), "Acme Integrations", now).unwrap())
        .await
        .unwrap();
    ctx.backend
        .store
        .put_app(&OAuthApp {
            tenant: tenant.clone(),
            id: app.clone(),
            settings,
            client_id: client_id.into(),
            redirect_uri: RedirectUri::parse(&format!("{base}/oauth/callback")).unwrap(),
            scopes: vec![],
            created_at: now,
        })
        .await
        .unwrap();
    ctx.backend
        .vault
        .put_client_secret(&tenant, &app, &ClientSecret::new(client_secret))
        .await
        .unwrap();
    let router = oauth_callback::router(ctx.clone());
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    World {
        ctx,
        clock,
        base,
        provider,
        tenant,
        app,
        logs,
        _log_guard: guard,
        secrets: Mutex::new(vec![client_secret.to_string()]),
    }
}

/// What must not change when an attempt is refused.
#[derive(Debug, PartialEq)]
struct Snapshot {
    status: StatusKind,
    version: u64,
    credentials: Option<CredentialsPointer>,
    context: Option<ProviderContext>,
    transitions: usize,
}

/// The browser's way through one attempt.
struct Attempt {
    browser: reqwest::Client,
    /// Where the provider sent the browser back (with `code` and `state`, or `error`).
    callback: url::Url,
}

struct Page {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    html: String,
}

impl World {
    fn sim(&self) -> &SimulatorHandle {
        match &self.provider {
            Provider::Sim(sim) => sim,
            Provider::Oidc(_) => panic!("not a simulator world"),
        }
    }

    fn remember(&self, secret: &str) {
        if !secret.is_empty() {
            self.secrets.lock().unwrap().push(secret.to_string());
        }
    }

    async fn new_connection(&self, provider: broker_core::domain::ProviderKind) -> Connection {
        let mut connection = Connection::new(
            self.tenant.clone(),
            self.app.clone(),
            provider,
            Recipients::parse(&["finance@example.com"]).unwrap(),
            self.clock.now(),
        );
        connection.display_name = Some("Bookkeeping <main>".into());
        self.ctx
            .backend
            .store
            .insert_connection(&connection, &[])
            .await
            .unwrap();
        connection
    }

    async fn connection(&self, connection: &Connection) -> Connection {
        self.ctx
            .backend
            .store
            .get_connection(&connection.id)
            .await
            .unwrap()
            .unwrap()
    }

    /// The connection's status transitions, oldest first.
    async fn transitions(&self, id: &broker_core::ids::ConnectionId) -> Vec<StatusTransition> {
        self.ctx
            .backend
            .store
            .list_transitions(id, PageRequest::first(100))
            .await
            .unwrap()
            .items
    }

    async fn snapshot(&self, connection: &Connection) -> Snapshot {
        let c = self.connection(connection).await;
        let transitions = self.transitions(&c.id).await.len();
        Snapshot {
            status: c.status().kind(),
            version: c.version(),
            credentials: c.credentials,
            context: c.context,
            transitions,
        }
    }

    async fn link(&self, connection: &Connection, purpose: AuthorizationPurpose) -> url::Url {
        // The link token is not on the secret list: failure pages offer the link again on purpose.
        issue_link(&self.ctx, &self.tenant, &connection.id, purpose)
            .await
            .unwrap()
    }

    /// A fresh link for `purpose` followed through the provider, stopping before the callback; and the
    /// connection as it stood once the link was issued (issuing one retires the older links, a write
    /// of its own), which a refused callback must leave as it is.
    async fn attempt(
        &self,
        connection: &Connection,
        purpose: AuthorizationPurpose,
    ) -> (url::Url, Attempt, Snapshot) {
        let link = self.link(connection, purpose).await;
        let before = self.snapshot(connection).await;
        let attempt = self.authorize(&link).await;
        (link, attempt, before)
    }

    /// A whole attempt whose callback is refused with `status` and a page that says `words`; the
    /// connection is left as it stood before (returned).
    async fn refused(
        &self,
        connection: &Connection,
        purpose: AuthorizationPurpose,
        status: StatusCode,
        words: &[&str],
    ) -> Snapshot {
        let (_, attempt, before) = self.attempt(connection, purpose).await;
        let page = self.finish(&attempt).await;
        self.assert_refused(&page, status, words, connection, &before)
            .await;
        before
    }

    /// The page refuses with `status` and says `words`; the connection is still as `before`.
    async fn assert_refused(
        &self,
        page: &Page,
        status: StatusCode,
        words: &[&str],
        connection: &Connection,
        before: &Snapshot,
    ) {
        assert_page(page, status, words);
        assert_eq!(&self.snapshot(connection).await, before, "nothing changed");
    }

    /// Opens the link and goes through the provider, stopping before the callback.
    async fn authorize(&self, link: &url::Url) -> Attempt {
        self.authorize_with(link, |_| {}).await
    }

    /// As [`World::authorize`], with the provider URL changed by the browser on the way.
    /// Opens the link's page, as a person would, and presses its button (the form's POST).
    async fn press_connect(&self, browser: &reqwest::Client, link: &url::Url) -> reqwest::Response {
        let page = self.get(browser, link.as_str()).await;
        assert_eq!(page.status, StatusCode::OK, "the link shows its page");
        assert!(
            page.headers.get("set-cookie").is_none(),
            "opening it starts nothing"
        );
        let action = format!("action=\"{link}\"");
        assert!(page.html.contains(&action), "{action} not in {}", page.html);
        browser.post(link.clone()).send().await.unwrap()
    }

    async fn authorize_with(&self, link: &url::Url, tamper: impl FnOnce(&mut url::Url)) -> Attempt {
        let browser = browser();
        let response = self.press_connect(&browser, link).await;
        assert_eq!(response.status(), StatusCode::FOUND, "the link redirects");
        check_security_headers(response.headers());
        let cookies: Vec<String> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert!(cookies
            .iter()
            .any(|c| c.starts_with("broker_authorization=")));
        for cookie in &cookies {
            let lower = cookie.to_ascii_lowercase();
            assert!(
                lower.contains("httponly") && lower.contains("samesite=lax"),
                "{cookie}"
            );
            assert!(
                !lower.contains("secure"),
                "Secure is left off only for http on loopback: {cookie}"
            );
            if let Some(value) = cookie.strip_prefix("broker_authorization=") {
                self.remember(value.split(';').next().unwrap());
            }
        }
        let mut provider_url =
            url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
        tamper(&mut provider_url);
        let query: HashMap<String, String> = provider_url.query_pairs().into_owned().collect();
        self.remember(&query["state"]);
        let callback = match &self.provider {
            Provider::Sim(_) => {
                let answer = browser.get(provider_url).send().await.unwrap();
                assert_eq!(
                    answer.status(),
                    StatusCode::FOUND,
                    "the provider redirects back"
                );
                url::Url::parse(answer.headers()["location"].to_str().unwrap()).unwrap()
            }
            Provider::Oidc(server) => server
                .follow_authorization(provider_url.as_str())
                .await
                .unwrap(),
        };
        assert!(
            callback
                .as_str()
                .starts_with(&format!("{}/oauth/callback", self.base)),
            "{callback}"
        );
        if let Some(code) = param(&callback, "code") {
            self.remember(&code);
        }
        Attempt { browser, callback }
    }

    async fn get(&self, browser: &reqwest::Client, url: &str) -> Page {
        let response = browser.get(url).send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let html = response.text().await.unwrap();
        let page = Page {
            status,
            headers,
            html,
        };
        check_security_headers(&page.headers);
        self.assert_clean(&page.html);
        page
    }

    async fn finish(&self, attempt: &Attempt) -> Page {
        self.get(&attempt.browser, attempt.callback.as_str()).await
    }

    /// Connects (or reconnects) through the whole flow and checks the outcome.
    async fn connect(&self, connection: &Connection, purpose: AuthorizationPurpose) -> Page {
        let link = self.link(connection, purpose).await;
        let attempt = self.authorize(&link).await;
        let page = self.finish(&attempt).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.html);
        let stored = self.connection(connection).await;
        assert_eq!(stored.status().kind(), StatusKind::Connected);
        assert!(stored.context.is_some() && stored.last_refresh_at.is_some());
        assert!(stored
            .next_refresh_at
            .is_some_and(|at| at > self.clock.now()));
        assert_eq!(stored.failures.consecutive, 0);
        let tokens = self.tokens(&stored).await;
        self.remember(tokens.access_token.expose());
        if let Some(r) = &tokens.refresh_token {
            self.remember(r.expose());
        }
        if let Provider::Sim(sim) = &self.provider {
            assert!(
                sim.is_access_token_valid(tokens.access_token.expose()),
                "the simulator accepts the stored access token"
            );
        }
        let transitions = self.transitions(&stored.id).await;
        let last = transitions.last().unwrap();
        assert_eq!(last.to, StatusKind::Connected);
        assert!(matches!(&last.actor, Actor::EndUser(who) if !who.is_empty()));
        self.assert_clean(&page.html);
        page
    }

    async fn tokens(&self, connection: &Connection) -> broker_core::domain::TokenSet {
        let keeper = CredentialKeeper::new(
            self.ctx.backend.store.clone(),
            self.ctx.backend.vault.clone(),
        );
        match keeper.current(connection).await.unwrap() {
            Some(Credentials::OAuth2(tokens)) => tokens,
            other => panic!("expected OAuth 2.0 tokens in the vault, found {other:?}"),
        }
    }

    /// Saves `c` as it is, fenced by its version, with `transitions`.
    async fn save(&self, c: &Connection, transitions: &[StatusTransition]) {
        self.ctx
            .backend
            .store
            .save_connection(c, Fence::Version, transitions)
            .await
            .unwrap();
    }

    /// Marks a connected connection as needing a person (as the refresh engine would).
    async fn needs_reconnect(&self, connection: &Connection, change: impl FnOnce(&mut Connection)) {
        let mut c = self.connection(connection).await;
        let transition = broker_tests::world::revoke_grant(&mut c, "test", self.clock.now());
        change(&mut c);
        self.save(&c, &[transition]).await;
    }

    fn assert_clean(&self, text: &str) {
        for secret in self.secrets.lock().unwrap().iter() {
            assert!(
                !text.contains(secret.as_str()),
                "a secret leaked into: {text}"
            );
        }
    }

    /// Ends the test: no log line carried a secret.
    fn check_logs(&self) {
        let logs = self.logs.text();
        assert!(!logs.is_empty(), "the broker logged its outcomes");
        self.assert_clean(&logs);
    }
}

fn param(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `url` with its query replaced by `pairs`.
fn with_query(url: &url::Url, pairs: &[(&str, &str)]) -> url::Url {
    let mut changed = url.clone();
    changed.query_pairs_mut().clear().extend_pairs(pairs);
    changed
}

fn check_security_headers(headers: &reqwest::header::HeaderMap) {
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
}

fn assert_page(page: &Page, status: StatusCode, words: &[&str]) {
    assert_eq!(page.status, status, "{}", page.html);
    assert!(page.html.contains("name=\"viewport\""));
    for word in words {
        assert!(page.html.contains(word), "{word:?} not in {}", page.html);
    }
}

async fn exact_world(backend: Backend) -> (World, Connection) {
    world_with_connection(backend, Which::Exact(ExactCountry::Netherlands)).await
}

/// An Exact Online world with a connection a person has connected.
async fn connected_exact_world(backend: Backend) -> (World, Connection) {
    let (world, connection) = exact_world(backend).await;
    world
        .connect(&connection, AuthorizationPurpose::Connect)
        .await;
    (world, connection)
}

/// An oidc-provider world and a new connection to it.
async fn oidc_world_with_connection(backend: Backend) -> (World, Connection) {
    let world = oidc_world(backend).await;
    let connection = world
        .new_connection(broker_core::domain::ProviderKind::Generic)
        .await;
    (world, connection)
}

/// A world of `which`, and a new connection to it.
async fn world_with_connection(backend: Backend, which: Which) -> (World, Connection) {
    let world = world(backend, which).await;
    let provider = match which {
        Which::Twinfield => broker_core::domain::ProviderKind::Twinfield,
        Which::Exact(_) => broker_core::domain::ProviderKind::ExactOnline,
        Which::Acumatica => broker_core::domain::ProviderKind::Acumatica,
    };
    let connection = world.new_connection(provider).await;
    (world, connection)
}
