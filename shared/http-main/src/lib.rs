//! How an HTTP function runs: on Lambda (the runtime API is present) `lambda_http` serves the router;
//! anywhere else `axum::serve` serves the same router on `BROKER_LISTEN`, so a local run exercises the
//! real handlers.

use axum::Router;

/// Where a function serves when not on Lambda, unless `BROKER_LISTEN` says otherwise. The local
/// runner serves every router together on this address; run two functions on their own and give one
/// of them another address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Serves `router` until the process ends: on Lambda per invocation, elsewhere on
/// [`listen_address`]. `name` says which function is serving, in the log line.
pub async fn serve_or_run(name: &str, router: Router) -> Result<(), lambda_http::Error> {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        return lambda_http::run(router).await;
    }
    let listen = listen_address(std::env::var("BROKER_LISTEN").ok());
    let listener = tokio::net::TcpListener::bind(&listen).await.map_err(|e| {
        format!("{name} cannot listen on {listen} ({e}): set BROKER_LISTEN to a free address")
    })?;
    tracing::info!(%listen, function = name, "serving locally");
    axum::serve(listener, router).await?;
    Ok(())
}

/// The address to serve on: `BROKER_LISTEN` when set and not blank, else [`DEFAULT_LISTEN`].
pub fn listen_address(configured: Option<String>) -> String {
    configured
        .map(|value| value.trim().to_string())
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_address_wins_unless_blank() {
        assert_eq!(listen_address(None), DEFAULT_LISTEN);
        assert_eq!(listen_address(Some("  ".into())), DEFAULT_LISTEN);
        assert_eq!(listen_address(Some("0.0.0.0:9000".into())), "0.0.0.0:9000");
    }
}
