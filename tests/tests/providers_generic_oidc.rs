//! The generic OAuth 2.0 / OpenID Connect client against a real server, oidc-provider (npm), defined
//! only by configuration: an issuer whose discovery document supplies everything else. Authorization
//! code with PKCE, refresh with rotation, and reuse of a rotated refresh token classified as revoked.

use broker_core::clock::SystemClock;
use broker_core::domain::{
    new_one_time_secret, OAuthApp, ProviderContext, ProviderSettings, ReconnectKind, RedirectUri,
};
use broker_core::ids::{AppId, TenantId};
use broker_core::providers::{
    Catalogue, ClientAuth, ErrorClass, HttpSettings, OAuthClient, ProviderError, ProviderHttp,
    Providers,
};
use broker_core::secret::{AuthorizationCode, ClientSecret, PkceVerifier};
use broker_tests::oidc::{OidcProvider, ACCOUNT};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::Arc;

const REDIRECT: &str = "http://127.0.0.1:9/oidc/callback";
const DEFINITION: &str = "oidc-provider";

async fn start_server() -> OidcProvider {
    tokio::task::spawn_blocking(|| OidcProvider::start(REDIRECT))
        .await
        .unwrap()
        .expect("oidc-provider starts")
}

fn client(server: &OidcProvider, secret: &str) -> OAuthClient {
    let mut catalogue = Catalogue::built_in();
    let definition = serde_json::json!({ "definitions": [{
        "id": DEFINITION, "kind": "generic", "display_name": "oidc-provider",
        "issuer": server.issuer,
        "scopes": ["openid", "offline_access", "profile", "email"],
        // oidc-provider issues a refresh token for offline_access only with prompt=consent.
        "authorize_params": { "prompt": "consent", "nonce": "{random}" },
        "lifetimes": { "access_token_secs": 3600 },
        "refresh": { "rotation": "single_use", "expiry": { "kind": "idle", "days": 1 } },
        "discovery": "userinfo"
    }]});
    catalogue.merge_json(&definition.to_string()).unwrap();
    let providers = Providers::new(
        catalogue,
        ProviderHttp::new(HttpSettings::default()).unwrap(),
        Arc::new(SystemClock),
    );
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
