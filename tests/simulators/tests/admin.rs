//! The `/_sim` admin API drives a simulator from another process: setup, clock, knobs, inspection.

mod common;

use common::*;
use provider_simulators::{token_hash, MintRequest, Provider};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn get(setup: &Setup, path: &str) -> Value {
    let response = setup
        .get(&format!("{}{path}", setup.sim.base_url()), None)
        .await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

async fn post(setup: &Setup, path: &str, body: Value) -> (StatusCode, Value) {
    let response = setup
        .http
        .post(format!("{}{path}", setup.sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    json_of(response).await
}

#[tokio::test]
async fn clock_moves_over_http() {
    let setup = start().await;
    let before = setup.sim.clock().now();
    let (_, now) = post(&setup, "/_sim/clock/advance", json!({ "seconds": 86_400 })).await;
    let now: chrono::DateTime<chrono::Utc> = serde_json::from_value(now["now"].clone()).unwrap();
    assert!((now - before).num_seconds() >= 86_400);
    let (_, set) = post(
        &setup,
        "/_sim/clock/set",
        json!({ "now": "2031-05-01T00:00:00Z" }),
    )
    .await;
    assert!(s(&set["now"]).starts_with("2031-05-01T00:00"));
    assert!(s(&get(&setup, "/_sim/clock").await["now"]).starts_with("2031-05-01"));
}

#[tokio::test]
async fn knobs_merge_the_fields_given() {
    let setup = start().await;
    let response = setup
        .http
        .put(format!("{}/_sim/knobs", setup.sim.base_url()))
        .json(&json!({ "exact_min_refresh_interval_secs": 600, "twinfield_rotate_refresh_tokens": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let knobs = setup.sim.knobs();
    assert_eq!(
        (
            knobs.exact_min_refresh_interval_secs,
            knobs.twinfield_rotate_refresh_tokens
        ),
        (600, true)
    );
    assert_eq!(
        knobs.exact_daily_token_cap, 200,
        "untouched fields keep their value"
    );
    let bad = setup
        .http
        .put(format!("{}/_sim/knobs", setup.sim.base_url()))
        .json(&json!({ "hang_secs": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn clients_and_users_registered_over_http_can_sign_in() {
    let setup = start().await;
    let (status, _) = post(
        &setup,
        "/_sim/exact/clients",
        json!({ "client_id": "http-app", "client_secret": "s", "redirect_uris": [REDIRECT] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    post(
        &setup,
        "/_sim/exact/users",
        json!({ "user_name": "u2", "current_division": 42 }),
    )
    .await;
    post(
        &setup,
        "/_sim/consent/next",
        json!({ "decision": "allow", "user": "u2" }),
    )
    .await;
    let url = setup.exact_url("fr", "/api/oauth2/auth");
    let code = setup
        .code(
            &url,
            &[
                ("client_id", "http-app"),
                ("redirect_uri", REDIRECT),
                ("response_type", "code"),
                ("state", "st"),
            ],
        )
        .await;
    let form = [
        ("client_id", "http-app"),
        ("client_secret", "s"),
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    let response = setup
        .post_form(&setup.exact_url("fr", "/api/oauth2/token"), &form)
        .await;
    let (status, tokens) = json_of(response).await;
    assert_eq!(status, StatusCode::OK);
    let me = setup
        .get_json(
            &setup.exact_url("fr", "/api/v1/current/Me"),
            Some(s(&tokens["access_token"])),
        )
        .await;
    assert_eq!(me["d"]["results"][0]["CurrentDivision"], 42);

    let (status, _) = post(
        &setup,
        "/_sim/acumatica/demo/clients",
        json!({
            "client_id": "33333333-3333-4333-8333-333333333333@NewTenant",
            "client_secret": "x",
            "redirect_uris": [REDIRECT],
            "refresh_policy": { "mode": "sliding", "sliding_secs": 600, "absolute_cap_secs": null }
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = post(
        &setup,
        "/_sim/acumatica/demo/clients",
        json!({
            "client_id": "no-tenant", "client_secret": "x", "redirect_uris": []
        }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(s(&body["error"]).contains("<GUID>@<Tenant>"));
}

#[tokio::test]
async fn inspection_reports_presentations_calls_tokens_and_sessions() {
    let setup = start().await;
    let tokens = setup.twinfield_tokens().await;
    let refresh = s(&tokens["refresh_token"]);
    setup.twinfield_refresh(refresh).await;

    let presentations = get(&setup, "/_sim/inspect/presentations").await;
    assert_eq!(presentations["presentations"][token_hash(refresh)], 1);
    assert_eq!(presentations["max"], 1);
    assert!(
        !presentations.to_string().contains(refresh),
        "reports never carry a usable token"
    );

    let calls = get(&setup, "/_sim/inspect/calls").await;
    assert_eq!(
        (
            calls["twinfield.authorize"].as_u64(),
            calls["twinfield.token"].as_u64()
        ),
        (Some(1), Some(2))
    );

    let live = get(&setup, "/_sim/inspect/access-tokens").await;
    assert_eq!(live.as_array().unwrap().len(), 2);
    assert_eq!(live[0]["provider"], "twinfield");

    let sessions = get(&setup, "/_sim/inspect/sessions").await;
    assert_eq!(sessions["twinfield"], 0);
    assert_eq!(sessions["acumatica"][0]["tenant"], "Company");

    let (_, revoked) = post(
        &setup,
        "/_sim/grants/revoke",
        json!({ "provider": "twinfield", "user": "DEMO" }),
    )
    .await;
    assert_eq!(revoked["revoked"], 1);
    assert!(get(&setup, "/_sim/inspect/access-tokens")
        .await
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn minted_pairs_work_like_pre_authenticated_credentials() {
    let setup = start().await;
    let minted = setup
        .sim
        .mint_tokens(MintRequest {
            provider: Provider::Exact,
            location: "nl".into(),
            client_id: EX_ID.into(),
            user: "demo.user".into(),
            scope: String::new(),
        })
        .unwrap();
    setup.sim.clock().advance(chrono::Duration::days(2));
    let (status, _) = setup.exact_refresh(&minted.refresh_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        setup.exact_refresh(&minted.refresh_token).await.0,
        StatusCode::UNAUTHORIZED,
        "exactly one use"
    );

    let (status, body) = post(&setup, "/_sim/mint", json!({
        "provider": "acumatica", "location": "demo", "client_id": ACU_ID, "user": "admin", "scope": "api offline_access"
    }))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(setup.sim.is_access_token_valid(s(&body["access_token"])));
    let (status, _) = post(
        &setup,
        "/_sim/mint",
        json!({
            "provider": "twinfield", "client_id": TW_ID, "user": "ghost"
        }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn urls_and_health_answer() {
    let setup = start().await;
    assert_eq!(get(&setup, "/_sim/health").await["ok"], true);
    let urls = get(&setup, "/_sim/urls").await;
    assert_eq!(urls["exact"]["co.uk"], setup.sim.exact_base("co.uk"));
    assert_eq!(urls["twinfield_login"], setup.sim.twinfield_login_base());
    let index = setup
        .get(&setup.sim.base_url(), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(index.contains("/twinfield/clusters/accounting"));
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let setup = start().await;
    let url = format!("{}/_sim/health", setup.sim.base_url());
    assert!(setup.http.get(&url).send().await.is_ok());
    setup.sim.shutdown();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(common::http_client().get(&url).send().await.is_err());
}
