//! `broker-admin connection show` prints a connection's history: the list the integration API's
//! `GET /v1/connections/{id}/events` pages through, newest first.

use broker_core::adapters::embedded::EmbeddedStore;
use broker_core::domain::{
    Actor, Connection, ConnectionChange, FieldChange, ProviderKind, Recipients, SessionReads,
    StatusEvent, Tenant,
};
use broker_core::ids::{AppId, TenantId};
use broker_core::ports::{ConnectionStore, Fence, HistoryStore, TenantStore};
use chrono::{Duration, TimeZone, Utc};
use std::process::Command;

#[tokio::test]
async fn connection_show_prints_the_history_newest_first() {
    let dir = std::env::temp_dir().join(format!("broker-admin-history-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = EmbeddedStore::open(dir.join("broker.db")).unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    store
        .insert_tenant(&Tenant::new(tenant.clone(), "Acme", t0).unwrap())
        .await
        .unwrap();
    let mut c = Connection::new(
        tenant.clone(),
        AppId::parse("exact-nl").unwrap(),
        ProviderKind::ExactOnline,
        Recipients::parse(&["finance@example.com"]).unwrap(),
        t0,
    );
    store.insert_connection(&c, &[]).await.unwrap();
    let authorized = c
        .apply(
            StatusEvent::Authorized,
            Actor::EndUser("demo.user".into()),
            t0 + Duration::minutes(1),
        )
        .unwrap();
    c = store
        .save_connection(&c, Fence::Version, &[authorized])
        .await
        .unwrap();
    c.display_name = Some("Ledger".into());
    store
        .save_connection_change(
            &c,
            Fence::Version,
            &ConnectionChange {
                at: t0 + Duration::minutes(20),
                actor: Actor::ApiKey("abcdefghijkl".into()),
                fields: vec![FieldChange {
                    field: "display_name".into(),
                    from: serde_json::Value::Null,
                    to: "Ledger".into(),
                }],
            },
        )
        .await
        .unwrap();
    store
        .add_session_reads(&[SessionReads::one(
            tenant,
            c.id.clone(),
            "abcdefghijkl",
            t0 + Duration::minutes(5),
        )])
        .await
        .unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_broker-admin"))
        .args(["connection", "show", "--tenant", "acme", c.id.as_str()])
        .env("BROKER_DATA_DIR", &dir)
        .env("BROKER_PUBLIC_URL", "https://broker.example.com")
        .env_remove("BROKER_TABLE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let history: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("history"))
        .skip(1)
        .collect();
    assert_eq!(history.len(), 3, "{stdout}");
    assert!(
        history[0].contains("changed by API key abcdefghijkl: display_name: null -> \"Ledger\""),
        "{stdout}"
    );
    assert!(
        history[1].contains("status not_connected -> connected")
            && history[1].contains("user demo.user"),
        "{stdout}"
    );
    assert!(
        history[2].contains("1 token(s) handed out to API key abcdefghijkl"),
        "{stdout}"
    );
}
