//! The session-exchange function: the integration API on Lambda (behind API Gateway), or served
//! locally by axum when not running on Lambda (`BROKER_LISTEN`, default `127.0.0.1:8080`).

use broker_core::context::BrokerContext;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    broker_core::telemetry::init();
    // Built once per cold start: stores, provider clients, and the API's in-process caches.
    let ctx = BrokerContext::from_env().await?;
    broker_http_main::serve_or_run("session-exchange", session_exchange::router(ctx)).await
}
