//! Twinfield: connecting, discovery, rotation, client authentication, the cluster allow-list, and
//! how token errors and unexpected answers are classified.

use super::*;

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
