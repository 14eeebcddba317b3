//! Refusals: each leaves the connection as it was.

use super::*;

broker_tests::on_both_backends!(
    current_thread:
    a_forged_state_is_refused,
    a_replayed_state_is_refused,
    an_expired_state_is_refused,
    concurrent_callbacks_with_one_state_complete_once,
    a_state_from_another_browser_is_refused,
    denied_consent_is_refused,
    a_provider_error_on_the_code_exchange_is_refused,
    a_reused_code_is_refused,
    a_tampered_nonce_is_refused,
    a_twinfield_cluster_outside_the_allow_list_is_refused,
    an_instance_on_a_private_address_is_not_called,
    a_malformed_or_oversized_query_is_refused,
    hostile_text_in_the_callback_is_escaped,
);

async fn a_forged_state_is_refused(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let (link, attempt, before) = world
        .attempt(&connection, AuthorizationPurpose::Connect)
        .await;
    let code = param(&attempt.callback, "code").unwrap();
    let forged = with_query(
        &attempt.callback,
        &[("code", &code), ("state", &"A".repeat(43))],
    );
    let page = world.get(&attempt.browser, forged.as_str()).await;
    let words = ["unknown or was already used", "Try again"];
    world
        .assert_refused(&page, StatusCode::BAD_REQUEST, &words, &connection, &before)
        .await;
    assert!(
        page.html.contains(&format!("href=\"{link}\"")),
        "the same link is offered"
    );
    world.check_logs();
}

async fn a_replayed_state_is_refused(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    let attempt = world.authorize(&link).await;
    assert_eq!(world.finish(&attempt).await.status, StatusCode::OK);
    // The link is spent now; a newer one gives the replaying browser cookies of its own.
    let newer = world
        .link(&connection, AuthorizationPurpose::Reconnect)
        .await;
    let after = world.snapshot(&connection).await;
    // The same callback again, with the cookies put back as they were.
    let replay = browser();
    let first = world.press_connect(&replay, &newer).await;
    assert_eq!(first.status(), StatusCode::FOUND);
    let page = world.get(&replay, attempt.callback.as_str()).await;
    assert_page(
        &page,
        StatusCode::BAD_REQUEST,
        &["unknown or was already used"],
    );
    let page = world.finish(&attempt).await;
    assert_page(
        &page,
        StatusCode::BAD_REQUEST,
        &["unknown or was already used"],
    );
    assert_eq!(world.snapshot(&connection).await, after);
    world.check_logs();
}

async fn concurrent_callbacks_with_one_state_complete_once(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    let attempt = world.authorize(&link).await;
    let (a, b, c) = tokio::join!(
        world.finish(&attempt),
        world.finish(&attempt),
        world.finish(&attempt)
    );
    let mut statuses = vec![a.status, b.status, c.status];
    statuses.sort();
    assert_eq!(
        statuses,
        vec![
            StatusCode::OK,
            StatusCode::BAD_REQUEST,
            StatusCode::BAD_REQUEST
        ]
    );
    let after = world.snapshot(&connection).await;
    assert_eq!(
        (after.version, after.transitions),
        (connection.version() + 2, 1) // the link's write, then one completion
    );
    world.check_logs();
}

async fn an_expired_state_is_refused(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let (_, attempt, before) = world
        .attempt(&connection, AuthorizationPurpose::Connect)
        .await;
    world.clock.advance(Duration::minutes(11));
    let page = world.finish(&attempt).await;
    let words = ["expired", "Try again"];
    world
        .assert_refused(&page, StatusCode::GONE, &words, &connection, &before)
        .await;
    world.check_logs();
}

async fn a_state_from_another_browser_is_refused(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let (_, attempt, before) = world
        .attempt(&connection, AuthorizationPurpose::Connect)
        .await;
    let page = world.get(&browser(), attempt.callback.as_str()).await;
    let words = ["another browser"];
    world
        .assert_refused(&page, StatusCode::BAD_REQUEST, &words, &connection, &before)
        .await;
    assert!(!page.html.contains("Try again"), "no link for a stranger");
    // The state was spent: the right browser cannot use it afterwards either.
    let page = world.finish(&attempt).await;
    let words = ["already used"];
    world
        .assert_refused(&page, StatusCode::BAD_REQUEST, &words, &connection, &before)
        .await;
    world.check_logs();
}

async fn denied_consent_is_refused(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    world.sim().push_consent_override(ConsentOverride {
        decision: ConsentDecision::Deny,
        user: None,
    });
    let (_, attempt, before) = world
        .attempt(&connection, AuthorizationPurpose::Connect)
        .await;
    assert_eq!(
        param(&attempt.callback, "error").as_deref(),
        Some("access_denied")
    );
    let page = world.finish(&attempt).await;
    let words = ["not granted at Exact Online", "allow access", "Try again"];
    world
        .assert_refused(&page, StatusCode::FORBIDDEN, &words, &connection, &before)
        .await;
    assert!(
        world.logs.text().contains("denied"),
        "the refusal is logged"
    );
    world.check_logs();
}

async fn a_provider_error_on_the_code_exchange_is_refused(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    world.sim().inject_fault(FaultRule::next(
        "exact.token",
        1,
        FaultAction::Status {
            status: 503,
            body: "{\"error\":\"temporarily_unavailable\"}".into(),
            content_type: Some("application/json".into()),
        },
    ));
    let words = ["unavailable", "Try again"];
    world
        .refused(
            &connection,
            AuthorizationPurpose::Connect,
            StatusCode::BAD_GATEWAY,
            &words,
        )
        .await;
    world.check_logs();
}

/// Twinfield naming a cluster outside the allow-list (https under twinfield.com): the connect is
/// refused with a page that says so, and nothing is stored.
async fn a_twinfield_cluster_outside_the_allow_list_is_refused(backend: Backend) {
    let (world, connection) = world_with_connection(backend, Which::Twinfield).await;
    world.sim().update_knobs(|k| {
        k.twinfield_cluster_url_override = Some("https://twinfield.evil.example".into())
    });
    let words = [
        "twinfield.evil.example",
        "not an allowed address",
        "Nothing was changed",
    ];
    world
        .refused(
            &connection,
            AuthorizationPurpose::Connect,
            StatusCode::BAD_GATEWAY,
            &words,
        )
        .await;
    world.check_logs();
}

/// An Acumatica registration whose instance URL is a private address (stored before registrations
/// were checked, or by a tool that does not check): the connect start refuses to call it, with a
/// page that says why and who can fix it.
async fn an_instance_on_a_private_address_is_not_called(backend: Backend) {
    let world = world(backend, Which::Acumatica).await;
    let mut app = world
        .ctx
        .backend
        .store
        .get_app(&world.tenant, &world.app)
        .await
        .unwrap()
        .unwrap();
    app.settings = ProviderSettings::Acumatica {
        instance_url: ServiceUrl::parse("https://10.0.0.1/acumatica/demo").unwrap(),
        tenant: "Company".into(),
        refresh_tokens: None,
        instance_per_connection: false,
    };
    world.ctx.backend.store.put_app(&app).await.unwrap();
    let connection = world
        .new_connection(broker_core::domain::ProviderKind::Acumatica)
        .await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    let before = world.snapshot(&connection).await;
    let page = world.get(&browser(), link.as_str()).await;
    let words = [
        "10.0.0.1 is a private network address",
        "public addresses",
        "the app registration needs fixing",
    ];
    world
        .assert_refused(&page, StatusCode::BAD_GATEWAY, &words, &connection, &before)
        .await;
    world.check_logs();
}

async fn a_tampered_nonce_is_refused(backend: Backend) {
    let (world, connection) = world_with_connection(backend, Which::Twinfield).await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    // Taken after the link: issuing one retires the older links, a write of its own.
    let before = world.snapshot(&connection).await;
    // The provider signs whatever nonce reaches it: one swapped on the way must not be accepted.
    let attempt = world
        .authorize_with(&link, |url| {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "nonce" {
                        "swapped-nonce".into()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        })
        .await;
    let page = world.finish(&attempt).await;
    let words = ["nonce", "Nothing was changed"];
    world
        .assert_refused(&page, StatusCode::BAD_GATEWAY, &words, &connection, &before)
        .await;
    world.check_logs();
}

async fn a_reused_code_is_refused(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    let first = world.authorize(&link).await;
    assert_eq!(world.finish(&first).await.status, StatusCode::OK);
    // A new attempt (from a newer link: the first is spent) whose callback carries the spent code
    // with its own, valid state.
    let newer = world
        .link(&connection, AuthorizationPurpose::Reconnect)
        .await;
    let after = world.snapshot(&connection).await;
    let second = world.authorize(&newer).await;
    let state = param(&second.callback, "state").unwrap();
    let spent = param(&first.callback, "code").unwrap();
    let reused = with_query(&second.callback, &[("code", &spent), ("state", &state)]);
    let page = world.get(&second.browser, reused.as_str()).await;
    let words = ["Nothing was changed"];
    world
        .assert_refused(&page, StatusCode::BAD_GATEWAY, &words, &connection, &after)
        .await;
    world.check_logs();
}

async fn a_malformed_or_oversized_query_is_refused(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let (_, attempt, before) = world
        .attempt(&connection, AuthorizationPurpose::Connect)
        .await;
    let callback = format!("{}/oauth/callback", world.base);
    let state = param(&attempt.callback, "state").unwrap();
    let cases = [
        format!("{callback}?state={state}&code=x&pad={}", "p".repeat(5000)),
        format!("{callback}?state={state}&code={}", "c".repeat(3000)),
        format!("{callback}?state={state}&state={state}&code=x"),
        format!("{callback}?code=x"),
        format!("{callback}?state=%FF%FE&code=x"),
    ];
    for url in &cases {
        let page = world.get(&attempt.browser, url).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{url}: {}", page.html);
        assert_eq!(world.snapshot(&connection).await, before);
    }
    // None of those spent the state: the real callback still completes.
    assert_eq!(world.finish(&attempt).await.status, StatusCode::OK);
    // A malformed link token.
    let page = world
        .get(&browser(), &format!("{}/connect/not-a-token", world.base))
        .await;
    assert_page(&page, StatusCode::BAD_REQUEST, &["not valid"]);
    world.check_logs();
}

async fn hostile_text_in_the_callback_is_escaped(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let (_, attempt, before) = world
        .attempt(&connection, AuthorizationPurpose::Connect)
        .await;
    let state = param(&attempt.callback, "state").unwrap();
    let hostile = with_query(
        &attempt.callback,
        &[
            ("state", &state),
            ("error", "access_denied\"><img src=x onerror=alert(1)>"),
            (
                "error_description",
                "<script>alert('pwned')</script><a href=\"https://evil.example\">click</a>",
            ),
        ],
    );
    let page = world.get(&attempt.browser, hostile.as_str()).await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{}", page.html);
    assert!(page
        .html
        .contains("&#60;script&#62;alert(&#39;pwned&#39;)&#60;/script&#62;"));
    for raw in [
        "<script",
        "<img",
        "<a href=\"https://evil",
        "onerror=alert(1)>",
    ] {
        assert!(
            !page.html.contains(raw),
            "{raw} reached the page: {}",
            page.html
        );
    }
    assert_eq!(world.snapshot(&connection).await, before);
    world.check_logs();
}
