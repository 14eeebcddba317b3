//! oidc-provider (npm): a real OAuth 2.0 / OpenID Connect server for the generic provider tests.
//!
//! The version is pinned by `tests/oidc/package.json` and its lockfile; the first run installs it with
//! `npm ci` into `.tools/oidc`. Each [`OidcProvider`] runs `tests/oidc/server.mjs` on a free loopback port
//! with one confidential client (PKCE required, refresh tokens rotated) and an interaction that signs in
//! a fixed account and consents automatically; [`OidcProvider::follow_authorization`] plays the browser.

use crate::tools::{
    free_port, install_once, run, tools_dir, wait_for_port, workspace_root, Service,
};
use anyhow::{bail, Context, Result};
use broker_core::providers::Catalogue;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The account the interaction signs in (the `sub` of every token).
pub const ACCOUNT: &str = "test-user";

fn source_dir() -> PathBuf {
    workspace_root().join("tests").join("oidc")
}

fn install_dir() -> PathBuf {
    tools_dir().join("oidc")
}

/// Installs the pinned oidc-provider into `.tools/oidc`, once per lockfile.
pub fn install() -> Result<()> {
    let lock = std::fs::read(source_dir().join("package-lock.json"))
        .context("reading tests/oidc/package-lock.json")?;
    // A changed lockfile installs again: the marker is named after its content.
    let mut hasher = DefaultHasher::new();
    lock.hash(&mut hasher);
    install_once(&format!("oidc-{:016x}", hasher.finish()), || {
        let dir = install_dir();
        std::fs::create_dir_all(&dir)?;
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(source_dir().join(file), dir.join(file))
                .with_context(|| format!("copying {file}"))?;
        }
        let npm = run(Command::new("npm")
            .arg("ci")
            .arg("--prefix")
            .arg(&dir)
            .args([
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ]));
        npm.context("npm ci failed: oidc-provider needs Node.js 20.19 or later with npm on PATH")
    })
}

/// A running oidc-provider; stopped when dropped.
pub struct OidcProvider {
    _service: Service,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
}

impl OidcProvider {
    /// Starts a server whose one client may redirect to `redirect_uri`.
    pub fn start(redirect_uri: &str) -> Result<Self> {
        Self::start_with(redirect_uri, 600)
    }

    /// As [`Self::start`], issuing access tokens that live `access_token_ttl_secs`.
    ///
    /// A free port is only free until someone binds it: when two servers start at once on the same
    /// one, the loser exits while the winner answers its port check. So each server is asked who it is
    /// (`/test/instance`), and a start that finds another server, or none, tries again on a new port.
    pub fn start_with(redirect_uri: &str, access_token_ttl_secs: u32) -> Result<Self> {
        install()?;
        let mut last_error = None;
        for _ in 0..3 {
            match Self::start_once(redirect_uri, access_token_ttl_secs) {
                Ok(server) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("tried at least once"))
    }

    fn start_once(redirect_uri: &str, access_token_ttl_secs: u32) -> Result<Self> {
        let port = free_port();
        static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let instance = format!(
            "{}-{}-{port}",
            std::process::id(),
            STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let client_id = "broker-tests".to_string();
        let client_secret = format!("oidc-client-secret-{port}");
        let script = source_dir().join("server.mjs");
        let envs = [
            (
                "OIDC_MODULES",
                install_dir().join("node_modules").display().to_string(),
            ),
            ("OIDC_PORT", port.to_string()),
            ("OIDC_CLIENT_ID", client_id.clone()),
            ("OIDC_CLIENT_SECRET", client_secret.clone()),
            ("OIDC_REDIRECT_URI", redirect_uri.to_string()),
            ("OIDC_ACCESS_TOKEN_TTL", access_token_ttl_secs.to_string()),
            ("OIDC_INSTANCE", instance.clone()),
        ];
        let mut service = Service::spawn(
            "oidc-provider",
            Path::new("node"),
            &[script.display().to_string()],
            &envs,
        )?;
        wait_for_port(
            port,
            service.child(),
            Duration::from_secs(30),
            "oidc-provider",
        )?;
        let answering = instance_on(port).unwrap_or_default();
        if answering != instance {
            bail!("another server answers on port {port} (a port race); starting again");
        }
        Ok(Self {
            _service: service,
            issuer: format!("http://127.0.0.1:{port}"),
            client_id,
            client_secret,
            redirect_uri: redirect_uri.to_string(),
        })
    }

    /// Plays the browser: opens the authorization URL and follows the provider's redirects through its
    /// automatic sign-in and consent, keeping cookies, until it redirects to the redirect URI. Returns
    /// that final URL (with `code` and `state`, or `error`).
    pub async fn follow_authorization(&self, authorization_url: &str) -> Result<reqwest::Url> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
        let mut jar: HashMap<String, String> = HashMap::new();
        let mut url = reqwest::Url::parse(authorization_url)?;
        for _ in 0..12 {
            let cookies = jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            let mut request = http.get(url.clone());
            if !cookies.is_empty() {
                request = request.header(reqwest::header::COOKIE, cookies);
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("GET {}", url.path()))?;
            for header in response.headers().get_all(reqwest::header::SET_COOKIE) {
                remember_cookie(&mut jar, header.to_str().unwrap_or_default());
            }
            let status = response.status();
            let Some(location) = response.headers().get(reqwest::header::LOCATION) else {
                let body = response.text().await.unwrap_or_default();
                bail!(
                    "oidc-provider answered {status} without a redirect at {}: {body:.500}",
                    url.path()
                );
            };
            url = url.join(location.to_str()?)?;
            if url.as_str().starts_with(&self.redirect_uri) {
                return Ok(url);
            }
        }
        bail!(
            "oidc-provider did not redirect back to {} within 12 hops",
            self.redirect_uri
        )
    }
}

/// What the server counted (`GET /test/grants`, from its own grant events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct GrantCounts {
    pub refreshes: u64,
    pub codes: u64,
    pub revoked: u64,
    pub errors: u64,
}

impl OidcProvider {
    /// A whole authorization through this server with the broker's client: the authorization URL, the
    /// browser's redirects, and the code exchanged (PKCE and nonce as the client chose them).
    pub async fn authorize_with(
        &self,
        client: &broker_core::providers::OAuthClient,
    ) -> Result<broker_core::providers::Authorized> {
        let (state, _) = broker_core::domain::new_one_time_secret();
        let request = client.authorization_request(&state, &[]).await?;
        let callback = self.follow_authorization(request.url.as_str()).await?;
        let code = callback
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .context("the server redirected back without a code")?;
        let authorized = client
            .exchange_code(
                &broker_core::secret::AuthorizationCode::new(code),
                request.pkce_verifier.as_ref(),
                request.nonce.as_deref(),
            )
            .await?;
        Ok(authorized)
    }

    /// The interaction signs in `account` from now on (the server's test hook).
    pub async fn sign_in_as(&self, account: &str) -> Result<()> {
        reqwest::get(format!("{}/test/sign-in-as/{account}", self.issuer))
            .await?
            .error_for_status()?;
        Ok(())
    }

    pub async fn grant_counts(&self) -> Result<GrantCounts> {
        let counts = reqwest::get(format!("{}/test/grants", self.issuer))
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(counts)
    }

    /// Whether the server accepts `access_token` (its userinfo endpoint answers 200).
    pub async fn accepts(&self, access_token: &str) -> Result<bool> {
        let status = reqwest::Client::new()
            .get(format!("{}/me", self.issuer))
            .bearer_auth(access_token)
            .send()
            .await?
            .status();
        Ok(status.is_success())
    }
}

/// The instance id the server on `port` reports (`GET /test/instance`), read with a plain socket: this
/// runs before any async runtime is needed.
fn instance_on(port: u16) -> Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /test/instance HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string())
}

/// A cookie jar good enough for one loopback host: names and values, deletions honoured.
fn remember_cookie(jar: &mut HashMap<String, String>, set_cookie: &str) {
    let mut parts = set_cookie.split(';');
    let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
        return;
    };
    let (name, value) = (name.trim().to_string(), value.trim().to_string());
    let expired = parts
        .map(|a| a.trim().to_ascii_lowercase())
        .any(|a| a == "max-age=0" || a.starts_with("expires=thu, 01 jan 1970"));
    if expired || value.is_empty() {
        jar.remove(&name);
    } else {
        jar.insert(name, value);
    }
}

/// The definition id under which [`OidcProvider::catalogue`] lists the server.
pub const DEFINITION: &str = "oidc-provider";

impl OidcProvider {
    /// [`Self::start_with`] on a blocking thread (it waits for a child process), for async tests.
    pub async fn launch(redirect_uri: &str, access_token_ttl_secs: u32) -> Self {
        let redirect_uri = redirect_uri.to_string();
        tokio::task::spawn_blocking(move || Self::start_with(&redirect_uri, access_token_ttl_secs))
            .await
            .unwrap()
            .expect("oidc-provider starts")
    }

    /// The built-in catalogue plus this server as the generic provider [`DEFINITION`]: single-use
    /// refresh tokens that expire after a day idle, and the person's id from the userinfo endpoint.
    pub fn catalogue(&self, scopes: &[&str], access_token_secs: u32) -> Catalogue {
        let mut catalogue = Catalogue::built_in();
        let definition = serde_json::json!({ "definitions": [{
            "id": DEFINITION, "kind": "generic", "display_name": "oidc-provider",
            "issuer": self.issuer,
            "scopes": scopes,
            // oidc-provider issues a refresh token for offline_access only with prompt=consent.
            "authorize_params": { "prompt": "consent", "nonce": "{random}" },
            "lifetimes": { "access_token_secs": access_token_secs },
            "refresh": { "rotation": "single_use", "expiry": { "kind": "idle", "days": 1 } },
            "discovery": "userinfo"
        }]});
        catalogue
            .merge_json(&definition.to_string())
            .expect("the definition is valid");
        catalogue
    }
}

/// A tenant (`acme`) with one app (`oidc`) at a fresh oidc-provider, and a connection a person
/// authorized there just now, stored as the callback stores it.
pub struct Connected {
    pub server: OidcProvider,
    pub catalogue: Catalogue,
    pub app: broker_core::domain::OAuthApp,
    pub connection: broker_core::domain::Connection,
}

impl Connected {
    /// Access tokens live `access_token_secs`; `redirect_uri` is never called (the harness follows the
    /// server's redirects itself).
    pub async fn start(
        stores: &broker_core::backend::Backend,
        clock: std::sync::Arc<dyn broker_core::clock::Clock>,
        redirect_uri: &str,
        access_token_secs: u32,
    ) -> Self {
        use broker_core::domain::{
            Actor, Connection, ProviderKind, ProviderSettings, Recipients, StatusEvent,
        };
        use broker_core::secret::ClientSecret;
        let server = OidcProvider::launch(redirect_uri, access_token_secs).await;
        let catalogue =
            server.catalogue(&["openid", "offline_access", "profile"], access_token_secs);
        let now = clock.now();
        let tenant = crate::world::add_tenant(stores, "acme", "Acme", now).await;
        let settings = ProviderSettings::Generic {
            definition: DEFINITION.into(),
        };
        let app = crate::world::app(
            &tenant,
            "oidc",
            settings,
            &server.client_id,
            redirect_uri,
            now,
        );
        crate::world::register_app(stores, &app, &server.client_secret).await;
        let providers = broker_core::providers::Providers::new(
            catalogue.clone(),
            crate::provider_http(),
            clock,
        );
        let client = providers
            .oauth_client(&app, ClientSecret::new(server.client_secret.clone()))
            .unwrap();
        let authorized = server.authorize_with(&client).await.unwrap();
        let mut connection = Connection::new(
            tenant,
            app.id.clone(),
            ProviderKind::Generic,
            Recipients::default(),
            now,
        );
        stores
            .store
            .insert_connection(&connection, &[])
            .await
            .unwrap();
        let transition = connection
            .apply(
                StatusEvent::Authorized,
                Actor::EndUser("test-user".into()),
                now,
            )
            .unwrap();
        connection.last_refresh_at = Some(now);
        let connection =
            crate::world::store_authorized(stores, connection, authorized.tokens, transition).await;
        Self {
            server,
            catalogue,
            app,
            connection,
        }
    }
}
