//! `/v1/webhooks` through the real router, served on a loopback port.

use super::*;
use broker_tests::backends;
use serde_json::{json, Value};

struct Served {
    base: String,
    client: reqwest::Client,
}

impl Served {
    async fn start(w: &World) -> Self {
        let router = session_exchange::router(w.ctx.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            base,
            client: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, String, String) {
        let mut request = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = request.send().await.unwrap();
        let status = reply.status().as_u16();
        let kind = reply
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (status, kind, reply.text().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_registered_listed_and_deleted_per_tenant_and_the_secret_is_shown_once() {
    let w = world(backends::embedded()).await;
    let served = Served::start(&w).await;
    let receiver = Receiver::start().await;
    let (_, _, a) = w.tenant_with_key("acme", true).await;
    let (_, _, b) = w.tenant_with_key("globex", true).await;
    let (_, _, limited) = w.tenant_with_key("initech", false).await;

    let (status, _, text) = served
        .call(
            "POST",
            "/v1/webhooks",
            &a,
            Some(json!({"url": receiver.url, "description": "ops"})),
        )
        .await;
    assert_eq!(status, 201, "{text}");
    let created: Value = serde_json::from_str(&text).unwrap();
    let secret = created["secret"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );
    assert!(id.starts_with("whk_"));

    let (status, _, listed) = served.call("GET", "/v1/webhooks", &a, None).await;
    assert_eq!(status, 200);
    let listed_json: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed_json["webhooks"][0]["id"], id.as_str());
    assert_eq!(listed_json["webhooks"][0]["description"], "ops");
    assert!(
        !listed.contains(&secret) && !listed.contains("secret"),
        "{listed}"
    );

    // Another tenant neither sees nor deletes it.
    let (_, _, theirs) = served.call("GET", "/v1/webhooks", &b, None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&theirs).unwrap()["webhooks"],
        json!([])
    );
    let (status, kind, text) = served
        .call("DELETE", &format!("/v1/webhooks/{id}"), &b, None)
        .await;
    assert_eq!(
        (status, kind.as_str()),
        (404, "application/problem+json"),
        "{text}"
    );
    let (_, _, dead) = served
        .call("GET", "/v1/webhooks/dead-letters", &b, None)
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&dead).unwrap()["dead_letters"],
        json!([])
    );

    // A key without the grant may not touch them.
    for (method, path) in [
        ("GET", "/v1/webhooks"),
        ("GET", "/v1/webhooks/dead-letters"),
    ] {
        let (status, _, text) = served.call(method, path, &limited, None).await;
        assert_eq!(status, 403, "{text}");
        assert!(text.contains("manage_apps"), "{text}");
    }

    let (status, _, _) = served
        .call("DELETE", &format!("/v1/webhooks/{id}"), &a, None)
        .await;
    assert_eq!(status, 204);
    let (_, _, listed) = served.call("GET", "/v1/webhooks", &a, None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&listed).unwrap()["webhooks"],
        json!([])
    );
    let (status, _, _) = served
        .call("DELETE", &format!("/v1/webhooks/{id}"), &a, None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_urls_obey_the_provider_address_rules_and_the_refusal_says_what_to_do() {
    let w = world(backends::embedded()).await;
    let served = Served::start(&w).await;
    let (_, _, key) = w.tenant_with_key("acme", true).await;
    for (url, says) in [
        ("https://10.1.2.3/hooks", "public https URL"),
        (
            "https://169.254.169.254/latest/meta-data",
            "public https URL",
        ),
        ("https://[fd00::1]/hooks", "public https URL"),
        ("http://93.184.215.14/hooks", "must use https"),
        (
            "https://user:pw@93.184.215.14/hooks",
            "user name or password",
        ),
        ("not a url", "full https:// address"),
    ] {
        let (status, kind, text) = served
            .call("POST", "/v1/webhooks", &key, Some(json!({ "url": url })))
            .await;
        assert_eq!(
            (status, kind.as_str()),
            (422, "application/problem+json"),
            "{url}: {text}"
        );
        assert!(text.contains(says), "{url}: {text}");
        assert!(!text.contains("pw@"), "{text}");
    }
    let (status, _, text) = served
        .call(
            "POST",
            "/v1/webhooks",
            &key,
            Some(json!({ "url": "https://93.184.215.14/", "secret": "mine" })),
        )
        .await;
    assert_eq!(status, 400, "unknown fields are refused: {text}");
    // The most a tenant may have.
    for n in 0..20 {
        let (status, _, text) = served
            .call(
                "POST",
                "/v1/webhooks",
                &key,
                Some(json!({ "url": format!("https://93.184.215.14/{n}") })),
            )
            .await;
        assert_eq!(status, 201, "{text}");
    }
    let (status, _, text) = served
        .call(
            "POST",
            "/v1/webhooks",
            &key,
            Some(json!({ "url": "https://93.184.215.14/21" })),
        )
        .await;
    assert_eq!(status, 422);
    assert!(text.contains("delete one"), "{text}");
}
