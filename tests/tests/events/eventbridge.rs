//! The EventBridge put, captured on moto: a rule on the broker's bus matching the documented `source`
//! and `detail-type` sends each event to an SQS queue this test reads.

use super::*;
use broker_core::adapters::eventbridge::EventBridgeBus;
use broker_core::events::{StatusChangeEvent, DETAIL_TYPE, EVENT_SOURCE};
use broker_tests::backends::{self, shared_moto};
use serde_json::{json, Value};

/// A fresh bus with a rule that forwards the broker's status changes to a fresh queue.
async fn bus_to_queue() -> (EventBridgeBus, aws_sdk_sqs::Client, String) {
    let config = shared_moto().sdk_config().await;
    let events = EventBridgeBus::client(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let bus = unique_name("broker-events");
    events.create_event_bus().name(&bus).send().await.unwrap();
    let queue_url = sqs
        .create_queue()
        .queue_name(unique_name("integrator"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    let pattern = json!({ "source": [EVENT_SOURCE], "detail-type": [DETAIL_TYPE] });
    events
        .put_rule()
        .name("status-changes")
        .event_bus_name(&bus)
        .event_pattern(pattern.to_string())
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule("status-changes")
        .event_bus_name(&bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(queue_arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    (EventBridgeBus::new(events, &bus), sqs, queue_url)
}

/// Every message the queue holds now (EventBridge envelopes), read until it is empty.
async fn drain(sqs: &aws_sdk_sqs::Client, queue: &str) -> Vec<Value> {
    let mut messages = Vec::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let batch = out.messages.unwrap_or_default();
        if batch.is_empty() {
            return messages;
        }
        for m in batch {
            messages.push(serde_json::from_str(m.body().unwrap()).unwrap());
            sqs.delete_message()
                .queue_url(queue)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_transition_is_put_on_the_bus_once_with_the_documented_shape() {
    let (bus, sqs, queue) = bus_to_queue().await;
    let bus: Arc<dyn EventBus> = Arc::new(bus);
    let w = world(backends::embedded()).await;
    let (tenant, _) = w.tenant("acme").await;
    let c = w.connected(&tenant).await;
    w.reconnect_needed(&c).await;

    let (one, two) = (
        w.dispatcher(Some(bus.clone())),
        w.dispatcher(Some(bus.clone())),
    );
    let (a, b) = tokio::join!(one.run(), two.run());
    assert_eq!(a.delivered + b.delivered, 2, "{a:?} {b:?}");
    assert_eq!(w.dispatcher(Some(bus.clone())).run().await.delivered, 0);

    let mut messages = drain(&sqs, &queue).await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    messages.sort_by_key(|m| m["detail"]["to"].as_str().unwrap_or_default().to_string());
    for m in &messages {
        assert_eq!(m["source"], EVENT_SOURCE);
        assert_eq!(m["detail-type"], DETAIL_TYPE);
        let detail = &m["detail"];
        let keys: Vec<&str> = {
            let mut k: Vec<&str> = detail
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            k.sort();
            k
        };
        assert_eq!(
            keys,
            [
                "connection",
                "from",
                "id",
                "reason",
                "tenant",
                "time",
                "to",
                "type"
            ]
        );
        assert_eq!(detail["tenant"], tenant.as_str());
        assert_eq!(detail["connection"], c.id.as_str());
        assert!(detail["id"].as_str().unwrap().starts_with("evt_"));
        let text = m.to_string();
        assert!(!text.contains(ACCESS_VALUE) && !text.contains(REFRESH_VALUE));
    }
    assert_eq!(
        (
            messages[0]["detail"]["from"].as_str(),
            messages[0]["detail"]["to"].as_str()
        ),
        (Some("not_connected"), Some("connected"))
    );
    assert_eq!(
        (
            messages[1]["detail"]["from"].as_str(),
            messages[1]["detail"]["to"].as_str()
        ),
        (Some("connected"), Some("reconnect_required"))
    );
    // The detail is the event exactly as a webhook receives it.
    let parsed: StatusChangeEvent = serde_json::from_value(messages[1]["detail"].clone()).unwrap();
    assert_eq!(parsed.to, StatusKind::ReconnectRequired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_that_refuses_is_retried_and_the_webhooks_are_not_held_back() {
    let config = shared_moto().sdk_config().await;
    // A bus that does not exist: PutEvents refuses every entry.
    let missing: Arc<dyn EventBus> = Arc::new(EventBridgeBus::new(
        EventBridgeBus::client(&config),
        unique_name("no-such-bus"),
    ));
    let w = world(backends::embedded()).await;
    let receiver = Receiver::start().await;
    let (tenant, caller) = w.tenant("acme").await;
    let c = w.connected(&tenant).await;
    w.dispatcher(None).run().await;
    w.register(&caller, &receiver.url).await;
    w.reconnect_needed(&c).await;
    let summary = w.dispatcher(Some(missing)).run().await;
    assert_eq!((summary.delivered, summary.retrying), (1, 1), "{summary:?}");
    assert_eq!(receiver.received().len(), 1);

    // Once the bus is there, the retry puts the event.
    let (bus, sqs, queue) = bus_to_queue().await;
    w.clock.advance(Duration::minutes(1));
    let summary = w.dispatcher(Some(Arc::new(bus))).run().await;
    assert_eq!(summary.delivered, 1, "{summary:?}");
    let messages = drain(&sqs, &queue).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0]["detail"]["id"],
        receiver.received()[0].event_id.as_str()
    );
}
