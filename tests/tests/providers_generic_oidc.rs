//! The generic OAuth 2.0 / OpenID Connect client against a real server, oidc-provider (npm), defined
//! only by configuration: an issuer whose discovery document supplies everything else. Authorization
//! code with PKCE, refresh with rotation, and reuse of a rotated refresh token classified as revoked.

use broker_core::clock::{Clock, SystemClock};
use broker_core::domain::{
    new_one_time_secret, OAuthApp, ProviderContext, ProviderSettings, ReconnectKind, RedirectUri,
};
use broker_core::ids::{AppId, TenantId};
use broker_core::providers::{
    Catalogue, ClientAuth, ErrorClass, OAuthClient, ProviderError, Providers,
};
use broker_core::secret::{AuthorizationCode, ClientSecret, PkceVerifier};
use broker_tests::oidc::{OidcProvider, ACCOUNT, DEFINITION};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::Arc;

const REDIRECT: &str = "http://127.0.0.1:9/oidc/callback";

async fn start_server() -> OidcProvider {
    OidcProvider::launch(REDIRECT, 600).await
}

fn client(server: &OidcProvider, secret: &str) -> OAuthClient {
    client_with_clock(server, secret, Arc::new(SystemClock))
}

/// The real time moved by a fixed amount: a broker whose clock runs ahead of the provider's.
struct Offset(chrono::Duration);

impl Clock for Offset {
    fn now(&self) -> chrono::DateTime<Utc> {
        Utc::now() + self.0
    }
}

fn client_with_clock(server: &OidcProvider, secret: &str, clock: Arc<dyn Clock>) -> OAuthClient {
    let catalogue = server.catalogue(&["openid", "offline_access", "profile", "email"], 3600);
    let providers = Providers::new(catalogue, broker_tests::provider_http(), clock);
    let app = OAuthApp {
        tenant: TenantId::parse("acme").unwrap(),
        id: AppId::parse("oidc").unwrap(),
        settings: ProviderSettings::Generic {
            definition: DEFINITION.into(),
        },
        client_id: server.client_id.clone(),
        redirect_uri: RedirectUri::parse(REDIRECT).unwrap(),
        scopes: vec![],
        created_at: Utc::now(),
    };
    providers
        .oauth_client(&app, ClientSecret::new(secret))
        .unwrap()
}

/// Authorization through the real server: the URL, the browser's redirects, the code from the callback.
async fn authorize(
    server: &OidcProvider,
    client: &OAuthClient,
) -> (AuthorizationCode, Option<PkceVerifier>, Option<String>) {
    let (state, _) = new_one_time_secret();
    let request = client.authorization_request(&state, &[]).await.unwrap();
    let q: HashMap<String, String> = request.url.query_pairs().into_owned().collect();
    assert_eq!(
        q["code_challenge_method"], "S256",
        "PKCE from the discovery document"
    );
    assert_eq!(q["prompt"], "consent");
    let callback = server
        .follow_authorization(request.url.as_str())
        .await
        .unwrap();
    let params: HashMap<String, String> = callback.query_pairs().into_owned().collect();
    assert!(
        !params.contains_key("error"),
        "the server refused: {params:?}"
    );
    assert_eq!(
        params.get("state").map(String::as_str),
        Some(state.expose())
    );
    (
        AuthorizationCode::new(params["code"].clone()),
        request.pkce_verifier,
        request.nonce,
    )
}

fn assert_clean(error: &ProviderError, secrets: &[&str]) {
    let printed = format!("{error} {error:?}");
    for secret in secrets {
        assert!(
            !printed.contains(secret),
            "an error shows a secret: {printed}"
        );
    }
}

#[tokio::test]
async fn code_with_pkce_refresh_with_rotation_and_reuse_detected() {
    let server = start_server().await;
    let client = client(&server, &server.client_secret);
    let endpoints = client.endpoints().await.unwrap();
    assert_eq!(endpoints.client_auth, ClientAuth::Basic);
    assert!(endpoints.pkce && endpoints.userinfo.is_some());

    let (code, verifier, nonce) = authorize(&server, &client).await;
    let authorized = client
        .exchange_code(&code, verifier.as_ref(), nonce.as_deref())
        .await
        .unwrap();
    let first = authorized.tokens.clone();
    assert!(first.refresh_token.is_some(), "offline_access granted");
    assert_eq!(
        authorized.id_token.as_ref().unwrap().subject.as_deref(),
        Some(ACCOUNT)
    );
    assert_eq!(
        authorized.id_token.as_ref().unwrap().nonce,
        nonce,
        "the nonce came back in the id_token"
    );

    let found = client.discover(&authorized).await.unwrap();
    assert_eq!(found.context, ProviderContext::Generic { account: None });
    let identity = found.identity.unwrap();
    assert_eq!(
        (identity.subject.as_str(), identity.display_name.as_deref()),
        (ACCOUNT, Some("Test User"))
    );

    // Rotation: every refresh brings a new refresh token.
    let second = client.refresh(&first, None).await.unwrap();
    let (old, new) = (
        first.refresh_token.as_ref().unwrap().expose(),
        second.refresh_token.as_ref().unwrap().expose(),
    );
    assert_ne!(old, new);
    let third = client.refresh(&second, None).await.unwrap();

    // Reusing the rotated token: invalid_grant, a revoked grant; oidc-provider revokes the whole grant.
    let e = client.refresh(&first, None).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::GrantRevoked, "{e}");
    assert_eq!(e.error_code.as_deref(), Some("invalid_grant"));
    assert_eq!(
        e.reconnect_reason().unwrap().kind,
        ReconnectKind::GrantRevoked
    );
    assert!(e.recovered.is_none());
    assert_clean(
        &e,
        &[old, new, first.access_token.expose(), &server.client_secret],
    );
    let e = client.refresh(&third, None).await.unwrap_err();
    assert_eq!(
        e.class,
        ErrorClass::GrantRevoked,
        "the whole chain is gone: {e}"
    );
}

#[tokio::test]
async fn pkce_is_enforced_and_a_wrong_secret_is_a_misconfigured_client() {
    let server = start_server().await;
    let good = client(&server, &server.client_secret);
    let (code, _verifier, _) = authorize(&server, &good).await;
    let wrong_verifier =
        PkceVerifier::new("a-verifier-that-does-not-match-the-challenge-at-all-0123456789");
    let e = good
        .exchange_code(&code, Some(&wrong_verifier), None)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::GrantRevoked, "{e}");
    assert_clean(
        &e,
        &[
            code.expose(),
            wrong_verifier.expose(),
            &server.client_secret,
        ],
    );

    let bad = client(&server, "not-the-client-secret");
    let (code, verifier, _) = authorize(&server, &bad).await;
    let e = bad
        .exchange_code(&code, verifier.as_ref(), None)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::ClientMisconfigured, "{e}");
    assert_eq!(
        e.reconnect_reason().unwrap().kind,
        ReconnectKind::ClientMisconfigured
    );
    assert_clean(&e, &[code.expose(), "not-the-client-secret"]);
}

#[tokio::test]
async fn the_real_servers_id_token_is_verified_against_its_keys_and_a_wrong_nonce_refused() {
    let server = start_server().await;
    let client = client(&server, &server.client_secret);
    let endpoints = client.endpoints().await.unwrap();
    assert!(endpoints.jwks.is_some(), "oidc-provider publishes its keys");
    assert_eq!(endpoints.issuer.as_deref(), Some(server.issuer.as_str()));
    let (code, verifier, nonce) = authorize(&server, &client).await;
    assert!(nonce.is_some(), "a nonce goes with every openid request");
    let e = client
        .exchange_code(
            &code,
            verifier.as_ref(),
            Some("not-the-nonce-that-was-sent"),
        )
        .await
        .unwrap_err();
    assert!(e.detail.contains("nonce"), "{e}");

    // The same server's token, read by a broker whose clock is an hour ahead: expired.
    let (code, verifier, nonce) = authorize(&server, &client).await;
    let late = client_with_clock(
        &server,
        &server.client_secret,
        Arc::new(Offset(chrono::Duration::hours(1))),
    );
    let e = late
        .exchange_code(&code, verifier.as_ref(), nonce.as_deref())
        .await
        .unwrap_err();
    assert!(e.detail.contains("expired"), "{e}");
}

// ---------------------------------------------------------------------------------------------------
// A hostile OpenID Connect endpoint: real servers do not hand out a wrong issuer, a foreign audience
// or a forged signature on request, so these cases are played by a small server of the test's own
// that signs with ES256 and publishes its key.

mod rogue {
    use axum::extract::State;
    use axum::http::HeaderMap;
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::{json, Value};
    use std::sync::{Arc, Mutex};

    pub const CLIENT_ID: &str = "rogue-client";
    pub const NONCE: &str = "nonce-of-the-request";

    pub struct Settings {
        /// Where the discovery document says the token endpoint is.
        pub token_endpoint: Option<String>,
        /// Merged over the id_token's claims; `null` removes one.
        pub claims: Value,
        /// Sign with a key the JWKS does not publish.
        pub foreign_key: bool,
        /// Token requests received, and whether each carried a client secret.
        pub token_requests: Vec<bool>,
    }

    pub struct Rogue {
        pub base: String,
        pub settings: Arc<Mutex<Settings>>,
    }

    struct Shared {
        base: String,
        key: EcdsaKeyPair,
        foreign: EcdsaKeyPair,
        settings: Arc<Mutex<Settings>>,
    }

    fn key() -> EcdsaKeyPair {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
    }

    /// Starts on `host` ("127.0.0.1" or "localhost") and a free port.
    pub async fn start(host: &str) -> Rogue {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{host}:{}", listener.local_addr().unwrap().port());
        let settings = Arc::new(Mutex::new(Settings {
            token_endpoint: None,
            claims: json!({}),
            foreign_key: false,
            token_requests: Vec::new(),
        }));
        let shared = Arc::new(Shared {
            base: base.clone(),
            key: key(),
            foreign: key(),
            settings: settings.clone(),
        });
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .with_state(shared);
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Rogue { base, settings }
    }

    async fn discovery(State(s): State<Arc<Shared>>) -> Json<Value> {
        let base = &s.base;
        let token = s.settings.lock().unwrap().token_endpoint.clone();
        Json(json!({
            "issuer": base,
            "authorization_endpoint": format!("{base}/authorize"),
            "token_endpoint": token.unwrap_or_else(|| format!("{base}/token")),
            "jwks_uri": format!("{base}/jwks"),
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
        }))
    }

    async fn jwks(State(s): State<Arc<Shared>>) -> Json<Value> {
        let point = s.key.public_key().as_ref();
        Json(
            json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])}]}),
        )
    }

    async fn token(State(s): State<Arc<Shared>>, _headers: HeaderMap, body: String) -> Json<Value> {
        let mut settings = s.settings.lock().unwrap();
        settings
            .token_requests
            .push(body.contains("client_secret="));
        let now = chrono::Utc::now().timestamp();
        let mut claims = json!({"iss": s.base, "aud": CLIENT_ID, "sub": "rogue-user",
            "nonce": NONCE, "iat": now, "exp": now + 300});
        for (k, v) in settings.claims.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        let key = if settings.foreign_key {
            &s.foreign
        } else {
            &s.key
        };
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "kid": "k1"}).to_string());
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let message = format!("{header}.{payload}");
        let sig = key.sign(&SystemRandom::new(), message.as_bytes()).unwrap();
        let id_token = format!("{message}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
        Json(
            json!({"access_token": "rogue-access-token", "token_type": "Bearer",
            "expires_in": 300, "refresh_token": "rogue-refresh-token", "id_token": id_token}),
        )
    }
}

fn rogue_client(rogue: &rogue::Rogue, allowed_hosts: &[&str]) -> OAuthClient {
    let mut catalogue = Catalogue::built_in();
    let definition = serde_json::json!({ "definitions": [{
        "id": "rogue", "kind": "generic", "display_name": "Rogue",
        "issuer": rogue.base, "scopes": ["openid"],
        "discovered_endpoint_hosts": allowed_hosts,
        "lifetimes": { "access_token_secs": 300 },
        "refresh": { "rotation": "single_use", "expiry": { "kind": "unknown" } },
        "discovery": "none"
    }]});
    catalogue.merge_json(&definition.to_string()).unwrap();
    let providers = Providers::new(
        catalogue,
        broker_tests::provider_http(),
        Arc::new(SystemClock),
    );
    let app = OAuthApp {
        tenant: TenantId::parse("acme").unwrap(),
        id: AppId::parse("rogue").unwrap(),
        settings: ProviderSettings::Generic {
            definition: "rogue".into(),
        },
        client_id: rogue::CLIENT_ID.into(),
        redirect_uri: RedirectUri::parse(REDIRECT).unwrap(),
        scopes: vec![],
        created_at: Utc::now(),
    };
    providers
        .oauth_client(&app, ClientSecret::new("rogue-client-secret"))
        .unwrap()
}

#[tokio::test]
async fn an_id_token_that_fails_any_check_is_refused() {
    let rogue = rogue::start("127.0.0.1").await;
    let client = rogue_client(&rogue, &[]);
    let exchange = || async {
        client
            .exchange_code(
                &AuthorizationCode::new("a-code-of-the-rogue"),
                Some(&PkceVerifier::new("v".repeat(64))),
                Some(rogue::NONCE),
            )
            .await
    };
    let good = exchange().await.expect("an honest token passes");
    assert_eq!(
        good.id_token.unwrap().subject.as_deref(),
        Some("rogue-user")
    );

    let now = Utc::now().timestamp();
    let cases = [
        (
            serde_json::json!({"iss": "http://127.0.0.1:1/other"}),
            "issued by",
        ),
        (
            serde_json::json!({"aud": "another-app"}),
            "not meant for this app",
        ),
        (
            serde_json::json!({"aud": [rogue::CLIENT_ID, "x"], "azp": "x"}),
            "azp",
        ),
        (serde_json::json!({"exp": now - 3600}), "expired"),
        (serde_json::json!({"exp": null}), "no expiry"),
        (serde_json::json!({"nonce": "a-replayed-nonce"}), "nonce"),
    ];
    for (claims, words) in cases {
        rogue.settings.lock().unwrap().claims = claims.clone();
        let e = exchange().await.expect_err(&claims.to_string());
        assert_eq!(e.class, ErrorClass::Unexpected, "{e}");
        assert!(
            e.detail.contains("id_token failed its checks") && e.detail.contains(words),
            "{claims}: {e}"
        );
    }
    {
        let mut settings = rogue.settings.lock().unwrap();
        settings.claims = serde_json::json!({});
        settings.foreign_key = true;
    }
    let e = exchange().await.unwrap_err();
    assert!(e.detail.contains("signature does not verify"), "{e}");
}

#[tokio::test]
async fn a_discovered_endpoint_off_the_issuers_origin_gets_no_secret() {
    let rogue = rogue::start("127.0.0.1").await;
    let elsewhere = rogue::start("localhost").await;
    rogue.settings.lock().unwrap().token_endpoint = Some(format!("{}/token", elsewhere.base));

    let client = rogue_client(&rogue, &[]);
    let e = client.endpoints().await.unwrap_err();
    assert_eq!(e.class, ErrorClass::ClientMisconfigured, "{e}");
    assert!(e.to_string().contains("not on the issuer's origin"), "{e}");
    let e = client
        .exchange_code(&AuthorizationCode::new("a-code"), None, Some(rogue::NONCE))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::ClientMisconfigured, "{e}");
    assert!(elsewhere.settings.lock().unwrap().token_requests.is_empty());

    // A catalogue entry that names the host allows it.
    let trusting = rogue_client(&rogue, &["localhost"]);
    let endpoints = trusting.endpoints().await.unwrap();
    assert_eq!(
        endpoints.token.as_str(),
        format!("{}/token", elsewhere.base)
    );
}

#[tokio::test]
async fn a_discovered_endpoint_on_a_private_address_is_refused_before_any_call() {
    let rogue = rogue::start("127.0.0.1").await;
    for (endpoint, class) in [
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://10.0.0.1/token", "private network"),
        ("https://[::ffff:a9fe:a9fe]/token", "link-local"),
    ] {
        rogue.settings.lock().unwrap().token_endpoint = Some(endpoint.to_string());
        let host = url::Url::parse(endpoint)
            .unwrap()
            .host_str()
            .unwrap()
            .to_string();
        // The catalogue entry trusts the host, so only the address policy stands in the way.
        let client = rogue_client(&rogue, &[host.as_str()]);
        let e = client.endpoints().await.unwrap_err();
        assert_eq!(e.class, ErrorClass::ClientMisconfigured, "{e}");
        let said = e.to_string();
        assert!(said.contains("token_endpoint"), "{said}");
        assert!(said.contains(class), "{endpoint}: {said}");
        assert!(said.contains("public https URL"), "{said}");
        let e = client
            .exchange_code(&AuthorizationCode::new("a-code"), None, Some(rogue::NONCE))
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::ClientMisconfigured, "{e}");
        assert!(!e.outcome_unknown, "{e}");
    }
    assert!(rogue.settings.lock().unwrap().token_requests.is_empty());
}
