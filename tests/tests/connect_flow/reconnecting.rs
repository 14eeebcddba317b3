//! Reconnecting, and the life of a connect link: expiry, HEAD requests, spending and retirement.

use super::*;

broker_tests::on_both_backends!(
    current_thread:
    a_connection_that_needs_reconnecting_is_reconnected,
    a_legacy_twinfield_connection_is_reconnected,
    an_expired_link_is_refused,
    head_requests_have_no_side_effects,
    a_link_is_spent_by_its_connection_and_retired_by_a_newer_one,
    a_generic_reconnect_by_another_account_is_refused_unless_allowed,
    an_unknown_link_is_refused_without_a_store_read_after_the_first_miss,
);

async fn a_connection_that_needs_reconnecting_is_reconnected(backend: Backend) {
    let (world, connection) = connected_exact_world(backend).await;
    let first = world.connection(&connection).await;
    let old_tokens = world.tokens(&first).await;
    world
        .sim()
        .revoke_grant(provider_simulators::Provider::Exact, "demo.user", None);
    assert!(!world
        .sim()
        .is_access_token_valid(old_tokens.access_token.expose()));
    world.needs_reconnect(&connection, |_| {}).await;
    world.clock.advance(Duration::minutes(5));
    let page = world
        .connect(&connection, AuthorizationPurpose::Reconnect)
        .await;
    assert_page(
        &page,
        StatusCode::OK,
        &["is reconnected", "division 123456"],
    );
    let after = world.connection(&connection).await;
    let new_tokens = world.tokens(&after).await;
    assert_ne!(
        new_tokens.access_token.expose(),
        old_tokens.access_token.expose()
    );
    let (old_slot, new_slot) = (
        first.credentials.as_ref().unwrap().slot,
        after.credentials.as_ref().unwrap().slot,
    );
    assert_eq!(
        new_slot,
        old_slot.other(),
        "written to the other slot, then switched"
    );
    let transitions = world.transitions(&after.id).await;
    let kinds: Vec<(StatusKind, StatusKind)> = transitions.iter().map(|t| (t.from, t.to)).collect();
    assert_eq!(
        kinds,
        vec![
            (StatusKind::NotConnected, StatusKind::Connected),
            (StatusKind::Connected, StatusKind::ReconnectRequired),
            (StatusKind::ReconnectRequired, StatusKind::Connected),
        ]
    );
    world.check_logs();
}

async fn a_legacy_twinfield_connection_is_reconnected(backend: Backend) {
    let (world, connection) = world_with_connection(backend, Which::Twinfield).await;
    // The state seed 000 calls "Reconnect": old credentials, retired by the provider.
    let mut legacy = world.connection(&connection).await;
    legacy.context = Some(ProviderContext::Twinfield {
        cluster_url: ServiceUrl::parse(&world.sim().twinfield_cluster_url("accounting")).unwrap(),
        organisation_code: "twf-demo".into(),
        organisation_id: None,
    });
    let transition = legacy
        .apply(
            StatusEvent::ReconnectNeeded(ReconnectReason::new(
                ReconnectKind::LegacyCredentialsRetired,
                "OAuth2AuthenticationRequired",
            )),
            Actor::System("test".into()),
            world.clock.now(),
        )
        .unwrap();
    let keeper = CredentialKeeper::new(
        world.ctx.backend.store.clone(),
        world.ctx.backend.vault.clone(),
    );
    let target = CredentialKeeper::next_target(&legacy);
    let legacy = keeper
        .commit(
            legacy,
            target,
            &Credentials::TwinfieldLegacy(LegacyTwinfieldCredentials {
                access_token: LegacyAccessToken::new("legacy-access-token-1"),
                access_secret: LegacyAccessSecret::new("legacy-access-secret-1"),
            }),
            Fence::Version,
            &[transition],
        )
        .await
        .unwrap();
    world.remember("legacy-access-token-1");
    world.remember("legacy-access-secret-1");
    let page = world
        .connect(&legacy, AuthorizationPurpose::Reconnect)
        .await;
    assert_page(
        &page,
        StatusCode::OK,
        &["Twinfield is reconnected", "TWF-DEMO"],
    );
    let after = world.connection(&legacy).await;
    assert_eq!(
        after.credentials.as_ref().unwrap().slot,
        legacy.credentials.as_ref().unwrap().slot.other()
    );
    world.check_logs();
}

async fn an_expired_link_is_refused(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    world.clock.advance(Duration::days(8));
    let page = world.get(&browser(), link.as_str()).await;
    assert_page(&page, StatusCode::GONE, &["expired", "new connect link"]);
    world.check_logs();
}

/// A HEAD (a link checker, a mail scanner) on the connect link or on the callback starts nothing and
/// spends nothing: the same state and code still complete the connection once, afterwards.
async fn head_requests_have_no_side_effects(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    // Taken after the link: issuing one retires the older links, a write of its own.
    let before = world.snapshot(&connection).await;
    let head = browser().head(link.clone()).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert!(
        head.headers().get("set-cookie").is_none(),
        "no authorization started"
    );
    let attempt = world.authorize(&link).await;
    let calls = world
        .sim()
        .token_calls(provider_simulators::Provider::Exact);
    let head = attempt
        .browser
        .head(attempt.callback.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        world
            .sim()
            .token_calls(provider_simulators::Provider::Exact),
        calls,
        "HEAD exchanged no code"
    );
    assert_eq!(world.snapshot(&connection).await, before);
    let page = world.finish(&attempt).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    assert_eq!(
        world
            .sim()
            .token_calls(provider_simulators::Provider::Exact),
        calls + 1
    );
    world.check_logs();
}

/// A link works until the connection it belongs to completes (then it is spent) or a newer link is
/// issued for it (then it is retired). Either way, opening it shows a page that says so with the
/// connection's status, and starts no authorization.
async fn a_link_is_spent_by_its_connection_and_retired_by_a_newer_one(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let first = world.link(&connection, AuthorizationPurpose::Connect).await;
    let second = world.link(&connection, AuthorizationPurpose::Connect).await;
    // The older link is retired by the newer one.
    let page = world.get(&browser(), first.as_str()).await;
    assert_page(
        &page,
        StatusCode::GONE,
        &[
            "This link was replaced",
            "A newer link replaced this one",
            "not connected",
            "most recent link",
        ],
    );
    assert!(page.headers.get("set-cookie").is_none(), "nothing started");
    // The newer one connects, and is spent by it.
    let attempt = world.authorize(&second).await;
    assert_eq!(world.finish(&attempt).await.status, StatusCode::OK);
    let after = world.snapshot(&connection).await;
    let page = world.get(&browser(), second.as_str()).await;
    assert_page(
        &page,
        StatusCode::GONE,
        &[
            "This link was already used",
            "is connected",
            "Nothing to do",
        ],
    );
    assert!(page.headers.get("set-cookie").is_none(), "nothing started");
    assert_eq!(world.snapshot(&connection).await, after);
    // A reconnect link issued afterwards works again.
    let reconnect = world
        .link(&connection, AuthorizationPurpose::Reconnect)
        .await;
    let attempt = world.authorize(&reconnect).await;
    assert_eq!(world.finish(&attempt).await.status, StatusCode::OK);
    world.check_logs();
}

/// A generic provider names no organisation: the account that connected (`sub`) is the one a reconnect
/// must come from, unless the connection allows a change of user. Against oidc-provider, signing in
/// another account on the second authorization.
async fn a_generic_reconnect_by_another_account_is_refused_unless_allowed(backend: Backend) {
    let world = oidc_world(backend).await;
    let Provider::Oidc(server) = &world.provider else {
        unreachable!("an oidc world")
    };
    let connection = world
        .new_connection(broker_core::domain::ProviderKind::Generic)
        .await;
    world
        .connect(&connection, AuthorizationPurpose::Connect)
        .await;
    server.sign_in_as("someone-else").await.unwrap();
    let words = [
        "someone-else",
        broker_tests::oidc::ACCOUNT,
        "Nothing was changed",
    ];
    world
        .refused(
            &connection,
            AuthorizationPurpose::Reconnect,
            StatusCode::FORBIDDEN,
            &words,
        )
        .await;

    // The integration allows a change of user: the same reconnect is accepted.
    let mut allowing = world.connection(&connection).await;
    allowing.allow_user_change = true;
    world.save(&allowing, &[]).await;
    world
        .connect(&connection, AuthorizationPurpose::Reconnect)
        .await;
    let stored = world.connection(&connection).await;
    assert_eq!(
        stored.authorized_by.map(|who| who.subject).as_deref(),
        Some("someone-else")
    );
    world.check_logs();
}

/// A link token no link has is looked up once; for a minute after that it is refused without a store
/// read. Shown by storing a link under that very token after the first miss: still refused.
async fn an_unknown_link_is_refused_without_a_store_read_after_the_first_miss(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let (token, key) = broker_core::domain::new_one_time_secret();
    let url = format!("{}/connect/{}", world.base, token.expose());
    let page = world.get(&browser(), &url).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    let now = world.clock.now();
    let link = broker_core::domain::ConnectLink {
        tenant: world.tenant.clone(),
        connection: connection.id.clone(),
        purpose: AuthorizationPurpose::Connect,
        generation: world.connection(&connection).await.link_generation,
        created_at: now,
        expires_at: now + Duration::days(7),
    };
    world.ctx.backend.store.put_link(&key, &link).await.unwrap();
    let page = world.get(&browser(), &url).await;
    assert_eq!(
        page.status,
        StatusCode::BAD_REQUEST,
        "refused from the cache"
    );
    // A link that never missed works as ever.
    let fresh = world.link(&connection, AuthorizationPurpose::Connect).await;
    let response = world.press_connect(&browser(), &fresh).await;
    assert_eq!(response.status(), StatusCode::FOUND);
}
