//! The provider clients against the provider simulators: Twinfield, Exact Online and Acumatica on the
//! success path and on every error class, the Twinfield session service with every LogonResult, and a
//! generic provider configured from Acumatica's discovery document. No error ever shows a token.

use broker_core::clock::Clock;
use broker_core::domain::{
    new_one_time_secret, ExactCountry, LegacyTwinfieldCredentials, OAuthApp, ProviderContext,
    ProviderSettings, ReconnectKind, ServiceUrl, TokenSet,
};
use broker_core::ids::TenantId;
use broker_core::providers::{
    Authorized, Catalogue, ErrorClass, HttpSettings, LegacyConsumer, LogonResult, LogonVerdict,
    OAuthClient, ProviderError, ProviderHttp, Providers, SelectCompanyResult, SessionError,
};
use broker_core::secret::{AuthorizationCode, ClientSecret, LegacyAccessSecret, LegacyAccessToken};
use broker_tests::world::demo_clients::*;
use chrono::{Duration, Utc};
use provider_simulators as sim;
use provider_simulators::{
    AcumaticaClientRegistration, AcumaticaRefreshPolicy, ClientRegistration, FaultAction,
    FaultRule, Knobs, SimulatorHandle,
};
use std::collections::HashMap;
use std::fmt::{Debug, Display};
use std::sync::Arc;

mod acumatica;
mod exact;
mod port_and_addresses;
mod twinfield;
mod twinfield_sessions;

struct Env {
    sim: SimulatorHandle,
    providers: Providers,
    browser: reqwest::Client,
}

async fn env() -> Env {
    env_with(|_| {}, broker_tests::provider_http_settings()).await
}

async fn env_with(knobs: impl FnOnce(&mut Knobs), http: HttpSettings) -> Env {
    let sim = broker_tests::world::demo_simulators(knobs).await;

    // The point of the overrides: the built-in definitions, unchanged, aimed at the simulators.
    let catalogue = broker_tests::providers::catalogue_aimed_at(&sim);
    let clock: Arc<dyn Clock> = Arc::new(broker_tests::clock::SimulatorClock(sim.clock()));
    let providers = Providers::new(catalogue, ProviderHttp::new(http).unwrap(), clock);
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Env {
        sim,
        providers,
        browser,
    }
}

fn acumatica_registration(policy: AcumaticaRefreshPolicy) -> AcumaticaClientRegistration {
    broker_tests::world::acumatica_registration(ACU_ID, ACU_SECRET, REDIRECT, policy)
}

fn app(settings: ProviderSettings, client_id: &str) -> OAuthApp {
    let tenant = TenantId::parse("acme").unwrap();
    broker_tests::world::app(&tenant, "app", settings, client_id, REDIRECT, Utc::now())
}

impl Env {
    fn client(&self, settings: ProviderSettings, id: &str, secret: &str) -> OAuthClient {
        self.providers
            .oauth_client(&app(settings, id), ClientSecret::new(secret))
            .unwrap()
    }

    fn twinfield(&self) -> OAuthClient {
        self.client(ProviderSettings::Twinfield, TW_ID, TW_SECRET)
    }

    fn exact(&self) -> OAuthClient {
        self.client(
            ProviderSettings::ExactOnline {
                country: ExactCountry::Netherlands,
            },
            EX_ID,
            EX_SECRET,
        )
    }

    fn acumatica_settings(&self) -> ProviderSettings {
        ProviderSettings::Acumatica {
            instance_url: ServiceUrl::parse(&self.sim.acumatica_instance_url("demo")).unwrap(),
            tenant: "Company".into(),
            refresh_tokens: None,
            instance_per_connection: false,
        }
    }

    fn acumatica(&self) -> OAuthClient {
        self.client(self.acumatica_settings(), ACU_ID, ACU_SECRET)
    }

    /// The browser's part: open the authorization URL, follow the (auto-consented) redirect back.
    async fn code_for(
        &self,
        client: &OAuthClient,
    ) -> (
        AuthorizationCode,
        broker_core::providers::AuthorizationRequest,
    ) {
        let (state, _) = new_one_time_secret();
        let request = client.authorization_request(&state, &[]).await.unwrap();
        let response = self.browser.get(request.url.clone()).send().await.unwrap();
        assert_eq!(
            response.status().as_u16(),
            302,
            "the simulator should redirect back"
        );
        let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
        assert!(location.as_str().starts_with(REDIRECT));
        let params: HashMap<String, String> = location.query_pairs().into_owned().collect();
        assert_eq!(
            params.get("state").map(String::as_str),
            Some(state.expose())
        );
        (AuthorizationCode::new(params["code"].clone()), request)
    }

    async fn connect(&self, client: &OAuthClient) -> Authorized {
        let (code, request) = self.code_for(client).await;
        client
            .exchange_code(
                &code,
                request.pkce_verifier.as_ref(),
                request.nonce.as_deref(),
            )
            .await
            .unwrap()
    }

    fn advance(&self, secs: i64) {
        self.sim.clock().advance(Duration::seconds(secs));
    }
}

fn query(url: &url::Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

/// The error's text and debug form carry none of the secrets.
fn assert_clean(error: &(impl Debug + Display), secrets: &[&str]) {
    let printed = format!("{error} {error:?} {error:#?}");
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(
            !printed.contains(secret),
            "an error shows a secret: {printed}"
        );
    }
}

fn secrets_of(tokens: &TokenSet) -> Vec<String> {
    let mut out = vec![tokens.access_token.expose().to_string()];
    out.extend(tokens.refresh_token.iter().map(|r| r.expose().to_string()));
    out
}

fn expect_class(
    result: Result<TokenSet, ProviderError>,
    class: ErrorClass,
    secrets: &[String],
) -> ProviderError {
    let error = result.expect_err("the refresh should fail");
    assert_eq!(error.class, class, "{error}");
    let mut all: Vec<&str> = secrets.iter().map(String::as_str).collect();
    all.extend([TW_SECRET, EX_SECRET, ACU_SECRET]);
    assert_clean(&error, &all);
    error
}
