//! The authorization endpoint rules every provider shares: validation, the consent page's
//! Allow / Deny form posts, automatic mode and its per-request override, PKCE and code reuse.

mod common;

use common::*;
use provider_simulators::{pkce_s256, ConsentDecision, ConsentOverride, SimulatorConfig};
use reqwest::StatusCode;

/// (authorize URL, query) for each provider, built for the manual consent page.
fn authorize_requests(setup: &Setup) -> Vec<(String, Vec<(&'static str, &'static str)>)> {
    vec![
        (
            setup.twinfield_connect("authorize"),
            twinfield_authorize_params().to_vec(),
        ),
        (
            setup.exact_url("be", "/api/oauth2/auth"),
            vec![
                ("client_id", EX_ID),
                ("redirect_uri", REDIRECT),
                ("response_type", "code"),
                ("state", "st"),
            ],
        ),
        (
            setup.acumatica_url("/identity/connect/authorize"),
            vec![
                ("client_id", ACU_ID),
                ("redirect_uri", REDIRECT),
                ("response_type", "code"),
                ("scope", "api offline_access"),
                ("state", "st"),
            ],
        ),
    ]
}

/// Pulls `name="request_id" value="..."` and the prefilled user out of the consent page.
fn form_values(html: &str) -> (String, String) {
    let value_after = |marker: &str| {
        let start = html
            .find(marker)
            .unwrap_or_else(|| panic!("{marker} not in page"))
            + marker.len();
        let rest = &html[start..];
        let v = rest.find("value=\"").unwrap() + 7;
        rest[v..v + rest[v..].find('"').unwrap()].to_string()
    };
    (
        value_after("name=\"request_id\""),
        value_after("name=\"user\""),
    )
}

async fn consent_page(setup: &Setup, url: &str, query: &[(&str, &str)]) -> (String, String) {
    let response = setup.get_authorize(url, query).await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    for needle in [
        "<form method=\"post\"",
        "name=\"decision\" value=\"allow\"",
        "name=\"decision\" value=\"deny\"",
    ] {
        assert!(html.contains(needle), "consent page lacks {needle}: {html}");
    }
    form_values(&html)
}

#[tokio::test]
async fn consent_page_allow_redirects_with_a_code_for_every_provider() {
    let setup = start_with(SimulatorConfig::default()).await;
    for (url, query) in authorize_requests(&setup) {
        let (request_id, user) = consent_page(&setup, &url, &query).await;
        assert!(
            !user.is_empty(),
            "the user field is prefilled with the default user"
        );
        let form = [
            ("request_id", request_id.as_str()),
            ("user", user.as_str()),
            ("decision", "allow"),
        ];
        let response = setup.http.post(&url).form(&form).send().await.unwrap();
        let pairs = redirect_params(&response);
        assert!(param(&pairs, "code").is_some(), "{url}: {pairs:?}");
        assert_eq!(param(&pairs, "state").as_deref(), Some("st"));
    }
}

#[tokio::test]
async fn consent_page_deny_redirects_with_access_denied_for_every_provider() {
    let setup = start_with(SimulatorConfig::default()).await;
    for (url, query) in authorize_requests(&setup) {
        let (request_id, user) = consent_page(&setup, &url, &query).await;
        let form = [
            ("request_id", request_id.as_str()),
            ("user", user.as_str()),
            ("decision", "deny"),
        ];
        let response = setup.http.post(&url).form(&form).send().await.unwrap();
        let pairs = redirect_params(&response);
        assert_eq!(param(&pairs, "error").as_deref(), Some("access_denied"));
        assert_eq!(param(&pairs, "state").as_deref(), Some("st"));
        assert!(param(&pairs, "code").is_none());
    }
}

#[tokio::test]
async fn consent_with_an_unknown_user_shows_the_page_again_and_a_request_is_answered_once() {
    let setup = start_with(SimulatorConfig::default()).await;
    let (url, query) = authorize_requests(&setup).remove(1);
    let (request_id, _) = consent_page(&setup, &url, &query).await;
    let form = [
        ("request_id", request_id.as_str()),
        ("user", "nobody"),
        ("decision", "allow"),
    ];
    let response = setup.http.post(&url).form(&form).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let html = response.text().await.unwrap();
    assert!(html.contains("Unknown user"));
    let (retry_id, _) = form_values(&html);
    let again = setup.http.post(&url).form(&form).send().await.unwrap();
    assert_eq!(
        again.status(),
        StatusCode::BAD_REQUEST,
        "the old request id is spent"
    );
    let ok = [
        ("request_id", retry_id.as_str()),
        ("user", "demo.user"),
        ("decision", "allow"),
    ];
    let response = setup.http.post(&url).form(&ok).send().await.unwrap();
    assert!(param(&redirect_params(&response), "code").is_some());
}

#[tokio::test]
async fn bad_client_or_redirect_uri_gets_an_error_page_never_a_redirect() {
    let setup = start().await;
    for (url, query) in authorize_requests(&setup) {
        let mut unknown_client = query.clone();
        unknown_client[0].1 = "nope";
        let mut foreign_redirect = query.clone();
        foreign_redirect[1].1 = "http://evil.example/cb";
        for q in [unknown_client, foreign_redirect] {
            let response = setup.get_authorize(&url, &q).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{url}");
            assert!(response.headers().get("location").is_none());
            assert!(response.text().await.unwrap().contains("Sign-in error"));
        }
    }
}

#[tokio::test]
async fn protocol_errors_are_redirected_with_error_and_state() {
    let setup = start().await;
    for (url, query) in authorize_requests(&setup) {
        let mut wrong_type = query.clone();
        wrong_type[2].1 = "token";
        let pairs = redirect_params(&setup.get_authorize(&url, &wrong_type).await);
        assert_eq!(
            param(&pairs, "error").as_deref(),
            Some("unsupported_response_type")
        );
        assert_eq!(param(&pairs, "state").as_deref(), Some("st"));

        let without_state: Vec<_> = query
            .iter()
            .copied()
            .filter(|(k, _)| *k != "state")
            .collect();
        let pairs = redirect_params(&setup.get_authorize(&url, &without_state).await);
        assert_eq!(param(&pairs, "error").as_deref(), Some("invalid_request"));

        let mut plain_pkce = query.clone();
        plain_pkce.extend([
            ("code_challenge", "abc"),
            ("code_challenge_method", "plain"),
        ]);
        let pairs = redirect_params(&setup.get_authorize(&url, &plain_pkce).await);
        assert_eq!(param(&pairs, "error").as_deref(), Some("invalid_request"));
    }
}

#[tokio::test]
async fn twinfield_requires_a_nonce() {
    let setup = start().await;
    let (url, query) = authorize_requests(&setup).remove(0);
    let without_nonce: Vec<_> = query.into_iter().filter(|(k, _)| *k != "nonce").collect();
    let pairs = redirect_params(&setup.get_authorize(&url, &without_nonce).await);
    assert_eq!(param(&pairs, "error").as_deref(), Some("invalid_request"));
    assert!(param(&pairs, "error_description")
        .unwrap()
        .contains("nonce"));
}

#[tokio::test]
async fn admin_override_decides_the_next_request_only() {
    let setup = start().await;
    let (url, query) = authorize_requests(&setup).remove(2);
    setup.sim.push_consent_override(ConsentOverride {
        decision: ConsentDecision::Deny,
        user: None,
    });
    let pairs = redirect_params(&setup.get_authorize(&url, &query).await);
    assert_eq!(param(&pairs, "error").as_deref(), Some("access_denied"));

    // The same over HTTP: show the page once although auto mode is on.
    let next = serde_json::json!({ "decision": "show_page" });
    setup
        .http
        .post(format!("{}/_sim/consent/next", setup.sim.base_url()))
        .json(&next)
        .send()
        .await
        .unwrap();
    assert_eq!(
        setup.get_authorize(&url, &query).await.status(),
        StatusCode::OK
    );
    assert!(param(
        &redirect_params(&setup.get_authorize(&url, &query).await),
        "code"
    )
    .is_some());
}

#[tokio::test]
async fn pkce_s256_is_checked_at_the_token_endpoint_for_every_provider() {
    let setup = start().await;
    let verifier = "a-verifier-of-enough-length-0123456789-abcdefghijklmnop";
    let challenge = pkce_s256(verifier);
    for (index, (url, mut query)) in authorize_requests(&setup).into_iter().enumerate() {
        query.extend([
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ]);
        for (attempt, expect_ok) in [
            (Some("wrong-verifier"), false),
            (None, false),
            (Some(verifier), true),
        ] {
            let code = setup.code(&url, &query).await;
            let mut form = code_grant(code.as_str()).to_vec();
            if let Some(v) = attempt {
                form.push(("code_verifier", v));
            }
            let (status, body) = match index {
                0 => setup.twinfield_token(&form).await,
                1 => setup.exact_token("be", &form).await,
                _ => setup.acumatica_token(ACU_ID, &form).await,
            };
            if expect_ok {
                assert_eq!(status, StatusCode::OK, "{url}: {body}");
            } else {
                assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
                assert_eq!(body["error"], "invalid_grant");
            }
        }
    }
}

#[tokio::test]
async fn a_code_is_single_use_and_bound_to_its_redirect_uri() {
    let setup = start().await;
    let code = setup.twinfield_code().await;
    let form = code_grant(code.as_str());
    assert_eq!(setup.twinfield_token(&form).await.0, StatusCode::OK);
    let (status, body) = setup.twinfield_token(&form).await;
    assert_oauth_error((status, &body), StatusCode::BAD_REQUEST, "invalid_grant");

    let code = setup.exact_code("nl").await;
    let form = code_grant(code.as_str());
    assert_eq!(setup.exact_token("nl", &form).await.0, StatusCode::OK);
    let (status, body) = setup.exact_token("nl", &form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error_description"],
        "Token is not allowed, because of invalid or empty chainId"
    );

    let code = setup.acumatica_code(ACU_ID, "api").await;
    let other_redirect = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "http://x/cb"),
    ];
    assert_eq!(
        setup.acumatica_token(ACU_ID, &other_redirect).await.0,
        StatusCode::BAD_REQUEST
    );
    let right = code_grant(code.as_str());
    assert_eq!(
        setup.acumatica_token(ACU_ID, &right).await.0,
        StatusCode::BAD_REQUEST,
        "spent by the failed attempt"
    );
}

#[tokio::test]
async fn an_exact_code_is_bound_to_its_country_host() {
    let setup = start().await;
    let code = setup.exact_code("de").await;
    let form = code_grant(code.as_str());
    assert_eq!(
        setup.exact_token("nl", &form).await.0,
        StatusCode::BAD_REQUEST
    );
}
