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

// ---------------------------------------------------------------------------------------------------
// Twinfield

#[tokio::test]
async fn twinfield_connects_discovers_refreshes_and_opens_a_session() {
    let env = env().await;
    let client = env.twinfield();
    let (state, _) = new_one_time_secret();
    let request = client.authorization_request(&state, &[]).await.unwrap();
    let q = query(&request.url);
    assert_eq!(
        q["scope"],
        "openid twf.user twf.organisation twf.organisationUser offline_access"
    );
    assert_eq!(
        q.get("nonce"),
        request.nonce.as_ref(),
        "Twinfield's mandatory nonce is sent and returned"
    );
    assert!(
        !q.contains_key("code_challenge"),
        "PKCE is off for Twinfield"
    );

    let authorized = env.connect(&client).await;
    let tokens = &authorized.tokens;
    assert!(tokens.refresh_token.is_some());
    assert_eq!(
        tokens.access_expires_at - tokens.received_at,
        Duration::seconds(3600)
    );
    assert!(tokens.refresh_expires_at.unwrap() > tokens.received_at + Duration::days(9000));

    let found = client.discover(&authorized).await.unwrap();
    let ProviderContext::Twinfield {
        cluster_url,
        organisation_code,
        organisation_id,
    } = &found.context
    else {
        panic!("{:?}", found.context)
    };
    assert_eq!(
        cluster_url.base(),
        env.sim.twinfield_cluster_url("accounting")
    );
    assert_eq!(organisation_code, "TWF-DEMO");
    assert!(organisation_id.is_some());
    assert_eq!(found.identity.as_ref().unwrap().subject, "DEMO");

    // Reusable refresh tokens: the same one comes back and stays.
    let refreshed = client.refresh(tokens, None).await.unwrap();
    assert_eq!(
        refreshed.refresh_token.as_ref().unwrap().expose(),
        tokens.refresh_token.as_ref().unwrap().expose()
    );
    assert_ne!(
        refreshed.access_token.expose(),
        tokens.access_token.expose()
    );
    assert_eq!(
        refreshed.refresh_expires_at, tokens.refresh_expires_at,
        "an absolute lifetime does not move"
    );

    let sessions = env.providers.twinfield_sessions().unwrap();
    let logon = sessions
        .access_token_logon(&refreshed.access_token)
        .await
        .unwrap();
    assert_eq!(
        (logon.result, logon.verdict()),
        (LogonResult::Ok, LogonVerdict::Ok)
    );
    let session = logon.session().unwrap();
    assert_eq!(
        session.cluster_url.base(),
        env.sim.twinfield_cluster_url("accounting")
    );
    assert_eq!(
        sessions.select_company(&session, "NL001").await.unwrap(),
        SelectCompanyResult::Ok
    );
    assert_eq!(
        sessions.select_company(&session, "NOPE").await.unwrap(),
        SelectCompanyResult::Invalid
    );
    sessions.keep_alive(&session).await.unwrap();
    sessions.abandon(&session).await.unwrap();
    let gone = sessions.keep_alive(&session).await.unwrap_err();
    assert!(
        matches!(gone, SessionError::SessionExpired { .. }),
        "{gone:?}"
    );
    assert_clean(
        &gone,
        &[session.session_id.expose(), refreshed.access_token.expose()],
    );
}

#[tokio::test]
async fn twinfield_rotating_refresh_tokens_are_followed() {
    let env = env_with(
        |k| k.twinfield_rotate_refresh_tokens = true,
        broker_tests::provider_http_settings(),
    )
    .await;
    let client = env.twinfield();
    let tokens = env.connect(&client).await.tokens;
    let refreshed = client.refresh(&tokens, None).await.unwrap();
    assert_ne!(
        refreshed.refresh_token.as_ref().unwrap().expose(),
        tokens.refresh_token.as_ref().unwrap().expose()
    );
    // The old one is now spent: Twinfield answers invalid_grant.
    expect_class(
        client.refresh(&tokens, None).await,
        ErrorClass::GrantRevoked,
        &secrets_of(&tokens),
    );
    client.refresh(&refreshed, None).await.unwrap();
}

/// Twinfield reads HTTP Basic as its article builds it: plain `client_id:client_secret`, split at the
/// first colon, nothing URL-decoded. A secret with characters the RFC 6749 encoding would escape (and a
/// colon, which only the id may not hold) must still authenticate the code exchange and the refresh.
#[tokio::test]
async fn twinfield_client_secret_with_reserved_characters_authenticates() {
    let env = env().await;
    let secret = "p+q/r=s&t%25u v:w*x~y";
    env.sim.register_twinfield_client(ClientRegistration {
        client_id: "tw-odd".into(),
        client_secret: secret.into(),
        redirect_uris: vec![REDIRECT.into()],
    });
    let client = env.client(ProviderSettings::Twinfield, "tw-odd", secret);
    let authorized = env.connect(&client).await;
    let refreshed = client.refresh(&authorized.tokens, None).await.unwrap();
    assert_ne!(
        refreshed.access_token.expose(),
        authorized.tokens.access_token.expose()
    );
    // The same secret, form-encoded first as RFC 6749 2.3.1 would have it, is refused: the simulator
    // decodes nothing, as the real login service.
    let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let wrong = env.client(ProviderSettings::Twinfield, "tw-odd", &encoded);
    let e = wrong.refresh(&authorized.tokens, None).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::ClientMisconfigured, "{e}");
    assert_clean(&e, &[secret, &encoded]);
}

/// A cluster URL outside the catalogue's allow-list (https under twinfield.com, or the sandbox the
/// login host was pointed at) is refused at discovery and at logon: tokens and session ids never go
/// there.
#[tokio::test]
async fn twinfield_cluster_outside_the_allow_list_is_refused() {
    let env = env().await;
    let client = env.twinfield();
    let authorized = env.connect(&client).await;
    let sessions = env.providers.twinfield_sessions().unwrap();
    for hostile in [
        "https://evil.example.com",
        "https://accounting.twinfield.com.evil.example",
        "http://127.0.0.1:9/twinfield/clusters/accounting",
    ] {
        env.sim
            .update_knobs(|k| k.twinfield_cluster_url_override = Some(hostile.into()));
        let e = client.discover(&authorized).await.unwrap_err();
        assert!(
            e.to_string().contains("not an allowed address"),
            "{hostile}: {e}"
        );
        let e = sessions
            .access_token_logon(&authorized.tokens.access_token)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("not an allowed address"),
            "{hostile}: {e}"
        );
    }
    // A real cluster host passes the check and is then rewritten by the overrides, as every URL is.
    env.sim.update_knobs(|k| {
        k.twinfield_cluster_url_override = Some("https://accounting.twinfield.com".into())
    });
    let found = client.discover(&authorized).await.unwrap();
    let ProviderContext::Twinfield { cluster_url, .. } = found.context else {
        panic!()
    };
    assert_eq!(cluster_url.base(), "https://accounting.twinfield.com");
}

#[tokio::test]
async fn twinfield_token_errors_are_classified() {
    let env = env().await;
    let client = env.twinfield();
    let tokens = env.connect(&client).await.tokens;
    let secrets = secrets_of(&tokens);

    let wrong = env.client(ProviderSettings::Twinfield, TW_ID, "not-the-secret");
    let e = expect_class(
        wrong.refresh(&tokens, None).await,
        ErrorClass::ClientMisconfigured,
        &secrets,
    );
    assert_eq!(
        e.reconnect_reason().unwrap().kind,
        ReconnectKind::ClientMisconfigured
    );

    let route = "twinfield.token";
    env.sim.inject_fault(FaultRule::next(
        route,
        1,
        FaultAction::TooManyRequests {
            retry_after_secs: 42,
            body: None,
        },
    ));
    let e = expect_class(
        client.refresh(&tokens, None).await,
        ErrorClass::RateLimited,
        &secrets,
    );
    assert_eq!(e.retry_after, Some(std::time::Duration::from_secs(42)));

    let html = FaultAction::Status {
        status: 502,
        body: "<html><body>Bad gateway</body></html>".into(),
        content_type: None,
    };
    env.sim.inject_fault(FaultRule::next(route, 1, html));
    let e = expect_class(
        client.refresh(&tokens, None).await,
        ErrorClass::ProviderUnavailable,
        &secrets,
    );
    assert!(e.detail.contains("Bad gateway") && e.outcome_unknown);

    env.sim
        .inject_fault(FaultRule::next(route, 1, FaultAction::Drop));
    let e = expect_class(
        client.refresh(&tokens, None).await,
        ErrorClass::ProviderUnavailable,
        &secrets,
    );
    assert!(e.outcome_unknown);

    assert_eq!(
        env.sim.revoke_grant(sim::Provider::Twinfield, "DEMO", None),
        1
    );
    let e = expect_class(
        client.refresh(&tokens, None).await,
        ErrorClass::GrantRevoked,
        &secrets,
    );
    assert_eq!(
        e.reconnect_reason().unwrap().kind,
        ReconnectKind::GrantRevoked
    );

    // Discovery with a revoked token: Twinfield's 400 {"Message":...}.
    let authorized = Authorized {
        tokens: tokens.clone(),
        id_token: None,
    };
    let e = client.discover(&authorized).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::GrantRevoked, "{e}");
    assert!(e.detail.contains("invalid or has expired"), "{e}");
    assert_clean(&e, &secrets.iter().map(String::as_str).collect::<Vec<_>>());
}

#[tokio::test]
async fn twinfield_expiry_and_unexpected_answers_are_classified() {
    // Twinfield answers invalid_grant for any dead refresh token; past its known expiry it is an expiry.
    let env = env_with(
        |k| k.twinfield_refresh_token_lifetime_secs = 3600,
        broker_tests::provider_http_settings(),
    )
    .await;
    let client = env.twinfield();
    let mut tokens = env.connect(&client).await.tokens;
    let secrets = secrets_of(&tokens);
    let odd = FaultAction::Status {
        status: 200,
        body: r#"{"token_type":"bearer","refresh_token":"surprise-refresh-token"}"#.into(),
        content_type: None,
    };
    env.sim
        .inject_fault(FaultRule::next("twinfield.token", 1, odd));
    let e = expect_class(
        client.refresh(&tokens, None).await,
        ErrorClass::Unexpected,
        &secrets,
    );
    assert!(e.detail.contains("no access_token"), "{e}");
    assert_eq!(
        e.new_refresh_token().unwrap().expose(),
        "surprise-refresh-token",
        "kept even so"
    );

    env.advance(7200);
    tokens.refresh_expires_at = Some(tokens.received_at + Duration::seconds(3600));
    let e = expect_class(
        client.refresh(&tokens, None).await,
        ErrorClass::RefreshTokenExpired,
        &secrets,
    );
    assert_eq!(e.error_code.as_deref(), Some("invalid_grant"));
}

#[tokio::test]
async fn twinfield_every_logon_result_maps_to_a_verdict() {
    let env = env().await;
    let client = env.twinfield();
    let tokens = env.connect(&client).await.tokens;
    let sessions = env.providers.twinfield_sessions().unwrap();
    let expected = |r: LogonResult| match r {
        LogonResult::Ok => LogonVerdict::Ok,
        LogonResult::Blocked | LogonResult::Failed => LogonVerdict::RetryLater,
        LogonResult::TokenInvalid => LogonVerdict::RefreshAccessToken,
        LogonResult::Invalid => LogonVerdict::Reconnect(ReconnectKind::GrantRevoked),
        LogonResult::ClientInvalid => LogonVerdict::Reconnect(ReconnectKind::ClientMisconfigured),
        LogonResult::OAuth2AuthenticationRequired => {
            LogonVerdict::Reconnect(ReconnectKind::LegacyCredentialsRetired)
        }
        LogonResult::Untrusted | LogonResult::NoAvailableCompanies => LogonVerdict::Refused,
        _ => LogonVerdict::Disabled,
    };
    for wire in sim::LogonResult::ALL {
        let behaviour = sim::LogonBehaviour {
            result: wire,
            next_action: sim::NextAction::None,
        };
        env.sim
            .set_twinfield_logon_behaviour("TWF-DEMO", None, Some(behaviour))
            .unwrap();
        let logon = sessions
            .access_token_logon(&tokens.access_token)
            .await
            .unwrap();
        assert_eq!(logon.result.as_str(), wire.as_str());
        assert_eq!(logon.verdict(), expected(logon.result), "{wire:?}");
        assert_eq!(logon.session().is_some(), logon.result == LogonResult::Ok);
    }
    // AccessTokenLogon's answer has no nextAction: a user's pending SMS log-on does not show there.
    let sms = sim::LogonBehaviour {
        result: sim::LogonResult::Ok,
        next_action: sim::NextAction::SmsLogon,
    };
    env.sim
        .set_twinfield_logon_behaviour("TWF-DEMO", Some("DEMO"), Some(sms))
        .unwrap();
    let logon = sessions
        .access_token_logon(&tokens.access_token)
        .await
        .unwrap();
    assert_eq!(logon.verdict(), LogonVerdict::Ok);

    // An unknown token is refused either way the real service may do it: a TokenInvalid result or
    // the 354 fault (unpublished, so both), in English or Dutch.
    let bogus = broker_core::secret::AccessToken::new("not-a-real-token");
    let logon = sessions.access_token_logon(&bogus).await.unwrap();
    assert_eq!(logon.verdict(), LogonVerdict::RefreshAccessToken);
    env.sim.update_knobs(|k| {
        k.twinfield_invalid_token_logon = sim::InvalidTokenLogon::Fault;
        k.twinfield_fault_language = sim::FaultLanguage::Nl;
    });
    let e = sessions.access_token_logon(&bogus).await.unwrap_err();
    assert!(
        matches!(e, SessionError::AccessTokenInvalid { .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn twinfield_session_faults_and_outages_are_classified() {
    let env = env().await;
    let client = env.twinfield();
    let tokens = env.connect(&client).await.tokens;
    let sessions = env.providers.twinfield_sessions().unwrap();
    let access = tokens.access_token.expose();
    // Twinfield's answer to an invalid token on a SOAP call: soap:Client, code 354. Echoing the token in
    // the fault text must not put it into the error.
    let fault = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><soap:Fault>\
         <faultcode>soap:Client</faultcode><faultstring>Access denied. Token invalid. ({access})</faultstring><detail><code>354</code></detail>\
         </soap:Fault></soap:Body></soap:Envelope>"
    );
    let route = "twinfield.session";
    env.sim.inject_fault(FaultRule::next(
        route,
        1,
        FaultAction::Status {
            status: 500,
            body: fault,
            content_type: None,
        },
    ));
    let e = sessions
        .access_token_logon(&tokens.access_token)
        .await
        .unwrap_err();
    assert!(
        matches!(e, SessionError::AccessTokenInvalid { .. }),
        "{e:?}"
    );
    assert_clean(&e, &[access]);

    env.sim.inject_fault(FaultRule::next(
        route,
        1,
        FaultAction::TooManyRequests {
            retry_after_secs: 7,
            body: None,
        },
    ));
    let e = sessions
        .access_token_logon(&tokens.access_token)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        SessionError::RateLimited {
            retry_after: Some(std::time::Duration::from_secs(7))
        }
    );

    let down = FaultAction::Status {
        status: 503,
        body: "Service Unavailable".into(),
        content_type: None,
    };
    env.sim.inject_fault(FaultRule::next(route, 1, down));
    assert!(matches!(
        sessions.access_token_logon(&tokens.access_token).await,
        Err(SessionError::Unavailable { .. })
    ));

    env.sim
        .inject_fault(FaultRule::next(route, 1, FaultAction::Drop));
    let e = sessions
        .access_token_logon(&tokens.access_token)
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");

    let junk = FaultAction::Status {
        status: 200,
        body: "<soap:Envelope".into(),
        content_type: Some("text/xml".into()),
    };
    env.sim.inject_fault(FaultRule::next(route, 1, junk));
    assert!(matches!(
        sessions.access_token_logon(&tokens.access_token).await,
        Err(SessionError::Malformed(_))
    ));

    // The real thing still works afterwards.
    let session = sessions
        .access_token_logon(&tokens.access_token)
        .await
        .unwrap()
        .session()
        .unwrap();
    let cluster_down = FaultAction::Status {
        status: 500,
        body: "<html>oops</html>".into(),
        content_type: None,
    };
    env.sim.inject_fault(FaultRule::next(
        "twinfield.cluster_session",
        1,
        cluster_down,
    ));
    assert!(matches!(
        sessions.select_company(&session, "NL001").await,
        Err(SessionError::Unavailable { .. })
    ));
}

#[tokio::test]
async fn twinfield_legacy_oauth_logon_and_its_retirement() {
    let env = env().await;
    env.sim
        .add_twinfield_legacy_credentials(sim::LegacyCredentials {
            organisation: "TWF-DEMO".into(),
            user: "DEMO".into(),
            client_token: "consumer-key".into(),
            client_secret: "consumer-secret-value".into(),
            access_token: "legacy-access-token".into(),
            access_secret: "legacy-access-secret".into(),
        })
        .unwrap();
    let sessions = env.providers.twinfield_sessions().unwrap();
    let consumer = LegacyConsumer {
        client_token: "consumer-key".into(),
        client_secret: ClientSecret::new("consumer-secret-value"),
    };
    let credentials = LegacyTwinfieldCredentials {
        access_token: LegacyAccessToken::new("legacy-access-token"),
        access_secret: LegacyAccessSecret::new("legacy-access-secret"),
    };
    let logon = sessions.oauth_logon(&consumer, &credentials).await.unwrap();
    assert_eq!(logon.verdict(), LogonVerdict::Ok);
    let sms = sim::LogonBehaviour {
        result: sim::LogonResult::Ok,
        next_action: sim::NextAction::SmsLogon,
    };
    env.sim
        .set_twinfield_logon_behaviour("TWF-DEMO", Some("DEMO"), Some(sms))
        .unwrap();
    let pending = sessions.oauth_logon(&consumer, &credentials).await.unwrap();
    assert_eq!(pending.verdict(), LogonVerdict::PersonMustAct);
    env.sim
        .set_twinfield_logon_behaviour("TWF-DEMO", Some("DEMO"), None)
        .unwrap();
    sessions
        .select_company(&logon.session().unwrap(), "NL002")
        .await
        .unwrap();

    let wrong = LegacyConsumer {
        client_token: "consumer-key".into(),
        client_secret: ClientSecret::new("wrong-secret"),
    };
    let logon = sessions.oauth_logon(&wrong, &credentials).await.unwrap();
    assert_eq!(
        logon.verdict(),
        LogonVerdict::Reconnect(ReconnectKind::ClientMisconfigured)
    );

    let retired = sim::LogonBehaviour {
        result: sim::LogonResult::OAuth2AuthenticationRequired,
        next_action: sim::NextAction::None,
    };
    env.sim
        .set_twinfield_logon_behaviour("TWF-DEMO", None, Some(retired))
        .unwrap();
    let logon = sessions.oauth_logon(&consumer, &credentials).await.unwrap();
    assert_eq!(
        logon.verdict(),
        LogonVerdict::Reconnect(ReconnectKind::LegacyCredentialsRetired)
    );
}

// ---------------------------------------------------------------------------------------------------
// Exact Online

fn granted_codes(found: &broker_core::providers::Discovered) -> Vec<i64> {
    match &found.context {
        ProviderContext::ExactOnline { divisions, .. } => {
            divisions.iter().map(|d| d.code).collect()
        }
        other => panic!("{other:?}"),
    }
}

/// A consent restricted to two of the user's three divisions, without the one open in Exact Online;
/// `system/Divisions` answering one row a page.
#[tokio::test]
async fn exact_discovery_lists_the_granted_divisions_across_pages() {
    let env = env().await;
    env.sim.update_knobs(|k| k.exact_page_size = 1);
    env.sim.add_exact_user(provider_simulators::ExactUser {
        user_name: "demo.user".into(),
        full_name: "Demo User".into(),
        current_division: 123456,
        divisions: vec![123456, 654321, 111],
    });
    env.sim
        .set_exact_division_scope("demo.user", Some(vec![654321, 111]));
    let client = env.exact();
    for checks_url in [true, false] {
        env.sim
            .update_knobs(|k| k.exact_divisions_checks_url_division = checks_url);
        let authorized = env.connect(&client).await;
        let found = client.discover(&authorized).await.unwrap();
        if checks_url {
            // Refused through CurrentDivision and nothing else known: no list (binding refuses).
            assert!(granted_codes(&found).is_empty());
        } else {
            assert_eq!(granted_codes(&found), vec![111, 654321]);
        }
        // Through a division the connection knows, whatever the reading.
        let found = client.discover_for(&authorized, &[654321]).await.unwrap();
        assert_eq!(granted_codes(&found), vec![111, 654321]);
        let ProviderContext::ExactOnline { division, .. } = &found.context else {
            unreachable!()
        };
        assert_eq!(
            *division, 123456,
            "CurrentDivision as Exact reports it, before binding"
        );
    }
    // A failure other than a refusal is an error, not an empty list.
    let authorized = env.connect(&client).await;
    env.sim.inject_fault(FaultRule::next(
        "exact.api",
        1,
        FaultAction::Status {
            status: 503,
            body: "down".into(),
            content_type: None,
        },
    ));
    let e = client.discover(&authorized).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::ProviderUnavailable);
}

#[tokio::test]
async fn exact_connects_discovers_and_rotates_on_every_country_host() {
    let env = env().await;
    for country in [ExactCountry::Netherlands, ExactCountry::UnitedKingdom] {
        let client = env.client(ProviderSettings::ExactOnline { country }, EX_ID, EX_SECRET);
        let (state, _) = new_one_time_secret();
        let request = client
            .authorization_request(&state, &[("force_login", "0")])
            .await
            .unwrap();
        assert!(request.url.as_str().starts_with(&format!(
            "{}/api/oauth2/auth?",
            env.sim.exact_base(country.tld())
        )));
        let q = query(&request.url);
        assert_eq!(q["force_login"], "0");
        assert!(!q.contains_key("scope") && !q.contains_key("nonce"));

        let authorized = env.connect(&client).await;
        let tokens = &authorized.tokens;
        assert_eq!(
            tokens.access_expires_at - tokens.received_at,
            Duration::seconds(600),
            "expires_in came as \"600\""
        );
        assert_eq!(
            tokens.refresh_expires_at,
            Some(tokens.received_at + Duration::days(30))
        );
        let found = client.discover(&authorized).await.unwrap();
        let ProviderContext::ExactOnline {
            base_url,
            division,
            user_id,
            divisions,
        } = &found.context
        else {
            panic!("{:?}", found.context)
        };
        assert_eq!(
            (base_url.base(), *division),
            (env.sim.exact_base(country.tld()).as_str(), 123456)
        );
        let codes: Vec<i64> = divisions.iter().map(|d| d.code).collect();
        assert_eq!(codes, vec![123456, 654321]);
        assert_eq!(
            user_id.as_deref(),
            found.identity.as_ref().map(|i| i.subject.as_str())
        );
        let identity = found.identity.unwrap();
        assert_eq!(identity.display_name.as_deref(), Some("Demo User"));
    }

    let client = env.exact();
    let tokens = env.connect(&client).await.tokens;
    // Too early: refused by the client itself, without spending a call (Exact counts refusals).
    let calls = env.sim.calls("exact.token");
    let e = expect_class(
        client.refresh(&tokens, None).await,
        ErrorClass::TooEarly,
        &secrets_of(&tokens),
    );
    assert!(e.retry_after.unwrap() > std::time::Duration::from_secs(560));
    assert_eq!(env.sim.calls("exact.token"), calls);

    env.advance(571);
    let refreshed = client.refresh(&tokens, None).await.unwrap();
    let old = tokens.refresh_token.as_ref().unwrap().expose();
    assert_ne!(refreshed.refresh_token.as_ref().unwrap().expose(), old);
    assert_eq!(env.sim.presentations_of(old), 1);
    assert_eq!(env.sim.max_presentations_of_any_refresh_token(), 1);
}

#[tokio::test]
async fn exact_refresh_errors_are_classified_precisely() {
    let env = env().await;
    let client = env.exact();
    let tokens = env.connect(&client).await.tokens;
    let secrets = secrets_of(&tokens);
    env.advance(571);
    let refreshed = client.refresh(&tokens, None).await.unwrap();

    // The spent token again: 401 {"error":"unauthorized_client","error_description":"Old refresh token used."}.
    env.advance(571);
    let e = expect_class(
        client.refresh(&tokens, None).await,
        ErrorClass::RefreshTokenReused,
        &secrets,
    );
    assert_eq!(
        (e.status, e.error_code.as_deref()),
        (Some(401), Some("unauthorized_client"))
    );
    assert_eq!(
        e.reconnect_reason().unwrap().kind,
        ReconnectKind::RefreshTokenReused
    );
    assert!(e.to_string().contains("Old refresh token used."), "{e}");

    // The provider's own "too early" (the client's clock thought it was fine).
    let fresh = client.refresh(&refreshed, None).await.unwrap();
    let mut stale_clock = fresh.clone();
    stale_clock.received_at -= Duration::seconds(600);
    let e = expect_class(
        client.refresh(&stale_clock, None).await,
        ErrorClass::TooEarly,
        &secrets_of(&fresh),
    );
    assert!(e.retry_after.is_some());

    // Unused for 30 days: 400 invalid_request "The refresh token expired at ...".
    env.advance(31 * 86_400);
    let e = expect_class(
        client.refresh(&fresh, None).await,
        ErrorClass::RefreshTokenExpired,
        &secrets_of(&fresh),
    );
    assert_eq!(e.error_code.as_deref(), Some("invalid_request"));
    assert!(e.detail.contains("expired at"), "{e}");

    // A wrong client secret: 401 invalid_client.
    let wrong = env.client(
        ProviderSettings::ExactOnline {
            country: ExactCountry::Netherlands,
        },
        EX_ID,
        "nope-wrong",
    );
    let e = expect_class(
        wrong.refresh(&fresh, None).await,
        ErrorClass::ClientMisconfigured,
        &secrets_of(&fresh),
    );
    assert_eq!(e.status, Some(401));
}

#[tokio::test]
async fn exact_revoked_chains_rate_limits_and_outages() {
    let env = env_with(
        |_| {},
        HttpSettings {
            total_timeout: std::time::Duration::from_secs(1),
            ..broker_tests::provider_http_settings()
        },
    )
    .await;
    env.sim.update_knobs(|k| k.hang_secs = 3);
    let client = env.exact();
    let tokens = env.connect(&client).await.tokens;
    let secrets = secrets_of(&tokens);
    env.advance(571);
    let route = "exact.token";

    env.sim.inject_fault(FaultRule::next(
        route,
        1,
        FaultAction::TooManyRequests {
            retry_after_secs: 30,
            body: None,
        },
    ));
    let e = expect_class(
        client.refresh(&tokens, None).await,
        ErrorClass::RateLimited,
        &secrets,
    );
    assert_eq!(e.retry_after, Some(std::time::Duration::from_secs(30)));

    let down = FaultAction::Status {
        status: 503,
        body: "upstream connect error".into(),
        content_type: None,
    };
    env.sim.inject_fault(FaultRule::next(route, 1, down));
    expect_class(
        client.refresh(&tokens, None).await,
        ErrorClass::ProviderUnavailable,
        &secrets,
    );

    env.sim
        .inject_fault(FaultRule::next(route, 1, FaultAction::Hang));
    let e = expect_class(
        client.refresh(&tokens, None).await,
        ErrorClass::ProviderUnavailable,
        &secrets,
    );
    assert!(e.outcome_unknown && e.detail.contains("timed out"), "{e}");

    let maintenance = FaultAction::Status {
        status: 200,
        body: "<html>Maintenance</html>".into(),
        content_type: Some("text/html".into()),
    };
    env.sim.inject_fault(FaultRule::next(route, 1, maintenance));
    let e = expect_class(
        client.refresh(&tokens, None).await,
        ErrorClass::Unexpected,
        &secrets,
    );
    assert!(e.detail.contains("Maintenance"), "{e}");

    // A provider error page that echoes the refresh token: blanked out.
    let refresh = tokens.refresh_token.as_ref().unwrap().expose();
    let echo =
        format!(r#"{{"error":"invalid_request","error_description":"Unknown token {refresh}"}}"#);
    env.sim.inject_fault(FaultRule::next(
        route,
        1,
        FaultAction::Status {
            status: 400,
            body: echo,
            content_type: None,
        },
    ));
    let e = expect_class(
        client.refresh(&tokens, None).await,
        ErrorClass::Unexpected,
        &secrets,
    );
    assert!(e.detail.contains("[redacted]"), "{e}");

    // The known loss case: Exact issued a new pair, the gateway answered 500. The old token is spent.
    env.sim
        .inject_fault(FaultRule::next(route, 1, FaultAction::IssueThen500));
    let e = expect_class(
        client.refresh(&tokens, None).await,
        ErrorClass::ProviderUnavailable,
        &secrets,
    );
    assert!(
        e.outcome_unknown && e.detail.contains("ExtractVariables"),
        "{e}"
    );
    env.advance(571);
    expect_class(
        client.refresh(&tokens, None).await,
        ErrorClass::RefreshTokenReused,
        &secrets,
    );

    // A revoked grant: 400 invalid_grant "... invalid or empty chainId".
    let next = env.connect(&client).await.tokens;
    env.advance(571);
    env.sim
        .revoke_grant(sim::Provider::Exact, "demo.user", None);
    let e = expect_class(
        client.refresh(&next, None).await,
        ErrorClass::GrantRevoked,
        &secrets_of(&next),
    );
    assert!(e.detail.contains("chainId"), "{e}");
}

#[tokio::test]
async fn exact_rate_limited_reply_with_tokens_keeps_the_new_refresh_token() {
    let env = env_with(
        |k| {
            k.exact_daily_token_cap = 2;
            k.exact_rate_limited_refresh_issues_tokens = true;
        },
        broker_tests::provider_http_settings(),
    )
    .await;
    let client = env.exact();
    let tokens = env.connect(&client).await.tokens; // call 1 of 2
    env.advance(571);
    let second = client.refresh(&tokens, None).await.unwrap(); // call 2 of 2
    env.advance(571);
    let e = expect_class(
        client.refresh(&second, None).await,
        ErrorClass::RateLimited,
        &secrets_of(&second),
    );
    assert!(e.retry_after.is_some());
    let recovered = e
        .recovered
        .clone()
        .expect("the refused reply carried a new pair");
    let carried = recovered.tokens.expect("with an access token");
    assert_ne!(
        recovered.refresh_token.expose(),
        second.refresh_token.as_ref().unwrap().expose()
    );
    assert!(e.to_string().contains("must be stored"));
    assert_clean(
        &e,
        &[
            recovered.refresh_token.expose(),
            carried.access_token.expose(),
        ],
    );

    // The old token is spent; the recovered one carries the chain on the next day.
    env.advance(86_400);
    expect_class(
        client.refresh(&second, None).await,
        ErrorClass::RefreshTokenReused,
        &[],
    );
    client.refresh(&carried, None).await.unwrap();
}

#[tokio::test]
async fn exact_blocks_an_app_after_too_many_errors() {
    let env = env().await;
    let client = env.exact();
    let tokens = env.connect(&client).await.tokens;
    let mut bogus = tokens.clone();
    bogus.refresh_token = Some(broker_core::secret::RefreshToken::new(
        "made-up-refresh-token",
    ));
    bogus.received_at -= Duration::seconds(600);
    for _ in 0..11 {
        expect_class(
            client.refresh(&bogus, None).await,
            ErrorClass::GrantRevoked,
            &[],
        );
    }
    let e = expect_class(
        client.refresh(&bogus, None).await,
        ErrorClass::RateLimited,
        &[],
    );
    assert!(
        e.retry_after.unwrap() > std::time::Duration::from_secs(3000),
        "{e}"
    );
    assert_eq!(e.error_code.as_deref(), Some("too_many_errors"));
}

// ---------------------------------------------------------------------------------------------------
// Acumatica

#[tokio::test]
async fn acumatica_connects_with_pkce_discovers_and_rotates() {
    let env = env_with(
        |k| k.acumatica_expires_in_as_string = true,
        broker_tests::provider_http_settings(),
    )
    .await;
    let client = env.acumatica();
    let (state, _) = new_one_time_secret();
    let request = client.authorization_request(&state, &[]).await.unwrap();
    let q = query(&request.url);
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(request.pkce_verifier.is_some());
    assert_eq!(q["scope"], "api offline_access openid");
    assert!(request.url.as_str().starts_with(&format!(
        "{}/identity/connect/authorize?",
        env.sim.acumatica_instance_url("demo")
    )));

    let authorized = env.connect(&client).await;
    let tokens = &authorized.tokens;
    assert_eq!(
        tokens.access_expires_at - tokens.received_at,
        Duration::seconds(3600)
    );
    assert_eq!(
        tokens.refresh_expires_at,
        Some(tokens.received_at + Duration::days(30))
    );
    let found = client.discover(&authorized).await.unwrap();
    assert_eq!(
        found.context,
        ProviderContext::Acumatica {
            instance_url: ServiceUrl::parse(&env.sim.acumatica_instance_url("demo")).unwrap(),
            tenant: "Company".into()
        }
    );
    assert_eq!(
        found.identity.unwrap().display_name.as_deref(),
        Some("admin")
    );

    let authorized_at = tokens.received_at;
    env.advance(3000);
    let refreshed = client.refresh(tokens, Some(authorized_at)).await.unwrap();
    assert_ne!(
        refreshed.refresh_token.as_ref().unwrap().expose(),
        tokens.refresh_token.as_ref().unwrap().expose()
    );
    assert_eq!(
        refreshed.refresh_expires_at, tokens.refresh_expires_at,
        "30 days from first issue, however often used"
    );
    // The spent one: invalid_grant.
    expect_class(
        client.refresh(tokens, None).await,
        ErrorClass::GrantRevoked,
        &secrets_of(tokens),
    );

    // Past the 30 days: invalid_grant again, told apart by the known expiry.
    env.advance(31 * 86_400);
    let e = expect_class(
        client.refresh(&refreshed, None).await,
        ErrorClass::RefreshTokenExpired,
        &secrets_of(&refreshed),
    );
    assert_eq!(
        e.reconnect_reason().unwrap().kind,
        ReconnectKind::RefreshTokenExpired
    );
}

/// Acumatica documents neither its discovery document nor PKCE: the client sends a challenge only
/// when the instance's document advertises S256, works without a document, and does not take an
/// outage of the document for its absence.
#[tokio::test]
async fn acumatica_pkce_follows_what_the_instance_advertises() {
    for (document, advertised) in [(true, true), (true, false), (false, false)] {
        let env = env_with(
            |k| {
                k.acumatica_discovery_document = document;
                k.acumatica_advertises_pkce = advertised;
            },
            broker_tests::provider_http_settings(),
        )
        .await;
        let client = env.acumatica();
        let (state, _) = new_one_time_secret();
        let request = client.authorization_request(&state, &[]).await.unwrap();
        let q = query(&request.url);
        let variant = format!("document {document}, S256 advertised {advertised}");
        assert_eq!(q.contains_key("code_challenge"), advertised, "{variant}");
        assert_eq!(request.pkce_verifier.is_some(), advertised, "{variant}");
        assert!(q.contains_key("nonce"), "openid is asked for: {variant}");
        let authorized = env.connect(&client).await;
        assert!(authorized.id_token.is_some(), "{variant}");
        assert_eq!(env.sim.calls("acumatica.discovery"), 1, "{variant}");
    }
    let env = env().await;
    env.sim.inject_fault(FaultRule::always(
        "acumatica.discovery",
        FaultAction::Status {
            status: 503,
            body: "down".into(),
            content_type: Some("text/plain".into()),
        },
    ));
    let (state, _) = new_one_time_secret();
    let e = env
        .acumatica()
        .authorization_request(&state, &[])
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::ProviderUnavailable, "{e}");
}

#[tokio::test]
async fn acumatica_login_limit_wrong_pkce_and_wrong_secret() {
    let env = env().await;
    env.sim
        .set_acumatica_login_limit("demo", "Company", Some(1))
        .unwrap();
    let client = env.acumatica();
    env.connect(&client).await;
    let (code, request) = env.code_for(&client).await;
    let e = client
        .exchange_code(&code, request.pkce_verifier.as_ref(), None)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::RateLimited, "{e}");
    assert!(e.detail.contains("API Login Limit"), "{e}");
    assert_clean(&e, &[code.expose(), ACU_SECRET]);

    env.sim
        .set_acumatica_login_limit("demo", "Company", None)
        .unwrap();
    let (code, _) = env.code_for(&client).await;
    let e = client.exchange_code(&code, None, None).await.unwrap_err();
    assert_eq!(
        e.class,
        ErrorClass::GrantRevoked,
        "a missing PKCE verifier is invalid_grant: {e}"
    );

    let wrong = env.client(env.acumatica_settings(), ACU_ID, "wrong-secret");
    let (code, request) = env.code_for(&wrong).await;
    let e = wrong
        .exchange_code(&code, request.pkce_verifier.as_ref(), None)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::ClientMisconfigured, "{e}");
}

#[tokio::test]
async fn acumatica_outages_rate_limits_and_odd_answers() {
    let env = env().await;
    let client = env.acumatica();
    let tokens = env.connect(&client).await.tokens;
    let secrets = secrets_of(&tokens);
    let route = "acumatica.token";
    env.sim.inject_fault(FaultRule::next(
        route,
        1,
        FaultAction::TooManyRequests {
            retry_after_secs: 5,
            body: None,
        },
    ));
    let e = expect_class(
        client.refresh(&tokens, None).await,
        ErrorClass::RateLimited,
        &secrets,
    );
    assert_eq!(e.retry_after, Some(std::time::Duration::from_secs(5)));
    env.sim
        .inject_fault(FaultRule::next(route, 1, FaultAction::IssueThenDrop));
    let e = expect_class(
        client.refresh(&tokens, None).await,
        ErrorClass::ProviderUnavailable,
        &secrets,
    );
    assert!(
        e.outcome_unknown,
        "the provider acted before the answer was lost"
    );
    // The lost answer spent the token.
    expect_class(
        client.refresh(&tokens, None).await,
        ErrorClass::GrantRevoked,
        &secrets,
    );

    let fresh = env.connect(&client).await.tokens;
    let mac = FaultAction::Status {
        status: 200,
        body: r#"{"access_token":"a","token_type":"mac","expires_in":"3600","refresh_token":"rotated-anyway"}"#.into(),
        content_type: None,
    };
    env.sim.inject_fault(FaultRule::next(route, 1, mac));
    let e = expect_class(
        client.refresh(&fresh, None).await,
        ErrorClass::Unexpected,
        &secrets_of(&fresh),
    );
    assert_eq!(e.new_refresh_token().unwrap().expose(), "rotated-anyway");
    let redirect = FaultAction::Status {
        status: 302,
        body: String::new(),
        content_type: None,
    };
    env.sim.inject_fault(FaultRule::next(route, 1, redirect));
    let e = expect_class(
        client.refresh(&fresh, None).await,
        ErrorClass::Unexpected,
        &secrets_of(&fresh),
    );
    assert_eq!(e.status, Some(302));
    client.refresh(&fresh, None).await.unwrap();
}

#[tokio::test]
async fn acumatica_sliding_expiration_from_a_runtime_definition() {
    let env = env().await;
    let policy = AcumaticaRefreshPolicy::Sliding {
        sliding_secs: 10 * 86_400,
        absolute_cap_secs: Some(15 * 86_400),
    };
    env.sim
        .register_acumatica_client("demo", acumatica_registration(policy))
        .unwrap();
    let mut catalogue = env.providers.catalogue().clone();
    catalogue
        .merge_json(
            r#"{"definitions":[{"id":"acumatica","extends":"acumatica",
                "refresh":{"rotation":"single_use","expiry":{"kind":"sliding","days":10,"absolute_cap_days":15}}}]}"#,
        )
        .unwrap();
    let clock: Arc<dyn Clock> = Arc::new(broker_tests::clock::SimulatorClock(env.sim.clock()));
    let providers = Providers::new(catalogue, env.providers.http().clone(), clock);
    let client = providers
        .oauth_client(
            &app(env.acumatica_settings(), ACU_ID),
            ClientSecret::new(ACU_SECRET),
        )
        .unwrap();
    let tokens = env.connect(&client).await.tokens;
    let start = tokens.received_at;
    assert_eq!(tokens.refresh_expires_at, Some(start + Duration::days(10)));
    env.advance(9 * 86_400);
    let slid = client.refresh(&tokens, Some(start)).await.unwrap();
    assert_eq!(
        slid.refresh_expires_at,
        Some(start + Duration::days(15)),
        "capped 15 days after the first issue"
    );
    env.advance(6 * 86_400 + 60);
    expect_class(
        client.refresh(&slid, Some(start)).await,
        ErrorClass::RefreshTokenExpired,
        &secrets_of(&slid),
    );
}

// ---------------------------------------------------------------------------------------------------
// A generic provider defined only by configuration, pointed at Acumatica's discovery document.

#[tokio::test]
async fn a_generic_provider_is_configured_from_an_issuer() {
    let env = env().await;
    let mut catalogue = env.providers.catalogue().clone();
    let issuer = format!("{}/identity", env.sim.acumatica_instance_url("demo"));
    let definition = serde_json::json!({ "definitions": [{
        "id": "acumatica-as-generic", "kind": "generic", "display_name": "Generic over Acumatica",
        "issuer": issuer, "scopes": ["api", "offline_access", "openid"],
        "lifetimes": { "access_token_secs": 3600 },
        "refresh": { "rotation": "single_use", "expiry": { "kind": "unknown" } },
        "discovery": "userinfo"
    }]});
    catalogue.merge_json(&definition.to_string()).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(broker_tests::clock::SimulatorClock(env.sim.clock()));
    let providers = Providers::new(catalogue, env.providers.http().clone(), clock);
    let settings = ProviderSettings::Generic {
        definition: "acumatica-as-generic".into(),
    };
    let client = providers
        .oauth_client(&app(settings, ACU_ID), ClientSecret::new(ACU_SECRET))
        .unwrap();

    let endpoints = client.endpoints().await.unwrap();
    assert_eq!(
        endpoints.client_auth,
        broker_core::providers::ClientAuth::Body,
        "client_secret_post only"
    );
    assert!(endpoints.pkce, "S256 is advertised");
    let authorized = env.connect(&client).await;
    let found = client.discover(&authorized).await.unwrap();
    assert_eq!(found.context, ProviderContext::Generic { account: None });
    assert_eq!(
        found.identity.unwrap().display_name.as_deref(),
        Some("admin")
    );
    let refreshed = client.refresh(&authorized.tokens, None).await.unwrap();
    assert_eq!(
        refreshed.refresh_expires_at, None,
        "the definition does not know"
    );
    let again = providers
        .oauth_client(
            &app(
                ProviderSettings::Generic {
                    definition: "acumatica-as-generic".into(),
                },
                ACU_ID,
            ),
            ClientSecret::new(ACU_SECRET),
        )
        .unwrap();
    again.endpoints().await.unwrap();
    assert_eq!(
        env.sim.calls("acumatica.discovery"),
        1,
        "the discovery document is read once per process"
    );
}

// ---------------------------------------------------------------------------------------------------
// The refresh engine's port, as the provider clients implement it.

#[tokio::test]
async fn the_refresh_engine_port_refreshes_and_classifies() {
    use broker_core::domain::ErrorClass;
    use broker_core::refresh::TokenGrant;
    let env = env().await;
    let exact_app = app(
        ProviderSettings::ExactOnline {
            country: ExactCountry::Netherlands,
        },
        EX_ID,
    );
    let rules = env.providers.rules(&exact_app);
    assert!(rules.rotating);
    assert_eq!(rules.min_interval, Some(Duration::seconds(570)));

    let tokens = env.connect(&env.exact()).await.tokens;
    let old = tokens.refresh_token.clone().unwrap();
    env.advance(571);
    let secret = ClientSecret::new(EX_SECRET);
    let granted = env
        .providers
        .refresh(&exact_app, &secret, &old)
        .await
        .unwrap();
    assert_eq!(granted.expires_in, Duration::seconds(600));
    assert!(granted.refresh_token.is_some());
    env.advance(571);
    let failure = env
        .providers
        .refresh(&exact_app, &secret, &old)
        .await
        .unwrap_err();
    assert_eq!(failure.class, ErrorClass::RefreshTokenReused);
    assert!(
        failure.message.contains("Old refresh token used."),
        "{failure:?}"
    );
    assert!(!format!("{failure:?}").contains(old.expose()));
}

// ---------------------------------------------------------------------------------------------------
// Addresses: the simulators listen on loopback, which the broker on AWS must never call.

/// An Exact Online client whose catalogue names the simulator by a host name (`localhost`), so its
/// calls go through DNS rather than to an IP literal.
fn exact_by_name(env: &Env, http: HttpSettings) -> OAuthClient {
    let base = env.sim.exact_base("nl").replace("127.0.0.1", "localhost");
    assert!(base.contains("//localhost:"), "{base}");
    let catalogue = Catalogue::built_in()
        .with_base_url("https://start.exactonline.nl", &base)
        .unwrap();
    let clock: Arc<dyn Clock> = Arc::new(broker_tests::clock::SimulatorClock(env.sim.clock()));
    let settings = ProviderSettings::ExactOnline {
        country: ExactCountry::Netherlands,
    };
    Providers::new(catalogue, ProviderHttp::new(http).unwrap(), clock)
        .oauth_client(&app(settings, EX_ID), ClientSecret::new(EX_SECRET))
        .unwrap()
}

#[tokio::test]
async fn a_provider_on_loopback_is_refused_in_production_and_reached_in_local_runs() {
    let production = env_with(|_| {}, HttpSettings::default()).await;
    let any_code = AuthorizationCode::new("any-code".to_string());

    // By address (Exact's base is http://127.0.0.1:PORT): refused before anything is sent.
    let refused = production
        .exact()
        .exchange_code(&any_code, None, None)
        .await
        .expect_err("a loopback token endpoint is refused");
    assert_eq!(refused.class, ErrorClass::ClientMisconfigured, "{refused}");
    assert!(!refused.class.is_transient());
    assert!(!refused.outcome_unknown, "nothing was sent: {refused}");
    let said = refused.to_string();
    assert!(said.contains("127.0.0.1 is a loopback address"), "{said}");
    assert!(said.contains("public https URL"), "{said}");

    // By name: `localhost` resolves to loopback, and the resolver drops what it resolves to.
    let refused = exact_by_name(&production, HttpSettings::default())
        .exchange_code(&any_code, None, None)
        .await
        .expect_err("a name resolving to loopback is refused");
    assert_eq!(refused.class, ErrorClass::ClientMisconfigured, "{refused}");
    assert!(!refused.outcome_unknown, "{refused}");
    let said = refused.to_string();
    assert!(said.contains("localhost resolves to"), "{said}");
    assert!(said.contains("a loopback address"), "{said}");

    // Twinfield's session service goes through the same client.
    let refused = production
        .providers
        .twinfield_sessions()
        .unwrap()
        .access_token_logon(&broker_core::secret::AccessToken::new("any-token"))
        .await
        .expect_err("a loopback session service is refused");
    assert!(
        matches!(refused, SessionError::AddressRefused(_)),
        "{refused}"
    );
    assert!(!refused.is_transient());

    // The same simulators, with loopback allowed as local runs and the tests allow it.
    let local = env().await;
    let authorized = local.connect(&local.exact()).await;
    assert!(authorized.tokens.refresh_token.is_some());
    let by_name = exact_by_name(&local, broker_tests::provider_http_settings());
    let authorized = local.connect(&by_name).await;
    assert!(authorized.tokens.refresh_token.is_some());
}
