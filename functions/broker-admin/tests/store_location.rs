//! Which store a run uses: a read never starts a new, empty store (run from another folder without
//! BROKER_DATA_DIR, it would list nothing and leave a second `.broker` behind), and every error that
//! concerns the store names it.

use std::path::Path;
use std::process::{Command, Output, Stdio};

mod support;
use support::*;

/// `broker-admin` run in `folder` with no BROKER_DATA_DIR: the store is `folder/.broker/broker.db`.
fn admin_in(folder: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_broker-admin"))
        .args(args)
        .current_dir(folder)
        .env_remove("BROKER_DATA_DIR")
        .env_remove("BROKER_TABLE")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn fresh_folder(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap()
}

#[test]
fn commands_other_than_tenant_create_refuse_a_store_that_is_not_there() {
    let folder = fresh_folder("broker-admin-elsewhere");
    let store = folder.join(".broker").join("broker.db");
    for args in [
        &["tenant", "show", "acme"][..],
        &["key", "list", "--tenant", "acme"],
        &["connection", "list", "--tenant", "acme", "--json"],
        &["key", "create", "--tenant", "acme"],
    ] {
        let output = admin_in(&folder, args);
        refused(
            &output,
            &format!("there is no broker store at {}", store.display()),
        );
        refused(&output, "set BROKER_DATA_DIR");
        assert_eq!(exit_code(&output), 1);
        assert!(stdout(&output).is_empty());
        assert!(!folder.join(".broker").exists(), "{args:?} made a store");
    }

    // Starting a store is what `tenant create` does, and it says where.
    let created = admin_in(&folder, &["tenant", "create", "acme", "--name", "Acme"]);
    assert_eq!(exit_code(&created), 0);
    let said = String::from_utf8_lossy(&created.stderr);
    assert!(
        said.contains(&format!("starting a new store at {}", store.display())),
        "{said}"
    );
    assert!(store.exists());
    let again = admin_in(&folder, &["tenant", "create", "globex", "--name", "Globex"]);
    assert!(
        String::from_utf8_lossy(&again.stderr).is_empty(),
        "only a new store is announced"
    );
    ok(&admin_in(&folder, &["key", "list", "--tenant", "acme"]));
    let _ = std::fs::remove_dir_all(&folder);
}

#[test]
fn errors_about_the_store_name_it() {
    let dir = data_dir_with_acme("broker-admin-named", "Acme");
    let path = std::path::absolute(dir.join("broker.db")).unwrap();
    refused(
        &admin(&dir, &["tenant", "create", "acme", "--name", "Acme"], None),
        &format!("already exists (in the embedded store {})", path.display()),
    );
    refused(
        &admin(&dir, &["key", "list", "--tenant", "globex"], None),
        &format!(
            "tenant globex does not exist in the embedded store {}",
            path.display()
        ),
    );

    // A file that is not a store.
    let broken = fresh_folder("broker-admin-broken");
    std::fs::write(broken.join("broker.db"), b"not a database, just text").unwrap();
    let output = admin(&broken, &["key", "list", "--tenant", "acme"], None);
    refused(&output, &broken.join("broker.db").display().to_string());
    assert_eq!(exit_code(&output), 1);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&broken);
}

/// On AWS the store is a table in a region: a call that cannot reach it says which.
#[test]
fn an_unreachable_table_is_named_with_its_region() {
    let output = Command::new(env!("CARGO_BIN_EXE_broker-admin"))
        .args(["key", "list", "--tenant", "acme"])
        .env("BROKER_TABLE", "broker-test")
        .env("AWS_REGION", "eu-west-1")
        // Nothing listens on the discard port: the call fails at once.
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_PROFILE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    refused(
        &output,
        "(in DynamoDB table broker-test in region eu-west-1)",
    );
    assert_eq!(exit_code(&output), 1);
}
