//! Starting `local-runner` as a person would, for the tests that drive it from outside.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A started runner, stopped when dropped.
pub struct Runner(pub Child);

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The runner on these ports and data folder, its stdout piped: the embedded store (whatever table
/// the environment names) and the outbox in the data folder.
pub fn command(data_dir: &Path, port: u16, sandbox_port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_local-runner"));
    command
        .env("BROKER_PORT", port.to_string())
        .env("BROKER_SANDBOX_PORT", sandbox_port.to_string())
        .env("BROKER_DATA_DIR", data_dir)
        .env_remove("BROKER_TABLE")
        .env_remove("BROKER_OUTBOX_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}

/// Starts `command` and waits until it is ready; with everything it printed before "Press Ctrl-C to
/// stop."
pub fn start(mut command: Command) -> (Runner, String) {
    let mut child = command.spawn().expect("local-runner starts");
    let stdout = child.stdout.take().unwrap();
    let runner = Runner(child);
    let mut printed = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.contains("Press Ctrl-C") {
            return (runner, printed);
        }
        printed.push_str(&line);
        printed.push('\n');
    }
    panic!("local-runner stopped before it was ready:\n{printed}");
}

/// Sends `request` and reads the answer's JSON body.
pub async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}
