//! What every command-line test does: run `broker-admin` on a data folder of its own and check what
//! it printed. Each test binary uses some of these.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const CLIENT_SECRET: &str = "exact-client-secret-SENTINEL";

pub fn admin(data_dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_broker-admin"))
        .args(args)
        .env("BROKER_DATA_DIR", data_dir)
        .env("BROKER_PUBLIC_URL", "https://broker.example.com")
        .env_remove("BROKER_TABLE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("broker-admin starts");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !all.contains(CLIENT_SECRET),
        "a client secret was printed: {all}"
    );
    output
}

/// A fresh data folder for one test (`name` keeps tests apart), with tenant `acme` created in it.
pub fn data_dir_with_acme(name: &str, display_name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ok(&admin(
        &dir,
        &["tenant", "create", "acme", "--name", display_name],
        None,
    ));
    dir
}

/// `app register` of AcmeCo's Acumatica app `acumatica` at `instance_url`.
pub fn register_acumatica(instance_url: &str) -> Vec<&str> {
    vec![
        "app",
        "register",
        "--tenant",
        "acme",
        "--id",
        "acumatica",
        "--provider",
        "acumatica",
        "--instance-url",
        instance_url,
        "--acumatica-tenant",
        "AcmeCo",
        "--client-id",
        "7d1e@AcmeCo",
        "--redirect-uri",
        "https://broker.example.com/oauth/callback",
    ]
}

pub fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

pub fn refused(output: &Output, says: &str) {
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(says), "expected {says:?} in: {stderr}");
}

/// Standard output of a successful run, as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The exit code, which every refusal sets to 1.
pub fn exit_code(output: &Output) -> i32 {
    output.status.code().expect("exited, not killed")
}
