//! The pages people see, in a real browser: the local runner (every router, the embedded store, the
//! sandbox providers and their consent pages) opened by headless Chromium at a desktop's and a
//! phone's width. Each page is screenshotted into `tests/artifacts/<test>/`, checked for what a
//! person reads (state, button, language, time zone) and run through axe-core, which must find no
//! serious or critical accessibility violation.

use broker_core::domain::{
    Actor, ApiKeyRecord, ApiKeyScope, Connection, Locale, OAuthApp, ProviderSettings,
    ReconnectKind, ReconnectReason, RedirectUri, ReturnOrigin, StatusEvent, Tenant, TimeZone,
};
use broker_core::ids::{AppId, ConnectionId, TenantId};
use broker_core::ports::Fence;
use broker_core::secret::ClientSecret;
use broker_core::wording::words;
use broker_tests::browser::Browser;
use local_runner::{RunnerConfig, Running, SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

mod connection_page;
mod emails;
mod onboarding;
mod service_pages;
mod way_back;

const DESKTOP: u32 = 1280;
const PHONE: u32 = 390;

/// The local runner with one tenant of the test's own: an integration named "Boekhoudpartner" whose
/// connections may return to the small integration server started beside it.
struct World {
    running: Running,
    base: String,
    tenant: TenantId,
    api_key: String,
    /// The integration's own site, where the way back leads.
    integration: String,
    http: reqwest::Client,
}

static WORLDS: AtomicU32 = AtomicU32::new(0);

async fn world() -> World {
    let n = WORLDS.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("broker-pages-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Every world of this process shares one store folder: the variable is read once per start, and
    // each world works in a tenant of its own.
    static DATA_DIR: std::sync::Once = std::sync::Once::new();
    DATA_DIR.call_once(|| {
        let shared = std::env::temp_dir().join(format!("broker-pages-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&shared);
        std::env::set_var("BROKER_DATA_DIR", &shared);
        std::env::remove_var("BROKER_TABLE");
    });
    let running = local_runner::start(RunnerConfig {
        port: 0,
        sandbox: true,
        sandbox_port: 0,
        auto_consent: false,
        outbox_dir: dir.join("outbox"),
        refresh_every: Duration::from_secs(3600),
        notify_every: Duration::from_secs(3600),
    })
    .await
    .expect("the local runner starts");
    let base = running.base_url.as_str().trim_end_matches('/').to_string();
    let integration = integration_site().await;

    let store = &running.ctx.backend.store;
    let tenant = TenantId::parse(format!("pages-{n}")).unwrap();
    let mut record =
        Tenant::new(tenant.clone(), "Boekhoudpartner", running.ctx.clock.now()).unwrap();
    record.return_origins = vec![ReturnOrigin::parse(&integration).unwrap()];
    store.insert_tenant(&record).await.unwrap();
    for (id, settings) in [
        ("twinfield", ProviderSettings::Twinfield),
        (
            "exact-nl",
            ProviderSettings::ExactOnline {
                country: broker_core::domain::ExactCountry::Netherlands,
            },
        ),
    ] {
        let app = OAuthApp {
            tenant: tenant.clone(),
            id: AppId::parse(id).unwrap(),
            settings,
            client_id: SANDBOX_CLIENT_ID.into(),
            redirect_uri: RedirectUri::parse(&format!("{base}/oauth/callback")).unwrap(),
            scopes: vec![],
            created_at: running.ctx.clock.now(),
        };
        running
            .ctx
            .backend
            .vault
            .put_client_secret(&tenant, &app.id, &ClientSecret::new(SANDBOX_CLIENT_SECRET))
            .await
            .unwrap();
        store.put_app(&app).await.unwrap();
    }
    let key = ApiKeyRecord::generate(
        tenant.clone(),
        "pages",
        ApiKeyScope::default(),
        running.ctx.clock.now(),
    );
    store.insert_api_key(&key.record).await.unwrap();
    World {
        base,
        tenant,
        api_key: key.plaintext.expose().to_string(),
        integration,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        running,
    }
}

/// The integration's site: any path answers a page that names the query it was reached with.
async fn integration_site() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|uri: axum::http::Uri| async move {
        axum::response::Html(format!(
            "<!doctype html><html lang=\"en\"><head><title>Integration</title></head><body><main>\
             <h1>Back in the integration</h1><p id=\"query\">{}</p></main></body></html>",
            uri.query().unwrap_or_default().replace('<', "")
        ))
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    origin
}

/// A connection as the API answered it, with its link.
struct Created {
    id: ConnectionId,
    link: String,
}

impl World {
    /// `POST /v1/connections` over HTTP.
    async fn create(&self, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/v1/connections", self.base))
            .bearer_auth(&self.api_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    async fn connection(&self, app: &str, name: &str, extra: Value) -> Created {
        let mut body = json!({
            "app_id": app,
            "display_name": name,
            "recipients": ["boekhouding@example.nl"],
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let (status, created) = self.create(body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        Created {
            id: ConnectionId::parse(created["connection"]["id"].as_str().unwrap()).unwrap(),
            link: created["connect_link"]["url"].as_str().unwrap().to_string(),
        }
    }

    async fn stored(&self, id: &ConnectionId) -> Connection {
        self.running
            .ctx
            .backend
            .store
            .get_tenant_connection(&self.tenant, id)
            .await
            .unwrap()
            .unwrap()
    }

    /// Changes a stored connection as the engine or an operator would (language, zone, status).
    async fn change(&self, id: &ConnectionId, change: impl FnOnce(&mut Connection)) {
        let mut c = self.stored(id).await;
        change(&mut c);
        self.running
            .ctx
            .backend
            .store
            .save_connection(&c, Fence::Version, &[])
            .await
            .unwrap();
    }

    /// Marks the connection as needing a person, as the refresh engine does when the grant is revoked.
    async fn revoke(&self, id: &ConnectionId) {
        let mut c = self.stored(id).await;
        let now = self.running.ctx.clock.now();
        let transition = c
            .apply(
                StatusEvent::ReconnectNeeded(ReconnectReason::new(
                    ReconnectKind::GrantRevoked,
                    "invalid_grant",
                )),
                Actor::System("test".into()),
                now,
            )
            .unwrap();
        self.running
            .ctx
            .backend
            .store
            .save_connection(&c, Fence::Version, &[transition])
            .await
            .unwrap();
    }

    /// A new link for the connection, through the API.
    async fn reconnect_link(&self, id: &ConnectionId) -> String {
        let response = self
            .http
            .post(format!(
                "{}/v1/connections/{}/reconnect-link",
                self.base,
                id.as_str()
            ))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let link: Value = response.json().await.unwrap();
        link["url"].as_str().unwrap().to_string()
    }
}

/// Screenshots the page open in `browser` at both widths and fails on serious or critical
/// accessibility violations at either.
async fn look_at(browser: &mut Browser, name: &str) {
    for width in [DESKTOP, PHONE] {
        browser.set_width(width).await.unwrap();
        let shot = browser.screenshot(name).await.unwrap();
        assert!(shot.exists());
        let violations = browser.serious_accessibility_violations().await.unwrap();
        assert!(
            violations.is_empty(),
            "{name} at {width} px: {violations:#?}"
        );
    }
    browser.set_width(DESKTOP).await.unwrap();
}

/// Connects through the browser: the page's button, the sandbox consent page, Allow.
async fn connect_in(browser: &mut Browser, link: &str, shots: Option<&str>) {
    browser.open(link).await.unwrap();
    browser.click("#connect").await.unwrap();
    browser.wait_for("#allow").await.unwrap();
    if let Some(name) = shots {
        let text = browser.text().await.unwrap();
        assert!(
            text.contains("SANDBOX"),
            "the sandbox says what it is: {text}"
        );
        look_at(browser, name).await;
    }
    browser.click("#allow").await.unwrap();
    browser.wait_for("h1.ok").await.unwrap();
}

/// The moment as the page must write it.
fn moment(locale: Locale, at: chrono::DateTime<chrono::Utc>, zone: &str) -> String {
    words(locale).moment(at, TimeZone::parse(zone).unwrap())
}
