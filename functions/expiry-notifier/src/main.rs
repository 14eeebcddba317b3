//! The expiry-notifier Lambda: build everything once per cold start, then hand each event to
//! [`expiry_notifier::handle_with_events`].

use broker_core::adapters::eventbridge::EventBridgeBus;
use broker_core::backend::BackendConfig;
use broker_core::context::BrokerContext;
use broker_core::events::{Dispatcher, EventBus};
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
    // The bus is the template's (BROKER_EVENT_BUS); without one, events go to webhooks only.
    let bus = EventBridgeBus::from_env()
        .await
        .map(|bus| Arc::new(bus) as Arc<dyn EventBus>);
    let dispatcher = Arc::new(Dispatcher::for_context(&ctx, bus));
    let notifier = Arc::new(Notifier::new(ctx, mailer, settings));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (notifier, dispatcher) = (notifier.clone(), dispatcher.clone());
        async move {
            expiry_notifier::handle_with_events(&notifier, &dispatcher, event.payload).await
        }
    }))
    .await
}
