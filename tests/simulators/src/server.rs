//! The HTTP/1.1 accept loop. `axum::serve` cannot close a connection without answering, which the
//! `drop` faults need, so each connection is served by hyper directly and a response marked with
//! `DropConnection` becomes a service error: hyper then closes the socket without writing anything.

use crate::faults::DropConnection;
use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

#[derive(Debug)]
struct DroppedOnPurpose;

impl std::fmt::Display for DroppedOnPurpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for DroppedOnPurpose {}

/// Stops the accept loop and every open connection (hung ones included) when told or dropped.
pub(crate) struct ServerGuard {
    stop: watch::Sender<bool>,
}

impl ServerGuard {
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub(crate) fn spawn(listener: TcpListener, router: Router) -> ServerGuard {
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    connections.spawn(serve_connection(stream, router.clone()));
                }
                _ = stopped.changed() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.abort_all();
    });
    ServerGuard { stop }
}

async fn serve_connection(stream: tokio::net::TcpStream, router: Router) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let router = router.clone();
        async move {
            let response = router
                .oneshot(request.map(Body::new))
                .await
                .unwrap_or_else(|e: Infallible| match e {});
            if response.extensions().get::<DropConnection>().is_some() {
                return Err(DroppedOnPurpose);
            }
            Ok(response)
        }
    });
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
