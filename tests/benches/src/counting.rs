//! Counting AWS API calls by operation name with an SDK interceptor registered on the clients.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default, Debug)]
pub struct CallCounter {
    /// "Service.Operation" → calls.
    calls: Arc<Mutex<BTreeMap<String, u64>>>,
    /// PutSecretValue (and CreateSecret) per secret name.
    secret_writes: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl CallCounter {
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.calls.lock().unwrap().clone()
    }
    pub fn reset(&self) {
        self.calls.lock().unwrap().clear();
        self.secret_writes.lock().unwrap().clear();
    }
    pub fn secret_writes(&self) -> BTreeMap<String, u64> {
        self.secret_writes.lock().unwrap().clone()
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "bench-call-counter"
    }

    fn read_before_serialization(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let name = match cfg.load::<Metadata>() {
            Some(m) => format!("{}.{}", m.service(), m.name()),
            None => "unknown".into(),
        };
        *self.calls.lock().unwrap().entry(name).or_default() += 1;
        let input = context.input();
        let written = if let Some(put) = input
            .downcast_ref::<aws_sdk_secretsmanager::operation::put_secret_value::PutSecretValueInput>()
        {
            put.secret_id().map(|s| format!("PutSecretValue {s}"))
        } else if let Some(create) = input
            .downcast_ref::<aws_sdk_secretsmanager::operation::create_secret::CreateSecretInput>()
        {
            create.name().map(|s| format!("CreateSecret {s}"))
        } else {
            None
        };
        if let Some(key) = written {
            *self.secret_writes.lock().unwrap().entry(key).or_default() += 1;
        }
        Ok(())
    }
}

/// The AWS backend on moto (started on first use, installed into .tools/venv if missing), with both
/// clients counting their calls. A fresh table and secret prefix each time.
pub async fn aws_stores(
    counter: &CallCounter,
) -> anyhow::Result<(broker_core::backend::Backend, String, String)> {
    use broker_core::adapters::dynamodb::DynamoStore;
    use broker_core::adapters::secrets_manager::{SecretsManagerVault, VaultNaming};
    let moto = broker_tests::backends::shared_moto();
    let config = moto.sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config)
            .interceptor(counter.clone())
            .build(),
    );
    let secrets = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&config)
            .interceptor(counter.clone())
            .build(),
    );
    let table = broker_tests::moto::unique_name("bench");
    DynamoStore::create_table(&dynamodb, &table).await?;
    let prefix = broker_tests::moto::unique_name("connection-broker/bench");
    let vault = SecretsManagerVault::new(
        secrets,
        VaultNaming {
            prefix: prefix.clone(),
            kms_key_id: None,
        },
    );
    Ok((
        broker_core::backend::Backend {
            store: Arc::new(DynamoStore::new(dynamodb, table.clone())),
            vault: Arc::new(vault),
        },
        table,
        prefix,
    ))
}

pub fn moto_endpoint() -> String {
    broker_tests::backends::shared_moto().endpoint.clone()
}
