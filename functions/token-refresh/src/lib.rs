//! The scheduled token refresh. EventBridge invokes it every few minutes; each invocation refreshes what
//! is due with bounded concurrency, stops taking work before its deadline, and reports a summary as a
//! structured log line and as CloudWatch metrics (Embedded Metric Format, one JSON line on stdout).

use broker_core::context::BrokerContext;
use broker_core::refresh::{run_scheduled, OutcomeKind, RunSettings, RunSummary};
use serde_json::{json, Value};
use tokio::time::Instant;

/// Runs one scheduled refresh until the index is exhausted or `deadline` nears.
pub async fn refresh_due(
    ctx: &BrokerContext,
    deadline: Instant,
    settings: &RunSettings,
) -> RunSummary {
    let summary = run_scheduled(
        ctx.engine.clone(),
        ctx.backend.store.clone(),
        ctx.clock.clone(),
        deadline,
        settings,
    )
    .await;
    tracing::info!(
        taken = summary.taken,
        errors = summary.errors,
        retried = summary.retried,
        aws_throttles = summary.aws_throttles,
        lowest_concurrency = summary.lowest_concurrency,
        stopped_early = summary.stopped_early,
        outcomes = %serde_json::to_string(&summary.outcomes).unwrap_or_default(),
        "scheduled refresh finished"
    );
    summary
}

/// Run settings from `BROKER_REFRESH_CONCURRENCY` (default 64).
pub fn settings_from_env() -> RunSettings {
    let mut settings = RunSettings::default();
    if let Some(n) = std::env::var("BROKER_REFRESH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        settings.concurrency = n.clamp(1, 1024);
    }
    settings
}

/// Refreshes that failed: provider failures, connections that now need a person, and the broker's own
/// errors. The `RefreshFailures` alarm watches this.
pub fn failures(summary: &RunSummary) -> usize {
    summary.failed() + summary.errors
}

/// The summary as one CloudWatch Embedded Metric Format record.
pub fn metrics_record(summary: &RunSummary, function_name: &str, timestamp_millis: i64) -> Value {
    let count = |kind: OutcomeKind| summary.count(kind);
    json!({
        "_aws": {
            "Timestamp": timestamp_millis,
            "CloudWatchMetrics": [{
                "Namespace": "ConnectionBroker",
                "Dimensions": [["FunctionName"]],
                "Metrics": [
                    {"Name": "RefreshFailures", "Unit": "Count"},
                    {"Name": "Refreshed", "Unit": "Count"},
                    {"Name": "ConnectionsTaken", "Unit": "Count"},
                    {"Name": "ReconnectRequired", "Unit": "Count"},
                    {"Name": "RunStoppedEarly", "Unit": "Count"},
                    {"Name": "AwsThrottles", "Unit": "Count"},
                    {"Name": "RetriedInRun", "Unit": "Count"},
                    {"Name": "LowestConcurrency", "Unit": "Count"},
                    {"Name": "RefreshBudgetLimited", "Unit": "Count"},
                    {"Name": "RefreshAppUserLimited", "Unit": "Count"}
                ]
            }]
        },
        "FunctionName": function_name,
        "RefreshFailures": failures(summary),
        "Refreshed": count(OutcomeKind::Refreshed) + count(OutcomeKind::Recovered),
        "ConnectionsTaken": summary.taken,
        "ReconnectRequired": count(OutcomeKind::ReconnectRequired),
        "RunStoppedEarly": u8::from(summary.stopped_early),
        // Throttled AWS calls (the SDK's own retries included); the AwsThrottling alarm watches it.
        "AwsThrottles": summary.aws_throttles,
        "RetriedInRun": summary.retried,
        "LowestConcurrency": summary.lowest_concurrency,
        // Connections whose refresh the vault write budget held back: tokens that live shorter than the
        // budget's pace (also said once per connection in the logs and its view).
        "RefreshBudgetLimited": count(OutcomeKind::BudgetLimited),
        // Connections held back by a provider's limit per app and user, shared by all that user's
        // connections under the app (Exact Online's daily token calls and hourly failures).
        "RefreshAppUserLimited": count(OutcomeKind::AppUserLimited),
        "outcomes": summary.outcomes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_core::domain::ErrorClass;

    #[test]
    fn the_metrics_record_counts_failures_of_every_kind() {
        let mut summary = RunSummary {
            taken: 6,
            errors: 1,
            ..RunSummary::default()
        };
        summary.outcomes.insert(OutcomeKind::Refreshed, 2);
        summary
            .outcomes
            .insert(OutcomeKind::Failed(ErrorClass::ProviderUnavailable), 2);
        summary.outcomes.insert(OutcomeKind::ReconnectRequired, 1);
        summary.aws_throttles = 7;
        summary.outcomes.insert(OutcomeKind::BudgetLimited, 3);
        summary.outcomes.insert(OutcomeKind::AppUserLimited, 2);
        let record = metrics_record(&summary, "token-refresh", 1);
        assert_eq!(record["AwsThrottles"], 7);
        assert_eq!(record["RefreshFailures"], 4);
        assert_eq!(record["RefreshBudgetLimited"], 3);
        assert_eq!(record["RefreshAppUserLimited"], 2);
        assert_eq!(record["Refreshed"], 2);
        assert_eq!(record["outcomes"]["failed:provider_unavailable"], 2);
        assert_eq!(
            record["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "ConnectionBroker"
        );
    }
}
