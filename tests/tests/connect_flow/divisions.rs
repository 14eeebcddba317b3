//! Reconnects by the wrong person, and the Exact division a connection is bound to.

use super::*;

broker_tests::on_both_backends!(
    current_thread:
    a_reconnect_by_the_wrong_person_is_refused,
    a_reconnect_without_the_bound_division_is_refused,
    an_exact_reconnect_after_switching_division_is_accepted,
    an_exact_reconnect_by_another_user_is_refused,
    exact_binds_a_granted_division_when_the_current_one_is_not,
    a_customer_chooses_among_several_granted_divisions,
);

async fn a_reconnect_by_the_wrong_person_is_refused(backend: Backend) {
    let (world, connection) = world_with_connection(backend, Which::Acumatica).await;
    world
        .connect(&connection, AuthorizationPurpose::Connect)
        .await;
    world
        .needs_reconnect(&connection, |c| {
            let mut required = Identity::new("integration.user").unwrap();
            required.display_name = Some("Integration <User>".into());
            c.required_identity = Some(required);
        })
        .await;
    let words = [
        "must be authorized by Integration &#60;User&#62;",
        "sign in as the designated integration user",
    ];
    let before = world
        .refused(
            &connection,
            AuthorizationPurpose::Reconnect,
            StatusCode::FORBIDDEN,
            &words,
        )
        .await;
    assert_eq!(before.status, StatusKind::ReconnectRequired);
    let logs = world.logs.text();
    assert!(logs.contains("identity_mismatch") && logs.contains(connection.id.as_str()));
    world.check_logs();
}

async fn a_reconnect_without_the_bound_division_is_refused(backend: Backend) {
    let (world, connection) = connected_exact_world(backend).await;
    let base_url = ServiceUrl::parse(&world.sim().exact_base("nl")).unwrap();
    // A record stored before user ids and granted divisions were kept, bound to a division the
    // simulator's user cannot reach.
    world
        .needs_reconnect(&connection, |c| {
            c.context = Some(ProviderContext::ExactOnline {
                base_url,
                division: 999,
                user_id: None,
                divisions: vec![],
            })
        })
        .await;
    let tokens_before = world.tokens(&world.connection(&connection).await).await;
    let words = [
        "does not give access to Exact Online division 999",
        "divisions 123456, 654321",
        "include division 999",
        "create a new connection",
    ];
    world
        .refused(
            &connection,
            AuthorizationPurpose::Reconnect,
            StatusCode::FORBIDDEN,
            &words,
        )
        .await;
    let tokens_after = world.tokens(&world.connection(&connection).await).await;
    assert_eq!(
        tokens_after.access_token.expose(),
        tokens_before.access_token.expose()
    );
    assert!(world.logs.text().contains("division_not_granted"));
    world.check_logs();
}

fn exact_user(name: &str, current: i64, divisions: &[i64]) -> provider_simulators::ExactUser {
    provider_simulators::ExactUser {
        user_name: name.into(),
        full_name: String::new(),
        current_division: current,
        divisions: divisions.to_vec(),
    }
}

fn bound_division(connection: &Connection) -> (i64, Vec<i64>, Option<String>) {
    match &connection.context {
        Some(ProviderContext::ExactOnline {
            division,
            divisions,
            user_id,
            ..
        }) => (
            *division,
            divisions.iter().map(|d| d.code).collect(),
            user_id.clone(),
        ),
        other => panic!("{other:?}"),
    }
}

async fn an_exact_reconnect_after_switching_division_is_accepted(backend: Backend) {
    let (world, connection) = connected_exact_world(backend).await;
    let (division, granted, user) = bound_division(&world.connection(&connection).await);
    assert_eq!((division, granted), (123456, vec![123456, 654321]));
    assert!(user.is_some());
    // The accountant opened the other administration in Exact Online's web UI.
    world
        .sim()
        .add_exact_user(exact_user("demo.user", 654321, &[123456, 654321]));
    world.needs_reconnect(&connection, |_| {}).await;
    let link = world
        .link(&connection, AuthorizationPurpose::Reconnect)
        .await;
    let page = world.finish(&world.authorize(&link).await).await;
    assert_page(&page, StatusCode::OK, &["division 123456"]);
    let stored = world.connection(&connection).await;
    assert_eq!(stored.status().kind(), StatusKind::Connected);
    assert_eq!(
        bound_division(&stored),
        (123456, vec![123456, 654321], user)
    );
    world.check_logs();
}

async fn an_exact_reconnect_by_another_user_is_refused(backend: Backend) {
    let (world, connection) = connected_exact_world(backend).await;
    world
        .sim()
        .add_exact_user(exact_user("other.user", 123456, &[123456, 654321]));
    world.needs_reconnect(&connection, |_| {}).await;
    world
        .sim()
        .push_consent_override(provider_simulators::ConsentOverride {
            decision: provider_simulators::ConsentDecision::Allow,
            user: Some("other.user".into()),
        });
    let words = ["was authorized by other.user", "sign in as Demo User"];
    world
        .refused(
            &connection,
            AuthorizationPurpose::Reconnect,
            StatusCode::FORBIDDEN,
            &words,
        )
        .await;
    assert!(world.logs.text().contains("other_user"));
    world.check_logs();
}

/// The value of a hidden form field on a page.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

impl World {
    /// Posts the division form of a success page from `browser`.
    async fn choose(&self, browser: &reqwest::Client, page: &Page, division: &str) -> Page {
        let response = browser
            .post(format!("{}/connect/division", self.base))
            .form(&[
                ("connection", hidden(&page.html, "connection").as_str()),
                ("ticket", hidden(&page.html, "ticket").as_str()),
                ("division", division),
            ])
            .send()
            .await
            .unwrap();
        let page = Page {
            status: response.status(),
            headers: response.headers().clone(),
            html: response.text().await.unwrap(),
        };
        check_security_headers(&page.headers);
        self.assert_clean(&page.html);
        page
    }
}

/// Several granted divisions and none named: the tokens are stored at once, bound provisionally to
/// the current division, and the page lets the customer choose, once, from the same browser.
async fn a_customer_chooses_among_several_granted_divisions(backend: Backend) {
    let (world, connection) = exact_world(backend).await;
    let link = world.link(&connection, AuthorizationPurpose::Connect).await;
    let attempt = world.authorize(&link).await;
    let page = world.finish(&attempt).await;
    assert_page(
        &page,
        StatusCode::OK,
        &[
            "is connected",
            "gives access to 2 divisions",
            "value=\"654321\"",
            "Use this division",
        ],
    );
    let offered = page.headers.get_all("set-cookie").iter().any(|c| {
        let c = c.to_str().unwrap().to_ascii_lowercase();
        c.starts_with("broker_division_choice=")
            && c.contains("httponly")
            && c.contains("samesite=strict")
    });
    assert!(offered, "{:?}", page.headers);
    // Durable before any choice: connected, tokens stored, provisionally bound.
    let stored = world.connection(&connection).await;
    assert_eq!(stored.status().kind(), StatusKind::Connected);
    assert!(stored.credentials.is_some() && stored.division_choice.is_some());
    assert_eq!(bound_division(&stored).0, 123456);

    // Another browser (no cookie) with the page's values: refused.
    let stranger = world.choose(&browser(), &page, "654321").await;
    assert_page(&stranger, StatusCode::BAD_REQUEST, &["another browser"]);
    // A division the authorization does not grant: refused.
    let bogus = world.choose(&attempt.browser, &page, "999").await;
    assert_page(
        &bogus,
        StatusCode::BAD_REQUEST,
        &["not one this authorization"],
    );
    assert_eq!(
        bound_division(&world.connection(&connection).await).0,
        123456
    );

    let chosen = world.choose(&attempt.browser, &page, "654321").await;
    assert_page(
        &chosen,
        StatusCode::OK,
        &["division chosen", "division 654321"],
    );
    let stored = world.connection(&connection).await;
    assert_eq!(bound_division(&stored).0, 654321);
    assert!(stored.division_choice.is_none());
    assert_eq!(stored.status().kind(), StatusKind::Connected);

    // Single use.
    let again = world.choose(&attempt.browser, &page, "123456").await;
    assert_page(&again, StatusCode::BAD_REQUEST, &["already made"]);
    assert_eq!(
        bound_division(&world.connection(&connection).await).0,
        654321
    );
    world.remember(&hidden(&page.html, "ticket"));
    world.check_logs();
}

/// A consent restricted to 654321 while 123456 is open in Exact Online, for both readings of
/// whether `system/Divisions` checks the division in its URL.
async fn exact_binds_a_granted_division_when_the_current_one_is_not(backend: Backend) {
    let (world, _) = exact_world(backend).await;
    for checks_url in [true, false] {
        for named in [None, Some(654321)] {
            let mut connection = world
                .new_connection(broker_core::domain::ProviderKind::ExactOnline)
                .await;
            world
                .sim()
                .update_knobs(|k| k.exact_divisions_checks_url_division = checks_url);
            world
                .sim()
                .set_exact_division_scope("demo.user", Some(vec![654321]));
            if named.is_some() {
                let mut c = world.connection(&connection).await;
                c.requested_division = named;
                world.save(&c, &[]).await;
                connection = world.connection(&connection).await;
            }
            let link = world.link(&connection, AuthorizationPurpose::Connect).await;
            let page = world.finish(&world.authorize(&link).await).await;
            let stored = world.connection(&connection).await;
            if checks_url && named.is_none() {
                // Nothing the broker knows reaches the list: refused, saying what to do.
                assert_page(
                    &page,
                    StatusCode::FORBIDDEN,
                    &["did not say which divisions", "open one of the divisions"],
                );
                assert_eq!(stored.status().kind(), StatusKind::NotConnected);
            } else {
                assert_page(&page, StatusCode::OK, &["is connected", "division 654321"]);
                assert_eq!(bound_division(&stored).0, 654321, "{checks_url} {named:?}");
                assert_eq!(bound_division(&stored).1, vec![654321]);
            }
        }
    }
    world.check_logs();
}
