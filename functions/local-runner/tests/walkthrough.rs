//! The README's run command, scripted: start `local-runner` as a person would, read what it prints,
//! connect an Exact Online sandbox connection through the consent page, get a session, let the token
//! expire and get a refreshed one, then break the grant and find the email in the outbox.

mod common;

use common::{free_port, Runner};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::{Duration, Instant};

/// Everything the runner printed before "Press Ctrl-C to stop."
fn start(data_dir: &std::path::Path, port: u16, sandbox_port: u16) -> (Runner, String) {
    let mut command = common::command(data_dir, port, sandbox_port);
    command
        .env("BROKER_NOTIFY_EVERY_SECS", "1")
        .env("BROKER_REFRESH_EVERY_SECS", "3600");
    common::start(command)
}

fn after<'a>(text: &'a str, marker: &str) -> &'a str {
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} not printed:\n{text}"))
        + marker.len();
    text[start..].split_whitespace().next().unwrap()
}

#[tokio::test]
async fn connect_session_refresh_and_an_email_in_the_outbox() {
    let data_dir = std::env::temp_dir().join(format!("local-runner-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let (port, sandbox_port) = (free_port(), free_port());
    let (_runner, printed) = start(&data_dir, port, sandbox_port);
    let base = format!("http://127.0.0.1:{port}");
    let sandbox = format!("http://127.0.0.1:{sandbox_port}");
    let key = after(&printed, "API key (shown once): ").to_string();
    let connection = after(&printed, "Exact Online connection ").to_string();
    let exact_section = &printed[printed.find("Exact Online connection").unwrap()..];
    let link = after(exact_section, "open ").to_string();
    assert!(link.starts_with(&format!("{base}/connect/")), "{link}");

    // Connect, as a person: the link, the sandbox consent page, Allow, the success page.
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The link's page shows a Connect button: a form posting to the link itself.
    let to_provider = browser.post(&link).send().await.unwrap();
    assert_eq!(to_provider.status(), 302);
    let authorize = to_provider.headers()["location"]
        .to_str()
        .unwrap()
        .to_string();
    let consent = browser
        .get(&authorize)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let request_id = consent
        .split("name=\"request_id\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let action = consent
        .split("<form method=\"post\" action=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let allowed = browser
        .post(format!("{sandbox}{action}"))
        .form(&[
            ("request_id", request_id),
            ("user", "demo.user"),
            ("decision", "allow"),
        ])
        .send()
        .await
        .unwrap();
    let callback = allowed.headers()["location"].to_str().unwrap().to_string();
    let page = browser.get(&callback).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("Exact Online is connected"));

    // A session: a token the sandbox accepts.
    let api = reqwest::Client::new();
    let session = |api: reqwest::Client| {
        let (url, key) = (
            format!("{base}/v1/connections/{connection}/session"),
            key.clone(),
        );
        async move { api.post(url).bearer_auth(key).send().await.unwrap() }
    };
    let first: Value = session(api.clone()).await.json().await.unwrap();
    let first_token = first["access_token"].as_str().expect("a token").to_string();
    assert_eq!(first["context"]["division"], 123456);
    let valid = common::json_of(api.get(format!("{sandbox}/_sim/inspect/access-tokens"))).await;
    assert!(
        valid.to_string().contains(&first_token),
        "the sandbox accepts the token"
    );

    // Refresh: the sandbox clock (which the broker follows) moves past the token's 600 s.
    api.post(format!("{sandbox}/_sim/clock/advance"))
        .json(&json!({"seconds": 700}))
        .send()
        .await
        .unwrap();
    let second: Value = session(api.clone()).await.json().await.unwrap();
    let second_token = second["access_token"].as_str().expect("a refreshed token");
    assert_ne!(second_token, first_token, "the expired token was refreshed");

    // Break it: the grant is revoked at the provider; the next refresh finds out; an email follows.
    api.post(format!("{sandbox}/_sim/grants/revoke"))
        .json(&json!({"provider": "exact", "user": "demo.user"}))
        .send()
        .await
        .unwrap();
    api.post(format!("{sandbox}/_sim/clock/advance"))
        .json(&json!({"seconds": 700}))
        .send()
        .await
        .unwrap();
    let broken = session(api.clone()).await;
    assert!(broken.status().is_client_error(), "{}", broken.status());
    let outbox = data_dir.join("outbox");
    let deadline = Instant::now() + Duration::from_secs(30);
    let email = loop {
        let found = std::fs::read_dir(&outbox).ok().and_then(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "eml"))
        });
        if let Some(path) = found {
            break std::fs::read_to_string(path).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no email reached {}",
            outbox.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(email.contains("To: you@example.com"), "{email}");
    let text = plain_text_part(&email);
    assert!(
        text.contains("Exact Online") && text.contains("authorize"),
        "{text}"
    );
    for token in [first_token.as_str(), second_token] {
        assert!(
            !email.contains(token) && !text.contains(token),
            "no token in the email"
        );
    }
    // The reconnect link in the email works: it starts the flow at the provider.
    let reconnect = after(&text, "Reconnect Exact Online:");
    assert!(
        reconnect.starts_with(&format!("{base}/connect/")),
        "{reconnect}"
    );
    let started = browser.post(reconnect).send().await.unwrap();
    assert_eq!(started.status(), 302);
    assert!(started.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with(&format!("{sandbox}/exact/nl/")));
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// The decoded text/plain part of the message, read by an independent MIME parser.
fn plain_text_part(email: &str) -> String {
    let message = mail_parser::MessageParser::default()
        .parse(email.as_bytes())
        .expect("a MIME message");
    message.body_text(0).expect("a text part").into_owned()
}

/// A process manager stops the runner with SIGTERM: it stops as it does on Ctrl-C, saying so, with
/// exit status 0 (the default action of SIGTERM would kill it mid-write instead).
#[cfg(unix)]
#[test]
fn sigterm_stops_it_cleanly() {
    let data_dir = std::env::temp_dir().join(format!("local-runner-term-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut child = common::command(&data_dir, free_port(), free_port())
        .spawn()
        .expect("local-runner starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.unwrap().contains("Press Ctrl-C")),
        "local-runner stopped before it was ready"
    );
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let rest: Vec<String> = lines.map(Result::unwrap).collect(); // to EOF: the process has ended
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "after SIGTERM: {status:?} {rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("terminated: stopping")),
        "{rest:?}"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}
