//! The oauth-callback Lambda: builds the context once per cold start and hands the router to
//! `lambda_http`. Outside Lambda (no `AWS_LAMBDA_RUNTIME_API`) the same router is served on
//! `BROKER_LISTEN` (default 127.0.0.1:8080), so a local run exercises the real handlers.

use anyhow::Context;
use broker_core::context::BrokerContext;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    broker_core::telemetry::init();
    let ctx = BrokerContext::from_env()
        .await
        .context("building the broker context")?;
    broker_http_main::serve_or_run("oauth-callback", oauth_callback::router(ctx)).await
}
