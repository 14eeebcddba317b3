//! SDK errors to [`StoreError`]s. Messages name the operation and DynamoDB's error code and message,
//! never an item (DynamoDB's own messages do not quote attribute values).

use crate::ports::StoreError;
use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::CancellationReason;
use std::fmt::Debug;

/// Any failure the caller can only retry later.
pub(super) fn unavailable<E, R>(operation: &str, error: &SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: Debug,
{
    let detail = crate::adapters::aws_failure_detail(error);
    StoreError::Unavailable(format!("DynamoDB {operation} failed: {detail}"))
}

/// Whether a conditional write was made: `Ok(false)` when DynamoDB refused it for its condition
/// (`condition_failed` tells that error from the rest), any other failure as [`unavailable`].
pub(super) fn condition_held<O, E, R>(
    written: Result<O, SdkError<E, R>>,
    operation: &str,
    condition_failed: impl Fn(&E) -> bool,
) -> Result<bool, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: Debug,
{
    match written {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(condition_failed) => Ok(false),
        Err(e) => Err(unavailable(operation, &e)),
    }
}

/// A request the SDK refused to build: a missing required field, i.e. a bug here, not a retry.
pub(super) fn incomplete(error: BuildError) -> StoreError {
    StoreError::Unavailable(format!("a DynamoDB request could not be built: {error}"))
}

/// Why a `TransactWriteItems` did not commit.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TransactionRefusal {
    /// The condition of the write at `position` was false. `existed` says whether the item was there,
    /// known when that write asked for its old image (`ReturnValuesOnConditionCheckFailure`).
    Condition { position: usize, existed: bool },
    /// Anything else: the error to return.
    Failed(StoreError),
}

pub(super) fn transaction_refusal<R: Debug>(
    operation: &str,
    error: &SdkError<TransactWriteItemsError, R>,
) -> TransactionRefusal {
    match error.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
            refusal_of(operation, cancelled.cancellation_reasons())
        }
        _ => TransactionRefusal::Failed(unavailable(operation, error)),
    }
}

/// DynamoDB gives one reason per write, in order, `None` for the writes that were fine. A false
/// condition decides the outcome even when another write also met a conflict; anything else
/// (`TransactionConflict` with a concurrent transaction, throttling) may pass on a retry.
fn refusal_of(operation: &str, reasons: &[CancellationReason]) -> TransactionRefusal {
    if let Some(position) = reasons
        .iter()
        .position(|r| r.code() == Some("ConditionalCheckFailed"))
    {
        let existed = reasons[position]
            .item()
            .is_some_and(|item| !item.is_empty());
        return TransactionRefusal::Condition { position, existed };
    }
    let codes: Vec<&str> = reasons
        .iter()
        .filter_map(|r| r.code())
        .filter(|code| *code != "None")
        .collect();
    let codes = if codes.is_empty() {
        "no reason given".to_string()
    } else {
        codes.join(", ")
    };
    TransactionRefusal::Failed(StoreError::Unavailable(format!(
        "DynamoDB {operation} was cancelled: {codes}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::config::http::HttpResponse;
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
    use aws_smithy_types::body::SdkBody;

    fn reason(code: &str) -> CancellationReason {
        CancellationReason::builder().code(code).build()
    }

    #[test]
    fn a_false_condition_is_found_by_position() {
        let reasons = [
            reason("None"),
            reason("ConditionalCheckFailed"),
            reason("None"),
        ];
        assert_eq!(
            refusal_of("Save", &reasons),
            TransactionRefusal::Condition {
                position: 1,
                existed: false
            }
        );
        let reasons = [
            reason("TransactionConflict"),
            CancellationReason::builder()
                .code("ConditionalCheckFailed")
                .item(
                    "pk",
                    aws_sdk_dynamodb::types::AttributeValue::S("CONN#x".into()),
                )
                .build(),
        ];
        assert_eq!(
            refusal_of("Save", &reasons),
            TransactionRefusal::Condition {
                position: 1,
                existed: true
            }
        );
    }

    #[test]
    fn other_cancellations_are_unavailable_and_say_why() {
        let reasons = [reason("None"), reason("TransactionConflict")];
        let TransactionRefusal::Failed(StoreError::Unavailable(message)) =
            refusal_of("Save", &reasons)
        else {
            panic!("a transaction conflict may pass on a retry")
        };
        assert_eq!(message, "DynamoDB Save was cancelled: TransactionConflict");
        assert!(matches!(
            refusal_of("Save", &[]),
            TransactionRefusal::Failed(StoreError::Unavailable(_))
        ));
    }

    #[test]
    fn service_errors_are_named_by_code_and_message() {
        let throttled = UpdateItemError::generic(
            ErrorMetadata::builder()
                .code("ThrottlingException")
                .message("Rate of requests exceeds the allowed throughput")
                .build(),
        );
        let response = HttpResponse::new(400.try_into().unwrap(), SdkBody::empty());
        let error = SdkError::service_error(throttled, response);
        assert_eq!(
            unavailable("UpdateItem", &error),
            StoreError::Unavailable(
                "DynamoDB UpdateItem failed: ThrottlingException: Rate of requests exceeds the allowed throughput".into()
            )
        );
    }

    #[test]
    fn other_failures_carry_their_causes() {
        let error: SdkError<UpdateItemError, HttpResponse> =
            SdkError::construction_failure("no region is configured");
        let StoreError::Unavailable(message) = unavailable("GetItem", &error) else {
            panic!()
        };
        assert!(
            message.starts_with("DynamoDB GetItem failed: "),
            "{message}"
        );
        assert!(message.contains("no region is configured"), "{message}");
    }
}
