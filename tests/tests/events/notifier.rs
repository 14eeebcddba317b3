//! The expiry-notifier function's handler drives the dispatcher: a stream batch delivers the new
//! transition's event at once, and the every-minute schedule (`{"run": "events"}`) delivers retries.

use super::*;
use broker_core::adapters::OutboxMailer;
use broker_core::notify::{Notifier, NotifySettings};
use broker_tests::backends;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_batch_delivers_at_once_and_the_minute_schedule_delivers_the_retry() {
    let w = world(backends::aws().await).await;
    let receiver = Receiver::start().await;
    let (tenant, caller) = w.tenant("acme").await;
    let c = w.connected(&tenant).await;
    let dispatcher = w.dispatcher(None);
    dispatcher.run().await;
    w.register(&caller, &receiver.url).await;
    let notifier = Notifier::new(
        w.ctx.clone(),
        Arc::new(OutboxMailer::new(broker_tests::backends::temp_dir(
            "outbox",
        ))),
        NotifySettings::new(EmailAddress::parse("broker@example.com").unwrap()),
    );
    w.reconnect_needed(&c).await;
    let stream = json!({"Records": [{"eventName": "INSERT", "dynamodb": {
        "SequenceNumber": "1",
        "Keys": {"pk": {"S": format!("CONN#{}", c.id)}, "sk": {"S": "TRANSITION#x"}}}}]});
    receiver.answer_with(500);
    let out = expiry_notifier::handle_with_events(&notifier, &dispatcher, stream)
        .await
        .unwrap();
    assert!(out.get("batchItemFailures").is_some(), "{out}");
    assert_eq!(
        receiver.received().len(),
        1,
        "delivered at once from the stream"
    );

    receiver.answer_with(200);
    let schedule = json!({"run": "events"});
    let out = expiry_notifier::handle_with_events(&notifier, &dispatcher, schedule.clone())
        .await
        .unwrap();
    assert_eq!(out["delivered"], 0, "not due for a minute: {out}");
    w.clock.advance(Duration::minutes(1));
    let out = expiry_notifier::handle_with_events(&notifier, &dispatcher, schedule)
        .await
        .unwrap();
    assert_eq!(out["delivered"], 1, "{out}");
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].event_id, received[1].event_id);
}
