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
    let app = oauth_callback::router(ctx);
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        return lambda_http::run(app).await;
    }
    let listen = std::env::var("BROKER_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, "oauth-callback serving locally");
    axum::serve(listener, app).await?;
    Ok(())
}
