//! Exact Online: token endpoint rules, limits and the API's bearer checks.

mod common;

use chrono::{Duration, TimeZone, Utc};
use common::*;
use provider_simulators::{token_hash, ExactUser, Provider, SimulatorConfig};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn code_flow_answers_with_string_expires_in_and_lowercase_bearer() {
    let setup = start().await;
    let body = setup.exact_tokens("nl").await;
    assert_eq!(body["expires_in"], "600");
    assert_eq!(body["token_type"], "bearer");
    assert!(body["refresh_token"].is_string());
    assert!(setup
        .sim
        .valid_access_tokens()
        .iter()
        .any(|t| t.token == body["access_token"] && t.location == "nl"));
}

#[tokio::test]
async fn basic_client_authentication_is_refused_with_401() {
    let setup = start().await;
    let code = setup.exact_code("nl").await;
    let form = code_grant(code.as_str());
    let response = setup
        .http
        .post(setup.exact_url("nl", "/api/oauth2/token"))
        .basic_auth(EX_ID, Some(EX_SECRET))
        .form(&form)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_oauth_error((status, &body), StatusCode::UNAUTHORIZED, "invalid_client");
}

#[tokio::test]
async fn a_code_expires_after_three_minutes_of_simulated_time() {
    let setup = start().await;
    let code = setup.exact_code("nl").await;
    setup.sim.clock().advance(Duration::seconds(181));
    let form = code_grant(code.as_str());
    let (status, body) = setup.exact_token("nl", &form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": "invalid_grant", "error_description": "Token is not allowed, because of invalid or empty chainId"})
    );
}

#[tokio::test]
async fn refresh_rotates_and_an_old_token_is_refused_with_401() {
    let setup = start().await;
    let first = setup.exact_tokens("nl").await;
    let old = s(&first["refresh_token"]);
    setup.sim.clock().advance(Duration::seconds(570));
    let (status, second) = setup.exact_refresh(old).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    setup.sim.clock().advance(Duration::seconds(600));
    let (status, body) = setup.exact_refresh(old).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body,
        json!({"error": "unauthorized_client", "error_description": "Old refresh token used."})
    );
    assert_eq!(setup.sim.refresh_token_presentations()[&token_hash(old)], 2);
    assert_eq!(setup.sim.max_presentations_of_any_refresh_token(), 2);
    assert_eq!(setup.sim.presentations_of(s(&second["refresh_token"])), 0);
}

#[tokio::test]
async fn a_refresh_before_570_seconds_is_refused_without_spending_the_token() {
    let setup = start().await;
    let first = setup.exact_tokens("nl").await;
    let refresh = s(&first["refresh_token"]);
    setup.sim.clock().advance(Duration::seconds(560));
    let (status, body) = setup.exact_refresh(refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": "invalid_request", "error_description": "Access token is not yet expired."})
    );
    setup.sim.clock().advance(Duration::seconds(10));
    assert_eq!(setup.exact_refresh(refresh).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_early_refresh_answer_is_configurable() {
    let setup = start().await;
    setup.sim.update_knobs(|k| {
        k.exact_early_refresh_status = 429;
        k.exact_early_refresh_body = json!({"error": "too_early"});
    });
    let first = setup.exact_tokens("nl").await;
    let (status, body) = setup.exact_refresh(s(&first["refresh_token"])).await;
    assert_eq!(
        (status, body),
        (StatusCode::TOO_MANY_REQUESTS, json!({"error": "too_early"}))
    );
}

#[tokio::test]
async fn an_unused_refresh_token_expires_after_30_days() {
    let setup = start().await;
    let first = setup.exact_tokens("nl").await;
    setup
        .sim
        .clock()
        .advance(Duration::days(30) + Duration::seconds(1));
    let (status, body) = setup.exact_refresh(s(&first["refresh_token"])).await;
    assert_oauth_error((status, &body), StatusCode::BAD_REQUEST, "invalid_request");
    let d = s(&body["error_description"]);
    assert!(
        d.starts_with("The refresh token expired at ") && d.contains(" and it is now "),
        "{d}"
    );
}

#[tokio::test]
async fn unknown_or_revoked_refresh_tokens_get_the_chain_id_error() {
    let setup = start().await;
    let (status, body) = setup.exact_refresh("never-issued").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error_description"],
        "Token is not allowed, because of invalid or empty chainId"
    );
    let first = setup.exact_tokens("nl").await;
    setup.sim.clock().advance(Duration::seconds(600));
    assert_eq!(
        setup
            .sim
            .revoke_grant(Provider::Exact, "demo.user", Some(EX_ID)),
        1
    );
    let (status, body) = setup.exact_refresh(s(&first["refresh_token"])).await;
    assert_oauth_error((status, &body), StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn a_spent_token_is_refused_however_soon_it_comes_back() {
    let setup = start().await;
    let first = setup.exact_tokens("nl").await;
    let old = s(&first["refresh_token"]);
    setup.sim.clock().advance(Duration::seconds(600));
    let (status, second) = setup.exact_refresh(old).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    setup.sim.clock().advance(Duration::seconds(1));
    let (status, retry) = setup.exact_refresh(old).await;
    assert_eq!(
        (status, retry["error_description"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("Old refresh token used."))
    );
    setup.sim.clock().advance(Duration::seconds(600));
    assert_eq!(
        setup.exact_refresh(s(&second["refresh_token"])).await.0,
        StatusCode::OK,
        "the pair issued first is still the chain's"
    );
}

#[tokio::test]
async fn the_early_refusal_takes_the_configured_shape() {
    let setup = start().await;
    setup.sim.update_knobs(|k| {
        k.exact_early_refresh_status = 401;
        k.exact_early_refresh_body = json!({ "message": "Access denied." });
    });
    let first = setup.exact_tokens("nl").await;
    setup.sim.clock().advance(Duration::seconds(300));
    let (status, body) = setup.exact_refresh(s(&first["refresh_token"])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({ "message": "Access denied." }));
    setup.sim.clock().advance(Duration::seconds(300));
    let (status, _) = setup.exact_refresh(s(&first["refresh_token"])).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an early refusal does not spend the token"
    );
}

fn day_start() -> SimulatorConfig {
    let mut config = SimulatorConfig::default();
    config.knobs.auto_consent = true;
    config.start_time = Some(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap());
    config
}

#[tokio::test]
async fn at_most_200_token_calls_per_app_and_user_per_day() {
    let setup = start_with(day_start()).await;
    setup
        .sim
        .update_knobs(|k| k.exact_min_refresh_interval_secs = 0);
    let mut tokens = setup.exact_tokens("nl").await;
    for _ in 1..200 {
        let (status, next) = setup.exact_refresh(s(&tokens["refresh_token"])).await;
        assert_eq!(status, StatusCode::OK, "{next}");
        tokens = next;
    }
    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", s(&tokens["refresh_token"])),
    ];
    let response = setup.exact_token_response("nl", &refresh).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert_eq!(json_of(response).await.1["error"], "rate_limit_exceeded");
    assert_eq!(
        setup.sim.presentations_of(s(&tokens["refresh_token"])),
        0,
        "refused before the provider looked"
    );

    setup.sim.clock().advance(Duration::days(1));
    assert_eq!(
        setup.exact_refresh(s(&tokens["refresh_token"])).await.0,
        StatusCode::OK,
        "a new day"
    );
}

#[tokio::test]
async fn a_rate_limited_refresh_can_still_carry_a_new_pair() {
    let setup = start_with(day_start()).await;
    setup.sim.update_knobs(|k| {
        k.exact_daily_token_cap = 1;
        k.exact_rate_limited_refresh_issues_tokens = true;
    });
    let tokens = setup.exact_tokens("nl").await;
    setup.sim.clock().advance(Duration::seconds(600));
    let (status, body) = setup.exact_refresh(s(&tokens["refresh_token"])).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body["refresh_token"].is_string(), "{body}");
    setup.sim.clock().advance(Duration::days(1));
    setup.sim.update_knobs(|k| k.exact_daily_token_cap = 200);
    assert_eq!(
        setup.exact_refresh(s(&tokens["refresh_token"])).await.0,
        StatusCode::UNAUTHORIZED,
        "the old one is spent"
    );
    assert_eq!(
        setup.exact_refresh(s(&body["refresh_token"])).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn more_than_ten_errors_in_an_hour_block_the_app_for_the_user_for_an_hour() {
    let setup = start().await;
    let first = setup.exact_tokens("nl").await;
    let spent = s(&first["refresh_token"]);
    setup.sim.clock().advance(Duration::seconds(600));
    let (_, good) = setup.exact_refresh(spent).await;
    for _ in 0..11 {
        assert_eq!(setup.exact_refresh(spent).await.0, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = setup.exact_refresh(s(&good["refresh_token"])).await;
    assert_oauth_error(
        (status, &body),
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_errors",
    );
    assert!(s(&body["error_description"]).contains("blocked"));
    // Another user of the same app is not blocked.
    setup.sim.add_exact_user(ExactUser {
        user_name: "other".into(),
        full_name: String::new(),
        current_division: 1,
        divisions: vec![],
    });
    setup
        .sim
        .push_consent_override(provider_simulators::ConsentOverride {
            decision: provider_simulators::ConsentDecision::Allow,
            user: Some("other".into()),
        });
    setup.exact_tokens("nl").await;

    setup.sim.clock().advance(Duration::minutes(61));
    assert_eq!(
        setup.exact_refresh(s(&good["refresh_token"])).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn me_answers_the_current_division_with_rate_headers() {
    let setup = start().await;
    let tokens = setup.exact_tokens("nl").await;
    let token = s(&tokens["access_token"]);
    let response = setup
        .get(&setup.exact_url("nl", "/api/v1/current/Me"), Some(token))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    for h in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-minutely-remaining",
    ] {
        assert!(response.headers().contains_key(h), "{h}");
    }
    assert_eq!(response.headers()["x-ratelimit-minutely-remaining"], "59");
    let body: serde_json::Value = response.json().await.unwrap();
    let me = &body["d"]["results"][0];
    assert_eq!(me["CurrentDivision"], 123456);
    assert_eq!(me["UserName"], "demo.user");
    assert_eq!(s(&me["UserID"]).len(), 36);

    let divisions = |division: &str, country: &str| {
        setup
            .http
            .get(setup.exact_url(country, &format!("/api/v1/{division}/system/Divisions")))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        divisions("123456", "nl").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        divisions("999", "nl").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        divisions("123456", "be").await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "another country host"
    );

    let bad = setup
        .get(&setup.exact_url("nl", "/api/v1/current/Me"), Some("bad"))
        .await;
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    setup.sim.clock().advance(Duration::seconds(601));
    let expired = setup
        .get(&setup.exact_url("nl", "/api/v1/current/Me"), Some(token))
        .await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_api_allows_60_calls_a_minute_per_division() {
    let setup = start_with(day_start()).await;
    let tokens = setup.exact_tokens("nl").await;
    let url = setup.exact_url("nl", "/api/v1/current/Me");
    for _ in 0..60 {
        let r = setup.get(&url, Some(s(&tokens["access_token"]))).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = setup.get(&url, Some(s(&tokens["access_token"]))).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["x-ratelimit-minutely-remaining"], "0");
}

/// Codes of one `system/Divisions` answer, and its `__next` link.
async fn division_page(
    setup: &Setup,
    url: &str,
    token: &str,
) -> (StatusCode, Vec<i64>, Option<String>) {
    let r = setup.http.get(url).bearer_auth(token).send().await.unwrap();
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    let codes = body["d"]["results"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| r["Code"].as_i64()).collect())
        .unwrap_or_default();
    (
        status,
        codes,
        body["d"]["__next"].as_str().map(str::to_string),
    )
}

#[tokio::test]
async fn a_division_scoped_consent_lists_only_its_divisions_whatever_the_current_one() {
    for checks_url in [true, false] {
        let setup = start().await;
        setup
            .sim
            .update_knobs(|k| k.exact_divisions_checks_url_division = checks_url);
        setup.sim.add_exact_user(ExactUser {
            user_name: "demo.user".into(),
            full_name: String::new(),
            current_division: 100,
            divisions: vec![100, 200, 300],
        });
        // The consent grants 300 and 200; the division open in Exact Online (100) is not among them.
        setup
            .sim
            .set_exact_division_scope("demo.user", Some(vec![300, 200]));
        let tokens = setup.exact_tokens("nl").await;
        let token = s(&tokens["access_token"]);
        let url = |d: i64| setup.exact_url("nl", &format!("/api/v1/{d}/system/Divisions"));

        let (status, codes, _) = division_page(&setup, &url(200), token).await;
        assert_eq!((status, codes), (StatusCode::OK, vec![200, 300]));
        let (status, codes, _) = division_page(&setup, &url(100), token).await;
        if checks_url {
            assert_eq!(status, StatusCode::FORBIDDEN, "outside the scope");
        } else {
            assert_eq!((status, codes), (StatusCode::OK, vec![200, 300]));
        }
        // A later change of scope applies to new consents, not to this grant.
        setup.sim.set_exact_division_scope("demo.user", None);
        let (_, codes, _) = division_page(&setup, &url(300), token).await;
        assert_eq!(codes, vec![200, 300]);
        let unscoped = setup.exact_tokens("nl").await;
        let (_, codes, _) = division_page(&setup, &url(100), s(&unscoped["access_token"])).await;
        assert_eq!(codes, vec![100, 200, 300]);
    }
}

#[tokio::test]
async fn system_divisions_pages_with_next_links() {
    let setup = start().await;
    setup.sim.update_knobs(|k| k.exact_page_size = 2);
    setup.sim.add_exact_user(ExactUser {
        user_name: "demo.user".into(),
        full_name: String::new(),
        current_division: 5,
        divisions: vec![5, 4, 3, 2, 1],
    });
    let tokens = setup.exact_tokens("nl").await;
    let token = s(&tokens["access_token"]);
    let mut next = Some(setup.exact_url("nl", "/api/v1/5/system/Divisions"));
    let mut seen = Vec::new();
    while let Some(url) = next {
        let (status, codes, more) = division_page(&setup, &url, token).await;
        assert_eq!(status, StatusCode::OK);
        assert!(codes.len() <= 2);
        seen.extend(codes);
        next = more;
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
}
