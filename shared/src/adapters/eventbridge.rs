//! [`EventBus`] on Amazon EventBridge: one `PutEvents` entry per status change, on the broker's own
//! bus (`BROKER_EVENT_BUS`), `source` [`EVENT_SOURCE`], `detail-type` [`DETAIL_TYPE`], `detail` the
//! event's JSON (the same body a webhook receives). The SDK client has the shared call limits
//! (timeouts, bounded retries) of [`crate::backend::aws_sdk_config`]; the dispatcher's own retries come
//! on top, bounded by its policy.

use crate::events::{EventBus, StatusChangeEvent, DETAIL_TYPE, EVENT_SOURCE};
use async_trait::async_trait;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

/// The environment variable naming the bus (the template sets it to the bus it creates).
pub const EVENT_BUS_ENV: &str = "BROKER_EVENT_BUS";

#[derive(Debug, Clone)]
pub struct EventBridgeBus {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBridgeBus {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Self {
        Self {
            client,
            bus: bus.into(),
        }
    }

    pub fn client(sdk: &aws_config::SdkConfig) -> aws_sdk_eventbridge::Client {
        let config = aws_sdk_eventbridge::config::Builder::from(sdk)
            .interceptor(crate::adapters::aws_throttles::ThrottleCounter)
            .build();
        aws_sdk_eventbridge::Client::from_conf(config)
    }

    /// The bus `BROKER_EVENT_BUS` names, if it is set.
    pub async fn from_env() -> Option<Self> {
        let bus = std::env::var(EVENT_BUS_ENV)
            .ok()
            .filter(|b| !b.trim().is_empty())?;
        let sdk = crate::backend::aws_sdk_config().await;
        Some(Self::new(Self::client(&sdk), bus.trim()))
    }
}

#[async_trait]
impl EventBus for EventBridgeBus {
    async fn put(&self, event: &StatusChangeEvent) -> Result<(), String> {
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(EVENT_SOURCE)
            .detail_type(DETAIL_TYPE)
            .detail(event.body())
            .time(aws_smithy_types::DateTime::from_millis(
                event.time.timestamp_millis(),
            ))
            .build();
        let out = self
            .client
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "EventBridge PutEvents on bus {} failed: {}",
                    self.bus,
                    crate::adapters::aws_failure_detail(&e)
                )
            })?;
        // PutEvents answers 200 with per-entry failures (throttling, an internal error).
        if out.failed_entry_count() > 0 {
            let entry = out.entries().first();
            return Err(format!(
                "EventBridge refused the event on bus {}: {} {}",
                self.bus,
                entry.and_then(|e| e.error_code()).unwrap_or("(no code)"),
                entry.and_then(|e| e.error_message()).unwrap_or("")
            ));
        }
        Ok(())
    }
}
