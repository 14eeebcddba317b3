//! Acumatica: token shape, refresh expiry modes, the API login limit and tenant-bound tokens.

mod common;

use chrono::Duration;
use common::*;
use provider_simulators::{AcumaticaInstance, AcumaticaRefreshPolicy, Provider};
use reqwest::StatusCode;

const SLIDING_ID: &str = "22222222-2222-4222-8222-222222222222@Company";

#[tokio::test]
async fn code_flow_answers_with_scope_and_a_configurable_expires_in_type() {
    let setup = start().await;
    let (status, body) = setup.acumatica_exchange(ACU_ID, "api offline_access").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "api offline_access");
    assert!(body["refresh_token"].is_string());

    setup
        .sim
        .update_knobs(|k| k.acumatica_expires_in_as_string = true);
    let (_, body) = setup.acumatica_exchange(ACU_ID, "api").await;
    assert_eq!(body["expires_in"], "3600");
    assert!(
        body.get("refresh_token").is_none(),
        "no offline_access, no refresh token"
    );
}

#[tokio::test]
async fn client_credentials_belong_in_the_body() {
    let setup = start().await;
    let code = setup.acumatica_code(ACU_ID, "api").await;
    let form = code_grant(code.as_str());
    let response = setup
        .http
        .post(setup.acumatica_url("/identity/connect/token"))
        .basic_auth(ACU_ID, Some(ACU_SECRET))
        .form(&form)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_oauth_error((status, &body), StatusCode::BAD_REQUEST, "invalid_client");
}

#[tokio::test]
async fn discovery_userinfo_and_the_api_need_a_token_of_this_instance() {
    let setup = start().await;
    let discovery = setup
        .get_json(
            &setup.acumatica_url("/identity/.well-known/openid-configuration"),
            None,
        )
        .await;
    assert_eq!(
        discovery["token_endpoint"],
        setup.acumatica_url("/identity/connect/token")
    );

    let (_, tokens) = setup
        .acumatica_exchange(ACU_ID, "openid api offline_access")
        .await;
    let token = s(&tokens["access_token"]);
    let info = setup
        .get_json(
            &setup.acumatica_url("/identity/connect/userinfo"),
            Some(token),
        )
        .await;
    assert_eq!(info["name"], "admin");
    assert_eq!(s(&info["sub"]).len(), 36);

    let api = setup.acumatica_url("/entity/Default/22.200.001/Customer");
    let response = setup.get(&api, Some(token)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("Company customer 1"));
    assert_eq!(
        setup.get(&api, Some("nope")).await.status(),
        StatusCode::UNAUTHORIZED
    );

    setup.sim.add_acumatica_instance(AcumaticaInstance {
        name: "other".into(),
        tenants: vec!["Company".into()],
        login_limit: None,
    });
    let elsewhere = format!(
        "{}/entity/Default/22.200.001/Customer",
        setup.sim.acumatica_instance_url("other")
    );
    assert_eq!(
        setup.get(&elsewhere, Some(token)).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_client_reaches_only_the_users_of_its_tenant() {
    let setup = start_with(provider_simulators::SimulatorConfig::default()).await;
    setup.sim.add_acumatica_instance(AcumaticaInstance {
        name: "demo".into(),
        tenants: vec!["Branch".into()],
        login_limit: None,
    });
    setup
        .sim
        .add_acumatica_user("demo", "Branch", "branch.user")
        .unwrap();
    let url = setup.acumatica_url("/identity/connect/authorize");
    let query = [
        ("client_id", ACU_ID),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", "api"),
        ("state", "st"),
    ];
    let html = setup
        .get_authorize(&url, &query)
        .await
        .text()
        .await
        .unwrap();
    let marker = "name=\"request_id\" value=\"";
    let start = html.find(marker).unwrap() + marker.len();
    let request_id = &html[start..start + html[start..].find('"').unwrap()];
    let form = [
        ("request_id", request_id),
        ("user", "branch.user"),
        ("decision", "allow"),
    ];
    let response = setup.http.post(&url).form(&form).send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "branch.user is not a user of tenant Company"
    );
}

#[tokio::test]
async fn absolute_expiry_ends_the_grant_30_days_after_first_issue_however_often_refreshed() {
    let setup = start().await;
    let (_, tokens) = setup.acumatica_exchange(ACU_ID, "api offline_access").await;
    let tokens = refresh_every(&setup, ACU_ID, tokens, 4, Duration::days(7)).await;
    setup
        .sim
        .clock()
        .advance(Duration::days(2) + Duration::seconds(1));
    let (status, body) = setup
        .acumatica_refresh(ACU_ID, s(&tokens["refresh_token"]))
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "invalid_grant"})
        )
    );
}

#[tokio::test]
async fn sliding_expiry_extends_with_each_refresh_up_to_the_cap() {
    let setup = start().await;
    let policy = AcumaticaRefreshPolicy::Sliding {
        sliding_secs: 7 * 86_400,
        absolute_cap_secs: Some(20 * 86_400),
    };
    setup
        .sim
        .register_acumatica_client("demo", acumatica_client(SLIDING_ID, policy))
        .unwrap();
    let (_, tokens) = setup
        .acumatica_exchange(SLIDING_ID, "api offline_access")
        .await;
    let tokens = refresh_every(&setup, SLIDING_ID, tokens, 3, Duration::days(6)).await;
    setup
        .sim
        .clock()
        .advance(Duration::days(2) + Duration::seconds(1));
    assert_eq!(
        setup
            .acumatica_refresh(SLIDING_ID, s(&tokens["refresh_token"]))
            .await
            .0,
        StatusCode::BAD_REQUEST,
        "past the cap"
    );

    // Idle longer than the sliding lifetime: dead too.
    let (_, tokens) = setup
        .acumatica_exchange(SLIDING_ID, "api offline_access")
        .await;
    setup
        .sim
        .clock()
        .advance(Duration::days(7) + Duration::seconds(1));
    assert_eq!(
        setup
            .acumatica_refresh(SLIDING_ID, s(&tokens["refresh_token"]))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn sliding_without_a_cap_outlives_30_days() {
    let setup = start().await;
    let policy = AcumaticaRefreshPolicy::Sliding {
        sliding_secs: 7 * 86_400,
        absolute_cap_secs: None,
    };
    setup
        .sim
        .register_acumatica_client("demo", acumatica_client(SLIDING_ID, policy))
        .unwrap();
    let (_, tokens) = setup
        .acumatica_exchange(SLIDING_ID, "api offline_access")
        .await;
    refresh_every(&setup, SLIDING_ID, tokens, 10, Duration::days(6)).await;
}

#[tokio::test]
async fn refresh_tokens_are_one_time() {
    let setup = start().await;
    let (_, tokens) = setup.acumatica_exchange(ACU_ID, "api offline_access").await;
    let old = s(&tokens["refresh_token"]);
    assert_eq!(setup.acumatica_refresh(ACU_ID, old).await.0, StatusCode::OK);
    let (status, body) = setup.acumatica_refresh(ACU_ID, old).await;
    assert_oauth_error((status, &body), StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn the_api_login_limit_caps_concurrent_sessions_per_tenant() {
    let setup = start().await;
    setup
        .sim
        .set_acumatica_login_limit("demo", "Company", Some(1))
        .unwrap();
    let (status, first) = setup.acumatica_exchange(ACU_ID, "api offline_access").await;
    assert_eq!(status, StatusCode::OK);
    // Refreshing reuses the grant's session.
    let (status, _) = setup
        .acumatica_refresh(ACU_ID, s(&first["refresh_token"]))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(setup.sim.acumatica_active_sessions("demo", "Company"), 1);

    let (status, body) = setup.acumatica_exchange(ACU_ID, "api offline_access").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        s(&body["error_description"]).contains("API Login Limit"),
        "{body}"
    );

    setup.sim.revoke_grant(Provider::Acumatica, "admin", None);
    assert_eq!(
        setup
            .acumatica_exchange(ACU_ID, "api offline_access")
            .await
            .0,
        StatusCode::OK,
        "the session was freed"
    );
}

/// Refreshes `times` times, `every` apart, each answered with a new pair; the last pair.
async fn refresh_every(
    setup: &Setup,
    client_id: &str,
    mut tokens: serde_json::Value,
    times: usize,
    every: Duration,
) -> serde_json::Value {
    for n in 1..=times {
        setup.sim.clock().advance(every);
        let (status, next) = setup
            .acumatica_refresh(client_id, s(&tokens["refresh_token"]))
            .await;
        assert_eq!(status, StatusCode::OK, "refresh {n}: {next}");
        tokens = next;
    }
    tokens
}
