//! Connections created, listed, relinked and disconnected; Exact divisions and Exact's per-user limit.

use super::*;

broker_tests::on_both_backends!(
    connections_are_created_listed_relinked_and_disconnected,
    exact_connections_bind_a_granted_division_and_list_them_all,
    exact_connections_of_one_user_wait_together_and_keep_serving_valid_tokens,
);

async fn connections_are_created_listed_relinked_and_disconnected(backend: Backend) {
    let env = env(backend).await;
    let mut ids = Vec::new();
    for app in ["ex", "tw", "acu"] {
        ids.push(env.create(app).await);
    }
    let other = env
        .call_raw(
            "POST",
            "/v1/connections",
            Some(&env.other_key),
            Some(br#"{"app_id":"ex","recipients":["x@example.com"]}"#.to_vec()),
        )
        .await;
    assert_eq!(other.status, 201);

    // Paged listing sees this tenant's connections only.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/connections?limit=2&cursor={}", urlencode(c)),
            None => "/v1/connections?limit=2".to_string(),
        };
        let page = env.call("GET", &path, None).await;
        assert_eq!(page.status, 200, "{}", page.text);
        for c in page.json["connections"].as_array().unwrap() {
            seen.push(c["id"].as_str().unwrap().to_string());
        }
        match page.json["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    env.call("GET", "/v1/connections?limit=0", None)
        .await
        .problem(ProblemKind::InvalidRequest);
    env.call("GET", "/v1/connections?cursor=garbage", None)
        .await
        .problem(ProblemKind::InvalidRequest);

    // A fresh reconnect link, then disconnect: tokens deleted, record kept.
    let (id, minted) = env.connected("ex").await;
    let link = env
        .call(
            "POST",
            &format!("/v1/connections/{id}/reconnect-link"),
            None,
        )
        .await;
    assert_eq!(link.status, 201, "{}", link.text);
    assert!(link.json["url"]
        .as_str()
        .unwrap()
        .starts_with("https://broker.test/connect/"));
    let pointer = env
        .ctx
        .backend
        .store
        .get_connection(&ConnectionId::parse(id.as_str()).unwrap())
        .await
        .unwrap()
        .unwrap()
        .credentials
        .unwrap();
    let gone = env
        .call("DELETE", &format!("/v1/connections/{id}"), None)
        .await;
    assert_eq!(gone.status, 200, "{}", gone.text);
    assert_eq!(gone.json["status"], "disconnected");
    assert!(env
        .ctx
        .backend
        .vault
        .get_credentials(
            &tenant("acme"),
            &ConnectionId::parse(id.as_str()).unwrap(),
            &pointer
        )
        .await
        .unwrap()
        .is_none());
    assert_eq!(env.status_of(&id).await, "disconnected");
    let again = env
        .call("DELETE", &format!("/v1/connections/{id}"), None)
        .await;
    assert_eq!(again.status, 200, "disconnecting twice is harmless");
    let refused = env.session(&id).await;
    refused.problem(ProblemKind::ConnectionDisconnected);
    assert!(!refused.text.contains(&minted.access_token));
    env.call(
        "POST",
        &format!("/v1/connections/{id}/reconnect-link"),
        None,
    )
    .await
    .problem(ProblemKind::ConnectionDisconnected);
}

/// An Exact connection is bound to the division the integration names (or the customer's current
/// one), its session context lists every division the authorization grants, and credentials that
/// do not grant the bound division are refused.
async fn exact_connections_bind_a_granted_division_and_list_them_all(backend: Backend) {
    let env = env(backend).await;
    let create = |body: Value| env.call("POST", "/v1/connections", Some(body));
    let reply = create(json!({"app_id": "tw", "recipients": [], "exact_division": 654321})).await;
    reply.problem(ProblemKind::ValidationFailed);
    assert!(
        reply.text.contains("Exact Online connections only"),
        "{}",
        reply.text
    );
    let reply = create(json!({"app_id": "ex", "recipients": [], "exact_division": -3})).await;
    reply.problem(ProblemKind::ValidationFailed);

    let env = &env;
    let register = |id: String, minted: MintedTokens| async move {
        env.call(
            "POST",
            &format!("/v1/connections/{id}/credentials"),
            Some(json!({
                "access_token": minted.access_token,
                "refresh_token": minted.refresh_token,
                "access_token_expires_at": minted.access_expires_at,
            })),
        )
        .await
    };
    // Named: 654321, though 123456 is the division open in Exact Online.
    let reply = create(json!({"app_id": "ex", "recipients": [], "exact_division": 654321})).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.json["connection"]["exact_division"], 654321);
    let id = reply.json["connection"]["id"].as_str().unwrap().to_string();
    let reply = register(id.clone(), env.mint("ex")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let session = env.session(&id).await;
    assert_eq!(session.status, 200, "{}", session.text);
    let context = &session.json["context"];
    assert_eq!(context["division"], 654321);
    let codes: Vec<i64> = context["divisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, vec![123456, 654321]);
    assert!(context["divisions"][0]["name"].is_string());
    assert!(!context["user_id"].as_str().unwrap().is_empty());

    // Not named: the current division, when granted.
    let (id, _) = env.connected("ex").await;
    assert_eq!(env.session(&id).await.json["context"]["division"], 123456);

    // The customer's consent left out the named division: refused, nothing stored.
    env.sim
        .set_exact_division_scope("demo.user", Some(vec![123456]));
    let reply = create(json!({"app_id": "ex", "recipients": [], "exact_division": 654321})).await;
    let id = reply.json["connection"]["id"].as_str().unwrap().to_string();
    let reply = register(id.clone(), env.mint("ex")).await;
    reply.problem(ProblemKind::ValidationFailed);
    assert!(reply.text.contains("division 654321"), "{}", reply.text);
    assert_eq!(env.status_of(&id).await, "not_connected");
}

/// Exact blocks an app for an hour after more than 10 failed token calls per app and user. Two
/// connections of one Exact user stop calling together after 8; while held, a session answers 503 with
/// the time the limit allows a call again, and a connection of the same user whose token is still
/// valid keeps handing it out.
async fn exact_connections_of_one_user_wait_together_and_keep_serving_valid_tokens(
    backend: Backend,
) {
    let env = env(backend).await;
    let (first, _) = env.connected("ex").await;
    let (second, _) = env.connected("ex").await;
    // Every refresh is refused as too early: a 400 Exact counts toward its block.
    env.sim
        .update_knobs(|k| k.exact_min_refresh_interval_secs = 7_200);
    env.advance(700);
    let calls = env.sim.token_calls(sim::Provider::Exact);
    for _ in 0..4 {
        for id in [&first, &second] {
            let reply = env.session(id).await;
            reply.problem(ProblemKind::TemporarilyUnavailable);
            assert!(
                reply.text.contains("does not allow a refresh yet"),
                "{}",
                reply.text
            );
        }
    }
    assert_eq!(env.sim.token_calls(sim::Provider::Exact) - calls, 8);
    let reply = env.session(&first).await;
    reply.problem(ProblemKind::TemporarilyUnavailable);
    assert!(
        reply.text.contains("this user's connections"),
        "{}",
        reply.text
    );
    // All eight failures fell in the 12:00 hour: they count through the 13:00 hour too.
    let until = Utc.with_ymd_and_hms(2025, 6, 2, 14, 0, 0).unwrap();
    let wait = (until - env.sim.clock().now()).num_seconds();
    assert_eq!(reply.retry_after, Some(wait.to_string()));
    assert_eq!(env.sim.token_calls(sim::Provider::Exact) - calls, 8);

    // A third connection of the same user, its token nearly spent (but valid): handed out as it is.
    env.sim
        .update_knobs(|k| k.exact_min_refresh_interval_secs = 570);
    let (third, minted) = env.connected("ex").await;
    env.advance(580);
    let reply = env.session(&third).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["access_token"], minted.access_token.as_str());
    assert_eq!(env.sim.token_calls(sim::Provider::Exact) - calls, 8);
}
