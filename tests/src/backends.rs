//! The two storage backends, built the way the functions build them, for tests that must pass on both.

use crate::aws_faults::FaultProxy;
use crate::moto::{unique_name, Moto};
use aws_config::SdkConfig;
use broker_core::adapters::aws_throttles::ThrottleCounter;
use broker_core::adapters::dynamodb::DynamoStore;
use broker_core::adapters::embedded::EmbeddedStore;
use broker_core::adapters::kms_escrow::KmsEscrowKey;
use broker_core::adapters::secrets_manager::{SecretsManagerVault, VaultNaming};
use broker_core::backend::AwsCallLimits;
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
    /// The proxy between these clients and moto, for backends made by [`aws_with_faults`].
    pub faults: Option<Arc<FaultProxy>>,
}

impl Backend {
    /// The store and vault as the core takes them.
    pub fn stores(&self) -> broker_core::backend::Backend {
        broker_core::backend::Backend {
            store: self.store.clone(),
            vault: self.vault.clone(),
        }
    }
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

/// The AWS adapters against this process's moto server, on a fresh table, secret prefix and escrow
/// key.
pub async fn aws() -> Backend {
    let config = shared_moto().sdk_config().await;
    aws_on(&config, None).await
}

/// The AWS adapters reaching moto through a [`FaultProxy`] of their own, with the broker's timeouts
/// and retries: every DynamoDB, Secrets Manager and KMS call can be throttled, failed, reset or held
/// (`backend.aws.as_ref().unwrap().faults`).
pub async fn aws_with_faults() -> Backend {
    aws_with_faults_limited(FaultProxy::test_call_limits()).await
}

/// As [`aws_with_faults`], with these SDK timeouts and retries (e.g. production's, for benchmarks).
pub async fn aws_with_faults_limited(limits: AwsCallLimits) -> Backend {
    let proxy = FaultProxy::start(&shared_moto().endpoint)
        .await
        .expect("starting the fault proxy");
    let config = proxy.sdk_config_with(limits).await;
    aws_on(&config, Some(Arc::new(proxy))).await
}

async fn aws_on(config: &SdkConfig, faults: Option<Arc<FaultProxy>>) -> Backend {
    // Counting throttled calls as the functions' clients do (`RunSummary::aws_throttles`).
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(config)
            .interceptor(ThrottleCounter)
            .build(),
    );
    let secrets = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(config)
            .interceptor(ThrottleCounter)
            .build(),
    );
    let kms = aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::config::Builder::from(config)
            .interceptor(ThrottleCounter)
            .build(),
    );
    let table = unique_name("broker");
    DynamoStore::create_table(&dynamodb, &table)
        .await
        .expect("creating the table in moto");
    let escrow_key = kms
        .create_key()
        .description("escrow key of a broker test")
        .send()
        .await
        .expect("creating a KMS key in moto")
        .key_metadata
        .expect("a created key has metadata")
        .key_id;
    let secret_prefix = unique_name("connection-broker/test");
    let vault = SecretsManagerVault::new(
        secrets.clone(),
        VaultNaming {
            prefix: secret_prefix.clone(),
            kms_key_id: None,
        },
    )
    .with_escrow_key(KmsEscrowKey::new(kms, escrow_key));
    Backend {
        name: "aws",
        store: Arc::new(DynamoStore::new(dynamodb.clone(), table.clone())),
        vault: Arc::new(vault),
        aws: Some(AwsParts {
            dynamodb,
            secrets,
            table,
            secret_prefix,
            faults,
        }),
    }
}

/// One moto server per test process, started on first use. It stops when the process ends.
pub fn shared_moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| Moto::start().expect("starting moto server"))
}

pub fn temp_dir(label: &str) -> PathBuf {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(remove_folders_of_finished_runs);
    let dir = std::env::temp_dir().join(unique_name(&format!("broker-{label}")));
    std::fs::create_dir_all(&dir).expect("creating a temporary folder");
    dir
}

/// Removes the temporary folders of test processes that have ended. A test process cannot remove its
/// own: its stores stay open (their writer threads, other clones) until it exits. Folders are named
/// `broker-<label>-<pid>-<n>` ([`unique_name`]); one whose process no longer runs is left over.
fn remove_folders_of_finished_runs() {
    // Whether a process runs is read from /proc; without it nothing is known, so nothing is removed.
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("broker-") {
            continue;
        }
        let mut parts = name.rsplit('-');
        let (Some(n), Some(pid)) = (parts.next(), parts.next()) else {
            continue;
        };
        let finished = n.parse::<u64>().is_ok()
            && pid
                .parse::<u32>()
                .is_ok_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists());
        if finished && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Runs each named `async fn name(backend: Backend)` of the calling test file as two tests, one per
/// backend: `embedded::name` (SQLite) and `aws::name` (DynamoDB + Secrets Manager on moto), on a
/// multi-threaded runtime. `on_both_backends!(current_thread: ...)` runs them on the test's own
/// thread instead, for tests that capture logs with a thread-local subscriber.
#[macro_export]
macro_rules! on_both_backends {
    (current_thread: $($name:ident),* $(,)?) => {
        $crate::on_both_backends!(@tests [tokio::test] $($name),*);
    };
    ($($name:ident),* $(,)?) => {
        $crate::on_both_backends!(
            @tests [tokio::test(flavor = "multi_thread", worker_threads = 4)] $($name),*
        );
    };
    (@tests [$runtime:meta] $($name:ident),*) => {
        mod embedded {
            $(
                #[$runtime]
                async fn $name() {
                    super::$name($crate::backends::embedded()).await;
                }
            )*
        }
        mod aws {
            $(
                #[$runtime]
                async fn $name() {
                    super::$name($crate::backends::aws().await).await;
                }
            )*
        }
    };
}
