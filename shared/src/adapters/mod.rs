//! Adapters: the ports implemented on AWS (DynamoDB + Secrets Manager) and on an embedded local file.

pub mod aws_throttles;
pub mod dynamodb;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod kms_escrow;
pub mod secrets_manager;
