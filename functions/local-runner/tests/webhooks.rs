//! The local runner delivers webhooks: a status change made through the API reaches a receiver on
//! this machine, signed, within a tick of the runner's timer.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use local_runner::{start, RunnerConfig};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Received = Arc<Mutex<Vec<(String, String)>>>;

async fn take(State(received): State<Received>, headers: HeaderMap, body: String) {
    let signature = headers
        .get("broker-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    received.lock().unwrap().push((signature, body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_reaches_a_registered_webhook() {
    let data_dir = std::env::temp_dir().join(format!("local-runner-hooks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    // This test binary's own environment: the runner reads its store's place from it.
    std::env::set_var("BROKER_DATA_DIR", &data_dir);
    std::env::remove_var("BROKER_TABLE");
    let running = start(RunnerConfig {
        port: 0,
        sandbox: true,
        sandbox_port: 0,
        auto_consent: true,
        outbox_dir: data_dir.join("outbox"),
        refresh_every: Duration::from_secs(3600),
        notify_every: Duration::from_millis(200),
    })
    .await
    .unwrap();

    let received: Received = Arc::default();
    let receiver = axum::Router::new()
        .route("/hooks", post(take))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let base = running.base_url.as_str().trim_end_matches('/').to_string();
    // A key that may manage the tenant's configuration (the walkthrough's may not).
    let manage = broker_core::domain::ApiKeyRecord::generate(
        running.walkthrough.tenant.clone(),
        "webhooks",
        broker_core::domain::ApiKeyScope {
            manage_apps: true,
            ..Default::default()
        },
        chrono::Utc::now(),
    );
    running
        .ctx
        .backend
        .store
        .insert_api_key(&manage.record)
        .await
        .unwrap();
    let key = manage.plaintext.expose().to_string();
    let connection = running.walkthrough.connections[0].id.clone();
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{base}/v1/webhooks"))
        .bearer_auth(&key)
        .json(&json!({ "url": hook_url }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        created["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_")),
        "{created}"
    );
    let disconnected = client
        .delete(format!("{base}/v1/connections/{connection}"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert!(
        disconnected.status().is_success(),
        "{}",
        disconnected.status()
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    let (signature, body) = loop {
        if let Some(first) = received.lock().unwrap().first().cloned() {
            break first;
        }
        assert!(Instant::now() < deadline, "no delivery within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["connection"], connection.as_str());
    assert_eq!(event["to"], "disconnected");
    assert!(
        signature.starts_with("t=") && signature.contains(",v1="),
        "{signature}"
    );
    // One delivery, however many ticks pass.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(received.lock().unwrap().len(), 1);
}
