//! The broker on one machine, with no AWS account: every function's router in one process on
//! 127.0.0.1, the schedules on timers, the embedded store, the sandbox providers (the simulators) and
//! emails written to an outbox folder. The handlers are the same code the Lambdas run.

use anyhow::{Context, Result};
use broker_core::adapters::OutboxMailer;
use broker_core::backend::{Backend, BackendConfig};
use broker_core::clock::{Clock, SystemClock};
use broker_core::connect::issue_link;
use broker_core::context::BrokerContext;
use broker_core::domain::*;
use broker_core::events::Dispatcher;
use broker_core::ids::{AppId, TenantId};
use broker_core::notify::{Notifier, NotifySettings};
use broker_core::ports::StoreError;
use broker_core::providers::{AddressPolicy, Catalogue, HttpSettings, ProviderHttp, Providers};
use broker_core::refresh::EngineSettings;
use broker_core::secret::ClientSecret;
use chrono::Utc;
use provider_simulators::{
    AcumaticaClientRegistration, AcumaticaRefreshPolicy, ClientRegistration, Simulator,
    SimulatorConfig, SimulatorHandle,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

pub const SANDBOX_CLIENT_ID: &str = "demo-client";
pub const SANDBOX_CLIENT_SECRET: &str = "demo-secret";
pub const SANDBOX_ACUMATICA_CLIENT_ID: &str = "8d1f7c2e-5b3a-4e6f-9a0b-1c2d3e4f5a6b@Company";

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The broker's port on 127.0.0.1 (0: any free port).
    pub port: u16,
    /// Start the sandbox providers and point the catalogue at them.
    pub sandbox: bool,
    /// The sandbox providers' port (0: any free port).
    pub sandbox_port: u16,
    /// The sandbox consent page is skipped when true (scripts); a person clicks Allow otherwise.
    pub auto_consent: bool,
    pub outbox_dir: PathBuf,
    pub refresh_every: Duration,
    pub notify_every: Duration,
}

impl RunnerConfig {
    /// `BROKER_PORT` (8080), `BROKER_SANDBOX` (`on`; `off` talks to real providers),
    /// `BROKER_SANDBOX_PORT` (8081), `BROKER_SANDBOX_AUTO_CONSENT` (`off`), `BROKER_OUTBOX_DIR`
    /// (`.broker/outbox`), `BROKER_REFRESH_EVERY_SECS` (60), `BROKER_NOTIFY_EVERY_SECS` (30).
    pub fn from_env() -> Self {
        let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let port =
            |name: &str, default: u16| get(name).and_then(|v| v.parse().ok()).unwrap_or(default);
        Self {
            port: port("BROKER_PORT", 8080),
            sandbox: get("BROKER_SANDBOX").is_none_or(|v| v != "off"),
            sandbox_port: port("BROKER_SANDBOX_PORT", 8081),
            auto_consent: get("BROKER_SANDBOX_AUTO_CONSENT").is_some_and(|v| v == "on"),
            outbox_dir: get("BROKER_OUTBOX_DIR").map_or_else(
                || {
                    PathBuf::from(get("BROKER_DATA_DIR").unwrap_or_else(|| ".broker".into()))
                        .join("outbox")
                },
                PathBuf::from,
            ),
            refresh_every: Duration::from_secs(port("BROKER_REFRESH_EVERY_SECS", 60).max(1).into()),
            notify_every: Duration::from_secs(port("BROKER_NOTIFY_EVERY_SECS", 30).max(1).into()),
        }
    }
}

struct SandboxTime(provider_simulators::SimClock);

impl Clock for SandboxTime {
    fn now(&self) -> chrono::DateTime<Utc> {
        self.0.now()
    }
}

/// A demo connection the walkthrough offers.
#[derive(Debug, Clone)]
pub struct DemoConnection {
    pub provider: ProviderKind,
    pub id: String,
    pub connect_link: Url,
}

/// What a person needs to try the broker.
#[derive(Debug, Clone)]
pub struct Walkthrough {
    pub tenant: TenantId,
    /// Printed once at start; only its hash is stored.
    pub api_key: String,
    pub connections: Vec<DemoConnection>,
}

pub struct Running {
    pub base_url: Url,
    pub sandbox: Option<SimulatorHandle>,
    pub walkthrough: Walkthrough,
    pub ctx: BrokerContext,
    pub notifier: Arc<Notifier>,
    pub outbox_dir: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

pub async fn start(config: RunnerConfig) -> Result<Running> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], config.port)))
        .await
        .with_context(|| {
            format!(
                "port {} on 127.0.0.1 is taken: set BROKER_PORT to another",
                config.port
            )
        })?;
    let base_url = Url::parse(&format!("http://{}", listener.local_addr()?))?;
    let callback = format!("{}oauth/callback", base_url);

    let mut clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut catalogue = Catalogue::from_env()?;
    let sandbox = if config.sandbox {
        let sim = start_sandbox(&config, &callback).await?;
        catalogue.aim_at_sandbox(&sim.twinfield_login_base(), |country| {
            sim.exact_base(country.tld())
        })?;
        // The broker keeps the sandbox's time, so moving the sandbox clock (POST /_sim/clock/advance)
        // shows a day's or a month's behaviour in seconds, on both sides at once.
        clock = Arc::new(SandboxTime(sim.clock()));
        Some(sim)
    } else {
        None
    };
    let backend = Backend::connect(&BackendConfig::from_env()).await?;
    // The sandbox providers listen on loopback, and a local run may aim the catalogue at a provider
    // on this machine: loopback is allowed here, where the Lambda functions refuse it. Private and
    // link-local addresses stay refused.
    let http_settings = HttpSettings {
        addresses: AddressPolicy::AllowLoopback,
        ..HttpSettings::default()
    };
    catalogue.check_addresses(http_settings.addresses)?;
    let http = ProviderHttp::new(http_settings).map_err(anyhow::Error::msg)?;
    let providers = Providers::new(catalogue, http, clock.clone());
    let ctx = BrokerContext::new(
        backend,
        providers,
        clock,
        base_url.clone(),
        EngineSettings::default(),
    );

    let walkthrough = seed_demo(&ctx, sandbox.as_ref(), &callback).await?;
    let sender = EmailAddress::parse("broker@localhost.localdomain").map_err(anyhow::Error::msg)?;
    let settings = NotifySettings::from_env().unwrap_or_else(|_| NotifySettings::new(sender));
    let notifier = Arc::new(Notifier::new(
        ctx.clone(),
        Arc::new(OutboxMailer::new(&config.outbox_dir)),
        settings,
    ));

    // Each function's router has its own fallback (its own 404 page or problem document), so they are
    // not merged: `/v1/...` goes to the integration API, everything else to the browser routes.
    let router = local_router(&ctx);
    let mut tasks = vec![tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the local server stopped");
        }
    })];
    tasks.push(tokio::spawn(refresh_timer(
        ctx.clone(),
        config.refresh_every,
    )));
    tasks.push(tokio::spawn(notify_timer(
        notifier.clone(),
        config.notify_every,
    )));
    // Webhooks are delivered locally too (no event bus: that is EventBridge's, on AWS); the notifier's
    // tick drives them, as the notifier's schedule does on AWS.
    tasks.push(tokio::spawn(events_timer(
        Dispatcher::for_context(&ctx, None),
        config.notify_every,
    )));
    Ok(Running {
        base_url,
        sandbox,
        walkthrough,
        ctx,
        notifier,
        outbox_dir: config.outbox_dir,
        tasks,
    })
}

/// Every HTTP function on one listener, each answering with exactly what it answers on Lambda.
pub fn local_router(ctx: &BrokerContext) -> axum::Router {
    use tower::ServiceExt;
    let api = session_exchange::router(ctx.clone());
    let browser = oauth_callback::router(ctx.clone());
    axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (api, browser) = (api.clone(), browser.clone());
        async move {
            let path = request.uri().path();
            let to_api = path == "/v1" || path.starts_with("/v1/");
            let answer = if to_api {
                api.oneshot(request).await
            } else {
                browser.oneshot(request).await
            };
            match answer {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    })
}

async fn start_sandbox(config: &RunnerConfig, callback: &str) -> Result<SimulatorHandle> {
    let mut sim_config = SimulatorConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], config.sandbox_port)),
        ..SimulatorConfig::default()
    };
    sim_config.knobs.auto_consent = config.auto_consent;
    let sim = Simulator::start(sim_config).await.with_context(|| {
        format!(
            "the sandbox providers could not start on port {}: set BROKER_SANDBOX_PORT",
            config.sandbox_port
        )
    })?;
    let registration = || ClientRegistration {
        client_id: SANDBOX_CLIENT_ID.into(),
        client_secret: SANDBOX_CLIENT_SECRET.into(),
        redirect_uris: vec![callback.to_string()],
    };
    sim.register_twinfield_client(registration());
    sim.register_exact_client(registration());
    sim.register_acumatica_client(
        "demo",
        AcumaticaClientRegistration {
            client_id: SANDBOX_ACUMATICA_CLIENT_ID.into(),
            client_secret: SANDBOX_CLIENT_SECRET.into(),
            redirect_uris: vec![callback.to_string()],
            refresh_policy: AcumaticaRefreshPolicy::default(),
            rotate_refresh_tokens: true,
        },
    )?;
    Ok(sim)
}

/// A demo tenant with an app per sandbox provider, a fresh API key and a connection per app.
async fn seed_demo(
    ctx: &BrokerContext,
    sandbox: Option<&SimulatorHandle>,
    callback: &str,
) -> Result<Walkthrough> {
    let store = &ctx.backend.store;
    let tenant = TenantId::parse("demo")?;
    match store
        .insert_tenant(
            &Tenant::new(tenant.clone(), "Demo tenant", Utc::now()).map_err(anyhow::Error::msg)?,
        )
        .await
    {
        Ok(()) | Err(StoreError::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let key = ApiKeyRecord::generate(
        tenant.clone(),
        "local-runner",
        ApiKeyScope::default(),
        Utc::now(),
    );
    store.insert_api_key(&key.record).await?;
    let mut connections = Vec::new();
    if let Some(sim) = sandbox {
        let apps = [
            ("twinfield", ProviderSettings::Twinfield, SANDBOX_CLIENT_ID),
            (
                "exact-nl",
                ProviderSettings::ExactOnline {
                    country: ExactCountry::Netherlands,
                },
                SANDBOX_CLIENT_ID,
            ),
            (
                "acumatica",
                ProviderSettings::Acumatica {
                    instance_url: ServiceUrl::parse(&sim.acumatica_instance_url("demo"))
                        .map_err(anyhow::Error::msg)?,
                    tenant: "Company".into(),
                    refresh_tokens: None,
                    instance_per_connection: false,
                },
                SANDBOX_ACUMATICA_CLIENT_ID,
            ),
        ];
        for (id, settings, client_id) in apps {
            let app = OAuthApp {
                tenant: tenant.clone(),
                id: AppId::parse(id)?,
                settings,
                client_id: client_id.into(),
                redirect_uri: RedirectUri::parse(callback).map_err(anyhow::Error::msg)?,
                scopes: vec![],
                created_at: Utc::now(),
            };
            ctx.backend
                .vault
                .put_client_secret(&tenant, &app.id, &ClientSecret::new(SANDBOX_CLIENT_SECRET))
                .await?;
            store.put_app(&app).await?;
            let recipients = Recipients::parse(&["you@example.com"]).map_err(anyhow::Error::msg)?;
            let mut connection = Connection::new(
                tenant.clone(),
                app.id.clone(),
                app.provider(),
                recipients,
                Utc::now(),
            );
            connection.display_name = Some(format!("Demo {}", app.provider().display_name()));
            store.insert_connection(&connection, &[]).await?;
            let link =
                issue_link(ctx, &tenant, &connection.id, AuthorizationPurpose::Connect).await?;
            connections.push(DemoConnection {
                provider: app.provider(),
                id: connection.id.to_string(),
                connect_link: link,
            });
        }
    }
    Ok(Walkthrough {
        tenant,
        api_key: key.plaintext.expose().to_string(),
        connections,
    })
}

async fn refresh_timer(ctx: BrokerContext, every: Duration) {
    let settings = token_refresh::settings_from_env();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let deadline = tokio::time::Instant::now() + every.max(Duration::from_secs(5));
        token_refresh::refresh_due(&ctx, deadline, &settings).await;
    }
}

async fn notify_timer(notifier: Arc<Notifier>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    let mut last_daily: Option<chrono::NaiveDate> = None;
    loop {
        tick.tick().await;
        if let Err(e) = notifier.drain_outbox().await {
            tracing::warn!(error = %e, "sending notifications failed; the next tick retries");
        }
        let today = Utc::now().date_naive();
        if last_daily != Some(today) {
            match notifier.daily().await {
                Ok(_) => last_daily = Some(today),
                Err(e) => {
                    tracing::warn!(error = %e, "the daily expiry scan failed; the next tick retries")
                }
            }
        }
    }
}

async fn events_timer(dispatcher: Dispatcher, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let summary = dispatcher.run().await;
        if summary.errors > 0 {
            tracing::warn!(
                ?summary,
                "delivering events met errors; the next tick retries"
            );
        }
    }
}

/// The text printed at start.
pub fn describe(running: &Running) -> String {
    let base = running.base_url.as_str().trim_end_matches('/');
    let mut out = format!(
        "Connection broker running at {base}\n\
         Store: {}\nEmails go to: {}\n",
        match BackendConfig::from_env() {
            BackendConfig::Embedded { path } => format!("embedded ({})", path.display()),
            BackendConfig::Aws { table, .. } => format!("AWS (table {table})"),
        },
        running.outbox_dir.display()
    );
    if let Some(sim) = &running.sandbox {
        out.push_str(&format!("Sandbox providers: {}\n", sim.base_url()));
    }
    let w = &running.walkthrough;
    out.push_str(&format!(
        "\nTenant: {}\nAPI key (shown once): {}\n",
        w.tenant, w.api_key
    ));
    for c in &w.connections {
        out.push_str(&format!(
            "\n{} connection {}\n  1. open {} and click Allow\n",
            c.provider.display_name(),
            c.id,
            c.connect_link
        ));
        out.push_str(&format!(
            "  2. curl -s -X POST -H 'Authorization: Bearer {}' {base}/v1/connections/{}/session\n",
            w.api_key, c.id
        ));
    }
    out
}
