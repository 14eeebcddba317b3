//! Counting AWS throttling: an SDK interceptor on every client the broker builds sees each attempt's
//! answer, including the throttled attempts the SDK retried on its own and that no caller ever sees.
//! The scheduled run reports the count (`RunSummary::aws_throttles`, metric `AwsThrottles`) and an alarm
//! fires when it persists: Secrets Manager's write quota is shared by the whole region, so a large run
//! can be throttled by its own writes or by a neighbour's.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::sync::atomic::{AtomicU64, Ordering};

static THROTTLES: AtomicU64 = AtomicU64::new(0);

/// Throttled attempts seen by this process's AWS clients so far.
pub fn aws_throttles() -> u64 {
    THROTTLES.load(Ordering::Relaxed)
}

/// The error codes AWS services throttle with (the SDK's own list of throttling errors, as they
/// appear in a JSON error body's `__type`).
const THROTTLING_CODES: [&str; 6] = [
    "Throttling",
    "ProvisionedThroughputExceeded",
    "TooManyRequests",
    "RequestLimitExceeded",
    "RequestThrottled",
    "SlowDown",
];

/// Whether an answer is a throttling error: HTTP 429, or a 400 whose error code says so.
pub fn is_throttling(status: u16, body: &[u8]) -> bool {
    if status == 429 {
        return true;
    }
    if status != 400 {
        return false;
    }
    // Error bodies are small JSON documents; only the code is looked at, never logged.
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
    THROTTLING_CODES.iter().any(|code| text.contains(code))
}

/// Add to each SDK client (`config::Builder::interceptor`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ThrottleCounter;

impl Intercept for ThrottleCounter {
    fn name(&self) -> &'static str {
        "broker-throttle-counter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(response) = context.response() {
            let body = response.body().bytes().unwrap_or_default();
            if is_throttling(response.status().as_u16(), body) {
                THROTTLES.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_answers_are_told_from_other_errors() {
        let dynamodb =
            br#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"}"#;
        assert!(is_throttling(400, dynamodb));
        assert!(is_throttling(400, br#"{"__type":"ThrottlingException"}"#));
        assert!(is_throttling(429, b""));
        assert!(!is_throttling(
            400,
            br#"{"__type":"ConditionalCheckFailedException"}"#
        ));
        assert!(!is_throttling(500, br#"{"__type":"InternalFailure"}"#));
        assert!(!is_throttling(200, b"Throttling"));
    }
}
