//! The two storage backends, built the way the functions build them, for tests that must pass on both.

use crate::moto::{unique_name, Moto};
use broker_core::adapters::dynamodb::DynamoStore;
use broker_core::adapters::embedded::EmbeddedStore;
use broker_core::adapters::secrets_manager::{SecretsManagerVault, VaultNaming};
use broker_core::ports::{MetadataStore, TokenVault};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

pub struct Backend {
    pub name: &'static str,
    pub store: Arc<dyn MetadataStore>,
    pub vault: Arc<dyn TokenVault>,
    /// Set for the AWS backend: the raw clients and names, for checks through the AWS APIs themselves.
    pub aws: Option<AwsParts>,
}

pub struct AwsParts {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub table: String,
    pub secret_prefix: String,
}

/// The embedded store on a fresh file in a fresh temporary folder.
pub fn embedded() -> Backend {
    let dir = temp_dir("embedded");
    let store = EmbeddedStore::open(dir.join("broker.db")).expect("opening the embedded store");
    Backend {
        name: "embedded",
        store: Arc::new(store.clone()),
        vault: Arc::new(store),
        aws: None,
    }
}

/// The AWS adapters against this process's moto server, on a fresh table and secret prefix.
pub async fn aws() -> Backend {
    let moto = shared_moto();
    let config = moto.sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let secrets = aws_sdk_secretsmanager::Client::new(&config);
    let table = unique_name("broker");
    DynamoStore::create_table(&dynamodb, &table)
        .await
        .expect("creating the table in moto");
    let secret_prefix = unique_name("connection-broker/test");
    let vault = SecretsManagerVault::new(
        secrets.clone(),
        VaultNaming {
            prefix: secret_prefix.clone(),
            kms_key_id: None,
        },
    );
    Backend {
        name: "aws",
        store: Arc::new(DynamoStore::new(dynamodb.clone(), table.clone())),
        vault: Arc::new(vault),
        aws: Some(AwsParts {
            dynamodb,
            secrets,
            table,
            secret_prefix,
        }),
    }
}

/// One moto server per test process, started on first use. It stops when the process ends.
pub fn shared_moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| Moto::start().expect("starting moto server"))
}

pub fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name(&format!("broker-{label}")));
    std::fs::create_dir_all(&dir).expect("creating a temporary folder");
    dir
}
