//! The session-exchange function: the integration API on Lambda (behind API Gateway), or served
//! locally by axum when not running on Lambda (`SESSION_EXCHANGE_LISTEN`, default `127.0.0.1:8081`).

use broker_core::context::BrokerContext;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    broker_core::telemetry::init();
    // Built once per cold start: stores, provider clients, and the API's in-process caches.
    let ctx = BrokerContext::from_env().await?;
    let app = session_exchange::router(ctx);
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        return lambda_http::run(app).await;
    }
    let addr =
        std::env::var("SESSION_EXCHANGE_LISTEN").unwrap_or_else(|_| "127.0.0.1:8081".to_string());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(%addr, "serving the integration API locally");
    axum::serve(listener, app).await?;
    Ok(())
}
