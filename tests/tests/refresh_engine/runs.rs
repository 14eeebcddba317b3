//! Scheduled runs: cool-down after a revocation or an outage, scale, reuse detection, and deadlines.

use super::*;

broker_tests::on_both_backends!(a_revoked_connection_is_not_retried_and_an_outage_is_cooled_down,);

async fn a_revoked_connection_is_not_retried_and_an_outage_is_cooled_down(backend: Backend) {
    let world = World::new(backend).await;
    let app = world.exact_app().await;
    let ctx = world.process(settings());
    // Revoked: one attempt, then reconnect required and no more calls however often it is asked.
    let revoked = world.connected(&app).await;
    world.sim.revoke_grant(Provider::Exact, "demo.user", None);
    world.advance(Duration::seconds(700));
    let calls = world.sim.token_calls(Provider::Exact);
    for _ in 0..20 {
        let _ = ctx.engine.refresh(&revoked.id, on_demand()).await.unwrap();
        world.advance(Duration::minutes(10));
    }
    assert_eq!(
        world.sim.token_calls(Provider::Exact) - calls,
        1,
        "a revoked grant is asked once"
    );
    let (stored, _) = world.current(&revoked.id).await;
    assert!(
        matches!(stored.status(), ConnectionStatus::ReconnectRequired { .. }),
        "{:?}",
        stored.status()
    );
    // An outage: attempts per hour stay under the ceiling, whatever the callers do.
    let broken = world.connected(&app).await;
    world.advance(Duration::seconds(700));
    world.sim.inject_fault(FaultRule::always(
        "exact.token",
        FaultAction::Status {
            status: 503,
            body: "down".into(),
            content_type: Some("text/plain".into()),
        },
    ));
    let calls = world.sim.token_calls(Provider::Exact);
    for _ in 0..120 {
        let _ = ctx.engine.refresh(&broken.id, on_demand()).await.unwrap();
        world.advance(Duration::seconds(30));
    }
    let attempts = world.sim.token_calls(Provider::Exact) - calls;
    let ceiling = (ctx.engine.settings().max_failures_per_hour as u64)
        * (1 + u64::from(ctx.engine.settings().retries_when_unavailable));
    assert!(
        attempts <= ceiling,
        "{attempts} calls in an hour of outage (ceiling {ceiling})"
    );
    let (stored, _) = world.current(&broken.id).await;
    assert!(
        matches!(stored.status(), ConnectionStatus::RefreshFailing { .. }),
        "{:?}",
        stored.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_due_connections_are_refreshed_in_one_run_and_all_accounted_for() {
    let world = World::new(broker_tests::backends::embedded()).await;
    // One demo user stands in for a thousand customers here; Exact's cap is per user.
    world.sim.update_knobs(|k| k.exact_daily_token_cap = 10_000);
    let app = world.exact_app().await;
    let mut ids = Vec::new();
    for _ in 0..1000 {
        ids.push(world.connected(&app).await.id);
    }
    world.advance(Duration::days(26));
    world
        .sim
        .set_route_latency("exact.token", std::time::Duration::from_millis(50));
    let ctx = world.process(settings());
    let started = std::time::Instant::now();
    let summary = broker_tests::world::run_scheduled_within(
        &ctx,
        std::time::Duration::from_secs(600),
        &whole_run(),
    )
    .await;
    println!(
        "1000 refreshes at 50 ms provider latency: {:?}, {summary:?}",
        started.elapsed()
    );
    assert_eq!(summary.taken, 1000);
    assert_eq!(
        summary.errors + summary.outcomes.values().sum::<usize>(),
        1000,
        "every connection accounted for"
    );
    assert_eq!(summary.count(OutcomeKind::Refreshed), 1000, "{summary:?}");
    assert_eq!(world.max_presentations(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_refreshes_never_trigger_oidc_provider_reuse_detection() {
    use broker_core::clock::SystemClock;
    const REDIRECT: &str = "http://127.0.0.1:9/oidc/callback";
    let stores = broker_tests::backends::embedded().stores();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let oidc = broker_tests::oidc::Connected::start(&stores, clock.clone(), REDIRECT, 3600).await;
    let http = broker_tests::provider_http();
    let ctx =
        broker_tests::world::process(&stores, oidc.catalogue, http, clock.clone(), settings());
    let secret = ClientSecret::new(oidc.server.client_secret.clone());
    let client = ctx.providers.oauth_client(&oidc.app, secret).unwrap();
    let keeper = CredentialKeeper::new(stores.store.clone(), stores.vault.clone());
    let mut connection = oidc.connection;
    // Pretend the access token expired, then 20 callers need a token at once, three times over.
    for round in 0..3 {
        connection.access_expires_at = Some(clock.now() - Duration::seconds(1));
        connection = stores
            .store
            .save_connection(&connection, Fence::Version, &[])
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (ctx, id) = (ctx.clone(), connection.id.clone());
            tasks.push(tokio::spawn(async move {
                ctx.engine.refresh(&id, on_demand()).await.unwrap().outcome
            }));
        }
        let mut refreshed = 0;
        for task in tasks {
            refreshed += usize::from(task.await.unwrap() == Outcome::Refreshed);
        }
        assert_eq!(
            refreshed, 1,
            "round {round}: one refresh for twenty callers"
        );
        connection = stores
            .store
            .get_connection(&connection.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(connection.status(), ConnectionStatus::Connected);
    }
    // The grant is intact: a reuse would have made oidc-provider revoke it, failing this refresh.
    let tokens = keeper
        .current(&connection)
        .await
        .unwrap()
        .unwrap()
        .token_set()
        .cloned()
        .unwrap();
    let refreshed = client.refresh(&tokens, None).await;
    assert!(
        refreshed.is_ok(),
        "the grant survived: {:?}",
        refreshed.err().map(|e| e.to_string())
    );
}

/// Short-lived access tokens that nobody asks for are not chased by the schedule: runs every five
/// minutes for two days of 60-s tokens refresh only to keep the refresh token alive (Acumatica with a
/// 2-day sliding window: at half the window, once), never once per access-token expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_schedule_keeps_the_refresh_token_alive_and_ignores_idle_short_access_tokens() {
    let world = World::new(broker_tests::backends::embedded()).await;
    world
        .sim
        .update_knobs(|k| k.acumatica_access_token_lifetime_secs = 60);
    let app = world
        .acumatica_app(AcumaticaRefreshPolicy::Sliding {
            sliding_secs: 2 * 86_400,
            absolute_cap_secs: None,
        })
        .await;
    let connection = world.connected(&app).await;
    let ctx = world.process(settings());
    let calls = world.sim.token_calls(Provider::Acumatica);
    let mut refreshed = 0;
    for _ in 0..(2 * 24 * 12) {
        world.advance(Duration::minutes(5));
        let within = std::time::Duration::from_secs(60);
        let summary = broker_tests::world::run_scheduled_within(&ctx, within, &whole_run()).await;
        refreshed += summary.count(OutcomeKind::Refreshed);
    }
    let token_calls = world.sim.token_calls(Provider::Acumatica) - calls;
    assert_eq!(u64::try_from(refreshed).unwrap(), token_calls);
    assert!(
        (1..=2).contains(&token_calls),
        "{token_calls} refreshes in two days of 60-s tokens nobody asked for"
    );
    let (stored, tokens) = world.current(&connection.id).await;
    assert_eq!(stored.status(), ConnectionStatus::Connected);
    assert!(tokens.unwrap().refresh_expires_at.unwrap() > world.clock.now());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_on_demand_refresh_that_cannot_finish_before_its_deadline_is_not_started() {
    use broker_core::refresh::Demand;
    let world = World::new(broker_tests::backends::embedded()).await;
    let app = world.exact_app().await;
    let connection = world.connected(&app).await;
    world.advance(Duration::seconds(700)); // expired
    let ctx = world.process(settings()); // 5-s calls, 4 s kept for the writes after them
    let calls = world.sim.token_calls(Provider::Exact);
    let soon = tokio::time::Instant::now() + std::time::Duration::from_secs(8);
    let trigger = Trigger::OnDemand(Demand::valid_for(Duration::seconds(60)).by(Some(soon)));
    let report = ctx.engine.refresh(&connection.id, trigger).await.unwrap();
    assert_eq!(report.outcome, Outcome::OutOfTime);
    assert_eq!(
        world.sim.token_calls(Provider::Exact),
        calls,
        "no call started"
    );
    assert!(
        report.connection.refresh_in_flight.is_none(),
        "no marker left"
    );
    // With time for a whole call, it refreshes.
    let later = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let trigger = Trigger::OnDemand(Demand::valid_for(Duration::seconds(60)).by(Some(later)));
    let report = ctx.engine.refresh(&connection.id, trigger).await.unwrap();
    assert_eq!(report.outcome, Outcome::Refreshed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_stops_taking_work_before_its_deadline_and_the_next_run_finishes_it() {
    let world = World::new(broker_tests::backends::embedded()).await;
    let app = world.exact_app().await;
    for _ in 0..40 {
        world.connected(&app).await;
    }
    world.advance(Duration::days(26));
    world
        .sim
        .set_route_latency("exact.token", std::time::Duration::from_millis(200));
    let ctx = world.process(settings());
    let settings = RunSettings {
        concurrency: 2,
        stop_margin: std::time::Duration::from_millis(500),
        ..RunSettings::default()
    };
    let first = broker_tests::world::run_scheduled_within(
        &ctx,
        std::time::Duration::from_millis(1500),
        &settings,
    )
    .await;
    assert!(first.stopped_early, "{first:?}");
    assert!(first.taken < 40 && first.taken > 0, "{first:?}");
    assert_eq!(
        first.outcomes.values().sum::<usize>() + first.errors,
        first.taken,
        "all it took is accounted for"
    );
    let second = broker_tests::world::run_scheduled_within(
        &ctx,
        std::time::Duration::from_secs(120),
        &settings,
    )
    .await;
    assert!(!second.stopped_early);
    assert_eq!(
        first.count(OutcomeKind::Refreshed) + second.count(OutcomeKind::Refreshed),
        40,
        "{first:?} {second:?}"
    );
}
