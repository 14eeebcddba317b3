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
use chrono::{Duration, TimeZone, Utc};
use provider_simulators as sim;
use provider_simulators::{
    AcumaticaClientRegistration, AcumaticaRefreshPolicy, ClientRegistration, MintRequest,
    MintedTokens, Simulator, SimulatorConfig, SimulatorHandle,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

broker_tests::on_both_backends!(
    every_provider_hands_out_a_valid_token_and_refreshes_it_once_after_expiry,
    an_authorization_code_is_exchanged_at_once_and_an_expired_one_is_refused,
    twinfield_sessions_for_both_credential_kinds_and_every_logon_result,
    refusals_are_clean_problems,
    connections_are_created_listed_relinked_and_disconnected,
    a_warm_instance_answers_repeated_sessions_without_reading_the_vault,
    no_token_leaves_except_in_the_session_answer,
    registered_pairs_are_refreshed_once_when_refused_and_must_reach_the_same_organisation,
    exact_connections_bind_a_granted_division_and_list_them_all,
    a_refused_token_is_replaced_once_and_a_newer_one_is_handed_out_as_it_is,
    a_slow_provider_or_an_interrupted_refresh_answers_503_within_the_deadline,
    every_route_answers_every_key_scope_as_the_scope_says,
    bodies_must_be_declared_json_and_labels_lose_control_characters,
    an_unknown_key_is_refused_without_a_store_read_for_a_while,
    exact_connections_of_one_user_wait_together_and_keep_serving_valid_tokens,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_day_of_continuous_use_with_60_second_tokens_stays_within_the_vault_write_budget() {
    a_day_of_continuous_use_with_short_tokens(broker_tests::backends::aws().await).await;
}

const REDIRECT: &str = "http://localhost:9/callback";
const TW_ID: &str = "tw-client";
const TW_SECRET: &str = "tw-secret-value";
const EX_ID: &str = "ex-client";
const EX_SECRET: &str = "ex-secret-value";
const ACU_ID: &str = "0b9d7a52-3f7e-4c55-9a3e-7d8f1c2b4e6a@Company";
const ACU_SECRET: &str = "acu-secret-value";
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
    let mut config = SimulatorConfig {
        start_time: Some(Utc.with_ymd_and_hms(2025, 6, 2, 12, 0, 0).unwrap()),
        ..SimulatorConfig::default()
    };
    config.knobs.auto_consent = true;
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
        AcumaticaClientRegistration {
            client_id: ACU_ID.into(),
            client_secret: ACU_SECRET.into(),
            redirect_uris: vec![REDIRECT.into()],
            refresh_policy: AcumaticaRefreshPolicy::default(),
            rotate_refresh_tokens: true,
        },
    )
    .unwrap();
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

// ---------------------------------------------------------------------------------------------------

async fn every_provider_hands_out_a_valid_token_and_refreshes_it_once_after_expiry(
    backend: Backend,
) {
    let env = env(backend).await;
    for (app, provider, lifetime) in [
        ("tw", sim::Provider::Twinfield, 3600),
        ("ex", sim::Provider::Exact, 600),
        ("acu", sim::Provider::Acumatica, 3600),
    ] {
        let (id, minted) = env.connected(app).await;
        let token_calls = env.sim.token_calls(provider);

        let first = env.session(&id).await;
        assert_eq!(first.status, 200, "{}", first.text);
        assert_eq!(first.json["access_token"], minted.access_token.as_str());
        assert_eq!(first.json["token_type"], "Bearer");
        assert!(env
            .sim
            .is_access_token_valid(first.json["access_token"].as_str().unwrap()));
        let context = &first.json["context"];
        match app {
            "tw" => {
                assert_eq!(context["provider"], "twinfield");
                assert_eq!(context["organisation_code"], "TWF-DEMO");
                assert!(context["cluster_url"]
                    .as_str()
                    .unwrap()
                    .contains("/twinfield/clusters/accounting"));
            }
            "ex" => {
                assert_eq!(context["provider"], "exact_online");
                assert_eq!(context["division"], 123456);
                assert!(context["base_url"].as_str().unwrap().contains("/exact/nl"));
            }
            _ => {
                assert_eq!(context["provider"], "acumatica");
                assert_eq!(context["tenant"], "Company");
                assert!(context["instance_url"]
                    .as_str()
                    .unwrap()
                    .contains("/acumatica/demo"));
            }
        }
        assert_eq!(
            env.sim.token_calls(provider),
            token_calls,
            "{app}: a valid pre-authenticated pair is checked without spending its refresh token"
        );

        // Past expiry: the next session refreshes exactly once and hands out the new token.
        env.advance(lifetime + 5);
        assert!(!env.sim.is_access_token_valid(&minted.access_token));
        let second = env.session(&id).await;
        assert_eq!(second.status, 200, "{app}: {}", second.text);
        let new_token = second.json["access_token"].as_str().unwrap().to_string();
        assert_ne!(new_token, minted.access_token);
        assert!(env.sim.is_access_token_valid(&new_token), "{app}");
        assert_eq!(env.sim.token_calls(provider), token_calls + 1, "{app}");
        assert!(second.json["expires_in"].as_i64().unwrap() > 60);

        // And while that one is valid, nothing more is refreshed.
        let third = env.session(&id).await;
        assert_eq!(third.json["access_token"], new_token.as_str());
        assert_eq!(env.sim.token_calls(provider), token_calls + 1, "{app}");
    }

    // A pair registered without its expiry (or after it) is refreshed exactly once, and the new pair kept.
    let id = env.create("ex").await;
    let minted = env.mint("ex");
    env.advance(601);
    let calls = env.sim.token_calls(sim::Provider::Exact);
    let reply = env
        .call(
            "POST",
            &format!("/v1/connections/{id}/credentials"),
            Some(
                json!({"access_token": minted.access_token, "refresh_token": minted.refresh_token}),
            ),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(env.sim.token_calls(sim::Provider::Exact), calls + 1);
    assert_eq!(env.sim.presentations_of(&minted.refresh_token), 1);
    let session = env.session(&id).await;
    assert_eq!(session.status, 200, "{}", session.text);
    assert!(env
        .sim
        .is_access_token_valid(session.json["access_token"].as_str().unwrap()));
    assert_eq!(env.sim.token_calls(sim::Provider::Exact), calls + 1);
}

async fn an_authorization_code_is_exchanged_at_once_and_an_expired_one_is_refused(
    backend: Backend,
) {
    let env = env(backend).await;
    for app in ["ex", "tw", "acu"] {
        let id = env.create(app).await;
        let (code, verifier) = env.code_and_verifier(app).await;
        assert_eq!(verifier.is_some(), app == "acu", "Acumatica uses PKCE");
        let mut body = json!({"authorization_code": code, "redirect_uri": REDIRECT});
        if let Some(verifier) = verifier {
            body["code_verifier"] = json!(verifier);
        }
        let reply = env
            .call(
                "POST",
                &format!("/v1/connections/{id}/credentials"),
                Some(body),
            )
            .await;
        assert_eq!(reply.status, 200, "{app}: {}", reply.text);
        assert_eq!(reply.json["status"], "connected");
        let session = env.session(&id).await;
        assert_eq!(session.status, 200, "{}", session.text);
        assert!(env
            .sim
            .is_access_token_valid(session.json["access_token"].as_str().unwrap()));
    }

    // Exact's codes live three minutes.
    let id = env.create("ex").await;
    let code = env.code_for("ex").await;
    env.advance(200);
    let reply = env
        .call(
            "POST",
            &format!("/v1/connections/{id}/credentials"),
            Some(json!({"authorization_code": code})),
        )
        .await;
    reply.problem(ProblemKind::CredentialsRejected);
    assert!(
        reply.json["detail"].as_str().unwrap().contains("code"),
        "{}",
        reply.text
    );
    assert!(!reply.text.contains(&code));
    assert_eq!(env.status_of(&id).await, "not_connected");
}

async fn twinfield_sessions_for_both_credential_kinds_and_every_logon_result(backend: Backend) {
    let env = env(backend).await;
    // OAuth 2.0: AccessTokenLogon.
    let (id, _) = env.connected("tw").await;
    let reply = env
        .call(
            "POST",
            &format!("/v1/connections/{id}/twinfield-session"),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["logon"], "oauth2");
    assert!(!reply.json["session_id"].as_str().unwrap().is_empty());
    assert!(reply.json["cluster_url"]
        .as_str()
        .unwrap()
        .contains("/twinfield/clusters/accounting"));

    // OAuth 1.0-era credentials: OAuthLogon with the app's client id and secret as consumer.
    env.sim
        .add_twinfield_legacy_credentials(sim::LegacyCredentials {
            organisation: "TWF-DEMO".into(),
            user: "DEMO".into(),
            client_token: TW_ID.into(),
            client_secret: TW_SECRET.into(),
            access_token: "legacy-access-token".into(),
            access_secret: "legacy-access-secret".into(),
        })
        .unwrap();
    let legacy = env.create("tw").await;
    let reply = env
        .call(
            "POST",
            &format!("/v1/connections/{legacy}/credentials"),
            Some(json!({"legacy_access_token": "legacy-access-token", "legacy_access_secret": "legacy-access-secret"})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let reply = env
        .call(
            "POST",
            &format!("/v1/connections/{legacy}/twinfield-session"),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["logon"], "legacy");
    // nextAction comes only with OAuthLogon (AccessTokenLogon's answer has none): a pending SMS
    // log-on or password change is named, and the connection stays as it is.
    for action in [sim::NextAction::SmsLogon, sim::NextAction::ChangePassword] {
        let pending = sim::LogonBehaviour {
            result: sim::LogonResult::Ok,
            next_action: action,
        };
        env.sim
            .set_twinfield_logon_behaviour("TWF-DEMO", None, Some(pending))
            .unwrap();
        let reply = env
            .call(
                "POST",
                &format!("/v1/connections/{legacy}/twinfield-session?company=NL002"),
                None,
            )
            .await;
        reply.problem(ProblemKind::TwinfieldLogonRefused);
        assert!(reply.json["detail"]
            .as_str()
            .unwrap()
            .contains(action.as_str()));
        assert_eq!(env.status_of(&legacy).await, "connected");
    }
    env.sim
        .set_twinfield_logon_behaviour("TWF-DEMO", None, None)
        .unwrap();
    env.session(&legacy)
        .await
        .problem(ProblemKind::NotApplicable);
    // Legacy credentials cannot be refreshed: Twinfield refusing their token needs a person.
    let refused = sim::LogonBehaviour {
        result: sim::LogonResult::TokenInvalid,
        next_action: sim::NextAction::None,
    };
    env.sim
        .set_twinfield_logon_behaviour("TWF-DEMO", None, Some(refused))
        .unwrap();
    env.call(
        "POST",
        &format!("/v1/connections/{legacy}/twinfield-session?company=NL001"),
        None,
    )
    .await
    .problem(ProblemKind::ReconnectRequired);
    assert_eq!(env.status_of(&legacy).await, "reconnect_required");
    env.sim
        .set_twinfield_logon_behaviour("TWF-DEMO", None, None)
        .unwrap();
    // An Exact connection has no SOAP session.
    let (exact, _) = env.connected("ex").await;
    env.call(
        "POST",
        &format!("/v1/connections/{exact}/twinfield-session"),
        None,
    )
    .await
    .problem(ProblemKind::NotApplicable);

    // Every result value, each on a fresh connection.
    use sim::LogonResult as R;
    let cases: Vec<(R, sim::NextAction, Option<ProblemKind>, &str)> = vec![
        (R::Ok, sim::NextAction::None, None, "connected"),
        // The token is refreshed once and the logon retried; Twinfield (here, for the whole
        // organisation) still refusing a fresh token does not make the connection need a person.
        (
            R::TokenInvalid,
            sim::NextAction::None,
            Some(ProblemKind::ProviderError),
            "connected",
        ),
        (
            R::Invalid,
            sim::NextAction::None,
            Some(ProblemKind::ReconnectRequired),
            "reconnect_required",
        ),
        (
            R::OAuth2AuthenticationRequired,
            sim::NextAction::None,
            Some(ProblemKind::ReconnectRequired),
            "reconnect_required",
        ),
        // "Log-on is blocked because of system maintenance": try again later, change nothing.
        (
            R::Blocked,
            sim::NextAction::None,
            Some(ProblemKind::TemporarilyUnavailable),
            "connected",
        ),
        (
            R::Disabled,
            sim::NextAction::None,
            Some(ProblemKind::ConnectionDisabled),
            "disabled",
        ),
        (
            R::Deleted,
            sim::NextAction::None,
            Some(ProblemKind::ConnectionDisabled),
            "disabled",
        ),
        (
            R::OrganisationInactive,
            sim::NextAction::None,
            Some(ProblemKind::ConnectionDisabled),
            "disabled",
        ),
        (
            R::NoAvailableCompanies,
            sim::NextAction::None,
            Some(ProblemKind::TwinfieldLogonRefused),
            "connected",
        ),
        (
            R::ClientInvalid,
            sim::NextAction::None,
            Some(ProblemKind::ReconnectRequired),
            "reconnect_required",
        ),
        (
            R::Untrusted,
            sim::NextAction::None,
            Some(ProblemKind::TwinfieldLogonRefused),
            "connected",
        ),
        (
            R::Failed,
            sim::NextAction::None,
            Some(ProblemKind::TemporarilyUnavailable),
            "connected",
        ),
    ];
    assert_eq!(
        cases
            .iter()
            .filter(|c| c.1 == sim::NextAction::None)
            .count(),
        R::ALL.len()
    );
    for (result, next_action, expected, status) in cases {
        let (id, _) = env.connected("tw").await;
        env.sim
            .set_twinfield_logon_behaviour(
                "TWF-DEMO",
                None,
                Some(sim::LogonBehaviour {
                    result,
                    next_action,
                }),
            )
            .unwrap();
        let reply = env
            .call(
                "POST",
                &format!("/v1/connections/{id}/twinfield-session"),
                None,
            )
            .await;
        match expected {
            None => assert_eq!(reply.status, 200, "{result:?}: {}", reply.text),
            Some(kind) => reply.problem(kind),
        }
        if matches!(
            result,
            R::NoAvailableCompanies | R::ClientInvalid | R::Untrusted
        ) {
            assert!(
                reply.json["detail"]
                    .as_str()
                    .unwrap()
                    .contains(result.as_str()),
                "the cause is named: {}",
                reply.text
            );
        }
        if matches!(result, R::Blocked | R::Failed) {
            assert!(
                reply.retry_after.is_some(),
                "{result:?}: try again later, with Retry-After"
            );
        }
        assert_eq!(
            env.status_of(&id).await,
            status,
            "{result:?}/{next_action:?}"
        );
        if status != "connected" {
            // The change is stored with its transition, which the notifier acts on.
            let connection_id = ConnectionId::parse(id.as_str()).unwrap();
            let transitions = env
                .ctx
                .backend
                .store
                .list_transitions(&connection_id, PageRequest::first(10))
                .await
                .unwrap()
                .items;
            let last = transitions.last().unwrap();
            assert!(last.needs_notification(), "{last:?}");
            assert!(matches!(
                last.to,
                StatusKind::ReconnectRequired | StatusKind::Disabled
            ));
            env.session(&id).await.problem(expected.unwrap());
        }
        env.sim
            .set_twinfield_logon_behaviour("TWF-DEMO", None, None)
            .unwrap();
    }
}

async fn refusals_are_clean_problems(backend: Backend) {
    let env = env_with(
        backend,
        ApiSettings {
            key_cache_ttl: std::time::Duration::from_millis(500),
            ..ApiSettings::default()
        },
    )
    .await;
    let (id, minted) = env.connected("ex").await;
    let session_path = format!("/v1/connections/{id}/session");

    // No key, a malformed one, a wrong one, another scheme.
    env.call_raw("POST", &session_path, None, None)
        .await
        .problem(ProblemKind::Unauthorized);
    env.call_raw("POST", &session_path, Some("not-a-key"), None)
        .await
        .problem(ProblemKind::Unauthorized);
    let wrong = format!("{}x", &env.key[..env.key.len() - 1]);
    let wrong = if wrong == env.key {
        format!("{}y", &env.key[..env.key.len() - 1])
    } else {
        wrong
    };
    env.call_raw("POST", &session_path, Some(&wrong), None)
        .await
        .problem(ProblemKind::Unauthorized);
    let unknown = ApiKeyRecord::generate(tenant("acme"), "x", ApiKeyScope::default(), Utc::now());
    env.call_raw(
        "POST",
        &session_path,
        Some(unknown.plaintext.expose()),
        None,
    )
    .await
    .problem(ProblemKind::Unauthorized);
    let basic = env
        .http
        .post(format!("{}{session_path}", env.base))
        .header("authorization", format!("Basic {}", env.key))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status().as_u16(), 401);
    assert_eq!(basic.headers()["www-authenticate"], "Bearer");

    // Another tenant's connection does not exist for this key, nor does an unknown one.
    env.call_raw("POST", &session_path, Some(&env.other_key), None)
        .await
        .problem(ProblemKind::NotFound);
    env.call_raw(
        "GET",
        &format!("/v1/connections/{id}"),
        Some(&env.other_key),
        None,
    )
    .await
    .problem(ProblemKind::NotFound);
    env.session(ConnectionId::generate().as_str())
        .await
        .problem(ProblemKind::NotFound);
    env.session("nonsense").await.problem(ProblemKind::NotFound);
    env.call("GET", "/v2/connections", None)
        .await
        .problem(ProblemKind::NotFound);
    env.call("PUT", "/v1/connections", None)
        .await
        .problem(ProblemKind::MethodNotAllowed);

    // A key limited to other connections, and a session-only key.
    let now = env.ctx.clock.now();
    let limited = ApiKeyRecord::generate(
        tenant("acme"),
        "limited",
        ApiKeyScope {
            session_only: false,
            connections: Some(vec![ConnectionId::generate()]),
            manage_apps: false,
        },
        now,
    );
    env.ctx
        .backend
        .store
        .insert_api_key(&limited.record)
        .await
        .unwrap();
    env.call_raw(
        "POST",
        &session_path,
        Some(limited.plaintext.expose()),
        None,
    )
    .await
    .problem(ProblemKind::Forbidden);
    let ok = env
        .call_raw("POST", &session_path, Some(&env.session_only_key), None)
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    env.call_raw(
        "POST",
        "/v1/connections",
        Some(&env.session_only_key),
        Some(br#"{"app_id":"ex","recipients":[]}"#.to_vec()),
    )
    .await
    .problem(ProblemKind::Forbidden);
    env.call_raw(
        "DELETE",
        &format!("/v1/connections/{id}"),
        Some(&env.session_only_key),
        None,
    )
    .await
    .problem(ProblemKind::Forbidden);

    // Bodies: malformed JSON, unknown fields, wrong types, too large, invalid values.
    let create = |body: &[u8]| {
        env.call_raw(
            "POST",
            "/v1/connections",
            Some(&env.key),
            Some(body.to_vec()),
        )
    };
    create(b"{not json")
        .await
        .problem(ProblemKind::InvalidRequest);
    let unknown_field =
        create(br#"{"app_id":"ex","recipients":["a@example.com"],"recipient":"typo@example.com"}"#)
            .await;
    unknown_field.problem(ProblemKind::InvalidRequest);
    assert!(
        unknown_field.text.contains("unknown field"),
        "{}",
        unknown_field.text
    );
    let wrong_type = create(br#"{"app_id":"ex","recipients":"sekrit-value"}"#).await;
    wrong_type.problem(ProblemKind::InvalidRequest);
    assert!(!wrong_type.text.contains("sekrit-value"));
    let big = format!(
        r#"{{"app_id":"ex","recipients":[],"display_name":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    create(big.as_bytes())
        .await
        .problem(ProblemKind::PayloadTooLarge);
    create(br#"{"app_id":"ex","recipients":["not an address"]}"#)
        .await
        .problem(ProblemKind::ValidationFailed);
    create(br#"{"app_id":"nope","recipients":["a@example.com"]}"#)
        .await
        .problem(ProblemKind::ValidationFailed);
    let credentials_path = format!("/v1/connections/{id}/credentials");
    env.call(
        "POST",
        &credentials_path,
        Some(json!({"access_token": "a", "refresh_token": "b", "extra": 1})),
    )
    .await
    .problem(ProblemKind::InvalidRequest);
    env.call(
        "POST",
        &credentials_path,
        Some(json!({"access_token": "a", "authorization_code": "b"})),
    )
    .await
    .problem(ProblemKind::InvalidRequest);

    // A token pair the provider rejects leaves the connection as it was.
    let fresh = env.create("ex").await;
    let rejected = env
        .call(
            "POST",
            &format!("/v1/connections/{fresh}/credentials"),
            Some(json!({"access_token": "bogus-access", "refresh_token": "bogus-refresh"})),
        )
        .await;
    rejected.problem(ProblemKind::CredentialsRejected);
    assert!(!rejected.text.contains("bogus-refresh"));
    assert_eq!(env.status_of(&fresh).await, "not_connected");
    env.session(&fresh).await.problem(ProblemKind::NotConnected);

    // Revocation takes effect within the key cache's lifetime (here 0.5 s; 30 s by default).
    let prefix = broker_core::domain::ApiKeyPrefix::parse(&env.key_prefix).unwrap();
    assert!(env
        .ctx
        .backend
        .store
        .revoke_api_key(&tenant("acme"), &prefix, now)
        .await
        .unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let revoked = env.session(&id).await;
    revoked.problem(ProblemKind::Unauthorized);
    assert!(!revoked.text.contains(&minted.access_token));
}

async fn connections_are_created_listed_relinked_and_disconnected(backend: Backend) {
    let env = env(backend).await;
    let mut ids = Vec::new();
    for app in ["ex", "tw", "acu"] {
        ids.push(env.create(app).await);
    }
    let other = env
        .call_raw(
            "POST",
            "/v1/connections",
            Some(&env.other_key),
            Some(br#"{"app_id":"ex","recipients":["x@example.com"]}"#.to_vec()),
        )
        .await;
    assert_eq!(other.status, 201);

    // Paged listing sees this tenant's connections only.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/connections?limit=2&cursor={}", urlencode(c)),
            None => "/v1/connections?limit=2".to_string(),
        };
        let page = env.call("GET", &path, None).await;
        assert_eq!(page.status, 200, "{}", page.text);
        for c in page.json["connections"].as_array().unwrap() {
            seen.push(c["id"].as_str().unwrap().to_string());
        }
        match page.json["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    env.call("GET", "/v1/connections?limit=0", None)
        .await
        .problem(ProblemKind::InvalidRequest);
    env.call("GET", "/v1/connections?cursor=garbage", None)
        .await
        .problem(ProblemKind::InvalidRequest);

    // A fresh reconnect link, then disconnect: tokens deleted, record kept.
    let (id, minted) = env.connected("ex").await;
    let link = env
        .call(
            "POST",
            &format!("/v1/connections/{id}/reconnect-link"),
            None,
        )
        .await;
    assert_eq!(link.status, 201, "{}", link.text);
    assert!(link.json["url"]
        .as_str()
        .unwrap()
        .starts_with("https://broker.test/connect/"));
    let pointer = env
        .ctx
        .backend
        .store
        .get_connection(&ConnectionId::parse(id.as_str()).unwrap())
        .await
        .unwrap()
        .unwrap()
        .credentials
        .unwrap();
    let gone = env
        .call("DELETE", &format!("/v1/connections/{id}"), None)
        .await;
    assert_eq!(gone.status, 200, "{}", gone.text);
    assert_eq!(gone.json["status"], "disconnected");
    assert!(env
        .ctx
        .backend
        .vault
        .get_credentials(
            &tenant("acme"),
            &ConnectionId::parse(id.as_str()).unwrap(),
            &pointer
        )
        .await
        .unwrap()
        .is_none());
    assert_eq!(env.status_of(&id).await, "disconnected");
    let again = env
        .call("DELETE", &format!("/v1/connections/{id}"), None)
        .await;
    assert_eq!(again.status, 200, "disconnecting twice is harmless");
    let refused = env.session(&id).await;
    refused.problem(ProblemKind::ConnectionDisconnected);
    assert!(!refused.text.contains(&minted.access_token));
    env.call(
        "POST",
        &format!("/v1/connections/{id}/reconnect-link"),
        None,
    )
    .await
    .problem(ProblemKind::ConnectionDisconnected);
}

async fn a_warm_instance_answers_repeated_sessions_without_reading_the_vault(backend: Backend) {
    let env = env(backend).await;
    let (id, minted) = env.connected("acu").await;
    let first = env.session(&id).await;
    assert_eq!(first.status, 200);
    let reads = env.vault.reads();
    for _ in 0..10 {
        let again = env.session(&id).await;
        assert_eq!(again.json["access_token"], minted.access_token.as_str());
    }
    assert_eq!(
        env.vault.reads(),
        reads,
        "a still-valid token is served from memory"
    );
    // After a refresh the pointer moves: the next request reads the new version once.
    env.advance(3605);
    let refreshed = env.session(&id).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    let after = env.vault.reads();
    for _ in 0..5 {
        env.session(&id).await;
    }
    assert_eq!(env.vault.reads(), after);

    // Concurrent requests for an expired Exact token: one refresh (single flight), one new token.
    let (id, minted) = env.connected("ex").await;
    env.advance(605);
    let calls = env.sim.token_calls(sim::Provider::Exact);
    let replies = futures_join_all((0..8).map(|_| env.session(&id)).collect::<Vec<_>>()).await;
    let tokens: std::collections::HashSet<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.text);
            r.json["access_token"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(tokens.len(), 1, "every caller gets the one new token");
    assert!(!tokens.contains(&minted.access_token));
    assert_eq!(env.sim.token_calls(sim::Provider::Exact), calls + 1);
    assert_eq!(env.sim.presentations_of(&minted.refresh_token), 1);
}

/// Runs the futures concurrently on this task and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut outputs: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if outputs[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => outputs[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.unwrap()).collect()
}

/// One process-wide capture of every log line at `debug` (tracing allows one global subscriber).
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let make = move || SharedWriter(writer.clone());
        let subscriber = broker_core::telemetry::subscriber_for(make, "debug");
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        buffer
    })
    .clone()
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn no_token_leaves_except_in_the_session_answer(backend: Backend) {
    let logs = captured_logs();
    let env = env(backend).await;
    let mut secrets: Vec<String> = vec![
        env.key.clone(),
        env.session_only_key.clone(),
        env.other_key.clone(),
        TW_SECRET.into(),
        EX_SECRET.into(),
        ACU_SECRET.into(),
        "legacy-access-token".into(),
        "legacy-access-secret".into(),
    ];
    let mut bodies: Vec<String> = Vec::new();
    let mut handed_out: Vec<String> = Vec::new();

    for app in ["tw", "ex", "acu"] {
        let (id, minted) = env.connected(app).await;
        secrets.push(minted.access_token.clone());
        secrets.push(minted.refresh_token.clone());
        let session = env.session(&id).await;
        assert_eq!(session.status, 200);
        handed_out.push(session.json["access_token"].as_str().unwrap().into());
        env.advance(3605);
        let session = env.session(&id).await;
        assert_eq!(session.status, 200, "{}", session.text);
        handed_out.push(session.json["access_token"].as_str().unwrap().into());
        bodies.push(
            env.call("GET", &format!("/v1/connections/{id}"), None)
                .await
                .text,
        );
        bodies.push(env.call("GET", "/v1/connections", None).await.text);
        if app == "tw" {
            let soap = env
                .call(
                    "POST",
                    &format!("/v1/connections/{id}/twinfield-session"),
                    None,
                )
                .await;
            assert_eq!(soap.status, 200, "{}", soap.text);
            secrets.push(soap.json["session_id"].as_str().unwrap().into());
            env.sim
                .set_twinfield_logon_behaviour(
                    "TWF-DEMO",
                    None,
                    Some(sim::LogonBehaviour {
                        result: sim::LogonResult::TokenInvalid,
                        next_action: sim::NextAction::None,
                    }),
                )
                .unwrap();
            // Another company needs its own logon (the first session is pooled), which is refused.
            bodies.push(
                env.call(
                    "POST",
                    &format!("/v1/connections/{id}/twinfield-session?company=NL001"),
                    None,
                )
                .await
                .text,
            );
            bodies.push(env.session(&id).await.text);
            env.sim
                .set_twinfield_logon_behaviour("TWF-DEMO", None, None)
                .unwrap();
        }
    }
    // Failures that involve tokens: a rejected pair, an expired code, a wrong key.
    let id = env.create("ex").await;
    bodies.push(
        env.call(
            "POST",
            &format!("/v1/connections/{id}/credentials"),
            Some(json!({"access_token": "rejected-access-value", "refresh_token": "rejected-refresh-value"})),
        )
        .await
        .text,
    );
    secrets.push("rejected-access-value".into());
    secrets.push("rejected-refresh-value".into());
    let code = env.code_for("ex").await;
    env.advance(200);
    bodies.push(
        env.call(
            "POST",
            &format!("/v1/connections/{id}/credentials"),
            Some(json!({"authorization_code": code})),
        )
        .await
        .text,
    );
    secrets.push(code);
    bodies.push(
        env.call_raw(
            "POST",
            &format!("/v1/connections/{id}/session"),
            Some(&format!("{}0", env.key)),
            None,
        )
        .await
        .text,
    );
    secrets.extend(handed_out.iter().cloned());

    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("credential handed out") && logs.contains(&env.key_prefix),
        "hand-outs are recorded with the key prefix"
    );
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a log line shows a secret");
        for body in &bodies {
            assert!(
                !body.contains(secret.as_str()),
                "a response shows a secret: {body}"
            );
        }
    }
}

fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

// ---------------------------------------------------------------------------------------------------
// The OpenAPI document and the router serve the same routes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_router() {
    let env = env(broker_tests::backends::embedded()).await;
    let document: Value = serde_json::from_str(session_exchange::OPENAPI).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    documented.sort();
    let mut served: Vec<(String, String)> = session_exchange::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    served.sort();
    assert_eq!(documented, served);

    // Every documented operation answers (not 404/405) with a key; every other method on a
    // documented path is 405; a path outside the document is 404.
    let id = env.create("ex").await;
    for (_, path) in &served {
        let concrete = path.replace("{id}", &id);
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            let reply = env
                .call_raw(method, &concrete, Some(&env.key), Some(b"{}".to_vec()))
                .await;
            if served.contains(&(method.to_string(), path.clone())) {
                assert!(
                    ![404, 405].contains(&reply.status),
                    "{method} {path}: {}",
                    reply.text
                );
            } else {
                assert_eq!(reply.status, 405, "{method} {path} is not documented");
            }
        }
    }
    for stray in ["/", "/v1", "/v1/connections/x/y/z", "/v1/keys"] {
        let reply = env.call("GET", stray, None).await;
        assert_eq!(reply.status, 404, "{stray}");
    }
    // Every problem type the API can answer with is listed in the document.
    let text = session_exchange::OPENAPI;
    for kind in ProblemKind::ALL {
        assert!(
            text.contains(&format!("{PROBLEM_BASE}{}", kind.code())),
            "{} is not documented",
            kind.code()
        );
    }
}

async fn registered_pairs_are_refreshed_once_when_refused_and_must_reach_the_same_organisation(
    backend: Backend,
) {
    let env = env(backend).await;
    // The access token is refused (revoked elsewhere, say) though its expiry looks fine: the
    // refresh token is spent exactly once and the new pair kept.
    let id = env.create("acu").await;
    let minted = env.mint("acu");
    env.advance(10);
    let calls = env.sim.token_calls(sim::Provider::Acumatica);
    let reply = env
        .call(
            "POST",
            &format!("/v1/connections/{id}/credentials"),
            Some(json!({
                "access_token": "not-the-access-token",
                "refresh_token": minted.refresh_token,
                "access_token_expires_at": minted.access_expires_at,
            })),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(env.sim.token_calls(sim::Provider::Acumatica), calls + 1);
    assert_eq!(env.sim.presentations_of(&minted.refresh_token), 1);
    let session = env.session(&id).await;
    assert_eq!(session.status, 200, "{}", session.text);
    assert_ne!(session.json["access_token"], minted.access_token.as_str());
    assert!(env
        .sim
        .is_access_token_valid(session.json["access_token"].as_str().unwrap()));

    // Credentials of another Exact user are refused on a connection that has one.
    env.sim.add_exact_user(sim::ExactUser {
        user_name: "other.user".into(),
        full_name: "Other User".into(),
        current_division: 777777,
        divisions: vec![777777],
    });
    let (id, _) = env.connected("ex").await;
    let other = env
        .sim
        .mint_tokens(MintRequest {
            provider: sim::Provider::Exact,
            location: "nl".into(),
            client_id: EX_ID.into(),
            user: "other.user".into(),
            scope: String::new(),
        })
        .unwrap();
    let reply = env
        .call(
            "POST",
            &format!("/v1/connections/{id}/credentials"),
            Some(json!({
                "access_token": other.access_token,
                "refresh_token": other.refresh_token,
                "access_token_expires_at": other.access_expires_at,
            })),
        )
        .await;
    reply.problem(ProblemKind::ValidationFailed);
    assert!(reply.text.contains("Other User"), "{}", reply.text);
    let session = env.session(&id).await;
    assert_eq!(session.json["context"]["division"], 123456);
}

/// An Exact connection is bound to the division the integration names (or the customer's current
/// one), its session context lists every division the authorization grants, and credentials that
/// do not grant the bound division are refused.
async fn exact_connections_bind_a_granted_division_and_list_them_all(backend: Backend) {
    let env = env(backend).await;
    let create = |body: Value| env.call("POST", "/v1/connections", Some(body));
    let reply = create(json!({"app_id": "tw", "recipients": [], "exact_division": 654321})).await;
    reply.problem(ProblemKind::ValidationFailed);
    assert!(
        reply.text.contains("Exact Online connections only"),
        "{}",
        reply.text
    );
    let reply = create(json!({"app_id": "ex", "recipients": [], "exact_division": -3})).await;
    reply.problem(ProblemKind::ValidationFailed);

    let env = &env;
    let register = |id: String, minted: MintedTokens| async move {
        env.call(
            "POST",
            &format!("/v1/connections/{id}/credentials"),
            Some(json!({
                "access_token": minted.access_token,
                "refresh_token": minted.refresh_token,
                "access_token_expires_at": minted.access_expires_at,
            })),
        )
        .await
    };
    // Named: 654321, though 123456 is the division open in Exact Online.
    let reply = create(json!({"app_id": "ex", "recipients": [], "exact_division": 654321})).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.json["connection"]["exact_division"], 654321);
    let id = reply.json["connection"]["id"].as_str().unwrap().to_string();
    let reply = register(id.clone(), env.mint("ex")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let session = env.session(&id).await;
    assert_eq!(session.status, 200, "{}", session.text);
    let context = &session.json["context"];
    assert_eq!(context["division"], 654321);
    let codes: Vec<i64> = context["divisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, vec![123456, 654321]);
    assert!(context["divisions"][0]["name"].is_string());
    assert!(!context["user_id"].as_str().unwrap().is_empty());

    // Not named: the current division, when granted.
    let (id, _) = env.connected("ex").await;
    assert_eq!(env.session(&id).await.json["context"]["division"], 123456);

    // The customer's consent left out the named division: refused, nothing stored.
    env.sim
        .set_exact_division_scope("demo.user", Some(vec![123456]));
    let reply = create(json!({"app_id": "ex", "recipients": [], "exact_division": 654321})).await;
    let id = reply.json["connection"]["id"].as_str().unwrap().to_string();
    let reply = register(id.clone(), env.mint("ex")).await;
    reply.problem(ProblemKind::ValidationFailed);
    assert!(reply.text.contains("division 654321"), "{}", reply.text);
    assert_eq!(env.status_of(&id).await, "not_connected");
}

// ---------------------------------------------------------------------------------------------------
// Twinfield sessions: reuse, refresh on a rejected token, every fault shape. Backend-independent, so
// on the embedded store only.

mod twinfield_embedded {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn twinfield_sessions_are_reused_while_alive() {
        super::twinfield_sessions_are_reused_while_alive(20 * 60).await;
    }

    /// The idle time is unpublished (20 minutes assumed): a shorter one must not make the broker
    /// hand out a dead session either.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn twinfield_sessions_are_reused_while_alive_with_a_short_idle_time() {
        super::twinfield_sessions_are_reused_while_alive(5 * 60).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_rejected_twinfield_token_is_refreshed_once_in_every_fault_shape() {
        super::a_rejected_twinfield_token_is_refreshed_once_in_every_fault_shape().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_rejected_twinfield_session_is_replaced_at_once() {
        super::a_rejected_twinfield_session_is_replaced_at_once().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_rejections_of_one_twinfield_token_refresh_it_once() {
        super::concurrent_rejections_of_one_twinfield_token_refresh_it_once().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn only_a_failing_refresh_makes_a_rejected_twinfield_token_need_a_person() {
        super::only_a_failing_refresh_makes_a_rejected_twinfield_token_need_a_person().await;
    }
}

impl Env {
    async fn twinfield_session(&self, id: &str, company: Option<&str>) -> Reply {
        let query = company.map(|c| format!("?company={c}")).unwrap_or_default();
        self.call(
            "POST",
            &format!("/v1/connections/{id}/twinfield-session{query}"),
            None,
        )
        .await
    }
}

async fn twinfield_sessions_are_reused_while_alive(sim_idle_secs: i64) {
    let env = env(broker_tests::backends::embedded()).await;
    // The short variant also answers in Dutch: a gone session is known without reading its words.
    env.sim.update_knobs(|k| {
        k.twinfield_session_idle_timeout_secs = sim_idle_secs;
        if sim_idle_secs < 10 * 60 {
            k.twinfield_fault_language = sim::FaultLanguage::Nl;
        }
    });
    let (id, _) = env.connected("tw").await;
    let logons = || env.sim.calls("twinfield.session");
    let cluster_calls = || env.sim.calls("twinfield.cluster_session");
    let before = logons();

    // A burst, concurrent and sequential: one logon.
    let burst = futures_join(&env, &id).await;
    let first = burst[0].clone();
    assert!(burst.iter().all(|s| *s == first), "{burst:?}");
    for _ in 0..5 {
        let reply = env.twinfield_session(&id, None).await;
        assert_eq!(reply.json["session_id"], first.as_str(), "{}", reply.text);
    }
    assert_eq!(logons() - before, 1, "one logon for the whole burst");
    let reply = env.twinfield_session(&id, None).await;
    assert_eq!(
        reply.json["idle_timeout_secs"], 1200,
        "the catalogue's stated idle time"
    );
    let idle_expires_at: chrono::DateTime<Utc> =
        serde_json::from_value(reply.json["idle_expires_at"].clone()).unwrap();
    assert!(idle_expires_at > env.sim.clock().now() + Duration::minutes(19));

    // A minute later: checked with KeepAlive (the session is alive either way), not a new logon.
    env.advance(60);
    let kept = cluster_calls();
    let reply = env.twinfield_session(&id, None).await;
    assert_eq!(reply.json["session_id"], first.as_str(), "{}", reply.text);
    assert_eq!(cluster_calls() - kept, 1, "one KeepAlive");
    assert_eq!(logons() - before, 1);

    // Six minutes idle: gone at Twinfield with a five-minute idle time, alive with twenty.
    env.advance(6 * 60);
    let reply = env.twinfield_session(&id, None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let after_six = reply.json["session_id"].as_str().unwrap().to_string();
    assert_eq!(
        after_six == first,
        sim_idle_secs > 6 * 60,
        "{sim_idle_secs}"
    );
    // Whatever the broker hands out is alive at Twinfield.
    assert!(env.sim.twinfield_session_count() >= 1);

    // Long idle: a new session, never an error.
    env.advance(sim_idle_secs + 60);
    let reply = env.twinfield_session(&id, None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_ne!(reply.json["session_id"], after_six.as_str());

    // A company is its own session, selected once; an unknown one is a clear refusal.
    let with_company = env.twinfield_session(&id, Some("NL001")).await;
    assert_eq!(
        with_company.json["company"], "NL001",
        "{}",
        with_company.text
    );
    assert_ne!(with_company.json["session_id"], reply.json["session_id"]);
    let again = env.twinfield_session(&id, Some("NL001")).await;
    assert_eq!(again.json["session_id"], with_company.json["session_id"]);
    env.twinfield_session(&id, Some("NOPE"))
        .await
        .problem(ProblemKind::ValidationFailed);
    env.twinfield_session(&id, Some("a%20b"))
        .await
        .problem(ProblemKind::ValidationFailed);
    assert_eq!(env.status_of(&id).await, "connected");
}

/// An integration that finds its session dropped (here: abandoned behind the broker's back) says so,
/// and gets a new one at once instead of the pooled one until the next KeepAlive check.
async fn a_rejected_twinfield_session_is_replaced_at_once() {
    let env = env(broker_tests::backends::embedded()).await;
    let (id, _) = env.connected("tw").await;
    let first = env.twinfield_session(&id, None).await;
    let session = broker_core::providers::TwinfieldSession {
        session_id: broker_core::secret::SessionId::new(first.json["session_id"].as_str().unwrap()),
        cluster_url: ServiceUrl::parse(first.json["cluster_url"].as_str().unwrap()).unwrap(),
    };
    let client = env.ctx.providers.twinfield_sessions().unwrap();
    client.abandon(&session).await.unwrap();
    // Within the recheck interval the pool trusts what it touched a moment ago.
    let stale = env.twinfield_session(&id, None).await;
    assert_eq!(stale.json["session_id"], first.json["session_id"]);
    let path = format!("/v1/connections/{id}/twinfield-session");
    let body = json!({ "rejected_session_id": first.json["session_id"] });
    let replaced = env.call("POST", &path, Some(body.clone())).await;
    assert_eq!(replaced.status, 200, "{}", replaced.text);
    assert_ne!(replaced.json["session_id"], first.json["session_id"]);
    client
        .keep_alive(&broker_core::providers::TwinfieldSession {
            session_id: broker_core::secret::SessionId::new(
                replaced.json["session_id"].as_str().unwrap(),
            ),
            cluster_url: session.cluster_url.clone(),
        })
        .await
        .expect("the new session is alive");
    // Saying it again about the old one changes nothing: it was replaced already.
    let again = env.call("POST", &path, Some(body)).await;
    assert_eq!(again.json["session_id"], replaced.json["session_id"]);
    env.call("POST", &path, Some(json!({"session_id": "x"})))
        .await
        .problem(ProblemKind::InvalidRequest);
}

/// Eight concurrent session requests; their session ids.
async fn futures_join(env: &Env, id: &str) -> Vec<String> {
    let one = || env.twinfield_session(id, None);
    let (a, b, c, d) = tokio::join!(one(), one(), one(), one());
    let (e, f, g, h) = tokio::join!(one(), one(), one(), one());
    [a, b, c, d, e, f, g, h]
        .into_iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.text);
            r.json["session_id"].as_str().unwrap().to_string()
        })
        .collect()
}

fn soap11_fault(text: &str, detail: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><soap:Fault><faultcode>soap:Client</faultcode><faultstring>{text}</faultstring><detail>{detail}</detail></soap:Fault></soap:Body></soap:Envelope>"
    )
}

fn soap12_fault(text: &str, detail: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap12:Envelope xmlns:soap12=\"http://www.w3.org/2003/05/soap-envelope\"><soap12:Body><soap12:Fault><soap12:Code><soap12:Value>soap12:Sender</soap12:Value></soap12:Code><soap12:Reason><soap12:Text xml:lang=\"nl\">{text}</soap12:Text></soap12:Reason><soap12:Detail>{detail}</soap12:Detail></soap12:Fault></soap12:Body></soap12:Envelope>"
    )
}

/// Fault 354 at AccessTokenLogon in every shape Twinfield may send it: the token is refreshed once,
/// the logon retried, a session handed out, and the connection stays connected. Other faults and
/// outages change nothing and refresh nothing.
async fn a_rejected_twinfield_token_is_refreshed_once_in_every_fault_shape() {
    let env = env(broker_tests::backends::embedded()).await;
    let dutch = "Toegang geweigerd. Token ongeldig.";
    let body = |xml: String, content_type: &str| sim::FaultAction::Status {
        status: 500,
        body: xml,
        content_type: Some(content_type.into()),
    };
    let xml = "text/xml; charset=utf-8";
    let shapes: Vec<(&str, sim::FaultAction)> = vec![
        (
            "soap 1.1, code element",
            body(
                soap11_fault("Access denied. Token invalid.", "<code>354</code>"),
                xml,
            ),
        ),
        (
            "soap 1.1, Dutch, code attribute",
            body(soap11_fault(dutch, r#"<Error code="354"/>"#), xml),
        ),
        (
            "soap 1.1, Dutch, namespaced",
            body(
                soap11_fault(
                    dutch,
                    r#"<t:Errors xmlns:t="http://www.twinfield.com/"><t:code>354</t:code></t:Errors>"#,
                ),
                xml,
            ),
        ),
        (
            "soap 1.2, Dutch",
            body(
                soap12_fault(dutch, "<code>354</code>"),
                "application/soap+xml; charset=utf-8",
            ),
        ),
        (
            "soap 1.2, Dutch, UTF-16",
            sim::FaultAction::StatusUtf16 {
                status: 500,
                body: soap12_fault(dutch, r#"<Error code="354"/>"#).replace("utf-8", "utf-16"),
                content_type: Some("application/soap+xml; charset=utf-16".into()),
            },
        ),
    ];
    for (shape, action) in shapes {
        let (id, _) = env.connected("tw").await;
        let refreshes = env.sim.calls("twinfield.token");
        env.sim
            .inject_fault(sim::FaultRule::next("twinfield.session", 1, action));
        let reply = env.twinfield_session(&id, None).await;
        assert_eq!(reply.status, 200, "{shape}: {}", reply.text);
        assert_eq!(
            env.sim.calls("twinfield.token") - refreshes,
            1,
            "{shape}: one refresh"
        );
        assert_eq!(env.status_of(&id).await, "connected", "{shape}");
    }
    let others: Vec<(&str, sim::FaultAction, ProblemKind)> = vec![
        (
            "another fault",
            body(
                soap11_fault(
                    "Toegang geweigerd. Company ontbreekt in request header.",
                    "<code>103</code>",
                ),
                xml,
            ),
            ProblemKind::ProviderError,
        ),
        (
            "an outage",
            body("<html>down</html>".into(), "text/html"),
            ProblemKind::TemporarilyUnavailable,
        ),
        (
            "a rate limit",
            sim::FaultAction::TooManyRequests {
                retry_after_secs: 9,
                body: None,
            },
            ProblemKind::RateLimited,
        ),
    ];
    for (what, action, problem) in others {
        let (id, _) = env.connected("tw").await;
        let refreshes = env.sim.calls("twinfield.token");
        env.sim
            .inject_fault(sim::FaultRule::next("twinfield.session", 1, action));
        let reply = env.twinfield_session(&id, None).await;
        reply.problem(problem);
        assert!(
            reply.retry_after.is_some() || problem == ProblemKind::ProviderError,
            "{what}"
        );
        assert_eq!(
            env.sim.calls("twinfield.token"),
            refreshes,
            "{what}: no refresh"
        );
        assert_eq!(env.status_of(&id).await, "connected", "{what}");
    }
}

/// Two requests whose logons both see the token rejected (two companies, so two logons): one
/// refresh between them, the other uses its result.
async fn concurrent_rejections_of_one_twinfield_token_refresh_it_once() {
    let env = env(broker_tests::backends::embedded()).await;
    let (id, _) = env.connected("tw").await;
    let fault = sim::FaultAction::Status {
        status: 500,
        body: soap11_fault("Access denied. Token invalid.", "<code>354</code>"),
        content_type: Some("text/xml; charset=utf-8".into()),
    };
    env.sim
        .inject_fault(sim::FaultRule::next("twinfield.session", 2, fault));
    // The refresh takes longer than a logon, so both first logons meet the fault.
    env.sim
        .set_route_latency("twinfield.token", std::time::Duration::from_millis(400));
    let refreshes = env.sim.calls("twinfield.token");
    let (a, b) = tokio::join!(
        env.twinfield_session(&id, Some("NL001")),
        env.twinfield_session(&id, Some("NL002"))
    );
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(b.status, 200, "{}", b.text);
    assert_eq!(
        env.sim.calls("twinfield.token") - refreshes,
        1,
        "one refresh for both"
    );
    assert_eq!(env.status_of(&id).await, "connected");
}

/// A revoked grant: the logon refuses the token, the one refresh fails with invalid_grant, and only
/// then does the connection need a person.
async fn only_a_failing_refresh_makes_a_rejected_twinfield_token_need_a_person() {
    let env = env(broker_tests::backends::embedded()).await;
    for variant in [
        sim::InvalidTokenLogon::Result,
        sim::InvalidTokenLogon::Fault,
    ] {
        env.sim
            .update_knobs(|k| k.twinfield_invalid_token_logon = variant);
        let (id, _) = env.connected("tw").await;
        env.sim
            .revoke_grant(sim::Provider::Twinfield, "DEMO", Some(TW_ID));
        let refreshes = env.sim.calls("twinfield.token");
        let reply = env.twinfield_session(&id, None).await;
        reply.problem(ProblemKind::ReconnectRequired);
        assert_eq!(
            env.sim.calls("twinfield.token") - refreshes,
            1,
            "{variant:?}"
        );
        assert_eq!(
            env.status_of(&id).await,
            "reconnect_required",
            "{variant:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// Token lifetimes, the vault write budget and the request deadline.

/// Acumatica with 60-s access tokens and single-use refresh tokens, a session every 10 s for a simulated
/// day: refreshes stay within the vault write budget (at most 90 new versions per secret in the day),
/// every 200 carries a token the provider accepts, and every other answer is a 503 saying when to retry.
async fn a_day_of_continuous_use_with_short_tokens(backend: Backend) {
    let env = env(backend).await;
    env.sim
        .update_knobs(|k| k.acumatica_access_token_lifetime_secs = 60);
    let (id, _) = env.connected("acu").await;
    let writes_before = env.vault.writes_per_slot();
    let calls_before = env.sim.token_calls(sim::Provider::Acumatica);
    let (mut served, mut waited) = (0u32, 0u32);
    for _ in 0..(24 * 360) {
        let reply = env.session(&id).await;
        match reply.status {
            200 => {
                let token = reply.json["access_token"].as_str().unwrap();
                assert!(
                    env.sim.is_access_token_valid(token),
                    "an invalid token was handed out"
                );
                served += 1;
            }
            503 => {
                reply.problem(ProblemKind::TemporarilyUnavailable);
                waited += 1;
            }
            other => panic!("{other}: {}", reply.text),
        }
        env.advance(10);
    }
    let writes: Vec<u64> = env
        .vault
        .writes_per_slot()
        .iter()
        .zip(writes_before)
        .map(|(w, before)| w - before)
        .collect();
    let refreshes = env.sim.token_calls(sim::Provider::Acumatica) - calls_before;
    eprintln!(
        "60-s tokens, a session every 10 s for 24 h: {refreshes} refreshes, vault writes per slot {writes:?}, {served} served, {waited} told to wait"
    );
    for per_slot in &writes {
        assert!(
            *per_slot <= 90,
            "a secret took {per_slot} versions in a day"
        );
    }
    assert!(
        refreshes >= 160,
        "the budget is used, not starved: {refreshes}"
    );
    assert_eq!(env.sim.max_presentations_of_any_refresh_token(), 1);
    assert_eq!(env.status_of(&id).await, "connected");
    let view = env
        .call("GET", &format!("/v1/connections/{id}"), None)
        .await;
    assert!(
        view.json["refresh_limited_since"].is_string(),
        "the connection says its refreshes are held back: {}",
        view.text
    );
}

/// An integration whose provider refused a token the broker handed out asks for a new one: the broker
/// refreshes once (single flight), and a caller presenting an older token gets the newer one as it is.
async fn a_refused_token_is_replaced_once_and_a_newer_one_is_handed_out_as_it_is(backend: Backend) {
    let env = env(backend).await;
    let (id, minted) = env.connected("acu").await;
    let calls = env.sim.token_calls(sim::Provider::Acumatica);
    let path = format!("/v1/connections/{id}/session");
    let refused = json!({ "rejected_access_token": minted.access_token });
    let (first, second) = tokio::join!(
        env.call("POST", &path, Some(refused.clone())),
        env.call("POST", &path, Some(refused.clone())),
    );
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(second.status, 200, "{}", second.text);
    let new_token = first.json["access_token"].as_str().unwrap();
    assert_ne!(new_token, minted.access_token);
    assert_eq!(
        second.json["access_token"], new_token,
        "one refresh for both"
    );
    assert_eq!(env.sim.token_calls(sim::Provider::Acumatica), calls + 1);
    // The old token again: the current one is newer and is handed out without a refresh.
    let again = env.call("POST", &path, Some(refused)).await;
    assert_eq!(again.json["access_token"], new_token);
    assert_eq!(env.sim.token_calls(sim::Provider::Acumatica), calls + 1);
    // A named validity is honoured within bounds; nonsense is refused clearly.
    let long = env
        .call("POST", &path, Some(json!({ "min_validity_secs": 3000 })))
        .await;
    assert_eq!(long.status, 200, "{}", long.text);
    assert!(long.json["expires_in"].as_i64().unwrap() > 3000);
    let refused = env
        .call("POST", &path, Some(json!({ "min_validity_secs": 0 })))
        .await;
    refused.problem(ProblemKind::ValidationFailed);
    let unknown = env
        .call("POST", &path, Some(json!({ "validity": 10 })))
        .await;
    unknown.problem(ProblemKind::InvalidRequest);
    assert_eq!(env.sim.max_presentations_of_any_refresh_token(), 1);
}

/// The session call answers within its deadline: a provider slower than the time left makes a 503 with
/// `Retry-After` (no token spent unseen: the connection refreshes normally afterwards), and so does a
/// marker left by an interrupted refresh, while its call could still be running.
async fn a_slow_provider_or_an_interrupted_refresh_answers_503_within_the_deadline(
    backend: Backend,
) {
    let within = std::time::Duration::from_secs(8);
    let settings = ApiSettings {
        request_budget: within,
        ..ApiSettings::default()
    };
    // 8 s per request: 1.5 s to answer, 4 s for the writes after a provider call, 2 s for the call.
    let engine = EngineSettings {
        call_timeout: std::time::Duration::from_secs(2),
        ..EngineSettings::default()
    };
    let env = env_with_engine(backend, settings, engine).await;
    let (id, minted) = env.connected("acu").await;
    let connection_id = ConnectionId::parse(&id).unwrap();
    let store = &env.ctx.backend.store;
    let stored = store.get_connection(&connection_id).await.unwrap().unwrap();
    env.advance(3605); // expired

    // A provider answering in 30 s: the call gives up in time, and no retry starts that could not end.
    env.sim
        .set_route_latency("acumatica.token", std::time::Duration::from_secs(30));
    let started = std::time::Instant::now();
    let reply = env.session(&id).await;
    assert!(started.elapsed() < within, "{:?}", started.elapsed());
    reply.problem(ProblemKind::TemporarilyUnavailable);
    assert!(reply.retry_after.is_some(), "{}", reply.text);
    let after = store.get_connection(&connection_id).await.unwrap().unwrap();
    assert_eq!(
        after.credentials, stored.credentials,
        "the tokens are intact"
    );
    assert!(after.refresh_in_flight.is_none());
    env.sim
        .set_route_latency("acumatica.token", std::time::Duration::ZERO);

    // A marker left by a refresh whose call may still be running: wait, within the deadline.
    let mut connection = store.get_connection(&connection_id).await.unwrap().unwrap();
    let current = connection.credentials.clone().unwrap();
    connection.refresh_in_flight = Some(broker_core::domain::RefreshInFlight {
        started_at: env.ctx.clock.now(),
        spending: current.clone(),
        target: CredentialsPointer {
            slot: current.slot.other(),
            write: WriteId::generate(),
        },
        escrow: None,
    });
    store
        .save_connection(&connection, broker_core::ports::Fence::Version, &[])
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let reply = env.session(&id).await;
    assert!(started.elapsed() < within, "{:?}", started.elapsed());
    reply.problem(ProblemKind::TemporarilyUnavailable);
    let retry_after: u64 = reply.retry_after.as_deref().unwrap().parse().unwrap();
    assert!(
        (1..=120).contains(&retry_after),
        "Retry-After names when the interrupted call's budget ends: {retry_after}"
    );

    // Past the interrupted call's budget, the next caller recovers and refreshes once.
    env.advance(env.ctx.engine.settings().call_budget().num_seconds() + 1);
    let reply = env.session(&id).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_ne!(reply.json["access_token"], minted.access_token.as_str());
    assert!(env
        .sim
        .is_access_token_valid(reply.json["access_token"].as_str().unwrap()));
    assert_eq!(env.sim.max_presentations_of_any_refresh_token(), 1);
    assert_eq!(env.status_of(&id).await, "connected");
}

// ---------------------------------------------------------------------------------------------------
// Key scopes, media types and labels.

/// Every route × every kind of key: a session-only key may only ask for sessions; a key limited to some
/// connections may do everything on those (listing shows only them) but create none; nothing reaches a
/// connection outside a key's list. "Allowed" is any answer but 401/403 (the connection's state decides
/// the rest); disconnect comes last, so the earlier routes see a connected connection (repeating it is
/// harmless).
async fn every_route_answers_every_key_scope_as_the_scope_says(backend: Backend) {
    let env = env(backend).await;
    let (a, _) = env.connected("tw").await;
    let (b, _) = env.connected("ex").await;
    let a_id = ConnectionId::parse(&a).unwrap();
    let b_id = ConnectionId::parse(&b).unwrap();
    let store = &env.ctx.backend.store;
    let key = |session_only: bool, connections: Option<Vec<ConnectionId>>| {
        let new = ApiKeyRecord::generate(
            tenant("acme"),
            "scoped",
            ApiKeyScope {
                session_only,
                connections,
                manage_apps: false,
            },
            Utc::now(),
        );
        (new.plaintext.expose().to_string(), new.record)
    };
    let keys = [
        ("tenant-wide", key(false, None)),
        ("session-only", key(true, None)),
        ("limited to A", key(false, Some(vec![a_id.clone()]))),
        (
            "session-only, limited to A",
            key(true, Some(vec![a_id.clone()])),
        ),
        ("limited to B", key(false, Some(vec![b_id.clone()]))),
    ];
    for (_, (_, record)) in &keys {
        store.insert_api_key(record).await.unwrap();
    }
    let create = json!({"app_id": "tw", "recipients": ["finance@example.com"]});
    let pair = json!({"access_token": "x", "refresh_token": "y"});
    // (method, path, body, allowed for: tenant-wide, session-only, limited to A, session-only A, limited to B)
    let routes: Vec<(&str, String, Option<Value>, [bool; 5])> = vec![
        (
            "POST",
            "/v1/connections".into(),
            Some(create),
            [true, false, false, false, false],
        ),
        (
            "GET",
            "/v1/connections".into(),
            None,
            [true, false, true, false, true],
        ),
        (
            "GET",
            format!("/v1/connections/{a}"),
            None,
            [true, false, true, false, false],
        ),
        (
            "POST",
            format!("/v1/connections/{a}/reconnect-link"),
            None,
            [true, false, true, false, false],
        ),
        (
            "POST",
            format!("/v1/connections/{a}/credentials"),
            Some(pair),
            [true, false, true, false, false],
        ),
        (
            "POST",
            format!("/v1/connections/{a}/session"),
            None,
            [true, true, true, true, false],
        ),
        (
            "POST",
            format!("/v1/connections/{a}/twinfield-session"),
            None,
            [true, true, true, true, false],
        ),
        (
            "DELETE",
            format!("/v1/connections/{a}"),
            None,
            [true, false, true, false, false],
        ),
    ];
    for (method, path, body, allowed) in &routes {
        for (i, (name, (plaintext, _))) in keys.iter().enumerate() {
            let reply = env
                .call_raw(
                    method,
                    path,
                    Some(plaintext),
                    body.as_ref().map(|b| serde_json::to_vec(b).unwrap()),
                )
                .await;
            if allowed[i] {
                assert!(
                    ![401, 403].contains(&reply.status),
                    "{name} may {method} {path}: {} {}",
                    reply.status,
                    reply.text
                );
            } else {
                reply.problem(ProblemKind::Forbidden);
            }
        }
    }
    // A key limited to A lists only A.
    let listed = env
        .call_raw("GET", "/v1/connections", Some(&keys[2].1 .0), None)
        .await;
    let ids: Vec<&str> = listed.json["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a.as_str()]);
}

/// A body not declared as JSON gets 415 with what to do; an empty session request needs no type. A
/// display name loses control and bidirectional characters before it is stored.
async fn bodies_must_be_declared_json_and_labels_lose_control_characters(backend: Backend) {
    let env = env(backend).await;
    let body = serde_json::to_vec(&json!({
        "app_id": "ex",
        "display_name": "Acme\u{202E}fdp.exe\u{7}",
        "recipients": ["finance@example.com"],
    }))
    .unwrap();
    let send = |content_type: Option<&'static str>, path: String, body: Vec<u8>| {
        let mut request = env
            .http
            .post(format!("{}{path}", env.base))
            .bearer_auth(&env.key)
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send()
    };
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let response = send(content_type, "/v1/connections".into(), body.clone())
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 415, "{content_type:?}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(
            problem["type"],
            format!("{PROBLEM_BASE}unsupported-media-type")
        );
        assert!(problem["detail"]
            .as_str()
            .unwrap()
            .contains("application/json"));
    }
    let response = send(
        Some("application/json; charset=utf-8"),
        "/v1/connections".into(),
        body,
    )
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["connection"]["display_name"], "Acmefdp.exe");

    let (id, _) = env.connected("ex").await;
    let path = format!("/v1/connections/{id}/session");
    let empty = send(None, path.clone(), Vec::new()).await.unwrap();
    assert_eq!(empty.status().as_u16(), 200);
    let undeclared = send(None, path, b"{\"min_validity_secs\": 60}".to_vec())
        .await
        .unwrap();
    assert_eq!(undeclared.status().as_u16(), 415);
}

/// An unknown key prefix is looked up once; for the key cache's lifetime after that miss it is refused
/// without reading the store, shown by storing the key right after the miss: still refused, then
/// accepted once the miss has aged out.
async fn an_unknown_key_is_refused_without_a_store_read_for_a_while(backend: Backend) {
    let ttl = std::time::Duration::from_millis(1500);
    let env = env_with(
        backend,
        ApiSettings {
            key_cache_ttl: ttl,
            ..ApiSettings::default()
        },
    )
    .await;
    let new = ApiKeyRecord::generate(tenant("acme"), "late", ApiKeyScope::default(), Utc::now());
    let key = new.plaintext.expose().to_string();
    env.call_raw("GET", "/v1/connections", Some(&key), None)
        .await
        .problem(ProblemKind::Unauthorized);
    env.ctx
        .backend
        .store
        .insert_api_key(&new.record)
        .await
        .unwrap();
    env.call_raw("GET", "/v1/connections", Some(&key), None)
        .await
        .problem(ProblemKind::Unauthorized);
    tokio::time::sleep(ttl + std::time::Duration::from_millis(200)).await;
    let reply = env
        .call_raw("GET", "/v1/connections", Some(&key), None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

/// Exact blocks an app for an hour after more than 10 failed token calls per app and user. Two
/// connections of one Exact user stop calling together after 8; while held, a session answers 503 with
/// the time the limit allows a call again, and a connection of the same user whose token is still
/// valid keeps handing it out.
async fn exact_connections_of_one_user_wait_together_and_keep_serving_valid_tokens(
    backend: Backend,
) {
    let env = env(backend).await;
    let (first, _) = env.connected("ex").await;
    let (second, _) = env.connected("ex").await;
    // Every refresh is refused as too early: a 400 Exact counts toward its block.
    env.sim
        .update_knobs(|k| k.exact_min_refresh_interval_secs = 7_200);
    env.advance(700);
    let calls = env.sim.token_calls(sim::Provider::Exact);
    for _ in 0..4 {
        for id in [&first, &second] {
            let reply = env.session(id).await;
            reply.problem(ProblemKind::TemporarilyUnavailable);
            assert!(
                reply.text.contains("does not allow a refresh yet"),
                "{}",
                reply.text
            );
        }
    }
    assert_eq!(env.sim.token_calls(sim::Provider::Exact) - calls, 8);
    let reply = env.session(&first).await;
    reply.problem(ProblemKind::TemporarilyUnavailable);
    assert!(
        reply.text.contains("this user's connections"),
        "{}",
        reply.text
    );
    // All eight failures fell in the 12:00 hour: they count through the 13:00 hour too.
    let until = Utc.with_ymd_and_hms(2025, 6, 2, 14, 0, 0).unwrap();
    let wait = (until - env.sim.clock().now()).num_seconds();
    assert_eq!(reply.retry_after, Some(wait.to_string()));
    assert_eq!(env.sim.token_calls(sim::Provider::Exact) - calls, 8);

    // A third connection of the same user, its token nearly spent (but valid): handed out as it is.
    env.sim
        .update_knobs(|k| k.exact_min_refresh_interval_secs = 570);
    let (third, minted) = env.connected("ex").await;
    env.advance(580);
    let reply = env.session(&third).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["access_token"], minted.access_token.as_str());
    assert_eq!(env.sim.token_calls(sim::Provider::Exact) - calls, 8);
}
