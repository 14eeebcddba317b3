//! A tenant's look in its emails, set when the operator creates it.

use broker_core::adapters::embedded::EmbeddedStore;
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

fn stderr(output: &Output) -> String {
    assert!(!output.status.success(), "unexpectedly accepted");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn a_tenant_is_created_with_a_logo_and_an_accent_colour_and_refuses_bad_ones() {
    let dir = std::env::temp_dir().join(format!("broker-admin-branding-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let create = |id: &'static str, extra: &[&'static str]| {
        let mut args = vec!["tenant", "create", id, "--name", "Acme Integrations"];
        args.extend_from_slice(extra);
        admin(&dir, &args)
    };

    let http = create(
        "plain-logo",
        &["--logo-url", "http://cdn.example.com/logo.png"],
    );
    assert!(stderr(&http).contains("https://"));
    let colour = create("bad-colour", &["--accent-colour", "blue"]);
    assert!(
        stderr(&colour).contains("#1d4f91"),
        "an example of the form"
    );

    let created = create(
        "acme",
        &[
            "--logo-url",
            "https://cdn.example.com/acme.png",
            "--accent-colour",
            "#FFD500",
        ],
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let shown = admin(&dir, &["tenant", "show", "acme"]);
    let shown = String::from_utf8(shown.stdout).unwrap();
    assert!(
        shown
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")
                == "logo https://cdn.example.com/acme.png"),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == "accent colour #ffd500"),
        "{shown}"
    );

    assert!(create("unbranded", &[]).status.success());
    let store = EmbeddedStore::open(dir.join("broker.db")).unwrap();
    let acme = store
        .get_tenant(&TenantId::parse("acme").unwrap())
        .await
        .unwrap()
        .unwrap();
    let branding = acme.branding.expect("stored with the tenant");
    assert_eq!(
        branding.logo_url.unwrap().as_str(),
        "https://cdn.example.com/acme.png"
    );
    assert_eq!(branding.accent_colour.unwrap().to_string(), "#ffd500");
    let plain = store
        .get_tenant(&TenantId::parse("unbranded").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(plain.branding, None);
    for refused in ["plain-logo", "bad-colour"] {
        let id = TenantId::parse(refused).unwrap();
        assert!(store.get_tenant(&id).await.unwrap().is_none(), "{refused}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
