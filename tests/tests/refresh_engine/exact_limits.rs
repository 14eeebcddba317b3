//! Exact's per-user limits shared by all of one user's connections.

use super::*;

broker_tests::on_both_backends!(
    one_exact_users_connections_stop_together_at_the_shared_daily_cap,
    failed_calls_across_one_users_connections_stop_before_exacts_block,
);

/// Exact counts token calls per app and user, and one user may connect several divisions: their
/// connections share one daily budget, kept in the store, so two broker processes (each with its own
/// engine) stop together, while another user's connection goes on.
async fn one_exact_users_connections_stop_together_at_the_shared_daily_cap(backend: Backend) {
    let mut catalogue = Catalogue::built_in();
    catalogue
        .merge_json(
            r#"{"definitions":[{"id":"exact_online.nl","extends":"exact_online.nl",
                "refresh":{"rotation":"single_use","expiry":{"kind":"idle","days":30},
                           "min_interval_secs":570,"max_token_calls_per_day":180,
                           "max_token_calls_per_app_user_per_day":4,
                           "max_failed_token_calls_per_app_user_per_hour":8}}]}"#,
        )
        .unwrap();
    let world = World::with_catalogue(backend, catalogue).await;
    // Exact's own cap, scaled down with the broker's: the broker must stop at it, never be refused.
    world.sim.update_knobs(|k| k.exact_daily_token_cap = 4);
    let app = world.exact_app().await;
    let first = world.connected_as(&app, "demo.user", 100).await;
    let second = world.connected_as(&app, "demo.user", 200).await;
    let other_user = world.connected_as(&app, "other.user", 300).await;
    let (one, two) = (world.process(settings()), world.process(settings()));
    for _ in 0..2 {
        for (ctx, connection) in [(&one, &first), (&two, &second)] {
            world.advance(Duration::seconds(600));
            assert_eq!(
                refresh(ctx, &connection.id, on_demand()).await,
                Outcome::Refreshed
            );
        }
    }
    let calls = world.sim.token_calls(Provider::Exact);
    let midnight = Utc.with_ymd_and_hms(2026, 3, 3, 0, 0, 0).unwrap();
    world.advance(Duration::seconds(600));
    let held = Outcome::AppUserLimited(AppUserHold::DailyCalls { until: midnight });
    for (ctx, connection) in [(&one, &first), (&two, &second)] {
        let report = ctx
            .engine
            .refresh(&connection.id, on_demand())
            .await
            .unwrap();
        assert_eq!(report.outcome, held, "each connection kept to its own 180");
    }
    // The scheduled run (here for the keep-alive refresh that falls due) holds it too, and looks
    // again when the day's budget is back.
    let (mut due, _) = world.current(&second.id).await;
    due.next_refresh_at = Some(world.clock.now());
    world.save(&due).await;
    let report = world
        .process(settings())
        .engine
        .refresh(&second.id, Trigger::Scheduled)
        .await
        .unwrap();
    assert_eq!(report.outcome, held);
    assert_eq!(report.connection.next_refresh_at, Some(midnight));
    assert_eq!(report.connection.status(), ConnectionStatus::Connected);
    assert_eq!(
        world.sim.token_calls(Provider::Exact),
        calls,
        "no call made past the shared cap"
    );
    let report = two
        .engine
        .refresh(&other_user.id, on_demand())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Refreshed, "another user goes on");
    world.advance(Duration::hours(12));
    let report = one.engine.refresh(&first.id, on_demand()).await.unwrap();
    assert_eq!(report.outcome, Outcome::Refreshed, "a new day");
}

/// Exact blocks an app for an hour after more than 10 failed token calls per app and user in an hour.
/// Two connections of one user each stay below their own ceiling (6 an hour) yet would pass 10
/// together; counted together in the store, they stop at 8, and the simulator never blocks the app.
async fn failed_calls_across_one_users_connections_stop_before_exacts_block(backend: Backend) {
    let world = World::new(backend).await;
    let app = world.exact_app().await;
    let first = world.connected_as(&app, "demo.user", 100).await;
    let second = world.connected_as(&app, "demo.user", 200).await;
    let other_user = world.connected_as(&app, "other.user", 300).await;
    // Exact refuses every refresh as too early (a 400 it counts toward its block).
    world
        .sim
        .update_knobs(|k| k.exact_min_refresh_interval_secs = 7_200);
    world.advance(Duration::seconds(600));
    let (one, two) = (world.process(settings()), world.process(settings()));
    let calls = world.sim.token_calls(Provider::Exact);
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        for (ctx, connection) in [(&one, &first), (&two, &second)] {
            world.advance(Duration::seconds(30));
            let report = ctx
                .engine
                .refresh(&connection.id, on_demand())
                .await
                .unwrap();
            outcomes.push(report.outcome);
        }
    }
    // All eight fell in one clock hour, so they count through the next one as well.
    let next_hour_end = Utc.with_ymd_and_hms(2026, 3, 2, 14, 0, 0).unwrap();
    let held = Outcome::AppUserLimited(AppUserHold::FailedCalls {
        until: next_hour_end,
    });
    let mut expected = vec![Outcome::Failed(ErrorClass::TooEarly); 8];
    expected.extend([held; 4]);
    assert_eq!(outcomes, expected);
    assert_eq!(world.sim.token_calls(Provider::Exact) - calls, 8);
    // Another user's connection still calls.
    let report = two
        .engine
        .refresh(&other_user.id, on_demand())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Failed(ErrorClass::TooEarly));
    // The failures stay counted into the next hour; two hours on, the user's connections call again,
    // and Exact never blocked the app.
    world
        .sim
        .update_knobs(|k| k.exact_min_refresh_interval_secs = 570);
    world.advance(Duration::hours(1));
    let report = one.engine.refresh(&first.id, on_demand()).await.unwrap();
    assert!(
        matches!(
            report.outcome,
            Outcome::AppUserLimited(AppUserHold::FailedCalls { .. })
        ),
        "{:?}",
        report.outcome
    );
    world.advance(Duration::hours(1));
    for (ctx, connection) in [(&one, &first), (&two, &second)] {
        assert_eq!(
            refresh(ctx, &connection.id, on_demand()).await,
            Outcome::Refreshed
        );
    }
}
