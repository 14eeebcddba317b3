//! Early refusals, the daily token call budget, and months of simulated time: idle connections and
//! Acumatica's absolute, sliding and capped expiry.

use super::*;

broker_tests::on_both_backends!(
    an_idle_exact_connection_survives_ninety_days,
    acumatica_absolute_expiry_is_marked_ahead_and_ends_in_reconnect_required,
    acumatica_absolute_expiry_counts_from_the_latest_authorization,
    acumatica_sliding_expiry_stays_alive,
    acumatica_capped_sliding_expiry_is_warned_of_and_ends_at_its_cap,
);

/// Exact's refusal of a refresh within 570 s is undocumented: whatever shape it takes, the broker keeps
/// the connection and tries again later. The simulator's interval is set longer than the broker's, as
/// when the two clocks disagree, so the provider refuses a refresh the broker thought allowed.
async fn an_unrecognised_early_refusal_keeps_the_connection(status: u16, body: serde_json::Value) {
    let world = World::new(broker_tests::backends::embedded()).await;
    world.sim.update_knobs(|k| {
        k.exact_min_refresh_interval_secs = 900;
        k.exact_early_refresh_status = status;
        k.exact_early_refresh_body = body.clone();
    });
    let app = world.exact_app().await;
    let connection = world.connected(&app).await;
    world.advance(Duration::seconds(700));
    let ctx = world.process(settings());
    let report = ctx
        .engine
        .refresh(&connection.id, on_demand())
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, Outcome::Failed(_)),
        "{body}: {:?}",
        report.outcome
    );
    let (stored, tokens) = world.current(&connection.id).await;
    assert!(stored.status().is_usable(), "{body}: {:?}", stored.status());
    assert!(tokens.is_some(), "the tokens are kept");
    world.advance(Duration::seconds(300));
    let report = ctx
        .engine
        .refresh(&connection.id, on_demand())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Refreshed, "{body}");
    assert_eq!(report.connection.status(), ConnectionStatus::Connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_early_refusal_with_an_error_field_keeps_the_connection() {
    an_unrecognised_early_refusal_keeps_the_connection(
        400,
        serde_json::json!({"error": "invalid_request", "error_description": "Access token is not yet expired."}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_early_refusal_without_an_error_field_keeps_the_connection() {
    an_unrecognised_early_refusal_keeps_the_connection(
        401,
        serde_json::json!({"message": "Access denied."}),
    )
    .await;
}

/// Exact caps token calls per app and user per day: the engine stops at the catalogue's budget, below
/// the provider's cap, instead of being refused at it; the next UTC day it goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daily_token_call_budget_is_never_exceeded() {
    let mut catalogue = Catalogue::built_in();
    catalogue
        .merge_json(
            r#"{"definitions":[{"id":"exact_online.nl","extends":"exact_online.nl",
                "refresh":{"rotation":"single_use","expiry":{"kind":"idle","days":30},
                           "min_interval_secs":570,"max_token_calls_per_day":3}}]}"#,
        )
        .unwrap();
    let world = World::with_catalogue(broker_tests::backends::embedded(), catalogue).await;
    world.sim.update_knobs(|k| k.exact_daily_token_cap = 3);
    let app = world.exact_app().await;
    let connection = world.connected(&app).await;
    let ctx = world.process(settings());
    for _ in 0..3 {
        world.advance(Duration::seconds(600));
        assert_eq!(
            refresh(&ctx, &connection.id, on_demand()).await,
            Outcome::Refreshed
        );
    }
    let calls = world.sim.token_calls(Provider::Exact);
    world.advance(Duration::seconds(600));
    let report = ctx
        .engine
        .refresh(&connection.id, on_demand())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::CoolingDown);
    assert_eq!(
        world.sim.token_calls(Provider::Exact),
        calls,
        "no call made"
    );
    world.advance(Duration::hours(12));
    let report = ctx
        .engine
        .refresh(&connection.id, on_demand())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Refreshed, "a new day");
    assert_eq!(report.connection.status(), ConnectionStatus::Connected);
}

/// Runs the schedule once a day (as a stand-in for every few minutes) for `days` days.
async fn run_daily(
    world: &World,
    ctx: &BrokerContext,
    days: i64,
) -> Vec<broker_core::refresh::RunSummary> {
    let mut summaries = Vec::new();
    for _ in 0..days {
        world.advance(Duration::days(1));
        let within = std::time::Duration::from_secs(60);
        summaries.push(broker_tests::world::run_scheduled_within(ctx, within, &whole_run()).await);
    }
    summaries
}

async fn an_idle_exact_connection_survives_ninety_days(backend: Backend) {
    let world = World::new(backend).await;
    let app = world.exact_app().await;
    let connection = world.connected(&app).await;
    let ctx = world.process(settings());
    let summaries = run_daily(&world, &ctx, 90).await;
    let refreshed: usize = summaries
        .iter()
        .map(|s| s.count(OutcomeKind::Refreshed))
        .sum();
    assert!(
        (3..=4).contains(&refreshed),
        "kept alive every ~25 days, not more: {refreshed}"
    );
    let (stored, tokens) = world.current(&connection.id).await;
    assert_eq!(stored.status(), ConnectionStatus::Connected);
    let tokens = tokens.unwrap();
    assert!(
        tokens.refresh_expires_at.unwrap() > world.clock.now() + Duration::days(4),
        "never near idle expiry"
    );
    // Still good: an on-demand refresh now works against the simulator.
    world.advance(Duration::seconds(700));
    assert_eq!(
        refresh(&ctx, &connection.id, on_demand()).await,
        Outcome::Refreshed
    );
    assert_eq!(world.max_presentations(), 1);
}

async fn acumatica_absolute_expiry_is_marked_ahead_and_ends_in_reconnect_required(
    backend: Backend,
) {
    let world = World::new(backend).await;
    let app = world
        .acumatica_app(AcumaticaRefreshPolicy::Absolute {
            lifetime_secs: 30 * 86_400,
        })
        .await;
    let connection = world.connected(&app).await;
    let start = world.clock.now();
    let ctx = world.process(settings());
    let summaries = run_daily(&world, &ctx, 25).await;
    assert!(summaries.iter().all(|s| s.errors == 0));
    let (stored, _) = world.current(&connection.id).await;
    assert_eq!(stored.status(), ConnectionStatus::Connected);
    let end = stored
        .refresh_expires_at
        .expect("the absolute end is known ahead, for the notifier");
    assert!(
        (end - (start + Duration::days(30))).num_minutes().abs() < 5,
        "{end} vs {start}"
    );
    run_daily(&world, &ctx, 10).await;
    let (stored, _) = world.current(&connection.id).await;
    let ConnectionStatus::ReconnectRequired { reason } = &stored.status() else {
        panic!("{:?}", stored.status())
    };
    assert_eq!(
        reason.kind,
        ReconnectKind::RefreshTokenExpired,
        "{reason:?}"
    );
}

/// Acumatica's 30 days run from each authorization: after a reconnect the new grant gets its own 30
/// days, not what was left of the connection's first.
async fn acumatica_absolute_expiry_counts_from_the_latest_authorization(backend: Backend) {
    let world = World::new(backend).await;
    let app = world
        .acumatica_app(AcumaticaRefreshPolicy::Absolute {
            lifetime_secs: 30 * 86_400,
        })
        .await;
    let connection = world.connected(&app).await;
    let ctx = world.process(settings());
    run_daily(&world, &ctx, 31).await;
    let (expired, _) = world.current(&connection.id).await;
    assert!(matches!(
        expired.status(),
        ConnectionStatus::ReconnectRequired { .. }
    ));
    let reconnected_at = world.clock.now();
    world.authorized(&app, expired).await;
    let summaries = run_daily(&world, &ctx, 25).await;
    assert!(summaries.iter().all(|s| s.errors == 0));
    assert!(
        summaries
            .iter()
            .map(|s| s.count(OutcomeKind::Refreshed))
            .sum::<usize>()
            > 0,
        "the new grant was refreshed: {summaries:?}"
    );
    let (stored, tokens) = world.current(&connection.id).await;
    assert_eq!(
        stored.status(),
        ConnectionStatus::Connected,
        "{:?}",
        stored.status()
    );
    let end = stored.refresh_expires_at.unwrap();
    assert!(
        (end - (reconnected_at + Duration::days(30)))
            .num_minutes()
            .abs()
            < 5,
        "{end} vs reconnected at {reconnected_at}"
    );
    assert_eq!(tokens.unwrap().refresh_expires_at, Some(end));
    run_daily(&world, &ctx, 10).await;
    let (stored, _) = world.current(&connection.id).await;
    assert!(matches!(
        stored.status(),
        ConnectionStatus::ReconnectRequired { .. }
    ));
}

/// Refresh and the notifier's sweep, once a day for `days` days; the days on which an email was
/// written to `outbox`.
async fn daily_with_notifier(
    world: &World,
    ctx: &BrokerContext,
    outbox: &std::path::Path,
    days: i64,
) -> Vec<i64> {
    let notifier = Notifier::new(
        ctx.clone(),
        Arc::new(OutboxMailer::new(outbox)),
        NotifySettings::new(EmailAddress::parse("broker@example.com").unwrap()),
    );
    let emails = || std::fs::read_dir(outbox).map(|d| d.count()).unwrap_or(0);
    let mut mailed = Vec::new();
    for day in 1..=days {
        let before = emails();
        run_daily(world, ctx, 1).await;
        notifier.daily().await.unwrap();
        if emails() > before {
            mailed.push(day);
        }
    }
    mailed
}

/// An instance whose connected application uses sliding expiration (registered so with the app):
/// refreshing keeps it alive for good, and nobody is told to reconnect at day 30.
async fn acumatica_sliding_expiry_stays_alive(backend: Backend) {
    let world = World::new(backend).await;
    let app = world
        .acumatica_app(AcumaticaRefreshPolicy::Sliding {
            sliding_secs: 15 * 86_400,
            absolute_cap_secs: None,
        })
        .await;
    let connection = world.connected(&app).await;
    let ctx = world.process(settings());
    let outbox = broker_tests::backends::temp_dir("outbox");
    let mailed = daily_with_notifier(&world, &ctx, &outbox, 90).await;
    assert!(mailed.is_empty(), "emails on days {mailed:?}");
    let (stored, tokens) = world.current(&connection.id).await;
    assert_eq!(
        stored.status(),
        ConnectionStatus::Connected,
        "{:?}",
        stored.status()
    );
    assert!(
        tokens.unwrap().refresh_expires_at.unwrap() > world.clock.now(),
        "the sliding window moved on"
    );
    world.advance(Duration::hours(2));
    assert_eq!(
        refresh(&ctx, &connection.id, on_demand()).await,
        Outcome::Refreshed
    );
}

/// Sliding, but at most 45 days after authorization: once the window reaches the cap the end is
/// fixed, so the people on it are warned at the lead times (7 days, a reminder 3 days later, 1 day)
/// and told to reconnect when it ends (then reminded 3 days later).
async fn acumatica_capped_sliding_expiry_is_warned_of_and_ends_at_its_cap(backend: Backend) {
    let world = World::new(backend).await;
    let app = world
        .acumatica_app(AcumaticaRefreshPolicy::Sliding {
            sliding_secs: 15 * 86_400,
            absolute_cap_secs: Some(45 * 86_400),
        })
        .await;
    let connection = world.connected(&app).await;
    let ctx = world.process(settings());
    let outbox = broker_tests::backends::temp_dir("outbox");
    let mailed = daily_with_notifier(&world, &ctx, &outbox, 50).await;
    assert_eq!(mailed, vec![38, 41, 44, 45, 48]);
    let (stored, _) = world.current(&connection.id).await;
    assert!(
        matches!(stored.status(), ConnectionStatus::ReconnectRequired { .. }),
        "{:?}",
        stored.status()
    );
}
