//! Lambda entry point of the scheduled token refresh.

use broker_core::context::BrokerContext;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

#[tokio::main]
async fn main() -> Result<(), Error> {
    broker_core::telemetry::init();
    let ctx = BrokerContext::from_env().await?;
    let settings = token_refresh::settings_from_env();
    let function_name =
        std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "token-refresh".into());
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let (ctx, settings, function_name) = (&ctx, &settings, &function_name);
        async move {
            let now_millis = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            let remaining =
                Duration::from_millis(event.context.deadline.saturating_sub(now_millis));
            let summary =
                token_refresh::refresh_due(ctx, Instant::now() + remaining, settings).await;
            // EMF: CloudWatch turns this stdout line into metrics.
            println!(
                "{}",
                token_refresh::metrics_record(&summary, function_name, now_millis as i64)
            );
            Ok::<Value, Error>(serde_json::to_value(&summary)?)
        }
    }))
    .await
}
