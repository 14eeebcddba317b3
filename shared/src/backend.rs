//! Choosing and building the storage backend from configuration.
//!
//! With `BROKER_TABLE` set the broker runs on AWS: DynamoDB for metadata and Secrets Manager for
//! tokens (the standard AWS configuration applies: region, credentials, `AWS_ENDPOINT_URL` for moto
//! or LocalStack). Without it, the embedded store keeps everything in one owner-only file, so the
//! broker runs on a machine with no AWS account at all.

use crate::adapters::dynamodb::DynamoStore;
use crate::adapters::embedded::EmbeddedStore;
use crate::adapters::secrets_manager::{SecretsManagerVault, VaultNaming};
use crate::ports::{MetadataStore, StoreError, TokenVault};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
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
    },
}

impl BackendConfig {
    pub const DEFAULT_DATA_DIR: &'static str = ".broker";
    pub const DEFAULT_SECRET_PREFIX: &'static str = "connection-broker";

    /// Reads `BROKER_TABLE`, `BROKER_SECRET_PREFIX`, `BROKER_KMS_KEY_ID` and `BROKER_DATA_DIR`.
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

/// SDK calls get explicit timeouts and a bounded retry: the SDK sets no operation timeout by default.
pub async fn aws_sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(4))
                .operation_timeout(Duration::from_secs(12))
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .load()
        .await
}

impl Backend {
    pub async fn connect(config: &BackendConfig) -> Result<Self, StoreError> {
        match config {
            BackendConfig::Embedded { path } => {
                let store = EmbeddedStore::open(path)?;
                Ok(Self {
                    store: Arc::new(store.clone()),
                    vault: Arc::new(store),
                })
            }
            BackendConfig::Aws {
                table,
                secret_prefix,
                kms_key_id,
            } => {
                let sdk = aws_sdk_config().await;
                let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table.clone());
                let vault = SecretsManagerVault::new(
                    aws_sdk_secretsmanager::Client::new(&sdk),
                    VaultNaming {
                        prefix: secret_prefix.clone(),
                        kms_key_id: kms_key_id.clone(),
                    },
                );
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
                kms_key_id: None
            }
        );
    }
}
