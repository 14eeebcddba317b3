//! The expiry-notifier Lambda: build everything once per cold start, then hand each event to
//! [`expiry_notifier::handle`].

use broker_core::backend::BackendConfig;
use broker_core::context::BrokerContext;
use broker_core::notify::{Notifier, NotifySettings};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    broker_core::telemetry::init();
    let settings = NotifySettings::from_env()?;
    let ctx = BrokerContext::from_env().await?;
    let mailer = expiry_notifier::mailer_for(&BackendConfig::from_env(), &settings).await;
    let notifier = Arc::new(Notifier::new(ctx, mailer, settings));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let notifier = notifier.clone();
        async move { expiry_notifier::handle(&notifier, event.payload).await }
    }))
    .await
}
