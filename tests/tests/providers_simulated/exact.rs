//! Exact Online: divisions across pages, every country host, refresh errors, rate limits, outages and
//! the app block after too many errors.

use super::*;

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
