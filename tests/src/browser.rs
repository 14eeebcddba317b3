//! A real browser for page tests: Debian's headless Chromium driven through chromedriver (WebDriver),
//! at the width of a desktop or a phone, with screenshots kept under `tests/artifacts/<test>/` and
//! axe-core run inside the page for accessibility violations.
//!
//! chromium and chromium-driver come from Debian's packages (installed once per machine when
//! missing); axe-core is pinned by `tests/axe/package.json` and its lockfile and installed with
//! `npm ci` into `.tools/axe`, as `oidc` installs oidc-provider.

use crate::tools::{
    free_port, install_once, run, tools_dir, wait_for_port, workspace_root, Service,
};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The key under which WebDriver answers an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Installs Debian's chromium and chromedriver when the machine has neither.
pub fn ensure_chromium() -> Result<()> {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return Ok(());
    }
    install_once("chromium-debian", || {
        for args in [
            vec!["update", "-q"],
            vec!["install", "-y", "-q", "chromium", "chromium-driver"],
        ] {
            run(Command::new("apt-get")
                .args(&args)
                .env("DEBIAN_FRONTEND", "noninteractive"))
            .context("apt-get: install chromium and chromium-driver by hand")?;
        }
        Ok(())
    })
}

fn axe_source_dir() -> PathBuf {
    workspace_root().join("tests/axe")
}

/// Installs the pinned axe-core into `.tools/axe` (once per lockfile) and answers its script.
pub fn axe_script() -> Result<String> {
    let lock = std::fs::read(axe_source_dir().join("package-lock.json"))
        .context("reading tests/axe/package-lock.json")?;
    let mut hasher = DefaultHasher::new();
    lock.hash(&mut hasher);
    let dir = tools_dir().join("axe");
    install_once(&format!("axe-{:016x}", hasher.finish()), || {
        std::fs::create_dir_all(&dir)?;
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(axe_source_dir().join(file), dir.join(file))
                .with_context(|| format!("copying {file}"))?;
        }
        // Inside the folder: with `--prefix` from the tests' working folder, npm ci refuses this
        // lockfile as out of sync ("Missing: axe@").
        run(Command::new("npm").arg("ci").current_dir(&dir).args([
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ]))
        .context("npm ci failed: axe-core needs npm on PATH")
    })?;
    std::fs::read_to_string(dir.join("node_modules/axe-core/axe.min.js"))
        .context("reading axe.min.js")
}

/// One accessibility rule a page breaks, as axe-core reports it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub rule: String,
    /// `minor`, `moderate`, `serious` or `critical`.
    pub impact: String,
    pub help: String,
    /// The offending elements, as CSS selectors.
    pub targets: Vec<String>,
}

/// A headless Chromium session. Closed, with its driver, when dropped.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    width: u32,
    artifacts: PathBuf,
    profile: PathBuf,
    _driver: Service,
}

impl Browser {
    /// A fresh browser (new profile, no cookies) whose screenshots go to `tests/artifacts/<test>/`,
    /// asking for pages in `accept_language` (e.g. `nl-NL,nl`; `en-US,en` is Chromium's own).
    pub async fn start(test: &str, accept_language: &str) -> Result<Self> {
        ensure_chromium()?;
        let port = free_port();
        let mut driver = Service::spawn(
            "chromedriver",
            Path::new(CHROMEDRIVER),
            &[format!("--port={port}")],
            &[],
        )?;
        wait_for_port(
            port,
            driver.child(),
            Duration::from_secs(20),
            "chromedriver",
        )?;
        let profile = std::env::temp_dir().join(format!(
            "broker-browser-{}-{}-{port}",
            test,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&profile);
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                         format!("--lang={}", accept_language.split(',').next().unwrap_or("en")),
                         format!("--user-data-dir={}", profile.display())],
                "prefs": {"intl.accept_languages": accept_language}
            }
        }}});
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let base = format!("http://127.0.0.1:{port}");
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await?
            .json()
            .await?;
        let session = created["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("chromedriver made no session: {created}"))?
            .to_string();
        let artifacts = workspace_root().join("tests/artifacts").join(test);
        std::fs::create_dir_all(&artifacts)?;
        let browser = Self {
            http,
            base,
            session,
            width: 0,
            artifacts,
            profile,
            _driver: driver,
        };
        Ok(browser)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method.clone(), &url);
        if method != reqwest::Method::GET {
            request = request.json(&body);
        }
        let answer: Value = request.send().await?.json().await?;
        let value = answer["value"].clone();
        if let Some(error) = value.get("error").and_then(Value::as_str) {
            bail!("WebDriver {path}: {error}: {}", value["message"]);
        }
        Ok(value)
    }

    async fn cdp(&self, command: &str, params: Value) -> Result<Value> {
        self.call(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            json!({"cmd": command, "params": params}),
        )
        .await
    }

    /// Lays pages out `width` CSS pixels wide; below 600 as a phone (touch, the page's viewport
    /// meta tag honoured).
    pub async fn set_width(&mut self, width: u32) -> Result<()> {
        let mobile = width < 600;
        let height = if mobile { 844 } else { 900 };
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await?;
        self.width = width;
        Ok(())
    }

    pub async fn open(&self, url: &str) -> Result<()> {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await?;
        Ok(())
    }

    /// Opens an HTML file from disk.
    pub async fn open_file(&self, path: &Path) -> Result<()> {
        let url = url::Url::from_file_path(path)
            .map_err(|_| anyhow!("{} is not an absolute path", path.display()))?;
        self.open(url.as_str()).await
    }

    pub async fn url(&self) -> Result<String> {
        Ok(self
            .call(reqwest::Method::GET, "/url", json!({}))
            .await?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and answers its result.
    pub async fn execute(&self, script: &str, args: Value) -> Result<Value> {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// The text a person reads on the page (rendered text, not markup).
    pub async fn text(&self) -> Result<String> {
        let text = self
            .execute("return document.body.innerText;", json!([]))
            .await?;
        Ok(text.as_str().unwrap_or_default().to_string())
    }

    /// The page's `lang`.
    pub async fn language(&self) -> Result<String> {
        let lang = self
            .execute("return document.documentElement.lang;", json!([]))
            .await?;
        Ok(lang.as_str().unwrap_or_default().to_string())
    }

    /// The element matching `css`, waiting up to 20 s for it to appear.
    pub async fn wait_for(&self, css: &str) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self
                .call(
                    reqwest::Method::POST,
                    "/element",
                    json!({"using": "css selector", "value": css}),
                )
                .await;
            if let Ok(found) = &found {
                if let Some(id) = found.get(ELEMENT).and_then(Value::as_str) {
                    return Ok(id.to_string());
                }
            }
            if Instant::now() > deadline {
                bail!("no {css} on the page: {found:?}");
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Whether an element matches `css` now.
    pub async fn has(&self, css: &str) -> Result<bool> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/elements",
                json!({"using": "css selector", "value": css}),
            )
            .await?;
        Ok(found.as_array().is_some_and(|a| !a.is_empty()))
    }

    /// Clicks the element matching `css`, as a person would.
    pub async fn click(&self, css: &str) -> Result<()> {
        let id = self.wait_for(css).await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await?;
        Ok(())
    }

    /// The whole page (beyond the window, as a person scrolling sees it) saved as
    /// `tests/artifacts/<test>/<name>-<width>.png`.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let metrics = self.cdp("Page.getLayoutMetrics", json!({})).await?;
        let height = metrics["cssContentSize"]["height"]
            .as_f64()
            .unwrap_or(900.0)
            .ceil();
        let shot = self
            .cdp(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true,
                       "clip": {"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1}}),
            )
            .await?;
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .context("decoding the screenshot")?;
        if !png.starts_with(b"\x89PNG") {
            bail!("the screenshot is not a PNG");
        }
        let path = self.artifacts.join(format!("{name}-{}.png", self.width));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// Runs axe-core in the page and answers the violations of impact `serious` or `critical`.
    pub async fn serious_accessibility_violations(&self) -> Result<Vec<Violation>> {
        let axe = axe_script()?;
        // WebDriver's scripts run outside the page's Content-Security-Policy, so axe needs no
        // exception in the policy the pages are served with.
        self.execute(&format!("{axe}\nreturn typeof axe;"), json!([]))
            .await
            .context("injecting axe-core")?;
        let result = self
            .call(
                reqwest::Method::POST,
                "/execute/async",
                json!({"script": "const done = arguments[arguments.length - 1];\
                    axe.run(document, {resultTypes: ['violations']})\
                      .then(r => done(r.violations), e => done({error: String(e)}));",
                       "args": []}),
            )
            .await?;
        if let Some(error) = result.get("error") {
            bail!("axe-core failed: {error}");
        }
        let violations = result
            .as_array()
            .ok_or_else(|| anyhow!("axe-core answered {result}"))?;
        Ok(violations
            .iter()
            .map(|v| Violation {
                rule: v["id"].as_str().unwrap_or_default().to_string(),
                impact: v["impact"].as_str().unwrap_or_default().to_string(),
                help: v["help"].as_str().unwrap_or_default().to_string(),
                targets: v["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|n| n["target"].to_string())
                    .collect(),
            })
            .filter(|v| v.impact == "serious" || v.impact == "critical")
            .collect())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (and so the browser) before the driver is stopped. Plain HTTP/1.1 over a
        // socket: a drop may run inside or outside an async runtime.
        let _ = end_session(&self.base, &self.session);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn end_session(base: &str, session: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "DELETE /session/{session} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    Ok(())
}
