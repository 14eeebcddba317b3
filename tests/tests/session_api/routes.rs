//! Refusals as clean problems, the OpenAPI document beside the router, key scopes, media types and labels.

use super::*;

broker_tests::on_both_backends!(
    refusals_are_clean_problems,
    every_route_answers_every_key_scope_as_the_scope_says,
    bodies_must_be_declared_json_and_labels_lose_control_characters,
    an_unknown_key_is_refused_without_a_store_read_for_a_while,
);

async fn refusals_are_clean_problems(backend: Backend) {
    let env = env_with(
        backend,
        ApiSettings {
            key_cache_ttl: std::time::Duration::from_millis(500),
            ..ApiSettings::default()
        },
    )
    .await;
    let (id, minted) = env.connected("ex").await;
    let session_path = format!("/v1/connections/{id}/session");

    // No key, a malformed one, a wrong one, another scheme.
    env.call_raw("POST", &session_path, None, None)
        .await
        .problem(ProblemKind::Unauthorized);
    env.call_raw("POST", &session_path, Some("not-a-key"), None)
        .await
        .problem(ProblemKind::Unauthorized);
    let wrong = format!("{}x", &env.key[..env.key.len() - 1]);
    let wrong = if wrong == env.key {
        format!("{}y", &env.key[..env.key.len() - 1])
    } else {
        wrong
    };
    env.call_raw("POST", &session_path, Some(&wrong), None)
        .await
        .problem(ProblemKind::Unauthorized);
    let unknown = ApiKeyRecord::generate(tenant("acme"), "x", ApiKeyScope::default(), Utc::now());
    env.call_raw(
        "POST",
        &session_path,
        Some(unknown.plaintext.expose()),
        None,
    )
    .await
    .problem(ProblemKind::Unauthorized);
    let basic = env
        .http
        .post(format!("{}{session_path}", env.base))
        .header("authorization", format!("Basic {}", env.key))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status().as_u16(), 401);
    assert_eq!(basic.headers()["www-authenticate"], "Bearer");

    // Another tenant's connection does not exist for this key, nor does an unknown one.
    env.call_raw("POST", &session_path, Some(&env.other_key), None)
        .await
        .problem(ProblemKind::NotFound);
    env.call_raw(
        "GET",
        &format!("/v1/connections/{id}"),
        Some(&env.other_key),
        None,
    )
    .await
    .problem(ProblemKind::NotFound);
    env.session(ConnectionId::generate().as_str())
        .await
        .problem(ProblemKind::NotFound);
    env.session("nonsense").await.problem(ProblemKind::NotFound);
    env.call("GET", "/v2/connections", None)
        .await
        .problem(ProblemKind::NotFound);
    env.call("PUT", "/v1/connections", None)
        .await
        .problem(ProblemKind::MethodNotAllowed);

    // A key limited to other connections, and a session-only key.
    let now = env.ctx.clock.now();
    let limited = ApiKeyRecord::generate(
        tenant("acme"),
        "limited",
        ApiKeyScope {
            session_only: false,
            connections: Some(vec![ConnectionId::generate()]),
            manage_apps: false,
        },
        now,
    );
    env.ctx
        .backend
        .store
        .insert_api_key(&limited.record)
        .await
        .unwrap();
    env.call_raw(
        "POST",
        &session_path,
        Some(limited.plaintext.expose()),
        None,
    )
    .await
    .problem(ProblemKind::Forbidden);
    let ok = env
        .call_raw("POST", &session_path, Some(&env.session_only_key), None)
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    env.call_raw(
        "POST",
        "/v1/connections",
        Some(&env.session_only_key),
        Some(br#"{"app_id":"ex","recipients":[]}"#.to_vec()),
    )
    .await
    .problem(ProblemKind::Forbidden);
    env.call_raw(
        "DELETE",
        &format!("/v1/connections/{id}"),
        Some(&env.session_only_key),
        None,
    )
    .await
    .problem(ProblemKind::Forbidden);

    // Bodies: malformed JSON, unknown fields, wrong types, too large, invalid values.
    let create = |body: &[u8]| {
        env.call_raw(
            "POST",
            "/v1/connections",
            Some(&env.key),
            Some(body.to_vec()),
        )
    };
    create(b"{not json")
        .await
        .problem(ProblemKind::InvalidRequest);
    let unknown_field =
        create(br#"{"app_id":"ex","recipients":["a@example.com"],"recipient":"typo@example.com"}"#)
            .await;
    unknown_field.problem(ProblemKind::InvalidRequest);
    assert!(
        unknown_field.text.contains("unknown field"),
        "{}",
        unknown_field.text
    );
    let wrong_type = create(br#"{"app_id":"ex","recipients":"sekrit-value"}"#).await;
    wrong_type.problem(ProblemKind::InvalidRequest);
    assert!(!wrong_type.text.contains("sekrit-value"));
    let big = format!(
        r#"{{"app_id":"ex","recipients":[],"display_name":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    create(big.as_bytes())
        .await
        .problem(ProblemKind::PayloadTooLarge);
    create(br#"{"app_id":"ex","recipients":["not an address"]}"#)
        .await
        .problem(ProblemKind::ValidationFailed);
    create(br#"{"app_id":"nope","recipients":["a@example.com"]}"#)
        .await
        .problem(ProblemKind::ValidationFailed);
    let credentials_path = format!("/v1/connections/{id}/credentials");
    env.call(
        "POST",
        &credentials_path,
        Some(json!({"access_token": "a", "refresh_token": "b", "extra": 1})),
    )
    .await
    .problem(ProblemKind::InvalidRequest);
    env.call(
        "POST",
        &credentials_path,
        Some(json!({"access_token": "a", "authorization_code": "b"})),
    )
    .await
    .problem(ProblemKind::InvalidRequest);

    // A token pair the provider rejects leaves the connection as it was.
    let fresh = env.create("ex").await;
    let rejected = env
        .call(
            "POST",
            &format!("/v1/connections/{fresh}/credentials"),
            Some(json!({"access_token": "bogus-access", "refresh_token": "bogus-refresh"})),
        )
        .await;
    rejected.problem(ProblemKind::CredentialsRejected);
    assert!(!rejected.text.contains("bogus-refresh"));
    assert_eq!(env.status_of(&fresh).await, "not_connected");
    env.session(&fresh).await.problem(ProblemKind::NotConnected);

    // Revocation takes effect within the key cache's lifetime (here 0.5 s; 30 s by default).
    let prefix = broker_core::domain::ApiKeyPrefix::parse(&env.key_prefix).unwrap();
    assert!(env
        .ctx
        .backend
        .store
        .revoke_api_key(&tenant("acme"), &prefix, now)
        .await
        .unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let revoked = env.session(&id).await;
    revoked.problem(ProblemKind::Unauthorized);
    assert!(!revoked.text.contains(&minted.access_token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_router() {
    let env = env(broker_tests::backends::embedded()).await;
    let document: Value = serde_json::from_str(session_exchange::OPENAPI).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    documented.sort();
    let mut served: Vec<(String, String)> = session_exchange::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    served.sort();
    assert_eq!(documented, served);

    // Every documented operation answers (not 404/405) with a key; every other method on a
    // documented path is 405; a path outside the document is 404.
    let id = env.create("ex").await;
    for (_, path) in &served {
        let concrete = path.replace("{id}", &id);
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            let reply = env
                .call_raw(method, &concrete, Some(&env.key), Some(b"{}".to_vec()))
                .await;
            if served.contains(&(method.to_string(), path.clone())) {
                assert!(
                    ![404, 405].contains(&reply.status),
                    "{method} {path}: {}",
                    reply.text
                );
            } else {
                assert_eq!(reply.status, 405, "{method} {path} is not documented");
            }
        }
    }
    for stray in ["/", "/v1", "/v1/connections/x/y/z", "/v1/keys"] {
        let reply = env.call("GET", stray, None).await;
        assert_eq!(reply.status, 404, "{stray}");
    }
    // Every problem type the API can answer with is listed in the document.
    let text = session_exchange::OPENAPI;
    for kind in ProblemKind::ALL {
        assert!(
            text.contains(&format!("{PROBLEM_BASE}{}", kind.code())),
            "{} is not documented",
            kind.code()
        );
    }
}

/// Every route × every kind of key: a session-only key may only ask for sessions; a key limited to some
/// connections may do everything on those (listing shows only them) but create none; nothing reaches a
/// connection outside a key's list. "Allowed" is any answer but 401/403 (the connection's state decides
/// the rest); disconnect comes last, so the earlier routes see a connected connection (repeating it is
/// harmless).
async fn every_route_answers_every_key_scope_as_the_scope_says(backend: Backend) {
    let env = env(backend).await;
    let (a, _) = env.connected("tw").await;
    let (b, _) = env.connected("ex").await;
    let a_id = ConnectionId::parse(&a).unwrap();
    let b_id = ConnectionId::parse(&b).unwrap();
    let store = &env.ctx.backend.store;
    let key = |session_only: bool, connections: Option<Vec<ConnectionId>>| {
        let new = ApiKeyRecord::generate(
            tenant("acme"),
            "scoped",
            ApiKeyScope {
                session_only,
                connections,
                manage_apps: false,
            },
            Utc::now(),
        );
        (new.plaintext.expose().to_string(), new.record)
    };
    let keys = [
        ("tenant-wide", key(false, None)),
        ("session-only", key(true, None)),
        ("limited to A", key(false, Some(vec![a_id.clone()]))),
        (
            "session-only, limited to A",
            key(true, Some(vec![a_id.clone()])),
        ),
        ("limited to B", key(false, Some(vec![b_id.clone()]))),
    ];
    for (_, (_, record)) in &keys {
        store.insert_api_key(record).await.unwrap();
    }
    let create = json!({"app_id": "tw", "recipients": ["finance@example.com"]});
    let pair = json!({"access_token": "x", "refresh_token": "y"});
    // (method, path, body, allowed for: tenant-wide, session-only, limited to A, session-only A, limited to B)
    let routes: Vec<(&str, String, Option<Value>, [bool; 5])> = vec![
        (
            "POST",
            "/v1/connections".into(),
            Some(create),
            [true, false, false, false, false],
        ),
        (
            "GET",
            "/v1/connections".into(),
            None,
            [true, false, true, false, true],
        ),
        (
            "GET",
            format!("/v1/connections/{a}"),
            None,
            [true, false, true, false, false],
        ),
        (
            "POST",
            format!("/v1/connections/{a}/reconnect-link"),
            None,
            [true, false, true, false, false],
        ),
        (
            "POST",
            format!("/v1/connections/{a}/credentials"),
            Some(pair),
            [true, false, true, false, false],
        ),
        (
            "POST",
            format!("/v1/connections/{a}/session"),
            None,
            [true, true, true, true, false],
        ),
        (
            "POST",
            format!("/v1/connections/{a}/twinfield-session"),
            None,
            [true, true, true, true, false],
        ),
        (
            "DELETE",
            format!("/v1/connections/{a}"),
            None,
            [true, false, true, false, false],
        ),
    ];
    for (method, path, body, allowed) in &routes {
        for (i, (name, (plaintext, _))) in keys.iter().enumerate() {
            let reply = env
                .call_raw(
                    method,
                    path,
                    Some(plaintext),
                    body.as_ref().map(|b| serde_json::to_vec(b).unwrap()),
                )
                .await;
            if allowed[i] {
                assert!(
                    ![401, 403].contains(&reply.status),
                    "{name} may {method} {path}: {} {}",
                    reply.status,
                    reply.text
                );
            } else {
                reply.problem(ProblemKind::Forbidden);
            }
        }
    }
    // A key limited to A lists only A.
    let listed = env
        .call_raw("GET", "/v1/connections", Some(&keys[2].1 .0), None)
        .await;
    let ids: Vec<&str> = listed.json["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a.as_str()]);
}

/// A body not declared as JSON gets 415 with what to do; an empty session request needs no type. A
/// display name loses control and bidirectional characters before it is stored.
async fn bodies_must_be_declared_json_and_labels_lose_control_characters(backend: Backend) {
    let env = env(backend).await;
    let body = serde_json::to_vec(&json!({
        "app_id": "ex",
        "display_name": "Acme\u{202E}fdp.exe\u{7}",
        "recipients": ["finance@example.com"],
    }))
    .unwrap();
    let send = |content_type: Option<&'static str>, path: String, body: Vec<u8>| {
        let mut request = env
            .http
            .post(format!("{}{path}", env.base))
            .bearer_auth(&env.key)
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send()
    };
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let response = send(content_type, "/v1/connections".into(), body.clone())
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 415, "{content_type:?}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(
            problem["type"],
            format!("{PROBLEM_BASE}unsupported-media-type")
        );
        assert!(problem["detail"]
            .as_str()
            .unwrap()
            .contains("application/json"));
    }
    let response = send(
        Some("application/json; charset=utf-8"),
        "/v1/connections".into(),
        body,
    )
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["connection"]["display_name"], "Acmefdp.exe");

    let (id, _) = env.connected("ex").await;
    let path = format!("/v1/connections/{id}/session");
    let empty = send(None, path.clone(), Vec::new()).await.unwrap();
    assert_eq!(empty.status().as_u16(), 200);
    let undeclared = send(None, path, b"{\"min_validity_secs\": 60}".to_vec())
        .await
        .unwrap();
    assert_eq!(undeclared.status().as_u16(), 415);
}

/// An unknown key prefix is looked up once; for the key cache's lifetime after that miss it is refused
/// without reading the store, shown by storing the key right after the miss: still refused, then
/// accepted once the miss has aged out.
async fn an_unknown_key_is_refused_without_a_store_read_for_a_while(backend: Backend) {
    let ttl = std::time::Duration::from_millis(1500);
    let env = env_with(
        backend,
        ApiSettings {
            key_cache_ttl: ttl,
            ..ApiSettings::default()
        },
    )
    .await;
    let new = ApiKeyRecord::generate(tenant("acme"), "late", ApiKeyScope::default(), Utc::now());
    let key = new.plaintext.expose().to_string();
    env.call_raw("GET", "/v1/connections", Some(&key), None)
        .await
        .problem(ProblemKind::Unauthorized);
    env.ctx
        .backend
        .store
        .insert_api_key(&new.record)
        .await
        .unwrap();
    env.call_raw("GET", "/v1/connections", Some(&key), None)
        .await
        .problem(ProblemKind::Unauthorized);
    tokio::time::sleep(ttl + std::time::Duration::from_millis(200)).await;
    let reply = env
        .call_raw("GET", "/v1/connections", Some(&key), None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}
