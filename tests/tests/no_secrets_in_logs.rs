//! No secret value reaches a log line, an error or a file at rest: storage flows on both backends run
//! with the production log filter at its most verbose, and everything they print or return is searched
//! for the secrets they handled; so is every file the embedded store keeps (database, WAL, shared
//! memory, key file), byte for byte.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use broker_core::adapters::embedded::EmbeddedStore;
use broker_core::adapters::secrets_manager::{SecretsManagerVault, VaultNaming};
use broker_core::domain::*;
use broker_core::ids::{AppId, ConnectionId, TenantId, WriteId};
use broker_core::ports::{Fence, TokenVault};
use broker_core::secret::{AccessToken, ClientSecret, RefreshToken};
use broker_core::CredentialKeeper;
use broker_tests::backends::{self, Backend};
use broker_tests::logs::Captured;
use chrono::{Duration, Utc};
use std::path::Path;
use std::sync::Arc;

const ACCESS: &str = "ACCESS-TOKEN-SENTINEL-7f3a";
const REFRESH: &str = "REFRESH-TOKEN-SENTINEL-91bc";
const CLIENT_SECRET: &str = "CLIENT-SECRET-SENTINEL-44de";

fn assert_clean(what: &str, text: &str) {
    for secret in [ACCESS, REFRESH, CLIENT_SECRET] {
        assert!(!text.contains(secret), "{what} contains a secret:\n{text}");
    }
}

fn sentinel_credentials(now: chrono::DateTime<Utc>) -> Credentials {
    Credentials::OAuth2(TokenSet {
        access_token: AccessToken::new(ACCESS),
        access_expires_at: now + Duration::minutes(10),
        refresh_token: Some(RefreshToken::new(REFRESH)),
        refresh_expires_at: None,
        scope: None,
        received_at: now,
    })
}

/// Every file in `folder` that holds one of the secrets as is, in base64 (standard or URL-safe) or in
/// hex: "<file>: <secret> (<form>)".
fn secrets_in_files(folder: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        for secret in [ACCESS, REFRESH, CLIENT_SECRET] {
            let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
            let forms = [
                ("raw", secret.as_bytes().to_vec()),
                ("base64", STANDARD.encode(secret).into_bytes()),
                ("base64url", URL_SAFE_NO_PAD.encode(secret).into_bytes()),
                ("hex", hex.clone().into_bytes()),
                ("HEX", hex.to_uppercase().into_bytes()),
            ];
            for (form, needle) in forms {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(format!("{}: {secret} ({form})", path.display()));
                }
            }
        }
    }
    found
}

async fn exercise(backend: &Backend) -> Vec<String> {
    let mut outputs = Vec::new();
    let now = Utc::now();
    let tenant = TenantId::parse("acme").unwrap();
    let app = AppId::parse("exact-nl").unwrap();
    let connection = Connection::new(
        tenant.clone(),
        app.clone(),
        ProviderKind::ExactOnline,
        Recipients::default(),
        now,
    );
    backend
        .store
        .insert_connection(&connection, &[])
        .await
        .unwrap();
    let keeper = CredentialKeeper::new(backend.store.clone(), backend.vault.clone());
    let credentials = sentinel_credentials(now);
    let target = CredentialKeeper::next_target(&connection);
    let saved = keeper
        .commit(
            connection.clone(),
            target.clone(),
            &credentials,
            Fence::Version,
            &[],
        )
        .await
        .unwrap();
    outputs.push(format!("{saved:?}"));
    let read = keeper.current(&saved).await.unwrap().unwrap();
    outputs.push(format!("{read:?}"));
    // A fenced-off commit fails after writing to the vault: its error must be clean too.
    let stale = keeper
        .commit(
            connection.clone(),
            CredentialKeeper::next_target(&saved),
            &credentials,
            Fence::Version,
            &[],
        )
        .await;
    outputs.push(format!("{stale:?}"));
    // Reusing a write id for other content.
    let mut other = credentials.clone();
    if let Credentials::OAuth2(t) = &mut other {
        t.scope = Some("changed".into());
    }
    let reused = backend
        .vault
        .put_credentials(&tenant, &saved.id, target.slot, &target.write, &other)
        .await;
    outputs.push(format!("{reused:?}"));
    backend
        .vault
        .put_client_secret(&tenant, &app, &ClientSecret::new(CLIENT_SECRET))
        .await
        .unwrap();
    let secret = backend
        .vault
        .get_client_secret(&tenant, &app)
        .await
        .unwrap();
    outputs.push(format!("{secret:?}"));
    outputs
}

async fn run_captured(backend: Backend) {
    let captured = Captured::default();
    let subscriber = broker_core::telemetry::subscriber_for(captured.clone(), "trace");
    let _guard = tracing::subscriber::set_default(subscriber);
    let outputs = exercise(&backend).await;
    for output in outputs {
        assert_clean(&format!("{} output", backend.name), &output);
    }
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert_clean(&format!("{} logs", backend.name), &logs);
}

#[tokio::test]
async fn embedded_backend_logs_errors_and_files_carry_no_secret() {
    let folder = backends::temp_dir("redaction");
    let store = EmbeddedStore::open(folder.join("broker.db")).unwrap();
    run_captured(Backend {
        name: "embedded",
        store: Arc::new(store.clone()),
        vault: Arc::new(store.clone()),
        aws: None,
    })
    .await;
    let found = secrets_in_files(&folder);
    assert!(found.is_empty(), "after the flows: {found:?}");

    // Tokens written last are still in the WAL, which is searched as it stands.
    let tenant = TenantId::parse("acme").unwrap();
    let connection = ConnectionId::generate();
    store
        .put_credentials(
            &tenant,
            &connection,
            VaultSlot::A,
            &WriteId::generate(),
            &sentinel_credentials(Utc::now()),
        )
        .await
        .unwrap();
    let wal = folder.join("broker.db-wal");
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    let found = secrets_in_files(&folder);
    assert!(found.is_empty(), "with the tokens in the WAL: {found:?}");

    // A disconnect leaves an empty WAL behind it.
    store
        .delete_credentials(&tenant, &connection)
        .await
        .unwrap();
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);

    drop(store);
    let found = secrets_in_files(&folder);
    assert!(found.is_empty(), "after closing the store: {found:?}");
    let names: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.contains(&"broker.db.key".to_string()),
        "the key file was searched too: {names:?}"
    );
}

#[tokio::test]
async fn aws_backend_logs_and_errors_carry_no_secret() {
    run_captured(backends::aws().await).await;
}

#[tokio::test]
async fn an_unreachable_vault_fails_without_echoing_what_it_was_given() {
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(broker_core::telemetry::subscriber_for(
        captured.clone(),
        "trace",
    ));
    // Nothing listens on this port.
    let port = broker_tests::tools::free_port();
    let config = broker_core::backend::aws_config_loader()
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .region(aws_config::Region::new("eu-west-1"))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    let vault = SecretsManagerVault::new(
        aws_sdk_secretsmanager::Client::new(&config),
        VaultNaming {
            prefix: "connection-broker/test".into(),
            kms_key_id: None,
        },
    );
    let tenant = TenantId::parse("acme").unwrap();
    let err = vault
        .put_client_secret(
            &tenant,
            &AppId::parse("exact-nl").unwrap(),
            &ClientSecret::new(CLIENT_SECRET),
        )
        .await
        .unwrap_err();
    let now = Utc::now();
    let credentials = Credentials::OAuth2(TokenSet {
        access_token: AccessToken::new(ACCESS),
        access_expires_at: now,
        refresh_token: Some(RefreshToken::new(REFRESH)),
        refresh_expires_at: None,
        scope: None,
        received_at: now,
    });
    let connection = broker_core::ids::ConnectionId::generate();
    let err2 = vault
        .put_credentials(
            &tenant,
            &connection,
            VaultSlot::A,
            &WriteId::generate(),
            &credentials,
        )
        .await
        .unwrap_err();
    for e in [err, err2] {
        let text = format!("{e} {e:?}");
        assert!(
            text.contains("unavailable"),
            "the error says what happened: {text}"
        );
        assert_clean("vault error", &text);
    }
    assert_clean(
        "logs",
        &String::from_utf8(captured.0.lock().unwrap().clone()).unwrap(),
    );
}
