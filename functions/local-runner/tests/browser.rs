//! A real browser: headless Chromium (Debian's package, driven through chromedriver's WebDriver API)
//! opens a connect link served by the local runner, presses Connect on its page, clicks Allow on the
//! sandbox consent page, and lands on the success page. The screenshot is kept in `tests/artifacts/`.

mod common;

use common::{free_port, Runner};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Debian's chromium and chromedriver, installed once per machine (the test command runs as root on
/// the project's machines; a developer without them can install the two packages by hand).
fn ensure_chromium() {
    if Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists() {
        return;
    }
    let tools = workspace().join(".tools");
    std::fs::create_dir_all(&tools).unwrap();
    let lock = std::fs::File::create(tools.join("chromium.lock")).unwrap();
    lock.lock().unwrap();
    if !Path::new("/usr/bin/chromedriver").exists() {
        for args in [
            vec!["update", "-q"],
            vec!["install", "-y", "-q", "chromium", "chromium-driver"],
        ] {
            let status = Command::new("apt-get")
                .args(&args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status()
                .expect("apt-get runs");
            assert!(
                status.success(),
                "apt-get {args:?} failed: install chromium and chromium-driver"
            );
        }
    }
}

fn start_runner(data_dir: &Path, port: u16, sandbox_port: u16) -> (Runner, String) {
    common::start(common::command(data_dir, port, sandbox_port))
}

struct WebDriver {
    http: reqwest::Client,
    session: String,
    base: String,
}

impl WebDriver {
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method.clone(), &url);
        if method != reqwest::Method::GET {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn wait_for_element(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self
                .call(
                    reqwest::Method::POST,
                    "/element",
                    json!({"using": "css selector", "value": css}),
                )
                .await;
            if let Some(id) = found
                .get("element-6066-11e4-a52e-4f735466cecf")
                .and_then(Value::as_str)
            {
                return id.to_string();
            }
            assert!(Instant::now() < deadline, "no {css} on the page: {found}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test]
async fn headless_chromium_connects_through_the_consent_page() {
    ensure_chromium();
    let data_dir =
        std::env::temp_dir().join(format!("local-runner-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let (port, sandbox_port, driver_port) = (free_port(), free_port(), free_port());
    let (_runner, printed) = start_runner(&data_dir, port, sandbox_port);
    let section = &printed[printed
        .find("Twinfield connection")
        .expect("a Twinfield demo connection")..];
    let link = section
        .split("open ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();

    let driver = Runner(
        Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let base = format!("http://127.0.0.1:{driver_port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(format!("{base}/status")).send().await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let profile = data_dir.join("chromium-profile");
    let capabilities = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--no-first-run", "--disable-dev-shm-usage", "--window-size=412,915",
                     format!("--user-data-dir={}", profile.display())]
        }
    }}});
    let created = common::json_of(http.post(format!("{base}/session")).json(&capabilities)).await;
    let session = created["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {created}"))
        .to_string();
    let browser = WebDriver {
        http,
        session,
        base,
    };

    browser
        .call(reqwest::Method::POST, "/url", json!({"url": link}))
        .await;
    let connect = browser.wait_for_element("#connect").await;
    browser
        .call(
            reqwest::Method::POST,
            &format!("/element/{connect}/click"),
            json!({}),
        )
        .await;
    let allow = browser.wait_for_element("#allow").await;
    browser
        .call(
            reqwest::Method::POST,
            &format!("/element/{allow}/click"),
            json!({}),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let source = browser
            .call(reqwest::Method::GET, "/source", json!({}))
            .await;
        let source = source.as_str().unwrap_or_default().to_string();
        if source.contains("is connected") || Instant::now() > deadline {
            break source;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let url = browser.call(reqwest::Method::GET, "/url", json!({})).await;
    let screenshot = browser
        .call(reqwest::Method::GET, "/screenshot", json!({}))
        .await;
    let artifacts = workspace().join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD
        .decode(screenshot.as_str().unwrap())
        .unwrap();
    std::fs::write(artifacts.join("connect-success.png"), &png).unwrap();
    browser.call(reqwest::Method::DELETE, "", json!({})).await;
    drop(driver);

    assert!(
        url.as_str()
            .unwrap()
            .starts_with(&format!("http://127.0.0.1:{port}/oauth/callback")),
        "{url}"
    );
    assert!(
        page.contains("Twinfield is connected"),
        "the success page: {page}"
    );
    assert!(page.contains("TWF-DEMO"), "names the organisation: {page}");
    assert!(png.starts_with(b"\x89PNG"));
    let _ = std::fs::remove_dir_all(&data_dir);
}
