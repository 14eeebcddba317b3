//! Token lifetimes, the vault write budget and the request deadline.

use super::*;

broker_tests::on_both_backends!(
    a_refused_token_is_replaced_once_and_a_newer_one_is_handed_out_as_it_is,
    a_slow_provider_or_an_interrupted_refresh_answers_503_within_the_deadline,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_day_of_continuous_use_with_60_second_tokens_stays_within_the_vault_write_budget() {
    a_day_of_continuous_use_with_short_tokens(broker_tests::backends::aws().await).await;
}

/// Acumatica with 60-s access tokens and single-use refresh tokens, a session every 10 s for a simulated
/// day: refreshes stay within the vault write budget (at most 90 new versions per secret in the day),
/// every 200 carries a token the provider accepts, and every other answer is a 503 saying when to retry.
async fn a_day_of_continuous_use_with_short_tokens(backend: Backend) {
    let env = env(backend).await;
    env.sim
        .update_knobs(|k| k.acumatica_access_token_lifetime_secs = 60);
    let (id, _) = env.connected("acu").await;
    let writes_before = env.vault.writes_per_slot();
    let calls_before = env.sim.token_calls(sim::Provider::Acumatica);
    let (mut served, mut waited) = (0u32, 0u32);
    for _ in 0..(24 * 360) {
        let reply = env.session(&id).await;
        match reply.status {
            200 => {
                let token = reply.json["access_token"].as_str().unwrap();
                assert!(
                    env.sim.is_access_token_valid(token),
                    "an invalid token was handed out"
                );
                served += 1;
            }
            503 => {
                reply.problem(ProblemKind::TemporarilyUnavailable);
                waited += 1;
            }
            other => panic!("{other}: {}", reply.text),
        }
        env.advance(10);
    }
    let writes: Vec<u64> = env
        .vault
        .writes_per_slot()
        .iter()
        .zip(writes_before)
        .map(|(w, before)| w - before)
        .collect();
    let refreshes = env.sim.token_calls(sim::Provider::Acumatica) - calls_before;
    eprintln!(
        "60-s tokens, a session every 10 s for 24 h: {refreshes} refreshes, vault writes per slot {writes:?}, {served} served, {waited} told to wait"
    );
    for per_slot in &writes {
        assert!(
            *per_slot <= 90,
            "a secret took {per_slot} versions in a day"
        );
    }
    assert!(
        refreshes >= 160,
        "the budget is used, not starved: {refreshes}"
    );
    assert_eq!(env.sim.max_presentations_of_any_refresh_token(), 1);
    assert_eq!(env.status_of(&id).await, "connected");
    let view = env
        .call("GET", &format!("/v1/connections/{id}"), None)
        .await;
    assert!(
        view.json["refresh_limited_since"].is_string(),
        "the connection says its refreshes are held back: {}",
        view.text
    );
}

/// An integration whose provider refused a token the broker handed out asks for a new one: the broker
/// refreshes once (single flight), and a caller presenting an older token gets the newer one as it is.
async fn a_refused_token_is_replaced_once_and_a_newer_one_is_handed_out_as_it_is(backend: Backend) {
    let env = env(backend).await;
    let (id, minted) = env.connected("acu").await;
    let calls = env.sim.token_calls(sim::Provider::Acumatica);
    let path = format!("/v1/connections/{id}/session");
    let refused = json!({ "rejected_access_token": minted.access_token });
    let (first, second) = tokio::join!(
        env.call("POST", &path, Some(refused.clone())),
        env.call("POST", &path, Some(refused.clone())),
    );
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(second.status, 200, "{}", second.text);
    let new_token = first.json["access_token"].as_str().unwrap();
    assert_ne!(new_token, minted.access_token);
    assert_eq!(
        second.json["access_token"], new_token,
        "one refresh for both"
    );
    assert_eq!(env.sim.token_calls(sim::Provider::Acumatica), calls + 1);
    // The old token again: the current one is newer and is handed out without a refresh.
    let again = env.call("POST", &path, Some(refused)).await;
    assert_eq!(again.json["access_token"], new_token);
    assert_eq!(env.sim.token_calls(sim::Provider::Acumatica), calls + 1);
    // A named validity is honoured within bounds; nonsense is refused clearly.
    let long = env
        .call("POST", &path, Some(json!({ "min_validity_secs": 3000 })))
        .await;
    assert_eq!(long.status, 200, "{}", long.text);
    assert!(long.json["expires_in"].as_i64().unwrap() > 3000);
    let refused = env
        .call("POST", &path, Some(json!({ "min_validity_secs": 0 })))
        .await;
    refused.problem(ProblemKind::ValidationFailed);
    let unknown = env
        .call("POST", &path, Some(json!({ "validity": 10 })))
        .await;
    unknown.problem(ProblemKind::InvalidRequest);
    assert_eq!(env.sim.max_presentations_of_any_refresh_token(), 1);
}

/// The session call answers within its deadline: a provider slower than the time left makes a 503 with
/// `Retry-After` (no token spent unseen: the connection refreshes normally afterwards), and so does a
/// marker left by an interrupted refresh, while its call could still be running.
async fn a_slow_provider_or_an_interrupted_refresh_answers_503_within_the_deadline(
    backend: Backend,
) {
    let within = std::time::Duration::from_secs(8);
    let settings = ApiSettings {
        request_budget: within,
        ..ApiSettings::default()
    };
    // 8 s per request: 1.5 s to answer, 4 s for the writes after a provider call, 2 s for the call.
    let engine = EngineSettings {
        call_timeout: std::time::Duration::from_secs(2),
        ..EngineSettings::default()
    };
    let env = env_with_engine(backend, settings, engine).await;
    let (id, minted) = env.connected("acu").await;
    let connection_id = ConnectionId::parse(&id).unwrap();
    let store = &env.ctx.backend.store;
    let stored = store.get_connection(&connection_id).await.unwrap().unwrap();
    env.advance(3605); // expired

    // A provider answering in 30 s: the call gives up in time, and no retry starts that could not end.
    env.sim
        .set_route_latency("acumatica.token", std::time::Duration::from_secs(30));
    let started = std::time::Instant::now();
    let reply = env.session(&id).await;
    assert!(started.elapsed() < within, "{:?}", started.elapsed());
    reply.problem(ProblemKind::TemporarilyUnavailable);
    assert!(reply.retry_after.is_some(), "{}", reply.text);
    let after = store.get_connection(&connection_id).await.unwrap().unwrap();
    assert_eq!(
        after.credentials, stored.credentials,
        "the tokens are intact"
    );
    assert!(after.refresh_in_flight.is_none());
    env.sim
        .set_route_latency("acumatica.token", std::time::Duration::ZERO);

    // A marker left by a refresh whose call may still be running: wait, within the deadline.
    let mut connection = store.get_connection(&connection_id).await.unwrap().unwrap();
    let current = connection.credentials.clone().unwrap();
    connection.refresh_in_flight = Some(broker_core::domain::RefreshInFlight {
        started_at: env.ctx.clock.now(),
        spending: current.clone(),
        target: CredentialsPointer {
            slot: current.slot.other(),
            write: WriteId::generate(),
        },
        escrow: None,
    });
    store
        .save_connection(&connection, broker_core::ports::Fence::Version, &[])
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let reply = env.session(&id).await;
    assert!(started.elapsed() < within, "{:?}", started.elapsed());
    reply.problem(ProblemKind::TemporarilyUnavailable);
    let retry_after: u64 = reply.retry_after.as_deref().unwrap().parse().unwrap();
    assert!(
        (1..=120).contains(&retry_after),
        "Retry-After names when the interrupted call's budget ends: {retry_after}"
    );

    // Past the interrupted call's budget, the next caller recovers and refreshes once.
    env.advance(env.ctx.engine.settings().call_budget().num_seconds() + 1);
    let reply = env.session(&id).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_ne!(reply.json["access_token"], minted.access_token.as_str());
    assert!(env
        .sim
        .is_access_token_valid(reply.json["access_token"].as_str().unwrap()));
    assert_eq!(env.sim.max_presentations_of_any_refresh_token(), 1);
    assert_eq!(env.status_of(&id).await, "connected");
}
