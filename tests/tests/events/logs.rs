//! Neither a signing secret nor a token reaches the logs, through registration, deliveries, failures
//! and a dead letter. On one thread, so the captured subscriber sees every task.

use super::*;
use broker_tests::backends;
use broker_tests::logs::Captured;

#[tokio::test]
async fn no_secret_or_token_is_logged_from_registration_to_dead_letter() {
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(broker_core::telemetry::subscriber_for(
        captured.clone(),
        "trace",
    ));
    let w = world(backends::embedded()).await;
    let receiver = Receiver::start().await;
    let (tenant, caller) = w.tenant("acme").await;
    let c = w.connected(&tenant).await;
    let secret = w.register(&caller, &receiver.url).await;
    receiver.answer_with(502);
    w.reconnect_needed(&c).await;
    let policy = RetryPolicy {
        give_up_after: Duration::minutes(3),
        ..RetryPolicy::default()
    };
    for _ in 0..5 {
        Dispatcher::for_context(&w.ctx, None)
            .with_policy(policy)
            .run()
            .await;
        w.clock.advance(Duration::minutes(2));
    }
    assert!(!receiver.received().is_empty());
    let logs = captured.text();
    assert!(
        logs.contains("dead letter"),
        "the capture saw the run:\n{logs}"
    );
    for value in [secret.as_str(), ACCESS_VALUE, REFRESH_VALUE] {
        assert!(!logs.contains(value), "a secret was logged:\n{logs}");
    }
}
