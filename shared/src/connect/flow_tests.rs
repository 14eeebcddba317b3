//! The callback's first step, redeeming the state, on the embedded store in memory: it ends before any
//! provider is called, so no HTTP is needed (the whole flow runs against the simulators and
//! oidc-provider in `tests/tests/connect_flow/`).

use super::flow::{BrowserCookies, ConnectError, ConnectFlow};
use crate::adapters::embedded::EmbeddedStore;
use crate::backend::Backend;
use crate::clock::{Clock, ManualClock};
use crate::context::BrokerContext;
use crate::domain::{new_one_time_secret, AuthorizationPurpose, OneTimeKey, PendingAuthorization};
use crate::ids::{ConnectionId, TenantId};
use crate::ports::AuthorizationStateStore;
use crate::providers::{Catalogue, HttpSettings, ProviderHttp, Providers};
use crate::refresh::EngineSettings;
use crate::secret::OneTimeSecret;
use chrono::{Duration, TimeZone, Utc};
use std::sync::Arc;

struct World {
    store: EmbeddedStore,
    clock: ManualClock,
    flow: ConnectFlow,
}

fn world() -> World {
    let store = EmbeddedStore::in_memory().unwrap();
    let clock = ManualClock::starting_at(Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0).unwrap());
    let shared_clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let providers = Providers::new(
        Catalogue::built_in(),
        ProviderHttp::new(HttpSettings::default()).expect("the HTTP client builds"),
        shared_clock.clone(),
    );
    let ctx = BrokerContext::new(
        Backend {
            store: Arc::new(store.clone()),
            vault: Arc::new(store.clone()),
        },
        providers,
        shared_clock,
        url::Url::parse("https://broker.example.com").unwrap(),
        EngineSettings::default(),
    );
    World {
        store,
        clock,
        flow: ConnectFlow::new(ctx),
    }
}

/// A browser started an authorization: the state it carries and the binding cookie it holds.
struct Started {
    state: OneTimeSecret,
    binding: OneTimeSecret,
}

impl World {
    async fn start(&self) -> Started {
        let (state, key) = new_one_time_secret();
        let (binding, binding_key) = new_one_time_secret();
        let now = self.clock.now();
        let pending = PendingAuthorization {
            tenant: TenantId::parse("acme").unwrap(),
            connection: ConnectionId::generate(),
            purpose: AuthorizationPurpose::Connect,
            pkce_verifier: None,
            nonce: None,
            browser_binding: binding_key,
            created_at: now,
            expires_at: now + Duration::minutes(10),
        };
        self.store.put_pending(&key, &pending).await.unwrap();
        Started { state, binding }
    }

    /// The provider redirected the browser back with `state`, the browser holding `binding`.
    async fn callback(
        &self,
        state: &OneTimeSecret,
        binding: &OneTimeSecret,
    ) -> (ConnectError, bool) {
        let query = format!("code=abc&state={}", state.expose());
        let cookie = format!("{}={}", super::flow::BINDING_COOKIE, binding.expose());
        let cookies = BrowserCookies::from_headers([cookie.as_str()]);
        match self.flow.complete(Some(&query), &cookies).await {
            Ok(_) => panic!("the callback must be refused before the provider is called"),
            Err(failure) => (failure.error, failure.state_consumed),
        }
    }
}

#[tokio::test]
async fn a_state_never_issued_is_refused_and_consumes_nothing() {
    let w = world();
    let (forged, _) = new_one_time_secret();
    let (binding, _) = new_one_time_secret();
    let (error, consumed) = w.callback(&forged, &binding).await;
    assert!(matches!(error, ConnectError::StateUnknown), "{error:?}");
    assert!(
        !consumed,
        "a forged state must not end the browser's real attempt"
    );
}

#[tokio::test]
async fn an_expired_state_is_refused_and_cannot_be_tried_again() {
    let w = world();
    let started = w.start().await;
    w.clock.advance(Duration::minutes(11));
    let (error, _) = w.callback(&started.state, &started.binding).await;
    assert!(matches!(error, ConnectError::StateExpired), "{error:?}");
    let (again, _) = w.callback(&started.state, &started.binding).await;
    assert!(matches!(again, ConnectError::StateUnknown), "{again:?}");
    assert!(matches!(
        w.store
            .consume_pending(&OneTimeKey::of(&started.state), w.clock.now())
            .await
            .unwrap(),
        crate::domain::Consumed::Unknown
    ));
}

/// A state presented by another browser (a leaked or planted callback URL) is spent, so the real
/// browser cannot be raced to it either; the person starts again from the link.
#[tokio::test]
async fn a_state_from_another_browser_is_refused_and_spent() {
    let w = world();
    let started = w.start().await;
    let (stranger, _) = new_one_time_secret();
    let (error, consumed) = w.callback(&started.state, &stranger).await;
    assert!(matches!(error, ConnectError::WrongBrowser), "{error:?}");
    assert!(consumed);
    let (again, _) = w.callback(&started.state, &started.binding).await;
    assert!(matches!(again, ConnectError::StateUnknown), "{again:?}");
}
