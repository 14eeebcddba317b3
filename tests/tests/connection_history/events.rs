//! `GET /v1/connections/{id}/events`: the merged history, newest first, across pages; session reads
//! counted per key and hour without a store write on the session path.

use super::*;

broker_tests::on_both_backends!(
    the_history_lists_every_kind_newest_first_across_pages,
    session_reads_of_two_keys_in_one_hour_are_two_counts_written_off_the_session_path,
);

async fn the_history_lists_every_kind_newest_first_across_pages(backend: Backend) {
    let env = env(backend).await;
    let id = env.connected().await; // transition: not connected -> connected
    env.advance(60);
    env.session_as(&env.key, &id).await;
    env.session_as(&env.key, &id).await;
    env.advance(60);
    env.patch(&id, json!({"locale": "en"})).await.ok(); // change
    env.advance(60);
    env.reconnect_needed(&id).await; // transition, and its notice
    assert_eq!(env.send_notices().await.len(), 1);
    env.advance(60);
    env.patch(
        &id,
        json!({"display_name": "Ledger", "time_zone": "Europe/Amsterdam"}),
    )
    .await
    .ok();

    let whole = env.history(&id, 200).await;
    let kinds: Vec<&str> = whole.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "change",
            "notice",
            "transition",
            "change",
            "transition",
            "sessions"
        ],
        "{whole:#?}"
    );
    let times: Vec<chrono::DateTime<Utc>> = whole
        .iter()
        .map(|e| serde_json::from_value(e["at"].clone()).unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );

    let latest = &whole[0];
    assert_eq!(
        latest["actor"],
        json!({"kind": "api_key", "id": env.key_prefix})
    );
    assert_eq!(
        latest["fields"],
        json!([
            {"field": "display_name", "from": "Acme books", "to": "Ledger"},
            {"field": "time_zone", "from": null, "to": "Europe/Amsterdam"},
        ])
    );
    assert_eq!(whole[1]["notice"], "reconnect_required");
    assert_eq!(whole[1]["state"], "sent");
    assert_eq!(whole[1]["recipients"], 1);
    assert_eq!(
        (whole[2]["from"].as_str(), whole[2]["to"].as_str()),
        (Some("connected"), Some("reconnect_required"))
    );
    assert_eq!(whole[2]["actor"]["kind"], "system");
    assert_eq!(
        whole[3]["fields"][0],
        json!({"field": "locale", "from": null, "to": "en"})
    );
    assert_eq!(whole[4]["to"], "connected");
    assert_eq!(whole[5]["key_prefix"], env.key_prefix);
    assert_eq!(whole[5]["count"], 2);

    // Pages of one, two and four hold the same list, in the same order, nothing twice.
    for limit in [1, 2, 4] {
        assert_eq!(env.history(&id, limit).await, whole, "limit {limit}");
    }
    let page = env
        .call("GET", &format!("/v1/connections/{id}/events?limit=2"), None)
        .await;
    assert!(page.ok()["next_cursor"].is_string());
    env.call("GET", &format!("/v1/connections/{id}/events?limit=0"), None)
        .await
        .problem(ProblemKind::InvalidRequest, "limit");
    env.call(
        "GET",
        &format!("/v1/connections/{id}/events?cursor=garbage"),
        None,
    )
    .await
    .problem(ProblemKind::InvalidRequest, "cursor");
    env.call_as(
        &env.session_only_key,
        "GET",
        &format!("/v1/connections/{id}/events"),
        None,
    )
    .await
    .problem(ProblemKind::Forbidden, "session");
}

async fn session_reads_of_two_keys_in_one_hour_are_two_counts_written_off_the_session_path(
    backend: Backend,
) {
    let env = env(backend).await;
    let id = env.connected().await;
    let connection_id = ConnectionId::parse(&id).unwrap();
    for _ in 0..3 {
        env.session_as(&env.key, &id).await;
        env.advance(30);
    }
    for _ in 0..2 {
        env.session_as(&env.second_key, &id).await;
        env.advance(30);
    }
    // The session answers did not wait for a write: the counts are still in the process.
    assert!(env
        .ctx
        .backend
        .store
        .list_session_reads(&connection_id, None, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(env.api.session_reads().unwritten(), 2);

    let sessions: Vec<Value> = env
        .history(&id, 50)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "sessions")
        .collect();
    let mut counts: Vec<(String, u64)> = sessions
        .iter()
        .map(|s| {
            (
                s["key_prefix"].as_str().unwrap().to_string(),
                s["count"].as_u64().unwrap(),
            )
        })
        .collect();
    counts.sort();
    let mut expected = vec![(env.key_prefix.clone(), 3), (env.second_prefix.clone(), 2)];
    expected.sort();
    assert_eq!(counts, expected, "{sessions:#?}");
    let first_key = sessions
        .iter()
        .find(|s| s["key_prefix"] == env.key_prefix)
        .unwrap();
    let first: chrono::DateTime<Utc> = serde_json::from_value(first_key["first"].clone()).unwrap();
    let last: chrono::DateTime<Utc> = serde_json::from_value(first_key["last"].clone()).unwrap();
    // The simulator's clock also runs on its own between the moves.
    let span = last - first;
    assert!(
        span >= Duration::seconds(60) && span < Duration::seconds(61),
        "{span}"
    );
    assert_eq!(
        first_key["at"],
        json!(Utc.with_ymd_and_hms(2025, 6, 2, 12, 0, 0).unwrap())
    );

    // Counted again in the same hour: the stored counts grow, no new entry.
    env.session_as(&env.second_key, &id).await;
    env.api.session_reads().flush().await.unwrap();
    let stored = env
        .ctx
        .backend
        .store
        .list_session_reads(&connection_id, None, 10)
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    let second = stored.iter().find(|k| k.id == env.second_prefix).unwrap();
    assert_eq!(second.item.count, 3);
}
