//! Status-change events end to end: webhooks delivered to a real HTTP receiver started here, on the
//! embedded store and on the AWS adapters (moto); signatures checked with an HMAC implementation
//! independent of the broker's (the `hmac` crate, not ring); the EventBridge put captured on moto
//! through a rule that targets an SQS queue; the `/v1/webhooks` routes through the real router.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use broker_core::api::{Caller, IntegrationApi};
use broker_core::backend::Backend as CoreBackend;
use broker_core::context::BrokerContext;
use broker_core::domain::*;
use broker_core::events::{Dispatcher, EventBus, RetryPolicy};
use broker_core::ids::{AppId, TenantId, WriteId};
use broker_core::ports::Fence;
use broker_core::providers::{Catalogue, Providers};
use broker_core::refresh::EngineSettings;
use broker_core::secret::{AccessToken, RefreshToken};
use broker_core::{Clock, ManualClock};
use broker_tests::backends::Backend;
use broker_tests::moto::unique_name;
use chrono::{DateTime, Duration, TimeZone, Utc};
use hmac::{Hmac, KeyInit, Mac};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use url::Url;

mod api;
mod eventbridge;
mod logs;
mod notifier;
mod webhooks;

const ACCESS_VALUE: &str = "ACCESS-TOKEN-VALUE-never-in-an-event";
const REFRESH_VALUE: &str = "REFRESH-TOKEN-VALUE-never-in-an-event";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 6, 0, 0).unwrap()
}

/// One request the receiver took.
#[derive(Debug, Clone)]
struct Received {
    signature: String,
    event_id: String,
    body: String,
}

/// A webhook receiver on a loopback port: records every POST and answers with the status it is set
/// to (200 until told otherwise).
#[derive(Clone)]
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    async fn start() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let state = (received.clone(), status.clone());
        let app = axum::Router::new()
            .route("/hooks", post(take))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            received,
            status,
        }
    }

    fn answer_with(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

type ReceiverState = (Arc<Mutex<Vec<Received>>>, Arc<AtomicU16>);

async fn take(
    State((received, status)): State<ReceiverState>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    received.lock().unwrap().push(Received {
        signature: header("broker-signature"),
        event_id: header("broker-event-id"),
        body,
    });
    StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap()
}

/// Checks a `Broker-Signature` as a receiver would, with the `hmac` crate: `t=<unix>,v1=<hex>` over
/// `"<t>.<body>"`, in constant time.
fn signature_verifies(secret: &str, header: &str, body: &str) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value),
            Some(("v1", value)) => v1 = Some(value),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let Ok(expected) = (0..v1.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(v1.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    mac.verify_slice(&expected).is_ok()
}

struct World {
    ctx: BrokerContext,
    clock: ManualClock,
    api: IntegrationApi,
}

async fn world(backend: Backend) -> World {
    let clock = ManualClock::starting_at(t0());
    let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
    let providers = Providers::new(
        Catalogue::built_in(),
        broker_tests::provider_http(),
        clock_dyn.clone(),
    );
    let ctx = BrokerContext::new(
        CoreBackend {
            store: backend.store.clone(),
            vault: backend.vault.clone(),
        },
        providers,
        clock_dyn,
        Url::parse("https://broker.example.com/").unwrap(),
        EngineSettings::default(),
    );
    World {
        api: IntegrationApi::new(ctx.clone()),
        ctx,
        clock,
    }
}

impl World {
    fn dispatcher(&self, bus: Option<Arc<dyn EventBus>>) -> Dispatcher {
        Dispatcher::for_context(&self.ctx, bus).with_policy(RetryPolicy::default())
    }

    /// A tenant with an app, and a key that may manage its configuration.
    async fn tenant(&self, name: &str) -> (TenantId, Caller) {
        let (tenant, caller, _) = self.tenant_with_key(name, true).await;
        (tenant, caller)
    }

    /// A tenant with an app, and a key (its plaintext too) that may or may not manage it.
    async fn tenant_with_key(&self, name: &str, manage: bool) -> (TenantId, Caller, String) {
        let tenant = TenantId::parse(unique_name(name)).unwrap();
        let store = &self.ctx.backend.store;
        store
            .insert_tenant(&Tenant::new(tenant.clone(), "Integrations", t0()).unwrap())
            .await
            .unwrap();
        store
            .put_app(&OAuthApp {
                tenant: tenant.clone(),
                id: AppId::parse("acumatica").unwrap(),
                settings: ProviderSettings::Acumatica {
                    instance_url: ServiceUrl::parse("https://acme.acumatica.com").unwrap(),
                    tenant: "AcmeCo".into(),
                    refresh_tokens: None,
                    instance_per_connection: false,
                },
                client_id: "client@AcmeCo".into(),
                redirect_uri: RedirectUri::parse("https://broker.example.com/oauth/callback")
                    .unwrap(),
                scopes: vec![],
                created_at: t0(),
            })
            .await
            .unwrap();
        let key = ApiKeyRecord::generate(
            tenant.clone(),
            "events",
            ApiKeyScope {
                manage_apps: manage,
                ..ApiKeyScope::default()
            },
            t0(),
        );
        store.insert_api_key(&key.record).await.unwrap();
        let plaintext = key.plaintext.expose().to_string();
        (tenant, Caller { key: key.record }, plaintext)
    }

    /// A connected connection with tokens in the vault (one transition: not connected → connected).
    async fn connected(&self, tenant: &TenantId) -> Connection {
        let now = self.clock.now();
        let mut c = Connection::new(
            tenant.clone(),
            AppId::parse("acumatica").unwrap(),
            ProviderKind::Acumatica,
            Recipients::parse(&["finance@example.com"]).unwrap(),
            now,
        );
        let pointer = CredentialsPointer {
            slot: VaultSlot::A,
            write: WriteId::generate(),
        };
        self.ctx
            .backend
            .vault
            .put_credentials(
                &c.tenant,
                &c.id,
                pointer.slot,
                &pointer.write,
                &Credentials::OAuth2(TokenSet {
                    access_token: AccessToken::new(ACCESS_VALUE),
                    refresh_token: Some(RefreshToken::new(REFRESH_VALUE)),
                    access_expires_at: now + Duration::hours(1),
                    refresh_expires_at: None,
                    scope: None,
                    received_at: now,
                }),
            )
            .await
            .unwrap();
        c.credentials = Some(pointer);
        c.next_refresh_at = Some(now + Duration::minutes(50));
        let t = c
            .apply(
                StatusEvent::Authorized,
                Actor::EndUser("someone".into()),
                now,
            )
            .unwrap();
        self.ctx
            .backend
            .store
            .insert_connection(&c, &[t])
            .await
            .unwrap();
        c
    }

    /// What the refresh engine does when a person is needed: the transition and a fenced save.
    async fn reconnect_needed(&self, c: &Connection) -> Connection {
        let store = &self.ctx.backend.store;
        let mut c = store.get_connection(&c.id).await.unwrap().unwrap();
        let t = c
            .apply(
                StatusEvent::ReconnectNeeded(ReconnectReason::new(
                    ReconnectKind::GrantRevoked,
                    "invalid_grant",
                )),
                Actor::System("token-refresh".into()),
                self.clock.now(),
            )
            .unwrap();
        c.next_refresh_at = None;
        store
            .save_connection(&c, Fence::Version, &[t])
            .await
            .unwrap()
    }

    async fn register(&self, caller: &Caller, url: &str) -> String {
        let created = self
            .api
            .register_webhook(
                caller,
                serde_json::from_value(serde_json::json!({ "url": url })).unwrap(),
            )
            .await
            .unwrap();
        created.secret.0.expose().to_string()
    }
}
