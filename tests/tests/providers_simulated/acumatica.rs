//! Acumatica: PKCE, rotation, login limits, outages and sliding expiry; and a generic provider
//! defined only by configuration, pointed at Acumatica's discovery document.

use super::*;

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
