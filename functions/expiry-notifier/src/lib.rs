//! The expiry-notifier function: maps its two triggers onto the core's [`Notifier`].
//!
//! - The daily EventBridge schedule runs [`Notifier::daily`]: warnings for connections about to stop
//!   working, then every unsettled notice in the outbox (which also catches stream records that were
//!   never delivered or aged out).
//! - The DynamoDB stream, filtered by the template to INSERTs of status transitions, delivers the
//!   transitions just written; the store adapter reads each record's notice key
//!   ([`stream::transition_notice`]). A record that must be retried is reported in
//!   `batchItemFailures` (this needs `FunctionResponseTypes: [ReportBatchItemFailures]` on the event
//!   source; without it Lambda ignores the list and a failure anywhere retries the whole batch, which
//!   is still safe — claims make repeats harmless — only slower).
//!
//! - A schedule every minute sends `{"run": "events"}`: the status-change event dispatcher
//!   ([`handle_with_events`]), which delivers what is due (webhook retries back off from one minute).
//!   Stream batches and the daily run deliver too, so a new event goes out as soon as its transition
//!   is written.
//!
//! Events are read as `serde_json::Value` rather than `aws_lambda_events` types: the function reads
//! four fields of one event shape, and the crate would add a large dependency for them.

use broker_core::adapters::dynamodb::stream;
use broker_core::adapters::{OutboxMailer, SesMailer};
use broker_core::backend::{aws_sdk_config, BackendConfig};
use broker_core::events::{DispatchSummary, Dispatcher};
use broker_core::notify::{Mailer, NoticeKey, Notifier, NotifyError, NotifySettings, RunSummary};
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("the event is neither the daily schedule nor a DynamoDB stream batch")]
    UnknownEvent,
    #[error(transparent)]
    Notify(#[from] NotifyError),
    #[error("the daily run met {0} error(s) (logged); the run is safe to repeat")]
    DailyIncomplete(usize),
    #[error("the event dispatch met {0} error(s) (logged); the next run retries")]
    EventsIncomplete(usize),
}

/// One stream record: the id Lambda knows it by, and its notice if it is a new transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    pub sequence_number: String,
    pub notice: Option<NoticeKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    Daily,
    Stream(Vec<StreamRecord>),
    /// The frequent schedule of the event dispatcher.
    Events,
}

/// The input the template's every-minute schedule sends.
pub const EVENTS_RUN: &str = "events";

/// Which trigger an event is. A stream record that is not a new status transition has no notice.
pub fn classify(event: &Value) -> Result<Trigger, HandlerError> {
    if let Some(records) = event.get("Records").and_then(Value::as_array) {
        let records = records
            .iter()
            .map(|r| StreamRecord {
                sequence_number: r["dynamodb"]["SequenceNumber"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                notice: stream::transition_notice(r),
            })
            .collect();
        return Ok(Trigger::Stream(records));
    }
    if event.get("run").and_then(Value::as_str) == Some(EVENTS_RUN) {
        return Ok(Trigger::Events);
    }
    let scheduled = event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
        || event.get("source").and_then(Value::as_str) == Some("aws.events");
    if scheduled {
        Ok(Trigger::Daily)
    } else {
        Err(HandlerError::UnknownEvent)
    }
}

/// Handles one invocation. Stream: `{"batchItemFailures": [...]}` naming the records to retry.
/// Schedule: the run's counts.
pub async fn handle(notifier: &Notifier, event: Value) -> Result<Value, HandlerError> {
    match classify(&event)? {
        // The dispatcher's; no notice is owed.
        Trigger::Events => Ok(json!({})),
        Trigger::Daily => {
            let summary = notifier.daily().await?;
            tracing::info!(?summary, "daily notification run finished");
            if summary.errors > 0 {
                return Err(HandlerError::DailyIncomplete(summary.errors));
            }
            Ok(summary_json(&summary))
        }
        Trigger::Stream(records) => {
            let mut failures = Vec::new();
            for record in records {
                let Some(key) = record.notice else { continue };
                match notifier.notify(&key).await {
                    // Busy: another invocation holds the claim and settles it (or a later run finds
                    // it stale). Either way this record needs nothing more.
                    Ok(delivery) => {
                        tracing::debug!(notice = %key, ?delivery, "stream record handled")
                    }
                    Err(e) => {
                        tracing::warn!(notice = %key, error = %e, "stream record to be retried");
                        failures.push(json!({ "itemIdentifier": record.sequence_number }));
                    }
                }
            }
            Ok(json!({ "batchItemFailures": failures }))
        }
    }
}

/// Handles one invocation as [`handle`] does, and delivers the status-change events that are due.
/// The dispatcher's errors fail only its own schedule's invocation: a stream batch or the daily run
/// has its own work to report, and the next minute's run retries the events.
pub async fn handle_with_events(
    notifier: &Notifier,
    dispatcher: &Dispatcher,
    event: Value,
) -> Result<Value, HandlerError> {
    let trigger = classify(&event)?;
    let notices = match trigger {
        Trigger::Events => None,
        _ => Some(handle(notifier, event).await),
    };
    let summary = dispatcher.run().await;
    tracing::info!(?summary, "event dispatch finished");
    match notices {
        Some(answer) => answer,
        None if summary.errors > 0 => Err(HandlerError::EventsIncomplete(summary.errors)),
        None => Ok(events_json(&summary)),
    }
}

fn events_json(s: &DispatchSummary) -> Value {
    json!({
        "events": s.events, "delivered": s.delivered, "retrying": s.retrying, "dead": s.dead,
        "dropped": s.dropped, "busy": s.busy, "errors": s.errors,
    })
}

fn summary_json(s: &RunSummary) -> Value {
    json!({
        "sent": s.sent, "skipped": s.skipped, "failed": s.failed, "unknown": s.unknown,
        "busy": s.busy, "retryLater": s.retry_later, "errors": s.errors,
        "warningsCreated": s.warnings_created, "markedExpired": s.marked_expired,
    })
}

/// SES v2 on AWS; the outbox folder in local mode (no AWS configuration).
pub async fn mailer_for(config: &BackendConfig, settings: &NotifySettings) -> Arc<dyn Mailer> {
    match config {
        BackendConfig::Embedded { .. } => Arc::new(OutboxMailer::new(settings.outbox_dir.clone())),
        BackendConfig::Aws { .. } => {
            Arc::new(SesMailer::new(SesMailer::client(&aws_sdk_config().await)))
        }
    }
}

impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(error: HandlerError) -> Self {
        let error_type = match &error {
            HandlerError::UnknownEvent => "UnknownEvent",
            HandlerError::Notify(_) => "NotifyFailed",
            HandlerError::DailyIncomplete(_) => "DailyIncomplete",
            HandlerError::EventsIncomplete(_) => "EventsIncomplete",
        };
        Self {
            error_type: error_type.into(),
            error_message: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_event_is_the_daily_run() {
        let event = json!({"version": "0", "id": "x", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
        assert_eq!(classify(&event).unwrap(), Trigger::Daily);
        assert_eq!(
            classify(&json!({"run": "events"})).unwrap(),
            Trigger::Events
        );
        assert!(classify(&json!({"hello": 1})).is_err());
    }

    #[test]
    fn stream_records_map_to_transition_notices() {
        let event = json!({"Records": [
            {"eventName": "INSERT", "dynamodb": {"SequenceNumber": "100", "Keys": {"pk": {"S": "CONN#c1"}, "sk": {"S": "TRANSITION#2026-11-01T09:00:00.000000000Z#00000000000000000001#0000"}}}},
            {"eventName": "INSERT", "dynamodb": {"SequenceNumber": "101", "Keys": {"pk": {"S": "CONN#c1"}, "sk": {"S": "CONN"}}}},
            {"eventName": "MODIFY", "dynamodb": {"SequenceNumber": "102", "Keys": {"pk": {"S": "CONN#c1"}, "sk": {"S": "TRANSITION#x"}}}}
        ]});
        let Trigger::Stream(records) = classify(&event).unwrap() else {
            panic!()
        };
        assert_eq!(records.len(), 3);
        assert_eq!(
            records[0].notice.as_ref().unwrap().as_str(),
            "CONN#c1|TRANSITION#2026-11-01T09:00:00.000000000Z#00000000000000000001#0000"
        );
        assert_eq!(records[0].sequence_number, "100");
        assert!(records[1].notice.is_none() && records[2].notice.is_none());
    }
}
