//! Fault injection: each kind, through the library and through `/_sim/faults`.

mod common;

use chrono::Duration;
use common::*;
use provider_simulators::{FaultAction, FaultRule, EXTRACT_VARIABLES_FAULT};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Instant;

#[tokio::test]
async fn status_faults_answer_for_the_next_n_calls_then_stop() {
    let setup = start().await;
    let action = FaultAction::Status {
        status: 503,
        body: "maintenance".into(),
        content_type: None,
    };
    setup
        .sim
        .inject_fault(FaultRule::next("exact.token", 2, action));
    for _ in 0..2 {
        let (status, body) = setup.exact_refresh("whatever").await;
        assert_eq!(
            (status, body),
            (StatusCode::SERVICE_UNAVAILABLE, json!("maintenance"))
        );
    }
    assert_eq!(
        setup.exact_refresh("whatever").await.0,
        StatusCode::BAD_REQUEST,
        "the provider answers again"
    );
    assert_eq!(setup.sim.calls("exact.token"), 3);
    assert!(setup.sim.faults().is_empty());
}

#[tokio::test]
async fn probabilistic_faults_hit_some_calls() {
    let setup = start().await;
    let action = FaultAction::Status {
        status: 500,
        body: "{}".into(),
        content_type: None,
    };
    setup
        .sim
        .inject_fault(FaultRule::with_probability("acumatica.*", 0.5, action));
    let url = setup.acumatica_url("/identity/.well-known/openid-configuration");
    let mut failed = 0;
    for _ in 0..40 {
        if setup.http.get(&url).send().await.unwrap().status() == StatusCode::INTERNAL_SERVER_ERROR
        {
            failed += 1;
        }
    }
    assert!((5..=35).contains(&failed), "{failed} of 40 failed");
}

#[tokio::test]
async fn too_many_requests_carries_retry_after() {
    let setup = start().await;
    setup.sim.inject_fault(FaultRule::next(
        "twinfield.*",
        1,
        FaultAction::TooManyRequests {
            retry_after_secs: 7,
            body: None,
        },
    ));
    let response = setup.get(&setup.twinfield_connect("userinfo"), None).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7");
}

#[tokio::test]
async fn global_and_route_latency_slow_calls_down() {
    let setup = start().await;
    setup
        .sim
        .set_global_latency(std::time::Duration::from_millis(100));
    let started = Instant::now();
    setup.exact_refresh("x").await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(100));

    setup.sim.set_global_latency(std::time::Duration::ZERO);
    setup
        .sim
        .set_route_latency("exact.token", std::time::Duration::from_millis(250));
    let started = Instant::now();
    setup.exact_refresh("x").await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    let started = Instant::now();
    setup
        .get(
            &setup.acumatica_url("/identity/.well-known/openid-configuration"),
            None,
        )
        .await;
    assert!(
        started.elapsed() < std::time::Duration::from_millis(250),
        "other routes are not slowed"
    );
}

#[tokio::test]
async fn a_hang_outlasts_the_client_timeout() {
    let setup = start().await;
    setup
        .sim
        .inject_fault(FaultRule::next("exact.token", 1, FaultAction::Hang));
    let error = setup
        .http
        .post(setup.exact_url("nl", "/api/oauth2/token"))
        .timeout(std::time::Duration::from_millis(300))
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
}

#[tokio::test]
async fn a_drop_closes_the_connection_without_an_answer() {
    let setup = start().await;
    setup
        .sim
        .inject_fault(FaultRule::next("exact.token", 1, FaultAction::Drop));
    let error = setup
        .http
        .post(setup.exact_url("nl", "/api/oauth2/token"))
        .form(&[("a", "b")])
        .send()
        .await
        .unwrap_err();
    assert!(!error.is_timeout() && error.status().is_none(), "{error:?}");
    assert_eq!(
        setup.exact_refresh("x").await.0,
        StatusCode::BAD_REQUEST,
        "the next call is answered"
    );
}

#[tokio::test]
async fn issue_then_500_spends_the_old_refresh_token_and_loses_the_new_pair() {
    let setup = start().await;
    let first = setup.exact_tokens("nl").await;
    let old = s(&first["refresh_token"]);
    setup.sim.clock().advance(Duration::seconds(600));
    let before = setup.sim.valid_access_tokens().len();
    setup
        .sim
        .inject_fault(FaultRule::next("exact.token", 1, FaultAction::IssueThen500));
    let refresh = [("grant_type", "refresh_token"), ("refresh_token", old)];
    let (status, body) = setup.exact_token("nl", &refresh).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        body,
        serde_json::from_str::<serde_json::Value>(EXTRACT_VARIABLES_FAULT).unwrap()
    );
    assert_eq!(
        body["fault"]["faultstring"],
        "Failed to execute the ExtractVariables: ExtractAccessToken"
    );
    assert_eq!(
        setup.sim.valid_access_tokens().len(),
        before + 1,
        "a pair was issued"
    );
    let (status, body) = setup.exact_refresh(old).await;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("Old refresh token used."))
    );
    assert_eq!(setup.sim.presentations_of(old), 2);
}

#[tokio::test]
async fn issue_then_drop_spends_the_token_and_closes_the_connection() {
    let setup = start().await;
    let (_, tokens) = setup.acumatica_exchange(ACU_ID, "api offline_access").await;
    let old = s(&tokens["refresh_token"]);
    setup.sim.inject_fault(FaultRule::next(
        "acumatica.token",
        1,
        FaultAction::IssueThenDrop,
    ));
    let form = [
        ("client_id", ACU_ID),
        ("client_secret", ACU_SECRET),
        ("grant_type", "refresh_token"),
        ("refresh_token", old),
    ];
    let error = setup
        .http
        .post(setup.acumatica_url("/identity/connect/token"))
        .form(&form)
        .send()
        .await
        .unwrap_err();
    assert!(error.status().is_none(), "{error:?}");
    assert_eq!(
        setup.acumatica_refresh(ACU_ID, old).await.0,
        StatusCode::BAD_REQUEST,
        "spent by the lost call"
    );
}

#[tokio::test]
async fn faults_can_be_added_and_cleared_over_the_admin_api() {
    let setup = start().await;
    let base = setup.sim.base_url();
    let rule = json!({
        "route": "twinfield.token",
        "trigger": { "next": 1 },
        "action": { "kind": "status", "status": 502, "body": "bad gateway" }
    });
    let added = setup
        .http
        .post(format!("{base}/_sim/faults"))
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::OK);
    let listed = setup.get_json(&format!("{base}/_sim/faults"), None).await;
    assert_eq!(listed[0]["route"], "twinfield.token");
    assert_eq!(
        setup
            .twinfield_token(&[("grant_type", "refresh_token")])
            .await
            .0,
        StatusCode::BAD_GATEWAY
    );

    let always = json!({ "route": "*", "action": { "kind": "drop" }, "trigger": "always" });
    setup
        .http
        .post(format!("{base}/_sim/faults"))
        .json(&always)
        .send()
        .await
        .unwrap();
    assert!(setup
        .http
        .get(setup.twinfield_connect("userinfo"))
        .send()
        .await
        .is_err());
    setup
        .http
        .delete(format!("{base}/_sim/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        setup
            .get(&setup.twinfield_connect("userinfo"), None)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );

    let latency = json!({ "route": null, "ms": 50 });
    setup
        .http
        .put(format!("{base}/_sim/latency"))
        .json(&latency)
        .send()
        .await
        .unwrap();
    assert_eq!(setup.sim.knobs().global_latency_ms, 50);
}
