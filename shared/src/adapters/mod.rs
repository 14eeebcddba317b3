//! Adapters: the ports implemented on AWS (DynamoDB, Secrets Manager, KMS, SES) and locally (an embedded
//! SQLite file, an outbox folder of `.eml` files).

pub mod aws_throttles;
pub mod dynamodb;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod eventbridge;
pub mod kms_escrow;
pub mod outbox;
pub mod secrets_manager;
pub mod ses;

pub use outbox::OutboxMailer;
pub use ses::SesMailer;

/// A JSON error without the input: serde_json's messages can quote the offending value, and a stored
/// value here may hold a token or a client secret.
pub(crate) fn json_failure(what: &str, error: &serde_json::Error) -> String {
    let kind = match error.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "JSON of the wrong shape",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    format!(
        "{what}: {kind} (line {}, column {})",
        error.line(),
        error.column()
    )
}

/// What an AWS call's failure says, for an error message: the service's error code and message when it
/// answered (AWS messages name resources, never their contents), else the whole chain of causes (a
/// timeout, a network error, ...).
pub(crate) fn aws_failure_detail<E, R>(
    error: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> String
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_smithy_types::error::metadata::ProvideErrorMetadata;
    match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => aws_smithy_types::error::display::DisplayErrorContext(error).to_string(),
    }
}
