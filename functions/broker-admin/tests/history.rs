//! `broker-admin connection show` prints a connection's history: the list the integration API's
//! `GET /v1/connections/{id}/events` pages through, newest first.

use broker_core::adapters::embedded::EmbeddedStore;
use broker_core::domain::{
    Actor, Connection, ConnectionChange, FieldChange, Identity, ProviderKind, Recipients,
    SessionReads, StatusEvent, Tenant,
};
use broker_core::ids::{AppId, TenantId};
use broker_core::notify::{
    Claim, NoticeKind, NoticeOutcome, NoticeSubject, Release, Warning, WarningKind,
};
use broker_core::ports::{ConnectionStore, Fence, HistoryStore, NotificationStore, TenantStore};
use chrono::{Duration, TimeZone, Utc};
use std::process::Command;

#[tokio::test]
async fn connection_show_prints_the_history_newest_first() {
    let dir = std::env::temp_dir().join(format!("broker-admin-history-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = EmbeddedStore::open(dir.join("broker.db")).unwrap();
    // Stored times carry nanoseconds; people read them to the second.
    let t0 =
        Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap() + Duration::nanoseconds(123_456_789);
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
    c.authorized_by = Some(Identity {
        subject: "demo.user".into(),
        display_name: Some("Demo User".into()),
    });
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

    // A warning emailed to the connection's one recipient.
    let warned_at = t0 + Duration::minutes(30);
    store
        .create_notice(
            &c.id,
            "warning-idle",
            &NoticeSubject::Warning(Warning {
                kind: WarningKind::IdleExpiry,
                deadline: None,
                created_at: warned_at,
            }),
        )
        .await
        .unwrap();
    let key = store.unsettled_notices(10).await.unwrap().remove(0);
    let claimed_at = warned_at + Duration::seconds(5);
    assert!(matches!(
        store
            .claim_notice(&key, claimed_at, claimed_at - Duration::minutes(10))
            .await
            .unwrap(),
        Claim::Claimed(_)
    ));
    store
        .release_notice(
            &key,
            claimed_at,
            &Release::Settle(NoticeOutcome::Sent {
                at: claimed_at,
                kind: NoticeKind::Warning(WarningKind::IdleExpiry),
                recipients: 1,
            }),
        )
        .await
        .unwrap();

    let stdout = show(&dir, c.id.as_str());
    let field = |label: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(label).filter(|rest| rest.starts_with(' ')))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {label:?} in {stdout}"))
    };
    assert_eq!(field("name"), "Ledger");
    assert_eq!(field("recipients"), "finance@example.com");
    assert_eq!(
        field("authorized by"),
        "Demo User (demo.user) at 2026-03-02T09:01:00Z"
    );
    assert!(
        !stdout.contains(".123"),
        "no fractions of seconds: {stdout}"
    );
    let history: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("history"))
        .skip(1)
        .collect();
    assert_eq!(history.len(), 4, "{stdout}");
    assert!(
        history[0].starts_with("  2026-03-02T09:30:00Z  notice warning_idle_expiry: sent to 1 recipient(s) at 2026-03-02T09:30:05Z"),
        "{stdout}"
    );
    assert!(
        history[1].contains("changed by API key abcdefghijkl: display_name: null -> \"Ledger\""),
        "{stdout}"
    );
    assert!(
        history[2].starts_with(
            "  2026-03-02T09:01:00Z  status not_connected -> connected  by user demo.user"
        ),
        "{stdout}"
    );
    assert!(
        history[3].contains("1 token(s) handed out to API key abcdefghijkl (2026-03-02T09:05:00Z .. 2026-03-02T09:05:00Z)"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn show(dir: &std::path::Path, id: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_broker-admin"))
        .args(["connection", "show", "--tenant", "acme", id])
        .env("BROKER_DATA_DIR", dir)
        .env_remove("BROKER_TABLE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A connection nobody has touched yet says so, instead of a bare `history:` heading.
#[tokio::test]
async fn an_empty_history_says_none_yet() {
    let dir = std::env::temp_dir().join(format!("broker-admin-no-history-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = EmbeddedStore::open(dir.join("broker.db")).unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    store
        .insert_tenant(&Tenant::new(tenant.clone(), "Acme", Utc::now()).unwrap())
        .await
        .unwrap();
    let c = Connection::new(
        tenant,
        AppId::parse("twinfield").unwrap(),
        ProviderKind::Twinfield,
        Recipients::default(),
        Utc::now(),
    );
    store.insert_connection(&c, &[]).await.unwrap();
    let stdout = show(&dir, c.id.as_str());
    let last: Vec<&str> = stdout.lines().last().unwrap().split_whitespace().collect();
    assert_eq!(last, ["history", "none", "yet"], "{stdout}");
    assert!(stdout.contains("authorized by"), "{stdout}");
    assert!(stdout.contains("none (no emails are sent)"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
