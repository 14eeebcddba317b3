//! The admin command line against a fresh embedded store: what an operator does on day one.

use broker_core::adapters::embedded::EmbeddedStore;
use broker_core::domain::{AcumaticaRefreshTokens, ApiKeyPrefix, ApiKeyRecord, ProviderSettings};
use broker_core::ids::{AppId, TenantId};
use broker_core::ports::{ApiKeyStore, TenantStore, TokenVault};
use broker_core::secret::ApiKeySecret;
use std::process::{Command, Stdio};

mod support;
use support::*;

#[tokio::test]
async fn an_operator_sets_up_a_tenant_an_app_and_a_key() {
    let dir = data_dir_with_acme("broker-admin", "Acme Integrations");
    refused(
        &admin(&dir, &["tenant", "create", "acme", "--name", "again"], None),
        "already exists",
    );
    refused(
        &admin(&dir, &["tenant", "create", "Acme!", "--name", "x"], None),
        "lowercase letters",
    );

    let register = [
        "app",
        "register",
        "--tenant",
        "acme",
        "--id",
        "exact-nl",
        "--provider",
        "exact",
        "--country",
        "nl",
        "--client-id",
        "0f6c-client",
        "--redirect-uri",
        "https://broker.example.com/oauth/callback",
    ];
    ok(&admin(&dir, &register, Some(&format!("{CLIENT_SECRET}\n"))));
    refused(
        &admin(&dir, &register, Some("  \n")),
        "client secret is empty",
    );
    let mut wrong_country = register.to_vec();
    wrong_country[9] = "uk";
    refused(&admin(&dir, &wrong_country, Some(CLIENT_SECRET)), "co.uk");
    let mut missing_tenant = register.to_vec();
    missing_tenant[3] = "globex";
    refused(
        &admin(&dir, &missing_tenant, Some(CLIENT_SECRET)),
        "tenant create globex",
    );
    let apps = ok(&admin(&dir, &["app", "list", "--tenant", "acme"], None));
    assert!(
        apps.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..5]
                == ["exact-nl", "Exact", "Online", "country", "nl"]),
        "{apps}"
    );

    let key = ok(&admin(
        &dir,
        &["key", "create", "--tenant", "acme", "--label", "ci"],
        None,
    ))
    .trim()
    .to_string();
    assert!(key.starts_with("cbk_"), "{key}");
    let listed = ok(&admin(&dir, &["key", "list", "--tenant", "acme"], None));
    assert!(!listed.contains(&key), "a listing never shows the key");
    let prefix = listed
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    ok(&admin(
        &dir,
        &["key", "revoke", "--tenant", "acme", &prefix],
        None,
    ));
    refused(
        &admin(
            &dir,
            &["key", "revoke", "--tenant", "acme", "zzzzzzzzzzzz"],
            None,
        ),
        "has no key",
    );
    assert_eq!(
        ok(&admin(
            &dir,
            &["connection", "list", "--tenant", "acme"],
            None
        ))
        .split_whitespace()
        .collect::<Vec<_>>(),
        ["ID", "NAME", "APP", "PROVIDER", "STATUS", "WHERE"]
    );

    // An Acumatica instance whose connected application uses sliding refresh tokens (2024 R1+).
    let acumatica = |mode: &str| {
        let mut args = register_acumatica("https://acme.acumatica.com");
        args.extend_from_slice(&["--acumatica-refresh-tokens", mode]);
        admin(&dir, &args, Some(CLIENT_SECRET))
    };
    refused(&acumatica("sliding:x"), "--acumatica-refresh-tokens");
    refused(&acumatica("sliding:30:15"), "at least its sliding one");
    ok(&acumatica("sliding:15"));

    // What the CLI wrote is what the broker reads.
    let store = EmbeddedStore::open(dir.join("broker.db")).unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    let app = store
        .get_app(&tenant, &AppId::parse("acumatica").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        app.settings,
        ProviderSettings::Acumatica {
            refresh_tokens: Some(AcumaticaRefreshTokens::Sliding {
                days: 15,
                absolute_days: None
            }),
            ..
        }
    ));
    let secret = store
        .get_client_secret(&tenant, &AppId::parse("exact-nl").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(secret.expose(), CLIENT_SECRET);
    let record = store
        .get_api_key(&ApiKeyPrefix::parse(&prefix).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(record.revoked_at.is_some());
    assert!(!record.accepts(&ApiKeySecret::new(key)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_explains_where_secrets_come_from() {
    let output = Command::new(env!("CARGO_BIN_EXE_broker-admin"))
        .args(["app", "register", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("standard input"), "{help}");
    assert!(
        !help.contains("--client-secret "),
        "no flag takes the secret itself"
    );
}

/// A name other than `localhost` that the hosts file maps to loopback, when this machine has one:
/// it reaches the DNS check, not the `localhost` name rule.
fn loopback_name_in_hosts() -> Option<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts.lines().find_map(|line| {
        let mut fields = line.split('#').next()?.split_whitespace();
        let address: std::net::IpAddr = fields.next()?.parse().ok()?;
        if !address.is_loopback() {
            return None;
        }
        fields
            .find(|name| !name.to_ascii_lowercase().contains("localhost"))
            .map(str::to_string)
    })
}

#[tokio::test]
async fn an_instance_url_on_a_private_address_is_refused() {
    let dir = data_dir_with_acme("broker-admin-addr", "Acme Integrations");
    let register = |instance_url: &str, extra: &[&str]| {
        let mut args = register_acumatica(instance_url);
        args.extend_from_slice(extra);
        admin(&dir, &args, Some(CLIENT_SECRET))
    };

    let mut refusals = vec![
        (
            "https://169.254.169.254/".to_string(),
            "169.254.169.254 is a link-local address".to_string(),
        ),
        (
            "https://10.0.0.1/".into(),
            "10.0.0.1 is a private network address".into(),
        ),
        (
            "https://[::ffff:127.0.0.1]/".into(),
            "[::ffff:127.0.0.1] is a loopback address".into(),
        ),
        (
            "https://localhost/".into(),
            "localhost names this machine".into(),
        ),
        (
            "http://127.0.0.1:9/acumatica".into(),
            "127.0.0.1 is a loopback address".into(),
        ),
    ];
    if let Some(name) = loopback_name_in_hosts() {
        refusals.push((
            format!("https://{name}/"),
            format!("{name} resolves to 127."),
        ));
    }
    for (url, says) in &refusals {
        let output = register(url, &[]);
        refused(&output, says);
        refused(&output, "public https URL");
    }
    let store = EmbeddedStore::open(dir.join("broker.db")).unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    let acumatica = AppId::parse("acumatica").unwrap();
    assert!(store.get_app(&tenant, &acumatica).await.unwrap().is_none());
    assert!(store
        .get_client_secret(&tenant, &acumatica)
        .await
        .unwrap()
        .is_none());

    // Local runs on the embedded store may name loopback, and nothing else.
    ok(&register(
        "http://127.0.0.1:9/acumatica",
        &["--allow-loopback"],
    ));
    ok(&register("https://localhost/", &["--allow-loopback"]));
    refused(
        &register("https://10.0.0.1/", &["--allow-loopback"]),
        "10.0.0.1 is a private network address",
    );

    // For AWS (BROKER_TABLE) the allowance is refused before anything is stored.
    let output = Command::new(env!("CARGO_BIN_EXE_broker-admin"))
        .args(register_acumatica("http://127.0.0.1:9/acumatica"))
        .arg("--allow-loopback")
        .env("BROKER_TABLE", "broker")
        .env("AWS_REGION", "eu-west-1")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    refused(
        &output,
        "--allow-loopback is for local runs on the embedded store",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `app register` applies the integration API's rules (one check for both), and `key create` grants
/// app management only to a key that reaches the whole tenant.
#[tokio::test]
async fn registrations_follow_the_apis_rules_and_keys_may_be_granted_app_management() {
    let dir = data_dir_with_acme("broker-admin-rules", "Acme");
    let register = |extra: &[&str], redirect: &str| {
        let mut args = vec![
            "app",
            "register",
            "--tenant",
            "acme",
            "--id",
            "app",
            "--client-id",
            "c",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--redirect-uri", redirect]);
        admin(&dir, &args, Some(CLIENT_SECRET))
    };
    let callback = "https://broker.example.com/oauth/callback";
    let twinfield = ["--provider", "twinfield"];
    refused(
        &register(&twinfield, "https://broker.example.com/callback"),
        "must be the broker's callback URL https://broker.example.com/oauth/callback",
    );
    refused(
        &register(&["--provider", "twinfield", "--country", "nl"], callback),
        "country applies to Exact Online apps only",
    );
    refused(
        &register(
            &["--provider", "generic", "--definition", "nowhere"],
            callback,
        ),
        "has no definition \"nowhere\"",
    );
    ok(&register(&twinfield, callback));

    refused(
        &admin(
            &dir,
            &[
                "key",
                "create",
                "--tenant",
                "acme",
                "--session-only",
                "--manage-apps",
            ],
            None,
        ),
        "--manage-apps needs a key that reaches the whole tenant",
    );
    let key = ok(&admin(
        &dir,
        &["key", "create", "--tenant", "acme", "--manage-apps"],
        None,
    ));
    let store = EmbeddedStore::open(dir.join("broker.db")).unwrap();
    let prefix = ApiKeyRecord::prefix_of(&ApiKeySecret::new(key.trim())).unwrap();
    let record = store.get_api_key(&prefix).await.unwrap().unwrap();
    assert!(record.scope.manage_apps && !record.scope.session_only);
    let _ = std::fs::remove_dir_all(&dir);
}
