//! What the runner logs, read as a file or pipe would receive it: plain text, no terminal colour codes.

mod common;

use common::free_port;
use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let data_dir = std::env::temp_dir().join(format!("local-runner-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut command = common::command(&data_dir, free_port(), free_port());
    // A scheduled run every second logs its summary, so log lines come without any request.
    command
        .env("BROKER_REFRESH_EVERY_SECS", "1")
        .env_remove("NO_COLOR");
    let mut child = command.spawn().expect("local-runner starts");
    let stdout = child.stdout.take().unwrap();
    let _runner = common::Runner(child);
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut printed = Vec::new();
    while Instant::now() < deadline {
        let Ok(line) = received.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let is_log = line.contains("INFO") || line.contains("WARN");
        printed.push(line);
        if is_log && printed.iter().filter(|l| l.contains("INFO")).count() >= 2 {
            break;
        }
    }
    let logs: Vec<&String> = printed.iter().filter(|l| l.contains("INFO")).collect();
    assert!(
        !logs.is_empty(),
        "no log line within 30 s:\n{}",
        printed.join("\n")
    );
    for line in &printed {
        assert!(
            !line.contains('\u{1b}'),
            "a colour code in output that is not a terminal: {line:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&data_dir);
}
