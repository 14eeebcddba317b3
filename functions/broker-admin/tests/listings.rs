//! What the read commands print: aligned tables under a header for people, `--json` for programs,
//! and nothing that breaks when the reader stops early.

use broker_core::adapters::embedded::EmbeddedStore;
use broker_core::domain::{ApiKeyRecord, ApiKeyScope, Connection, ProviderKind, Recipients};
use broker_core::ids::{AppId, TenantId};
use broker_core::ports::{ApiKeyStore, ConnectionStore};
use chrono::Utc;
use serde_json::Value;
use std::io::Read;
use std::process::{Command, Stdio};

mod support;
use support::*;

/// Three Twinfield connections of tenant `acme`, told apart only by their names.
async fn three_twinfield_connections(dir: &std::path::Path) -> Vec<Connection> {
    let store = EmbeddedStore::open(dir.join("broker.db")).unwrap();
    let mut made = Vec::new();
    for name in ["Payroll", "Ledger NL", "Ledger BE"] {
        let mut c = Connection::new(
            TenantId::parse("acme").unwrap(),
            AppId::parse("twinfield").unwrap(),
            ProviderKind::Twinfield,
            Recipients::parse(&["finance@example.com"]).unwrap(),
            Utc::now(),
        );
        c.display_name = Some(name.into());
        store.insert_connection(&c, &[]).await.unwrap();
        made.push(c);
    }
    made
}

/// The cells of a table's lines, split on the two-space gap between columns.
fn cells(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

fn assert_tidy(table: &str) {
    for line in table.lines() {
        assert!(!line.contains('\t'), "a tab in {line:?}");
        assert_eq!(line, line.trim_end(), "trailing space in {line:?}");
    }
}

#[test]
fn version_prints_the_name_and_version() {
    let output = Command::new(env!("CARGO_BIN_EXE_broker-admin"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(exit_code(&output), 0);
    assert_eq!(
        stdout(&output).trim(),
        format!("broker-admin {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn lists_are_aligned_tables_under_a_header() {
    let dir = data_dir_with_acme("broker-admin-tables", "Acme");
    let connections = three_twinfield_connections(&dir).await;
    let listed = ok(&admin(
        &dir,
        &["connection", "list", "--tenant", "acme"],
        None,
    ));
    assert_tidy(&listed);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(
        cells(lines[0]),
        ["ID", "NAME", "APP", "PROVIDER", "STATUS", "WHERE"]
    );
    // The columns line up: every cell of the second column starts where its header does.
    let name_at = lines[0].find("NAME").unwrap();
    for c in &connections {
        let line = lines
            .iter()
            .find(|l| l.starts_with(c.id.as_str()))
            .unwrap_or_else(|| panic!("{} not in {listed}", c.id));
        let name = c.display_name.as_deref().unwrap();
        assert_eq!(line.find(name), Some(name_at), "{listed}");
        assert_eq!(
            cells(line)[1..],
            [name, "twinfield", "Twinfield", "not_connected", "-"]
        );
    }

    ok(&admin(
        &dir,
        &[
            "key",
            "create",
            "--tenant",
            "acme",
            "--label",
            "erp sync",
            "--session-only",
        ],
        None,
    ));
    let keys = ok(&admin(&dir, &["key", "list", "--tenant", "acme"], None));
    assert_tidy(&keys);
    let lines: Vec<&str> = keys.lines().collect();
    assert_eq!(
        cells(lines[0]),
        ["PREFIX", "LABEL", "SCOPE", "CREATED", "REVOKED"]
    );
    let row = cells(lines[1]);
    assert_eq!(row[1..3], ["erp sync", "all connections, sessions only"]);
    assert!(
        row[3].starts_with(&Utc::now().format("%Y-%m-%dT").to_string()) && row[3].ends_with('Z'),
        "created to the second: {keys}"
    );
    assert_eq!(row[3].len(), "2026-03-02T09:00:00Z".len(), "{keys}");
    assert_eq!(row[4], "-");

    let apps = ok(&admin(&dir, &["app", "list", "--tenant", "acme"], None));
    assert_eq!(
        cells(&apps),
        [
            "ID",
            "PROVIDER",
            "DETAILS",
            "CLIENT ID",
            "REDIRECT URI",
            "CREATED"
        ],
        "an empty list still has its header"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn json(output: &std::process::Output) -> Value {
    serde_json::from_str(&ok(output)).expect("--json prints JSON")
}

#[tokio::test]
async fn every_read_command_prints_json() {
    let dir = data_dir_with_acme("broker-admin-json", "Acme Integrations");
    let connections = three_twinfield_connections(&dir).await;
    ok(&admin(
        &dir,
        &[
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
        ],
        Some(CLIENT_SECRET),
    ));
    let key = ok(&admin(
        &dir,
        &["key", "create", "--tenant", "acme", "--label", "ci"],
        None,
    ));
    let key = key.trim();

    let tenant = json(&admin(&dir, &["tenant", "show", "acme", "--json"], None));
    assert_eq!(tenant["id"], "acme");
    assert_eq!(tenant["name"], "Acme Integrations");
    assert!(tenant["return_origins"].is_array());

    let apps = json(&admin(
        &dir,
        &["app", "list", "--tenant", "acme", "--json"],
        None,
    ));
    assert_eq!(apps[0]["id"], "exact-nl");
    assert_eq!(apps[0]["provider"], "exact_online");
    assert_eq!(apps[0]["country"], "nl");
    assert_eq!(apps[0]["client_id"], "0f6c-client");
    // `admin` already checks that no output holds the client secret.

    let keys = admin(&dir, &["key", "list", "--tenant", "acme", "--json"], None);
    assert!(!stdout(&keys).contains(key), "the key is shown once only");
    let keys = json(&keys);
    assert_eq!(keys[0]["label"], "ci");
    assert_eq!(keys[0]["scope"]["session_only"], false);
    assert!(keys[0]["revoked_at"].is_null());
    assert!(keys[0].get("hash").is_none(), "{keys}");

    let listed = json(&admin(
        &dir,
        &["connection", "list", "--tenant", "acme", "--json"],
        None,
    ));
    let mut names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["display_name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["Ledger BE", "Ledger NL", "Payroll"]);
    assert_eq!(listed[0]["status"], "not_connected");
    assert_eq!(listed[0]["provider"], "twinfield");

    let id = connections[0].id.as_str();
    let shown = json(&admin(
        &dir,
        &["connection", "show", "--tenant", "acme", id, "--json"],
        None,
    ));
    assert_eq!(shown["id"], id);
    assert_eq!(shown["display_name"], "Payroll");
    assert_eq!(shown["recipients"][0], "finance@example.com");
    assert!(shown["authorized_by"].is_null());
    assert_eq!(shown["history"], Value::Array(vec![]));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `broker-admin key list | head -1`: the reader goes away before the listing is written; the run
/// ends without a panic or a message.
#[tokio::test]
async fn a_closed_output_ends_the_run_quietly() {
    let dir = data_dir_with_acme("broker-admin-pipe", "Acme");
    {
        // More than a pipe holds (64 KiB), so the command is still writing when the reader leaves.
        let store = EmbeddedStore::open(dir.join("broker.db")).unwrap();
        for i in 0..1500 {
            let key = ApiKeyRecord::generate(
                TenantId::parse("acme").unwrap(),
                &format!("integration number {i}"),
                ApiKeyScope::default(),
                Utc::now(),
            );
            store.insert_api_key(&key.record).await.unwrap();
        }
    }
    for format in [&[][..], &["--json"][..]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_broker-admin"))
            .args(["key", "list", "--tenant", "acme"])
            .args(format)
            .env("BROKER_DATA_DIR", &dir)
            .env_remove("BROKER_TABLE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 16];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut first)
            .unwrap();
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.is_empty(), "{stderr}");
        assert_eq!(exit_code(&output), 0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
