//! The provider clients against the provider simulators: Twinfield, Exact Online and Acumatica on the
//! success path and on every error class, the Twinfield session service with every LogonResult, and a
//! generic provider configured from Acumatica's discovery document. No error ever shows a token.

use broker_core::clock::Clock;
use broker_core::domain::{
    new_one_time_secret, ExactCountry, LegacyTwinfieldCredentials, OAuthApp, ProviderContext,
    ProviderSettings, ReconnectKind, RedirectUri, ServiceUrl, TokenSet,
};
use broker_core::ids::{AppId, TenantId};
use broker_core::providers::{
    Authorized, Catalogue, ErrorClass, HttpSettings, LegacyConsumer, LogonResult, LogonVerdict,
    OAuthClient, ProviderError, ProviderHttp, Providers, SelectCompanyResult, SessionError,
};
use broker_core::secret::{AuthorizationCode, ClientSecret, LegacyAccessSecret, LegacyAccessToken};
use chrono::{Duration, TimeZone, Utc};
use provider_simulators as sim;
use provider_simulators::{
    AcumaticaClientRegistration, AcumaticaRefreshPolicy, ClientRegistration, FaultAction,
    FaultRule, Knobs, Simulator, SimulatorConfig, SimulatorHandle,
};
use std::collections::HashMap;
use std::fmt::{Debug, Display};
use std::sync::Arc;

mod acumatica;
mod exact;
mod port_and_addresses;
mod twinfield;
mod twinfield_sessions;

const REDIRECT: &str = "http://localhost:9/callback";
const TW_ID: &str = "tw-client";
const TW_SECRET: &str = "tw-secret-value";
const EX_ID: &str = "ex-client";
const EX_SECRET: &str = "ex-secret-value";
const ACU_ID: &str = "0b9d7a52-3f7e-4c55-9a3e-7d8f1c2b4e6a@Company";
const ACU_SECRET: &str = "acu-secret-value";

struct Env {
    sim: SimulatorHandle,
    providers: Providers,
    browser: reqwest::Client,
}

async fn env() -> Env {
    env_with(|_| {}, broker_tests::provider_http_settings()).await
}

async fn env_with(knobs: impl FnOnce(&mut Knobs), http: HttpSettings) -> Env {
    let mut config = SimulatorConfig {
        // Noon, so the daily limits of Exact never roll over during a test.
        start_time: Some(Utc.with_ymd_and_hms(2025, 6, 2, 12, 0, 0).unwrap()),
        ..SimulatorConfig::default()
    };
    config.knobs.auto_consent = true;
    knobs(&mut config.knobs);
    let sim = Simulator::start(config)
        .await
        .expect("the simulator starts");
    let registration = |id: &str, secret: &str| ClientRegistration {
        client_id: id.into(),
        client_secret: secret.into(),
        redirect_uris: vec![REDIRECT.into()],
    };
    sim.register_twinfield_client(registration(TW_ID, TW_SECRET));
    sim.register_exact_client(registration(EX_ID, EX_SECRET));
    sim.register_acumatica_client(
        "demo",
        acumatica_registration(AcumaticaRefreshPolicy::default()),
    )
    .unwrap();

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
    AcumaticaClientRegistration {
        client_id: ACU_ID.into(),
        client_secret: ACU_SECRET.into(),
        redirect_uris: vec![REDIRECT.into()],
        refresh_policy: policy,
        rotate_refresh_tokens: true,
    }
}

fn app(settings: ProviderSettings, client_id: &str) -> OAuthApp {
    OAuthApp {
        tenant: TenantId::parse("acme").unwrap(),
        id: AppId::parse("app").unwrap(),
        settings,
        client_id: client_id.into(),
        redirect_uri: RedirectUri::parse(REDIRECT).unwrap(),
        scopes: vec![],
        created_at: Utc::now(),
    }
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
