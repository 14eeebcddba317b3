//! Choosing and building the storage backend from configuration.
//!
//! With `BROKER_TABLE` set the broker runs on AWS: DynamoDB for metadata and Secrets Manager for
//! tokens (the standard AWS configuration applies: region, credentials, `AWS_ENDPOINT_URL` for moto
//! or LocalStack). Without it, the embedded store keeps everything in one owner-only file, so the
//! broker runs on a machine with no AWS account at all. The embedded store is the `embedded` feature:
//! the Lambda functions are built without it and need `BROKER_TABLE`.

use crate::adapters::aws_throttles::ThrottleCounter;
use crate::adapters::dynamodb::DynamoStore;
#[cfg(feature = "embedded")]
use crate::adapters::embedded::EmbeddedStore;
use crate::adapters::kms_escrow::KmsEscrowKey;
use crate::adapters::secrets_manager::{SecretsManagerVault, VaultNaming};
use crate::ports::{MetadataStore, StoreError, TokenVault};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    Embedded {
        path: PathBuf,
    },
    Aws {
        table: String,
        secret_prefix: String,
        kms_key_id: Option<String>,
        /// The KMS key that seals tokens Secrets Manager refused (see [`crate::escrow`]); `None`:
        /// no escrow, and such tokens are held only as long as the refresh retries.
        escrow_key_id: Option<String>,
    },
}

impl BackendConfig {
    pub const DEFAULT_DATA_DIR: &'static str = ".broker";
    pub const DEFAULT_SECRET_PREFIX: &'static str = "connection-broker";

    /// Reads `BROKER_TABLE`, `BROKER_SECRET_PREFIX`, `BROKER_KMS_KEY_ID`, `BROKER_ESCROW_KEY_ID` and
    /// `BROKER_DATA_DIR`.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        match get("BROKER_TABLE") {
            Some(table) => Self::Aws {
                table,
                secret_prefix: get("BROKER_SECRET_PREFIX")
                    .unwrap_or_else(|| Self::DEFAULT_SECRET_PREFIX.to_string())
                    .trim_end_matches('/')
                    .to_string(),
                kms_key_id: get("BROKER_KMS_KEY_ID"),
                escrow_key_id: get("BROKER_ESCROW_KEY_ID"),
            },
            None => Self::Embedded {
                path: PathBuf::from(
                    get("BROKER_DATA_DIR").unwrap_or_else(|| Self::DEFAULT_DATA_DIR.into()),
                )
                .join("broker.db"),
            },
        }
    }
}

/// The stores every function works with.
#[derive(Clone)]
pub struct Backend {
    pub store: Arc<dyn MetadataStore>,
    pub vault: Arc<dyn TokenVault>,
}

/// The SDK clients' HTTPS client: rustls on ring, the crypto provider the provider calls (reqwest) use
/// already, so a binary carries one crypto library rather than ring and aws-lc-rs side by side. Trusts
/// the system's root certificates, as the SDK's default client does; unlike it, ignores the
/// HTTP(S)_PROXY variables (the functions reach AWS directly). Cheap to build: connections are made on
/// first use.
pub fn aws_http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// `aws_config::defaults` with the broker's HTTPS client; the starting point of every SDK
/// configuration (the SDK crates are built without a default HTTPS client).
pub fn aws_config_loader() -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest()).http_client(aws_http_client())
}

/// Every SDK call's bounds: the SDK sets no operation timeout by default, and an unbounded retry
/// would hold a refresh (and its lease) hostage to a throttled service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwsCallLimits {
    /// Opening a connection.
    pub connect: Duration,
    /// One attempt, answer included.
    pub attempt: Duration,
    /// All attempts of one call, backoff included.
    pub operation: Duration,
    /// Attempts per call (the SDK's standard retry: throttling, 5xx, timeouts and resets, with
    /// exponential backoff and jitter, and a retry quota that stops retrying when most calls fail).
    pub max_attempts: u32,
}

impl Default for AwsCallLimits {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            attempt: Duration::from_secs(4),
            operation: Duration::from_secs(12),
            max_attempts: 3,
        }
    }
}

impl AwsCallLimits {
    pub fn apply(&self, loader: ConfigLoader) -> ConfigLoader {
        loader
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(self.connect)
                    .operation_attempt_timeout(self.attempt)
                    .operation_timeout(self.operation)
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(self.max_attempts))
    }
}

/// SDK calls get explicit timeouts and a bounded retry ([`AwsCallLimits`]).
pub async fn aws_sdk_config() -> aws_config::SdkConfig {
    AwsCallLimits::default()
        .apply(aws_config_loader())
        .load()
        .await
}

impl Backend {
    /// Why a build without the embedded store (a Lambda function) cannot start without `BROKER_TABLE`.
    pub const NO_EMBEDDED_STORE: &'static str = "BROKER_TABLE is not set, and this build has no \
        embedded store (the Lambda functions link only the AWS backend): set BROKER_TABLE to the \
        broker's DynamoDB table, or run the broker on one machine with `cargo run -p local-runner`";

    pub async fn connect(config: &BackendConfig) -> Result<Self, StoreError> {
        match config {
            #[cfg(feature = "embedded")]
            BackendConfig::Embedded { path } => {
                let store = EmbeddedStore::open(path)?;
                Ok(Self {
                    store: Arc::new(store.clone()),
                    vault: Arc::new(store),
                })
            }
            #[cfg(not(feature = "embedded"))]
            BackendConfig::Embedded { .. } => {
                Err(StoreError::Unavailable(Self::NO_EMBEDDED_STORE.to_string()))
            }
            BackendConfig::Aws {
                table,
                secret_prefix,
                kms_key_id,
                escrow_key_id,
            } => {
                let sdk = aws_sdk_config().await;
                // Every client counts the throttling it meets (see `aws_throttles`).
                let dynamodb = aws_sdk_dynamodb::Client::from_conf(
                    aws_sdk_dynamodb::config::Builder::from(&sdk)
                        .interceptor(ThrottleCounter)
                        .build(),
                );
                let secrets = aws_sdk_secretsmanager::Client::from_conf(
                    aws_sdk_secretsmanager::config::Builder::from(&sdk)
                        .interceptor(ThrottleCounter)
                        .build(),
                );
                let store = DynamoStore::new(dynamodb, table.clone());
                let mut vault = SecretsManagerVault::new(
                    secrets,
                    VaultNaming {
                        prefix: secret_prefix.clone(),
                        kms_key_id: kms_key_id.clone(),
                    },
                );
                if let Some(key) = escrow_key_id {
                    vault = vault.with_escrow_key(KmsEscrowKey::new(
                        aws_sdk_kms::Client::from_conf(
                            aws_sdk_kms::config::Builder::from(&sdk)
                                .interceptor(ThrottleCounter)
                                .build(),
                        ),
                        key.clone(),
                    ));
                }
                Ok(Self {
                    store: Arc::new(store),
                    vault: Arc::new(vault),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn no_table_means_the_embedded_store() {
        let env: HashMap<&str, &str> = HashMap::from([("BROKER_DATA_DIR", "/tmp/x")]);
        let config = BackendConfig::from_lookup(|k| env.get(k).map(|v| v.to_string()));
        assert_eq!(
            config,
            BackendConfig::Embedded {
                path: PathBuf::from("/tmp/x/broker.db")
            }
        );
        let config = BackendConfig::from_lookup(|_| None);
        assert_eq!(
            config,
            BackendConfig::Embedded {
                path: PathBuf::from(".broker/broker.db")
            }
        );
    }

    #[cfg(not(feature = "embedded"))]
    #[tokio::test]
    async fn without_the_embedded_store_no_table_is_an_error_that_says_to_set_it() {
        let config = BackendConfig::from_lookup(|_| None);
        let err = match Backend::connect(&config).await {
            Ok(_) => panic!("connected to a store this build does not have"),
            Err(err) => err.to_string(),
        };
        assert!(err.contains("set BROKER_TABLE"), "{err}");
        assert!(err.contains("local-runner"), "{err}");
    }

    #[test]
    fn a_table_means_aws() {
        let env: HashMap<&str, &str> = HashMap::from([
            ("BROKER_TABLE", "broker"),
            ("BROKER_SECRET_PREFIX", "cb/prod/"),
        ]);
        let config = BackendConfig::from_lookup(|k| env.get(k).map(|v| v.to_string()));
        assert_eq!(
            config,
            BackendConfig::Aws {
                table: "broker".into(),
                secret_prefix: "cb/prod".into(),
                kms_key_id: None,
                escrow_key_id: None,
            }
        );
    }
}
