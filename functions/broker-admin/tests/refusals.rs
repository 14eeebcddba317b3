//! Bad input is refused at once, with exit code 1 and a message that says what to do, and nothing
//! is stored. Usage errors (a missing argument) exit with 2, as clap does.

use broker_core::adapters::embedded::EmbeddedStore;
use broker_core::domain::{Connection, ProviderKind, Recipients, Tenant};
use broker_core::ids::{AppId, TenantId};
use broker_core::ports::{ApiKeyStore, ConnectionStore, TenantStore, TokenVault};
use chrono::Utc;

mod support;
use support::*;

const CALLBACK: &str = "https://broker.example.com/oauth/callback";

fn register(dir: &std::path::Path, provider: &[&str], redirect: &str) -> std::process::Output {
    let mut args = vec![
        "app",
        "register",
        "--tenant",
        "acme",
        "--id",
        "bad",
        "--client-id",
        "c",
        "--redirect-uri",
        redirect,
    ];
    args.extend_from_slice(provider);
    admin(dir, &args, Some(CLIENT_SECRET))
}

#[tokio::test]
async fn app_registrations_with_wrong_fields_are_refused_before_anything_is_stored() {
    let dir = data_dir_with_acme("broker-admin-refusals", "Acme");
    let twinfield = ["--provider", "twinfield"];
    let cases: [(&[&str], &str, &str); 5] = [
        (
            &twinfield,
            "https://broker.example.com/callback",
            "must be the broker's callback URL https://broker.example.com/oauth/callback",
        ),
        (
            &twinfield,
            "https://other.example.com/oauth/callback",
            "must be the broker's callback URL https://broker.example.com/oauth/callback",
        ),
        (
            &["--provider", "generic", "--definition", "nowhere"],
            CALLBACK,
            "has no definition \"nowhere\"",
        ),
        (
            &["--provider", "twinfield", "--country", "nl"],
            CALLBACK,
            "country applies to Exact Online apps only",
        ),
        (
            &["--provider", "sap"],
            CALLBACK,
            "use twinfield, exact, acumatica or generic",
        ),
    ];
    for (provider, redirect, says) in cases {
        let output = register(&dir, provider, redirect);
        refused(&output, says);
        assert_eq!(exit_code(&output), 1, "{provider:?}");
    }
    let store = EmbeddedStore::open(dir.join("broker.db")).unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    let bad = AppId::parse("bad").unwrap();
    assert!(store.get_app(&tenant, &bad).await.unwrap().is_none());
    assert!(store
        .get_client_secret(&tenant, &bad)
        .await
        .unwrap()
        .is_none());

    let output = admin(&dir, &["app", "list"], None);
    assert_eq!(exit_code(&output), 2, "a missing --tenant is a usage error");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--tenant <TENANT>"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A key limited to a connection that does not exist, or that is another tenant's, would reach
/// nothing: the typo would surface only as refused calls later.
#[tokio::test]
async fn a_key_is_limited_only_to_connections_of_its_tenant() {
    let dir = data_dir_with_acme("broker-admin-key-scope", "Acme");
    let store = EmbeddedStore::open(dir.join("broker.db")).unwrap();
    let globex = TenantId::parse("globex").unwrap();
    store
        .insert_tenant(&Tenant::new(globex.clone(), "Globex", Utc::now()).unwrap())
        .await
        .unwrap();
    let connection = |tenant: &TenantId| {
        Connection::new(
            tenant.clone(),
            AppId::parse("twinfield").unwrap(),
            ProviderKind::Twinfield,
            Recipients::default(),
            Utc::now(),
        )
    };
    let acme = TenantId::parse("acme").unwrap();
    let ours = connection(&acme);
    let theirs = connection(&globex);
    store.insert_connection(&ours, &[]).await.unwrap();
    store.insert_connection(&theirs, &[]).await.unwrap();
    let never_made = connection(&acme);

    for id in [theirs.id.as_str(), never_made.id.as_str()] {
        let output = admin(
            &dir,
            &["key", "create", "--tenant", "acme", "--connection", id],
            None,
        );
        refused(
            &output,
            &format!("--connection {id}: tenant acme has no such connection"),
        );
        refused(&output, "broker-admin connection list --tenant acme");
        assert_eq!(exit_code(&output), 1);
    }
    refused(
        &admin(
            &dir,
            &[
                "key",
                "create",
                "--tenant",
                "acme",
                "--connection",
                "con_nope",
            ],
            None,
        ),
        "connection id \"con_nope\" is not valid",
    );
    assert!(store.list_api_keys(&acme).await.unwrap().is_empty());

    let key = ok(&admin(
        &dir,
        &[
            "key",
            "create",
            "--tenant",
            "acme",
            "--connection",
            ours.id.as_str(),
        ],
        None,
    ));
    assert!(key.starts_with("cbk_"));
    let keys = store.list_api_keys(&acme).await.unwrap();
    assert_eq!(keys[0].scope.connections, Some(vec![ours.id.clone()]));
    let listed = ok(&admin(&dir, &["key", "list", "--tenant", "acme"], None));
    assert!(listed.contains(&format!("only {}", ours.id)), "{listed}");
    let _ = std::fs::remove_dir_all(&dir);
}
