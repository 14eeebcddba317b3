//! Single flight across callers and "processes", and fencing of a lease holder that outlived its lease.

use super::*;

broker_tests::on_both_backends!(
    fifty_callers_and_a_scheduled_run_cause_exactly_one_refresh,
    a_lease_holder_that_outlives_its_lease_cannot_overwrite_and_no_token_is_spent_twice,
    a_refresh_that_outlives_a_disconnect_leaves_no_tokens_behind,
);

async fn fifty_callers_and_a_scheduled_run_cause_exactly_one_refresh(backend: Backend) {
    let (world, connection) = World::with_expired_exact_token(backend).await;
    let before = world.sim.token_calls(Provider::Exact);
    // Two broker processes share the stores, each with its own engine; plus a third for the schedule.
    let (a, b, scheduler) = (
        world.process(settings()),
        world.process(settings()),
        world.process(settings()),
    );
    let mut tasks = Vec::new();
    for i in 0..50 {
        let ctx = if i % 2 == 0 { a.clone() } else { b.clone() };
        let id = connection.id.clone();
        tasks.push(tokio::spawn(async move {
            let report = ctx.engine.refresh(&id, on_demand()).await.unwrap();
            let tokens = ctx
                .engine
                .credentials(&report.connection)
                .await
                .unwrap()
                .unwrap();
            (
                report.outcome,
                tokens
                    .token_set()
                    .unwrap()
                    .access_token
                    .expose()
                    .to_string(),
            )
        }));
    }
    // The scheduled run sees the connection as due too.
    let mut due = world
        .stores
        .store
        .get_connection(&connection.id)
        .await
        .unwrap()
        .unwrap();
    due.next_refresh_at = Some(world.clock.now() - Duration::seconds(1));
    let _ = world
        .stores
        .store
        .save_connection(&due, Fence::Version, &[])
        .await;
    let summary = broker_tests::world::run_scheduled_within(
        &scheduler,
        std::time::Duration::from_secs(120),
        &whole_run(),
    )
    .await;
    let mut tokens = std::collections::HashSet::new();
    let mut refreshed = 0;
    for task in tasks {
        let (outcome, token) = task.await.unwrap();
        refreshed += usize::from(outcome == Outcome::Refreshed);
        tokens.insert(token);
    }
    refreshed += summary.count(OutcomeKind::Refreshed);
    assert_eq!(
        world.sim.token_calls(Provider::Exact) - before,
        1,
        "the provider saw exactly one refresh"
    );
    assert_eq!(
        refreshed, 1,
        "one caller refreshed; the others used its result ({summary:?})"
    );
    assert_eq!(tokens.len(), 1, "every caller got the same access token");
    let token = tokens.into_iter().next().unwrap();
    assert!(
        world.sim.is_access_token_valid(&token),
        "the simulator accepts it"
    );
    assert_eq!(world.max_presentations(), 1);
}

async fn a_lease_holder_that_outlives_its_lease_cannot_overwrite_and_no_token_is_spent_twice(
    backend: Backend,
) {
    let (world, connection) = World::with_expired_exact_token(backend).await;
    let slow = slow_worker(&world);
    let other = world.process(settings());
    let id = connection.id.clone();
    let slow_task = {
        let (slow, id) = (slow.clone(), id.clone());
        tokio::spawn(async move { slow.engine.refresh(&id, on_demand()).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    // The lease has expired; the other worker takes it over while the slow call is still running.
    let report = other.engine.refresh(&id, on_demand()).await.unwrap();
    let slow_report = slow_task.await.unwrap().unwrap();
    assert!(
        matches!(report.outcome, Outcome::Recovered | Outcome::AlreadyFresh),
        "{:?}",
        report.outcome
    );
    assert!(
        matches!(
            slow_report.outcome,
            Outcome::Recovered | Outcome::AlreadyFresh
        ),
        "{:?}",
        slow_report.outcome
    );
    assert_eq!(
        world.max_presentations(),
        1,
        "no refresh token was presented twice"
    );
    assert_eq!(world.sim.token_calls(Provider::Exact), 1);
    let (stored, tokens) = world.current(&id).await;
    assert_eq!(stored.status(), ConnectionStatus::Connected);
    assert!(stored.refresh_in_flight.is_none());
    assert!(world
        .sim
        .is_access_token_valid(tokens.unwrap().access_token.expose()));
}

/// A refresh still waiting for the provider when its lease ends and the connection is disconnected:
/// its late vault write is fenced off and deleted again, so no token outlives the disconnect.
async fn a_refresh_that_outlives_a_disconnect_leaves_no_tokens_behind(backend: Backend) {
    let (world, connection) = World::with_expired_exact_token(backend).await;
    let slow = slow_worker(&world);
    let id = connection.id.clone();
    let slow_task = {
        let (slow, id) = (slow.clone(), id.clone());
        tokio::spawn(async move { slow.engine.refresh(&id, on_demand()).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (in_flight, _) = world.current(&id).await;
    let late_write = in_flight
        .refresh_in_flight
        .expect("the refresh recorded where it will write")
        .target;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // The slow worker's lease has expired: the disconnect takes it and deletes the tokens.
    let api = IntegrationApi::new(world.process(settings()));
    let caller = broker_tests::world::ops_caller(&world.tenant, world.clock.now());
    let view = api.disconnect(&caller, id.as_str()).await.unwrap();
    assert_eq!(view.status, "disconnected");
    let _ = slow_task.await.unwrap();
    let (stored, _) = world.current(&id).await;
    assert_eq!(stored.status(), ConnectionStatus::Disconnected);
    for pointer in [connection.credentials.clone().unwrap(), late_write] {
        assert!(
            world
                .stores
                .vault
                .get_credentials(&world.tenant, &id, &pointer)
                .await
                .unwrap()
                .is_none(),
            "{pointer:?} still holds tokens"
        );
    }
}

/// A worker whose lease lasts 0.5 s while the provider takes 1.5 s to answer.
fn slow_worker(world: &World) -> BrokerContext {
    world
        .sim
        .set_route_latency("exact.token", std::time::Duration::from_millis(1500));
    world.process(EngineSettings {
        retries_when_unavailable: 0,
        lease_margin: Duration::milliseconds(-4_500),
        ..settings()
    })
}
