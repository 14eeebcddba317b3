//! `PATCH /v1/connections/{id}`: each field, refusals, tenant isolation, a change racing a refresh, and
//! the next notice going to the recipients a change named.

use super::*;
use broker_core::ids::LeaseOwner;
use broker_core::ports::LeaseAttempt;

broker_tests::on_both_backends!(
    a_patch_changes_each_field_and_get_shows_it,
    a_patch_refuses_bad_values_naming_the_field,
    a_patch_of_another_tenants_connection_is_not_found,
    a_key_limited_to_some_connections_changes_and_reads_only_those,
    a_patch_waits_for_a_refresh_in_progress_and_keeps_its_result,
    the_next_notice_goes_to_the_recipients_a_patch_named,
    a_connection_is_created_in_its_peoples_language_and_zone,
);

async fn a_connection_is_created_in_its_peoples_language_and_zone(backend: Backend) {
    let env = env(backend).await;
    let create = |extra: Value| {
        let mut body = json!({"app_id": "ex", "recipients": ["finance@example.com"]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let created = env
        .call(
            "POST",
            "/v1/connections",
            Some(create(
                json!({"locale": "nl-BE", "time_zone": "europe/brussels"}),
            )),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.json["connection"]["locale"], "nl");
    assert_eq!(created.json["connection"]["time_zone"], "Europe/Brussels");
    for (extra, field) in [
        (json!({"locale": "fr"}), "locale: "),
        (json!({"time_zone": "Mars/Olympus"}), "time_zone: "),
    ] {
        env.call("POST", "/v1/connections", Some(create(extra)))
            .await
            .problem(ProblemKind::ValidationFailed, field);
    }
}

async fn a_patch_changes_each_field_and_get_shows_it(backend: Backend) {
    let env = env(backend).await;
    let id = env.create().await;
    let changed = env
        .patch(
            &id,
            json!({
                "display_name": "  Acme\u{202E} ledger ",
                "recipients": ["ops@example.com", "Boss@Example.com"],
                "required_identity": {"subject": "demo.user", "display_name": "Demo"},
                "locale": "nl-BE",
                "time_zone": "europe/brussels",
            }),
        )
        .await;
    let view = changed.ok().clone();
    assert_eq!(view["display_name"], "Acme ledger");
    assert_eq!(
        view["recipients"],
        json!(["ops@example.com", "Boss@example.com"])
    );
    assert_eq!(view["required_identity"]["subject"], "demo.user");
    assert_eq!(view["locale"], "nl");
    assert_eq!(view["time_zone"], "Europe/Brussels");
    let shown = env
        .call("GET", &format!("/v1/connections/{id}"), None)
        .await;
    assert_eq!(
        shown.ok(),
        &view,
        "the answer is the connection as GET shows it"
    );

    // Absent stays, null clears.
    let cleared = env
        .patch(
            &id,
            json!({"display_name": null, "required_identity": null, "locale": null}),
        )
        .await;
    let view = cleared.ok();
    assert!(view["display_name"].is_null() && view["required_identity"].is_null());
    assert!(view["locale"].is_null());
    assert_eq!(view["time_zone"], "Europe/Brussels");
    assert_eq!(view["recipients"].as_array().unwrap().len(), 2);
    let none = env.patch(&id, json!({"recipients": null})).await;
    assert_eq!(none.ok()["recipients"], json!([]));

    // A key limited to sessions may not change a connection.
    env.call_as(
        &env.session_only_key,
        "PATCH",
        &format!("/v1/connections/{id}"),
        Some(json!({"display_name": "x"})),
    )
    .await
    .problem(ProblemKind::Forbidden, "session");
}

async fn a_patch_refuses_bad_values_naming_the_field(backend: Backend) {
    let env = env(backend).await;
    let id = env.create().await;
    for (body, field, accepted) in [
        (json!({"locale": "fr"}), "locale: ", "\"nl\""),
        (
            json!({"time_zone": "Mars/Olympus"}),
            "time_zone: ",
            "Europe/Amsterdam",
        ),
        (json!({"recipients": ["finance"]}), "recipients: ", "'@'"),
        (
            json!({"required_identity": {"subject": " "}}),
            "required_identity: ",
            "user id",
        ),
        (
            json!({"display_name": "x".repeat(201)}),
            "display_name: ",
            "shorten",
        ),
    ] {
        let refused = env.patch(&id, body.clone()).await;
        refused.problem(ProblemKind::ValidationFailed, field);
        refused.problem(ProblemKind::ValidationFailed, accepted);
    }
    env.patch(&id, json!({"timezone": "UTC"}))
        .await
        .problem(ProblemKind::InvalidRequest, "unknown field");
    env.patch(&id, json!({"recipients": "finance@example.com"}))
        .await
        .problem(ProblemKind::InvalidRequest, "wrong type");
    // Nothing refused was kept, and nothing was recorded.
    let view = env
        .call("GET", &format!("/v1/connections/{id}"), None)
        .await;
    assert_eq!(view.ok()["display_name"], "Acme books");
    assert!(view.json["locale"].is_null());
    let changes: Vec<Value> = env
        .history(&id, 50)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "change")
        .collect();
    assert!(changes.is_empty(), "{changes:?}");
}

async fn a_patch_of_another_tenants_connection_is_not_found(backend: Backend) {
    let env = env(backend).await;
    let id = env.create().await;
    for (method, path) in [
        ("PATCH", format!("/v1/connections/{id}")),
        ("GET", format!("/v1/connections/{id}/events")),
    ] {
        env.call_as(
            &env.other_key,
            method,
            &path,
            Some(json!({"display_name": "mine"})),
        )
        .await
        .problem(ProblemKind::NotFound, "no such connection");
    }
    let view = env
        .call("GET", &format!("/v1/connections/{id}"), None)
        .await;
    assert_eq!(view.ok()["display_name"], "Acme books");
}

async fn a_key_limited_to_some_connections_changes_and_reads_only_those(backend: Backend) {
    let env = env(backend).await;
    let (a, b) = (env.create().await, env.create().await);
    let limited = ApiKeyRecord::generate(
        tenant("acme"),
        "limited",
        ApiKeyScope {
            connections: Some(vec![ConnectionId::parse(&a).unwrap()]),
            ..ApiKeyScope::default()
        },
        env.ctx.clock.now(),
    );
    env.ctx
        .backend
        .store
        .insert_api_key(&limited.record)
        .await
        .unwrap();
    let key = limited.plaintext.expose().to_string();
    let body = || Some(json!({"display_name": "Mine"}));
    let changed = env
        .call_as(&key, "PATCH", &format!("/v1/connections/{a}"), body())
        .await;
    assert_eq!(changed.ok()["display_name"], "Mine");
    let events = env
        .call_as(&key, "GET", &format!("/v1/connections/{a}/events"), None)
        .await;
    assert_eq!(events.ok()["events"][0]["kind"], "change");
    env.call_as(&key, "PATCH", &format!("/v1/connections/{b}"), body())
        .await
        .problem(ProblemKind::Forbidden, "limited to other connections");
    env.call_as(&key, "GET", &format!("/v1/connections/{b}/events"), None)
        .await
        .problem(ProblemKind::Forbidden, "limited to other connections");
}

/// A refresh holds the lease when the change arrives: the change waits for it, the refresh's save
/// succeeds (a change that saved in between would have fenced it off), and the change is applied on
/// top of what the refresh stored.
async fn a_patch_waits_for_a_refresh_in_progress_and_keeps_its_result(backend: Backend) {
    let env = env(backend).await;
    let id = env.connected().await;
    let connection_id = ConnectionId::parse(&id).unwrap();
    let store = env.ctx.backend.store.clone();
    let refresher = LeaseOwner::generate();
    let LeaseAttempt::Acquired(mut refreshing) = store
        .acquire_lease(
            &connection_id,
            &refresher,
            env.ctx.clock.now(),
            Duration::seconds(30),
        )
        .await
        .unwrap()
    else {
        panic!("the lease is free");
    };

    let patch = {
        let env_base = env.base.clone();
        let key = env.key.clone();
        let id = id.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .patch(format!("{env_base}/v1/connections/{id}"))
                .header("authorization", format!("Bearer {key}"))
                .header("content-type", "application/json")
                .body(r#"{"display_name":"Renamed","recipients":["ops@example.com"]}"#)
                .send()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(!patch.is_finished(), "the change waits for the refresh");

    // The refresh stores its result under its lease, and gives the lease up.
    let refreshed_until = env.ctx.clock.now() + Duration::minutes(10);
    refreshing.access_expires_at = Some(refreshed_until);
    refreshing.last_refresh_at = Some(env.ctx.clock.now());
    store
        .save_connection(&refreshing, Fence::LeaseReleased(&refresher), &[])
        .await
        .expect("the refresh's save is not fenced off by the change");

    let answer = patch.await.unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let view: Value = answer.json().await.unwrap();
    assert_eq!(view["display_name"], "Renamed");
    assert_eq!(view["recipients"], json!(["ops@example.com"]));
    let stored = store.get_connection(&connection_id).await.unwrap().unwrap();
    assert_eq!(
        stored.access_expires_at,
        Some(refreshed_until),
        "the refresh's fields stay"
    );
    assert_eq!(stored.display_name.as_deref(), Some("Renamed"));
    assert!(stored.lease().is_none(), "the change gave its lease up");
}

async fn the_next_notice_goes_to_the_recipients_a_patch_named(backend: Backend) {
    let env = env(backend).await;
    let id = env.connected().await;
    env.patch(
        &id,
        json!({"recipients": ["ops@example.com"], "display_name": "Ledger"}),
    )
    .await
    .ok();
    env.reconnect_needed(&id).await;
    let mail = env.send_notices().await;
    assert_eq!(mail.len(), 1, "{mail:?}");
    let headers = mail[0].split("\r\n\r\n").next().unwrap();
    assert!(headers.contains("To: ops@example.com"), "{headers}");
    assert!(!mail[0].contains("finance@example.com"), "{}", mail[0]);
}
