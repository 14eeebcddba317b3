//! A tenant's language, time zone and return origins, set by the operator when creating it.

use broker_core::adapters::embedded::EmbeddedStore;
use broker_core::domain::{Locale, ReturnUrl};
use broker_core::ids::TenantId;
use broker_core::ports::TenantStore;
use std::path::Path;
use std::process::{Command, Output};

fn admin(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_broker-admin"))
        .args(args)
        .env("BROKER_DATA_DIR", data_dir)
        .env("BROKER_PUBLIC_URL", "https://broker.example.com")
        .env_remove("BROKER_TABLE")
        .output()
        .expect("broker-admin runs")
}

#[tokio::test]
async fn a_tenant_is_created_with_its_language_zone_and_return_origins() {
    let dir = std::env::temp_dir().join(format!("broker-admin-settings-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    let refused = admin(
        &dir,
        &[
            "tenant",
            "create",
            "acme",
            "--name",
            "Acme",
            "--return-origin",
            "https://app.example.com/settings",
        ],
    );
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("not an origin"), "{said}");

    let created = admin(
        &dir,
        &[
            "tenant",
            "create",
            "acme",
            "--name",
            "Acme",
            "--locale",
            "nl-BE",
            "--time-zone",
            "Europe/Brussels",
            "--return-origin",
            "https://App.Example.com/",
            "--return-origin",
            "http://127.0.0.1:3000",
        ],
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let shown = admin(&dir, &["tenant", "show", "acme"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")
                == "return origin https://app.example.com"),
        "{shown}"
    );

    let store = EmbeddedStore::open(dir.join("broker.db")).unwrap();
    let tenant = store
        .get_tenant(&TenantId::parse("acme").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tenant.locale, Some(Locale::Dutch));
    assert_eq!(tenant.time_zone.unwrap().name(), "Europe/Brussels");
    let allowed = ReturnUrl::parse("https://app.example.com/back?x=1").unwrap();
    assert!(allowed.allowed_by(&tenant.return_origins));
    let other = ReturnUrl::parse("https://evil.example.com/back").unwrap();
    assert!(!other.allowed_by(&tenant.return_origins));
    let _ = std::fs::remove_dir_all(&dir);
}
