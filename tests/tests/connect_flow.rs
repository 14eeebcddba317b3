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
    ReconnectKind, ReconnectReason, RedirectUri, ServiceUrl, StatusEvent, StatusKind, Tenant,
};
use broker_core::ids::{AppId, TenantId};
use broker_core::ports::{Fence, PageRequest};
use broker_core::providers::{Catalogue, Providers};
use broker_core::refresh::EngineSettings;
use broker_core::secret::{ClientSecret, LegacyAccessSecret, LegacyAccessToken};
use broker_core::CredentialKeeper;
use broker_tests::backends::Backend;
use broker_tests::oidc::OidcProvider;
use chrono::{Duration, TimeZone, Utc};
use provider_simulators::{
    AcumaticaClientRegistration, AcumaticaRefreshPolicy, ClientRegistration, ConsentDecision,
    ConsentOverride, FaultAction, FaultRule, Simulator, SimulatorConfig, SimulatorHandle,
};
use reqwest::StatusCode;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

const TW_ID: &str = "tw-client";
const EX_ID: &str = "ex-client";
const ACU_ID: &str = "0b9d7a52-3f7e-4c55-9a3e-7d8f1c2b4e6a@Company";
const CLIENT_SECRET: &str = "client-secret-value-7f3a";

// ---------------------------------------------------------------------------------------------------
// Log capture: every broker log line of a test, to check none carries a secret.

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

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
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "off,broker_core=debug,oauth_callback=debug",
        ))
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    (logs, guard)
}

async fn world(backend: Backend, which: Which) -> World {
    let (logs, guard) = capture_logs();
    let (listener, base) = serve().await;
    let redirect = format!("{base}/oauth/callback");
    let mut config = SimulatorConfig {
        start_time: Some(Utc.with_ymd_and_hms(2025, 6, 2, 12, 0, 0).unwrap()),
        ..SimulatorConfig::default()
    };
    config.knobs.auto_consent = true;
    let sim = Simulator::start(config)
        .await
        .expect("the simulator starts");
    let registration = |id: &str| ClientRegistration {
        client_id: id.into(),
        client_secret: CLIENT_SECRET.into(),
        redirect_uris: vec![redirect.clone()],
    };
    sim.register_twinfield_client(registration(TW_ID));
    sim.register_exact_client(registration(EX_ID));
    sim.register_acumatica_client(
        "demo",
        AcumaticaClientRegistration {
            client_id: ACU_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            redirect_uris: vec![redirect.clone()],
            refresh_policy: AcumaticaRefreshPolicy::default(),
            rotate_refresh_tokens: true,
        },
    )
    .unwrap();
    let catalogue = broker_tests::providers::catalogue_aimed_at(&sim);
    let (settings, client_id) = match which {
        Which::Twinfield => (ProviderSettings::Twinfield, TW_ID),
        Which::Exact(country) => (ProviderSettings::ExactOnline { country }, EX_ID),
        Which::Acumatica => (
            ProviderSettings::Acumatica {
                instance_url: ServiceUrl::parse(&sim.acumatica_instance_url("demo")).unwrap(),
                tenant: "Company".into(),
                refresh_tokens: None,
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
    let server = tokio::task::spawn_blocking(move || OidcProvider::start(&redirect))
        .await
        .unwrap()
        .expect("oidc-provider starts");
    let mut catalogue = Catalogue::built_in();
    let definition = serde_json::json!({ "definitions": [{
        "id": "oidc-provider", "kind": "generic", "display_name": "oidc-provider",
        "issuer": server.issuer,
        "scopes": ["openid", "offline_access", "profile", "email"],
        "authorize_params": { "prompt": "consent", "nonce": "{random}" },
        "lifetimes": { "access_token_secs": 3600 },
        "refresh": { "rotation": "single_use", "expiry": { "kind": "idle", "days": 1 } },
        "discovery": "userinfo"
    }]});
    catalogue.merge_json(&definition.to_string()).unwrap();
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

    async fn snapshot(&self, connection: &Connection) -> Snapshot {
        let c = self.connection(connection).await;
        let transitions = self
            .ctx
            .backend
            .store
            .list_transitions(&c.id, PageRequest::first(100))
            .await
            .unwrap()
            .items
            .len();
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

    /// Opens the link and goes through the provider, stopping before the callback.
    async fn authorize(&self, link: &url::Url) -> Attempt {
        self.authorize_with(link, |_| {}).await
    }

    /// As [`World::authorize`], with the provider URL changed by the browser on the way.
    async fn authorize_with(&self, link: &url::Url, tamper: impl FnOnce(&mut url::Url)) -> Attempt {
        let browser = browser();
        let response = browser.get(link.clone()).send().await.unwrap();
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
        let transitions = self
            .ctx
            .backend
            .store
            .list_transitions(&stored.id, PageRequest::first(100))
            .await
            .unwrap()
            .items;
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

    /// Marks a connected connection as needing a person (as the refresh engine would).
    async fn needs_reconnect(&self, connection: &Connection, change: impl FnOnce(&mut Connection)) {
        let mut c = self.connection(connection).await;
        let transition = c
            .apply(
                StatusEvent::ReconnectNeeded(ReconnectReason::new(
                    ReconnectKind::GrantRevoked,
                    "invalid_grant",
                )),
                Actor::System("test".into()),
                self.clock.now(),
            )
            .unwrap();
        change(&mut c);
        self.ctx
            .backend
            .store
            .save_connection(&c, Fence::Version, &[transition])
            .await
            .unwrap();
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

// ---------------------------------------------------------------------------------------------------
// Connecting against every provider.

async fn connect_and_check(backend: Backend, which: Which, organisation: &str) {
    let world = world(backend, which).await;
    let kind = match which {
        Which::Twinfield => broker_core::domain::ProviderKind::Twinfield,
        Which::Exact(_) => broker_core::domain::ProviderKind::ExactOnline,
        Which::Acumatica => broker_core::domain::ProviderKind::Acumatica,
    };
    let connection = world.new_connection(kind).await;
    let page = world
        .connect(&connection, AuthorizationPurpose::Connect)
        .await;
    assert_page(
        &page,
        StatusCode::OK,
        &[
            kind.display_name(),
            "is connected",
            organisation,
            "What happens next",
            // The connection's label is shown, escaped.
            "Bookkeeping &lt;main&gt;",
        ],
    );
    let stored = world.connection(&connection).await;
    // Two writes: the link (retiring older ones), then the completed authorization.
    assert_eq!(stored.version(), connection.version() + 2);
    if let Which::Exact(country) = which {
        let Some(ProviderContext::ExactOnline { base_url, .. }) = &stored.context else {
            panic!("{:?}", stored.context)
        };
        assert!(base_url
            .base()
            .ends_with(&format!("/exact/{}", country.tld())));
    }
    world.check_logs();
}

async fn twinfield_connects(backend: Backend) {
    connect_and_check(backend, Which::Twinfield, "organisation TWF-DEMO").await;
}

async fn exact_connects_in_the_netherlands(backend: Backend) {
    connect_and_check(
        backend,
        Which::Exact(ExactCountry::Netherlands),
        "division 123456",
    )
    .await;
}

async fn exact_connects_in_belgium(backend: Backend) {
    connect_and_check(
        backend,
        Which::Exact(ExactCountry::Belgium),
        "division 123456",
    )
    .await;
}

async fn acumatica_connects(backend: Backend) {
    connect_and_check(backend, Which::Acumatica, "tenant Company").await;
}

async fn an_oidc_provider_connects(backend: Backend) {
    let world = oidc_world(backend).await;
    let connection = world
        .new_connection(broker_core::domain::ProviderKind::Generic)
        .await;
    let page = world
        .connect(&connection, AuthorizationPurpose::Connect)
        .await;
    assert_page(&page, StatusCode::OK, &["is connected"]);
    let stored = world.connection(&connection).await;
    assert_eq!(
        stored.authorized_by.map(|i| i.subject),
        Some(broker_tests::oidc::ACCOUNT.to_string())
    );
    world.check_logs();
}

/// An app whose scopes leave out `openid` asks for no id_token: it connects, though Twinfield still
/// gets the nonce it wants on every request.
async fn a_twinfield_app_without_openid_connects(backend: Backend) {
    let world = world(backend, Which::Twinfield).await;
    let store = &world.ctx.backend.store;
    let mut app = store
        .get_app(&world.tenant, &world.app)
        .await
        .unwrap()
        .unwrap();
    app.scopes = [
        "twf.user",
        "twf.organisation",
        "twf.organisationUser",
        "offline_access",
    ]
    .map(String::from)
    .to_vec();
    store.put_app(&app).await.unwrap();
    let connection = world
        .new_connection(broker_core::domain::ProviderKind::Twinfield)
        .await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    let attempt = world.authorize(&link).await;
    let page = world.finish(&attempt).await;
    assert_page(&page, StatusCode::OK, &["is connected", "TWF-DEMO"]);
    world.check_logs();
}

/// RFC 7009 on disconnect: the provider (oidc-provider, revocation enabled) is asked to revoke the
/// refresh token first, and the connection's history says so.
async fn a_disconnect_revokes_the_refresh_token_at_the_provider(backend: Backend) {
    let world = oidc_world(backend).await;
    let connection = world
        .new_connection(broker_core::domain::ProviderKind::Generic)
        .await;
    let page = world
        .connect(&connection, AuthorizationPurpose::Connect)
        .await;
    assert_page(&page, StatusCode::OK, &["is connected"]);
    let stored = world.connection(&connection).await;
    let tokens = world.tokens(&stored).await;
    let reason = disconnect(&world, &stored).await;
    assert!(reason.contains("revoked at the provider"), "{reason}");
    // The grant is gone at the provider, not only in the broker.
    let store = &world.ctx.backend.store;
    let app = store
        .get_app(&world.tenant, &world.app)
        .await
        .unwrap()
        .unwrap();
    let secret = world
        .ctx
        .backend
        .vault
        .get_client_secret(&world.tenant, &world.app)
        .await
        .unwrap()
        .unwrap();
    let client = world.ctx.providers.oauth_client(&app, secret).unwrap();
    let e = client.refresh(&tokens, None).await.unwrap_err();
    assert_eq!(
        e.class,
        broker_core::providers::ErrorClass::GrantRevoked,
        "{e}"
    );
    world.check_logs();
}

async fn a_disconnect_where_revocation_is_not_offered_says_so(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let page = world
        .connect(&connection, AuthorizationPurpose::Connect)
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let stored = world.connection(&connection).await;
    let reason = disconnect(&world, &stored).await;
    assert!(reason.contains("offers no token revocation"), "{reason}");
}

/// Disconnects through the integration API; the disconnect transition's reason.
async fn disconnect(world: &World, connection: &Connection) -> String {
    use broker_core::api::{Caller, IntegrationApi};
    use broker_core::domain::{ApiKeyRecord, ApiKeyScope};
    let api = IntegrationApi::new(world.ctx.clone());
    let caller = Caller {
        key: ApiKeyRecord::generate(
            world.tenant.clone(),
            "ops",
            ApiKeyScope::default(),
            world.clock.now(),
        )
        .record,
    };
    let view = api
        .disconnect(&caller, connection.id.as_str())
        .await
        .unwrap();
    assert_eq!(view.status, "disconnected");
    let transitions = world
        .ctx
        .backend
        .store
        .list_transitions(&connection.id, PageRequest::first(100))
        .await
        .unwrap()
        .items;
    let last = transitions.last().unwrap();
    assert_eq!(last.to, StatusKind::Disconnected);
    world.assert_clean(&last.reason);
    last.reason.clone()
}

// ---------------------------------------------------------------------------------------------------
// Refusals: each leaves the connection as it was.

async fn exact_world(backend: Backend) -> (World, Connection) {
    let world = world(backend, Which::Exact(ExactCountry::Netherlands)).await;
    let connection = world
        .new_connection(broker_core::domain::ProviderKind::ExactOnline)
        .await;
    (world, connection)
}

async fn a_forged_state_is_refused(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    // Taken after the link: issuing one retires the older links, a write of its own.
    let before = world.snapshot(&connection).await;
    let attempt = world.authorize(&link).await;
    let mut forged = attempt.callback.clone();
    let code = param(&forged, "code").unwrap();
    forged
        .query_pairs_mut()
        .clear()
        .append_pair("code", &code)
        .append_pair("state", &"A".repeat(43));
    let page = world.get(&attempt.browser, forged.as_str()).await;
    assert_page(
        &page,
        StatusCode::BAD_REQUEST,
        &["unknown or was already used", "Try again"],
    );
    assert!(
        page.html.contains(&format!("href=\"{link}\"")),
        "the same link is offered"
    );
    assert_eq!(world.snapshot(&connection).await, before);
    world.check_logs();
}

async fn a_replayed_state_is_refused(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    let attempt = world.authorize(&link).await;
    assert_eq!(world.finish(&attempt).await.status, StatusCode::OK);
    // The link is spent now; a newer one gives the replaying browser cookies of its own.
    let newer = world
        .link(&connection, AuthorizationPurpose::Reconnect)
        .await;
    let after = world.snapshot(&connection).await;
    // The same callback again, with the cookies put back as they were.
    let replay = browser();
    let first = world.get(&replay, newer.as_str()).await;
    assert_eq!(first.status, StatusCode::FOUND);
    let page = world.get(&replay, attempt.callback.as_str()).await;
    assert_page(
        &page,
        StatusCode::BAD_REQUEST,
        &["unknown or was already used"],
    );
    let page = world.finish(&attempt).await;
    assert_page(
        &page,
        StatusCode::BAD_REQUEST,
        &["unknown or was already used"],
    );
    assert_eq!(world.snapshot(&connection).await, after);
    world.check_logs();
}

async fn concurrent_callbacks_with_one_state_complete_once(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    let attempt = world.authorize(&link).await;
    let (a, b, c) = tokio::join!(
        world.finish(&attempt),
        world.finish(&attempt),
        world.finish(&attempt)
    );
    let mut statuses = vec![a.status, b.status, c.status];
    statuses.sort();
    assert_eq!(
        statuses,
        vec![
            StatusCode::OK,
            StatusCode::BAD_REQUEST,
            StatusCode::BAD_REQUEST
        ]
    );
    let after = world.snapshot(&connection).await;
    assert_eq!(
        (after.version, after.transitions),
        (connection.version() + 2, 1) // the link's write, then one completion
    );
    world.check_logs();
}

async fn an_expired_state_is_refused(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    // Taken after the link: issuing one retires the older links, a write of its own.
    let before = world.snapshot(&connection).await;
    let attempt = world.authorize(&link).await;
    world.clock.advance(Duration::minutes(11));
    let page = world.finish(&attempt).await;
    assert_page(&page, StatusCode::GONE, &["expired", "Try again"]);
    assert_eq!(world.snapshot(&connection).await, before);
    world.check_logs();
}

async fn a_state_from_another_browser_is_refused(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    // Taken after the link: issuing one retires the older links, a write of its own.
    let before = world.snapshot(&connection).await;
    let attempt = world.authorize(&link).await;
    let page = world.get(&browser(), attempt.callback.as_str()).await;
    assert_page(&page, StatusCode::BAD_REQUEST, &["another browser"]);
    assert!(!page.html.contains("Try again"), "no link for a stranger");
    assert_eq!(world.snapshot(&connection).await, before);
    // The state was spent: the right browser cannot use it afterwards either.
    let page = world.finish(&attempt).await;
    assert_page(&page, StatusCode::BAD_REQUEST, &["already used"]);
    assert_eq!(world.snapshot(&connection).await, before);
    world.check_logs();
}

async fn denied_consent_is_refused(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    world.sim().push_consent_override(ConsentOverride {
        decision: ConsentDecision::Deny,
        user: None,
    });
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    // Taken after the link: issuing one retires the older links, a write of its own.
    let before = world.snapshot(&connection).await;
    let attempt = world.authorize(&link).await;
    assert_eq!(
        param(&attempt.callback, "error").as_deref(),
        Some("access_denied")
    );
    let page = world.finish(&attempt).await;
    assert_page(
        &page,
        StatusCode::FORBIDDEN,
        &["not granted at Exact Online", "allow access", "Try again"],
    );
    assert_eq!(world.snapshot(&connection).await, before);
    assert!(
        world.logs.text().contains("denied"),
        "the refusal is logged"
    );
    world.check_logs();
}

async fn a_provider_error_on_the_code_exchange_is_refused(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    world.sim().inject_fault(FaultRule::next(
        "exact.token",
        1,
        FaultAction::Status {
            status: 503,
            body: "{\"error\":\"temporarily_unavailable\"}".into(),
            content_type: Some("application/json".into()),
        },
    ));
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    // Taken after the link: issuing one retires the older links, a write of its own.
    let before = world.snapshot(&connection).await;
    let attempt = world.authorize(&link).await;
    let page = world.finish(&attempt).await;
    assert_page(
        &page,
        StatusCode::BAD_GATEWAY,
        &["unavailable", "Try again"],
    );
    assert_eq!(world.snapshot(&connection).await, before);
    world.check_logs();
}

/// Twinfield naming a cluster outside the allow-list (https under twinfield.com): the connect is
/// refused with a page that says so, and nothing is stored.
async fn a_twinfield_cluster_outside_the_allow_list_is_refused(backend: Backend) {
    let world = world(backend, Which::Twinfield).await;
    let connection = world
        .new_connection(broker_core::domain::ProviderKind::Twinfield)
        .await;
    world.sim().update_knobs(|k| {
        k.twinfield_cluster_url_override = Some("https://twinfield.evil.example".into())
    });
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    // Taken after the link: issuing one retires the older links, a write of its own.
    let before = world.snapshot(&connection).await;
    let attempt = world.authorize(&link).await;
    let page = world.finish(&attempt).await;
    assert_page(
        &page,
        StatusCode::BAD_GATEWAY,
        &[
            "twinfield.evil.example",
            "not an allowed address",
            "Nothing was changed",
        ],
    );
    assert_eq!(world.snapshot(&connection).await, before);
    world.check_logs();
}

/// An Acumatica registration whose instance URL is a private address (stored before registrations
/// were checked, or by a tool that does not check): the connect start refuses to call it, with a
/// page that says why and who can fix it.
async fn an_instance_on_a_private_address_is_not_called(backend: Backend) {
    let world = world(backend, Which::Acumatica).await;
    let mut app = world
        .ctx
        .backend
        .store
        .get_app(&world.tenant, &world.app)
        .await
        .unwrap()
        .unwrap();
    app.settings = ProviderSettings::Acumatica {
        instance_url: ServiceUrl::parse("https://10.0.0.1/acumatica/demo").unwrap(),
        tenant: "Company".into(),
        refresh_tokens: None,
    };
    world.ctx.backend.store.put_app(&app).await.unwrap();
    let connection = world
        .new_connection(broker_core::domain::ProviderKind::Acumatica)
        .await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    let before = world.snapshot(&connection).await;
    let page = world.get(&browser(), link.as_str()).await;
    assert_page(
        &page,
        StatusCode::BAD_GATEWAY,
        &[
            "10.0.0.1 is a private network address",
            "public addresses",
            "the app registration needs fixing",
        ],
    );
    assert_eq!(world.snapshot(&connection).await, before);
    world.check_logs();
}

async fn a_tampered_nonce_is_refused(backend: Backend) {
    let world = world(backend, Which::Twinfield).await;
    let connection = world
        .new_connection(broker_core::domain::ProviderKind::Twinfield)
        .await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    // Taken after the link: issuing one retires the older links, a write of its own.
    let before = world.snapshot(&connection).await;
    // The provider signs whatever nonce reaches it: one swapped on the way must not be accepted.
    let attempt = world
        .authorize_with(&link, |url| {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "nonce" {
                        "swapped-nonce".into()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        })
        .await;
    let page = world.finish(&attempt).await;
    assert_page(
        &page,
        StatusCode::BAD_GATEWAY,
        &["nonce", "Nothing was changed"],
    );
    assert_eq!(world.snapshot(&connection).await, before);
    world.check_logs();
}

async fn a_reused_code_is_refused(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    let first = world.authorize(&link).await;
    assert_eq!(world.finish(&first).await.status, StatusCode::OK);
    // A new attempt (from a newer link: the first is spent) whose callback carries the spent code
    // with its own, valid state.
    let newer = world
        .link(&connection, AuthorizationPurpose::Reconnect)
        .await;
    let after = world.snapshot(&connection).await;
    let second = world.authorize(&newer).await;
    let mut reused = second.callback.clone();
    let state = param(&reused, "state").unwrap();
    reused
        .query_pairs_mut()
        .clear()
        .append_pair("code", &param(&first.callback, "code").unwrap())
        .append_pair("state", &state);
    let page = world.get(&second.browser, reused.as_str()).await;
    assert_page(&page, StatusCode::BAD_GATEWAY, &["Nothing was changed"]);
    assert_eq!(world.snapshot(&connection).await, after);
    world.check_logs();
}

async fn a_reconnect_by_the_wrong_person_is_refused(backend: Backend) {
    let world = world(backend, Which::Acumatica).await;
    let connection = world
        .new_connection(broker_core::domain::ProviderKind::Acumatica)
        .await;
    world
        .connect(&connection, AuthorizationPurpose::Connect)
        .await;
    world
        .needs_reconnect(&connection, |c| {
            let mut required = Identity::new("integration.user").unwrap();
            required.display_name = Some("Integration <User>".into());
            c.required_identity = Some(required);
        })
        .await;
    let link = world
        .link(&connection, AuthorizationPurpose::Reconnect)
        .await;
    // Taken after the link: issuing one retires the older links, a write of its own.
    let before = world.snapshot(&connection).await;
    let attempt = world.authorize(&link).await;
    let page = world.finish(&attempt).await;
    assert_page(
        &page,
        StatusCode::FORBIDDEN,
        &[
            "must be authorized by Integration &lt;User&gt;",
            "sign in as the designated integration user",
        ],
    );
    assert_eq!(world.snapshot(&connection).await, before);
    assert_eq!(before.status, StatusKind::ReconnectRequired);
    let logs = world.logs.text();
    assert!(logs.contains("identity_mismatch") && logs.contains(connection.id.as_str()));
    world.check_logs();
}

async fn a_reconnect_without_the_bound_division_is_refused(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    world
        .connect(&connection, AuthorizationPurpose::Connect)
        .await;
    let base_url = ServiceUrl::parse(&world.sim().exact_base("nl")).unwrap();
    // A record stored before user ids and granted divisions were kept, bound to a division the
    // simulator's user cannot reach.
    world
        .needs_reconnect(&connection, |c| {
            c.context = Some(ProviderContext::ExactOnline {
                base_url,
                division: 999,
                user_id: None,
                divisions: vec![],
            })
        })
        .await;
    let tokens_before = world.tokens(&world.connection(&connection).await).await;
    let link = world
        .link(&connection, AuthorizationPurpose::Reconnect)
        .await;
    // Taken after the link: issuing one retires the older links, a write of its own.
    let before = world.snapshot(&connection).await;
    let attempt = world.authorize(&link).await;
    let page = world.finish(&attempt).await;
    assert_page(
        &page,
        StatusCode::FORBIDDEN,
        &[
            "does not give access to Exact Online division 999",
            "divisions 123456, 654321",
            "include division 999",
            "create a new connection",
        ],
    );
    assert_eq!(world.snapshot(&connection).await, before);
    let tokens_after = world.tokens(&world.connection(&connection).await).await;
    assert_eq!(
        tokens_after.access_token.expose(),
        tokens_before.access_token.expose()
    );
    assert!(world.logs.text().contains("division_not_granted"));
    world.check_logs();
}

fn exact_user(name: &str, current: i64, divisions: &[i64]) -> provider_simulators::ExactUser {
    provider_simulators::ExactUser {
        user_name: name.into(),
        full_name: String::new(),
        current_division: current,
        divisions: divisions.to_vec(),
    }
}

fn bound_division(connection: &Connection) -> (i64, Vec<i64>, Option<String>) {
    match &connection.context {
        Some(ProviderContext::ExactOnline {
            division,
            divisions,
            user_id,
            ..
        }) => (
            *division,
            divisions.iter().map(|d| d.code).collect(),
            user_id.clone(),
        ),
        other => panic!("{other:?}"),
    }
}

async fn an_exact_reconnect_after_switching_division_is_accepted(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    world
        .connect(&connection, AuthorizationPurpose::Connect)
        .await;
    let (division, granted, user) = bound_division(&world.connection(&connection).await);
    assert_eq!((division, granted), (123456, vec![123456, 654321]));
    assert!(user.is_some());
    // The accountant opened the other administration in Exact Online's web UI.
    world
        .sim()
        .add_exact_user(exact_user("demo.user", 654321, &[123456, 654321]));
    world.needs_reconnect(&connection, |_| {}).await;
    let link = world
        .link(&connection, AuthorizationPurpose::Reconnect)
        .await;
    let page = world.finish(&world.authorize(&link).await).await;
    assert_page(&page, StatusCode::OK, &["division 123456"]);
    let stored = world.connection(&connection).await;
    assert_eq!(stored.status().kind(), StatusKind::Connected);
    assert_eq!(
        bound_division(&stored),
        (123456, vec![123456, 654321], user)
    );
    world.check_logs();
}

async fn an_exact_reconnect_by_another_user_is_refused(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    world
        .connect(&connection, AuthorizationPurpose::Connect)
        .await;
    world
        .sim()
        .add_exact_user(exact_user("other.user", 123456, &[123456, 654321]));
    world.needs_reconnect(&connection, |_| {}).await;
    world
        .sim()
        .push_consent_override(provider_simulators::ConsentOverride {
            decision: provider_simulators::ConsentDecision::Allow,
            user: Some("other.user".into()),
        });
    let link = world
        .link(&connection, AuthorizationPurpose::Reconnect)
        .await;
    // Taken after the link: issuing one retires the older links, a write of its own.
    let before = world.snapshot(&connection).await;
    let page = world.finish(&world.authorize(&link).await).await;
    assert_page(
        &page,
        StatusCode::FORBIDDEN,
        &["was authorized by other.user", "sign in as Demo User"],
    );
    assert_eq!(world.snapshot(&connection).await, before);
    assert!(world.logs.text().contains("other_user"));
    world.check_logs();
}

/// The value of a hidden form field on a page.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

impl World {
    /// Posts the division form of a success page from `browser`.
    async fn choose(&self, browser: &reqwest::Client, page: &Page, division: &str) -> Page {
        let response = browser
            .post(format!("{}/connect/division", self.base))
            .form(&[
                ("connection", hidden(&page.html, "connection").as_str()),
                ("ticket", hidden(&page.html, "ticket").as_str()),
                ("division", division),
            ])
            .send()
            .await
            .unwrap();
        let page = Page {
            status: response.status(),
            headers: response.headers().clone(),
            html: response.text().await.unwrap(),
        };
        check_security_headers(&page.headers);
        self.assert_clean(&page.html);
        page
    }
}

/// Several granted divisions and none named: the tokens are stored at once, bound provisionally to
/// the current division, and the page lets the customer choose, once, from the same browser.
async fn a_customer_chooses_among_several_granted_divisions(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    let attempt = world.authorize(&link).await;
    let page = world.finish(&attempt).await;
    assert_page(
        &page,
        StatusCode::OK,
        &[
            "is connected",
            "gives access to 2 divisions",
            "value=\"654321\"",
            "Use this division",
        ],
    );
    let offered = page.headers.get_all("set-cookie").iter().any(|c| {
        let c = c.to_str().unwrap().to_ascii_lowercase();
        c.starts_with("broker_division_choice=")
            && c.contains("httponly")
            && c.contains("samesite=strict")
    });
    assert!(offered, "{:?}", page.headers);
    // Durable before any choice: connected, tokens stored, provisionally bound.
    let stored = world.connection(&connection).await;
    assert_eq!(stored.status().kind(), StatusKind::Connected);
    assert!(stored.credentials.is_some() && stored.division_choice.is_some());
    assert_eq!(bound_division(&stored).0, 123456);

    // Another browser (no cookie) with the page's values: refused.
    let stranger = world.choose(&browser(), &page, "654321").await;
    assert_page(&stranger, StatusCode::BAD_REQUEST, &["another browser"]);
    // A division the authorization does not grant: refused.
    let bogus = world.choose(&attempt.browser, &page, "999").await;
    assert_page(
        &bogus,
        StatusCode::BAD_REQUEST,
        &["not one this authorization"],
    );
    assert_eq!(
        bound_division(&world.connection(&connection).await).0,
        123456
    );

    let chosen = world.choose(&attempt.browser, &page, "654321").await;
    assert_page(
        &chosen,
        StatusCode::OK,
        &["division chosen", "division 654321"],
    );
    let stored = world.connection(&connection).await;
    assert_eq!(bound_division(&stored).0, 654321);
    assert!(stored.division_choice.is_none());
    assert_eq!(stored.status().kind(), StatusKind::Connected);

    // Single use.
    let again = world.choose(&attempt.browser, &page, "123456").await;
    assert_page(&again, StatusCode::BAD_REQUEST, &["already made"]);
    assert_eq!(
        bound_division(&world.connection(&connection).await).0,
        654321
    );
    world.remember(&hidden(&page.html, "ticket"));
    world.check_logs();
}

/// A consent restricted to 654321 while 123456 is open in Exact Online, for both readings of
/// whether `system/Divisions` checks the division in its URL.
async fn exact_binds_a_granted_division_when_the_current_one_is_not(backend: Backend) {
    let (world, _) = exact_world(backend).await;
    for checks_url in [true, false] {
        for named in [None, Some(654321)] {
            let mut connection = world
                .new_connection(broker_core::domain::ProviderKind::ExactOnline)
                .await;
            world
                .sim()
                .update_knobs(|k| k.exact_divisions_checks_url_division = checks_url);
            world
                .sim()
                .set_exact_division_scope("demo.user", Some(vec![654321]));
            if named.is_some() {
                let mut c = world.connection(&connection).await;
                c.requested_division = named;
                world
                    .ctx
                    .backend
                    .store
                    .save_connection(&c, Fence::Version, &[])
                    .await
                    .unwrap();
                connection = world.connection(&connection).await;
            }
            let link = world.link(&connection, AuthorizationPurpose::Connect).await;
            let page = world.finish(&world.authorize(&link).await).await;
            let stored = world.connection(&connection).await;
            if checks_url && named.is_none() {
                // Nothing the broker knows reaches the list: refused, saying what to do.
                assert_page(
                    &page,
                    StatusCode::FORBIDDEN,
                    &["did not say which divisions", "open one of the divisions"],
                );
                assert_eq!(stored.status().kind(), StatusKind::NotConnected);
            } else {
                assert_page(&page, StatusCode::OK, &["is connected", "division 654321"]);
                assert_eq!(bound_division(&stored).0, 654321, "{checks_url} {named:?}");
                assert_eq!(bound_division(&stored).1, vec![654321]);
            }
        }
    }
    world.check_logs();
}

async fn a_malformed_or_oversized_query_is_refused(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    // Taken after the link: issuing one retires the older links, a write of its own.
    let before = world.snapshot(&connection).await;
    let attempt = world.authorize(&link).await;
    let callback = format!("{}/oauth/callback", world.base);
    let state = param(&attempt.callback, "state").unwrap();
    let cases = [
        format!("{callback}?state={state}&code=x&pad={}", "p".repeat(5000)),
        format!("{callback}?state={state}&code={}", "c".repeat(3000)),
        format!("{callback}?state={state}&state={state}&code=x"),
        format!("{callback}?code=x"),
        format!("{callback}?state=%FF%FE&code=x"),
    ];
    for url in &cases {
        let page = world.get(&attempt.browser, url).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{url}: {}", page.html);
        assert_eq!(world.snapshot(&connection).await, before);
    }
    // None of those spent the state: the real callback still completes.
    assert_eq!(world.finish(&attempt).await.status, StatusCode::OK);
    // A malformed link token.
    let page = world
        .get(&browser(), &format!("{}/connect/not-a-token", world.base))
        .await;
    assert_page(&page, StatusCode::BAD_REQUEST, &["not valid"]);
    world.check_logs();
}

async fn hostile_text_in_the_callback_is_escaped(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    // Taken after the link: issuing one retires the older links, a write of its own.
    let before = world.snapshot(&connection).await;
    let attempt = world.authorize(&link).await;
    let mut hostile = attempt.callback.clone();
    let state = param(&hostile, "state").unwrap();
    hostile
        .query_pairs_mut()
        .clear()
        .append_pair("state", &state)
        .append_pair("error", "access_denied\"><img src=x onerror=alert(1)>")
        .append_pair(
            "error_description",
            "<script>alert('pwned')</script><a href=\"https://evil.example\">click</a>",
        );
    let page = world.get(&attempt.browser, hostile.as_str()).await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.html);
    assert!(page
        .html
        .contains("&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;"));
    for raw in [
        "<script",
        "<img",
        "<a href=\"https://evil",
        "onerror=alert(1)>",
    ] {
        assert!(
            !page.html.contains(raw),
            "{raw} reached the page: {}",
            page.html
        );
    }
    assert_eq!(world.snapshot(&connection).await, before);
    world.check_logs();
}

// ---------------------------------------------------------------------------------------------------
// Reconnecting.

async fn a_connection_that_needs_reconnecting_is_reconnected(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    world
        .connect(&connection, AuthorizationPurpose::Connect)
        .await;
    let first = world.connection(&connection).await;
    let old_tokens = world.tokens(&first).await;
    world
        .sim()
        .revoke_grant(provider_simulators::Provider::Exact, "demo.user", None);
    assert!(!world
        .sim()
        .is_access_token_valid(old_tokens.access_token.expose()));
    world.needs_reconnect(&connection, |_| {}).await;
    world.clock.advance(Duration::minutes(5));
    let page = world
        .connect(&connection, AuthorizationPurpose::Reconnect)
        .await;
    assert_page(
        &page,
        StatusCode::OK,
        &["is reconnected", "division 123456"],
    );
    let after = world.connection(&connection).await;
    let new_tokens = world.tokens(&after).await;
    assert_ne!(
        new_tokens.access_token.expose(),
        old_tokens.access_token.expose()
    );
    let (old_slot, new_slot) = (
        first.credentials.as_ref().unwrap().slot,
        after.credentials.as_ref().unwrap().slot,
    );
    assert_eq!(
        new_slot,
        old_slot.other(),
        "written to the other slot, then switched"
    );
    let transitions = world
        .ctx
        .backend
        .store
        .list_transitions(&after.id, PageRequest::first(100))
        .await
        .unwrap()
        .items;
    let kinds: Vec<(StatusKind, StatusKind)> = transitions.iter().map(|t| (t.from, t.to)).collect();
    assert_eq!(
        kinds,
        vec![
            (StatusKind::NotConnected, StatusKind::Connected),
            (StatusKind::Connected, StatusKind::ReconnectRequired),
            (StatusKind::ReconnectRequired, StatusKind::Connected),
        ]
    );
    world.check_logs();
}

async fn a_legacy_twinfield_connection_is_reconnected(backend: Backend) {
    let world = world(backend, Which::Twinfield).await;
    let connection = world
        .new_connection(broker_core::domain::ProviderKind::Twinfield)
        .await;
    // The state seed 000 calls "Reconnect": old credentials, retired by the provider.
    let mut legacy = world.connection(&connection).await;
    legacy.context = Some(ProviderContext::Twinfield {
        cluster_url: ServiceUrl::parse(&world.sim().twinfield_cluster_url("accounting")).unwrap(),
        organisation_code: "twf-demo".into(),
        organisation_id: None,
    });
    let transition = legacy
        .apply(
            StatusEvent::ReconnectNeeded(ReconnectReason::new(
                ReconnectKind::LegacyCredentialsRetired,
                "OAuth2AuthenticationRequired",
            )),
            Actor::System("test".into()),
            world.clock.now(),
        )
        .unwrap();
    let keeper = CredentialKeeper::new(
        world.ctx.backend.store.clone(),
        world.ctx.backend.vault.clone(),
    );
    let target = CredentialKeeper::next_target(&legacy);
    let legacy = keeper
        .commit(
            legacy,
            target,
            &Credentials::TwinfieldLegacy(LegacyTwinfieldCredentials {
                access_token: LegacyAccessToken::new("legacy-access-token-1"),
                access_secret: LegacyAccessSecret::new("legacy-access-secret-1"),
            }),
            Fence::Version,
            &[transition],
        )
        .await
        .unwrap();
    world.remember("legacy-access-token-1");
    world.remember("legacy-access-secret-1");
    let page = world
        .connect(&legacy, AuthorizationPurpose::Reconnect)
        .await;
    assert_page(
        &page,
        StatusCode::OK,
        &["Twinfield is reconnected", "TWF-DEMO"],
    );
    let after = world.connection(&legacy).await;
    assert_eq!(
        after.credentials.as_ref().unwrap().slot,
        legacy.credentials.as_ref().unwrap().slot.other()
    );
    world.check_logs();
}

async fn an_expired_link_is_refused(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    world.clock.advance(Duration::days(8));
    let page = world.get(&browser(), link.as_str()).await;
    assert_page(&page, StatusCode::GONE, &["expired", "new connect link"]);
    world.check_logs();
}

broker_tests::on_both_backends!(
    current_thread:
    twinfield_connects,
    exact_connects_in_the_netherlands,
    exact_connects_in_belgium,
    acumatica_connects,
    an_oidc_provider_connects,
    a_twinfield_app_without_openid_connects,
    a_disconnect_revokes_the_refresh_token_at_the_provider,
    a_disconnect_where_revocation_is_not_offered_says_so,
    a_forged_state_is_refused,
    a_replayed_state_is_refused,
    an_expired_state_is_refused,
    concurrent_callbacks_with_one_state_complete_once,
    a_state_from_another_browser_is_refused,
    denied_consent_is_refused,
    a_provider_error_on_the_code_exchange_is_refused,
    a_reused_code_is_refused,
    a_tampered_nonce_is_refused,
    a_twinfield_cluster_outside_the_allow_list_is_refused,
    an_instance_on_a_private_address_is_not_called,
    a_reconnect_by_the_wrong_person_is_refused,
    a_reconnect_without_the_bound_division_is_refused,
    an_exact_reconnect_after_switching_division_is_accepted,
    an_exact_reconnect_by_another_user_is_refused,
    exact_binds_a_granted_division_when_the_current_one_is_not,
    a_customer_chooses_among_several_granted_divisions,
    a_malformed_or_oversized_query_is_refused,
    hostile_text_in_the_callback_is_escaped,
    a_connection_that_needs_reconnecting_is_reconnected,
    a_legacy_twinfield_connection_is_reconnected,
    an_expired_link_is_refused,
    head_requests_have_no_side_effects,
    a_link_is_spent_by_its_connection_and_retired_by_a_newer_one,
    a_generic_reconnect_by_another_account_is_refused_unless_allowed,
    an_unknown_link_is_refused_without_a_store_read_after_the_first_miss,
);

/// A HEAD (a link checker, a mail scanner) on the connect link or on the callback starts nothing and
/// spends nothing: the same state and code still complete the connection once, afterwards.
async fn head_requests_have_no_side_effects(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    // Taken after the link: issuing one retires the older links, a write of its own.
    let before = world.snapshot(&connection).await;
    let head = browser().head(link.clone()).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert!(
        head.headers().get("set-cookie").is_none(),
        "no authorization started"
    );
    let attempt = world.authorize(&link).await;
    let calls = world
        .sim()
        .token_calls(provider_simulators::Provider::Exact);
    let head = attempt
        .browser
        .head(attempt.callback.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        world
            .sim()
            .token_calls(provider_simulators::Provider::Exact),
        calls,
        "HEAD exchanged no code"
    );
    assert_eq!(world.snapshot(&connection).await, before);
    let page = world.finish(&attempt).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert_eq!(
        world
            .sim()
            .token_calls(provider_simulators::Provider::Exact),
        calls + 1
    );
    world.check_logs();
}

/// A link works until the connection it belongs to completes (then it is spent) or a newer link is
/// issued for it (then it is retired). Either way, opening it shows a page that says so with the
/// connection's status, and starts no authorization.
async fn a_link_is_spent_by_its_connection_and_retired_by_a_newer_one(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let first = world.link(&connection, AuthorizationPurpose::Connect).await;
    let second = world.link(&connection, AuthorizationPurpose::Connect).await;
    // The older link is retired by the newer one.
    let page = world.get(&browser(), first.as_str()).await;
    assert_page(
        &page,
        StatusCode::GONE,
        &[
            "This link was replaced",
            "A newer link replaced this one",
            "not connected",
            "most recent link",
        ],
    );
    assert!(page.headers.get("set-cookie").is_none(), "nothing started");
    // The newer one connects, and is spent by it.
    let attempt = world.authorize(&second).await;
    assert_eq!(world.finish(&attempt).await.status, StatusCode::OK);
    let after = world.snapshot(&connection).await;
    let page = world.get(&browser(), second.as_str()).await;
    assert_page(
        &page,
        StatusCode::GONE,
        &[
            "This link was already used",
            "is connected",
            "Nothing to do",
        ],
    );
    assert!(page.headers.get("set-cookie").is_none(), "nothing started");
    assert_eq!(world.snapshot(&connection).await, after);
    // A reconnect link issued afterwards works again.
    let reconnect = world
        .link(&connection, AuthorizationPurpose::Reconnect)
        .await;
    let attempt = world.authorize(&reconnect).await;
    assert_eq!(world.finish(&attempt).await.status, StatusCode::OK);
    world.check_logs();
}

/// A generic provider names no organisation: the account that connected (`sub`) is the one a reconnect
/// must come from, unless the connection allows a change of user. Against oidc-provider, signing in
/// another account on the second authorization.
async fn a_generic_reconnect_by_another_account_is_refused_unless_allowed(backend: Backend) {
    let world = oidc_world(backend).await;
    let Provider::Oidc(server) = &world.provider else {
        unreachable!("an oidc world")
    };
    let connection = world
        .new_connection(broker_core::domain::ProviderKind::Generic)
        .await;
    world
        .connect(&connection, AuthorizationPurpose::Connect)
        .await;
    server.sign_in_as("someone-else").await.unwrap();
    let link = world
        .link(&connection, AuthorizationPurpose::Reconnect)
        .await;
    let before = world.snapshot(&connection).await;
    let attempt = world.authorize(&link).await;
    let page = world.finish(&attempt).await;
    assert_page(
        &page,
        StatusCode::FORBIDDEN,
        &[
            "someone-else",
            broker_tests::oidc::ACCOUNT,
            "Nothing was changed",
        ],
    );
    assert_eq!(world.snapshot(&connection).await, before);

    // The integration allows a change of user: the same reconnect is accepted.
    let mut allowing = world.connection(&connection).await;
    allowing.allow_user_change = true;
    world
        .ctx
        .backend
        .store
        .save_connection(&allowing, Fence::Version, &[])
        .await
        .unwrap();
    world
        .connect(&connection, AuthorizationPurpose::Reconnect)
        .await;
    let stored = world.connection(&connection).await;
    assert_eq!(
        stored.authorized_by.map(|who| who.subject).as_deref(),
        Some("someone-else")
    );
    world.check_logs();
}

/// A link token no link has is looked up once; for a minute after that it is refused without a store
/// read. Shown by storing a link under that very token after the first miss: still refused.
async fn an_unknown_link_is_refused_without_a_store_read_after_the_first_miss(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let (token, key) = broker_core::domain::new_one_time_secret();
    let url = format!("{}/connect/{}", world.base, token.expose());
    let page = world.get(&browser(), &url).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    let now = world.clock.now();
    let link = broker_core::domain::ConnectLink {
        tenant: world.tenant.clone(),
        connection: connection.id.clone(),
        purpose: AuthorizationPurpose::Connect,
        generation: world.connection(&connection).await.link_generation,
        created_at: now,
        expires_at: now + Duration::days(7),
    };
    world.ctx.backend.store.put_link(&key, &link).await.unwrap();
    let page = world.get(&browser(), &url).await;
    assert_eq!(
        page.status,
        StatusCode::BAD_REQUEST,
        "refused from the cache"
    );
    // A link that never missed works as ever.
    let fresh = world.link(&connection, AuthorizationPurpose::Connect).await;
    let response = browser().get(fresh).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
}
