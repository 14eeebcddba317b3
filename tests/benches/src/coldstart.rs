//! Cold start: each Lambda function's native release binary against a small local Lambda runtime API,
//! from process start to the first handled invocation; peak memory (VmHWM); binary sizes.

use crate::counting::{aws_stores, moto_endpoint, CallCounter};
use crate::world::World;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use broker_core::domain::{ApiKeyRecord, ApiKeyScope};
use serde_json::{json, Value};
use std::path::{Path as FsPath, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub const FUNCTIONS: [&str; 4] = [
    "oauth-callback",
    "session-exchange",
    "token-refresh",
    "expiry-notifier",
];

/// The runtime API: hands out one event, then holds every later `next` open; reports the answer.
#[derive(Clone)]
struct Emulator {
    event: Arc<Mutex<Option<Value>>>,
    answers: mpsc::UnboundedSender<(Instant, bool, String)>,
}

async fn next(State(emu): State<Emulator>) -> Response {
    let event = emu.event.lock().unwrap().take();
    let Some(event) = event else {
        std::future::pending::<()>().await;
        unreachable!()
    };
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 60_000;
    let mut headers = HeaderMap::new();
    let mut set = |k: &'static str, v: String| {
        headers.insert(k, HeaderValue::from_str(&v).unwrap());
    };
    set("lambda-runtime-aws-request-id", "bench-request-1".into());
    set("lambda-runtime-deadline-ms", deadline.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:eu-west-1:123456789012:function:bench".into(),
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1".into(),
    );
    set("content-type", "application/json".into());
    (StatusCode::OK, headers, event.to_string()).into_response()
}

async fn response(
    State(emu): State<Emulator>,
    Path(_id): Path<String>,
    body: String,
) -> StatusCode {
    let _ = emu.answers.send((Instant::now(), true, body));
    StatusCode::ACCEPTED
}

async fn error(State(emu): State<Emulator>, body: String) -> StatusCode {
    let _ = emu.answers.send((Instant::now(), false, body));
    StatusCode::ACCEPTED
}

/// The environment a function gets: Lambda's own variables plus the broker's configuration.
#[derive(Clone)]
pub struct Setup {
    pub label: &'static str,
    pub env: Vec<(String, String)>,
    pub connection: String,
    pub api_key: String,
}

pub struct Measured {
    pub to_first_invocation: Duration,
    pub peak_kib: u64,
    pub ok: bool,
    pub answer: String,
}

fn event_for(function: &str, setup: &Setup) -> Value {
    let http = |method: &str, path: &str, auth: Option<&str>| {
        let mut headers = json!({"host": "broker.example.com", "user-agent": "bench"});
        if let Some(auth) = auth {
            headers["authorization"] = json!(auth);
        }
        json!({
            "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
            "headers": headers, "isBase64Encoded": false,
            "requestContext": {
                "accountId": "123456789012", "apiId": "bench", "domainName": "broker.example.com",
                "domainPrefix": "broker", "requestId": "bench-1", "routeKey": "$default",
                "stage": "$default", "time": "23/Nov/2026:13:00:00 +0000", "timeEpoch": 1795000000000u64,
                "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                         "sourceIp": "127.0.0.1", "userAgent": "bench"}
            }
        })
    };
    match function {
        "session-exchange" => http(
            "POST",
            &format!("/v1/connections/{}/session", setup.connection),
            Some(&setup.api_key),
        ),
        // An unknown connect link: read from the store, answered with a page.
        "oauth-callback" => http("GET", "/connect/bench-unknown-link-token", None),
        _ => json!({
            "version": "0", "id": "bench-1", "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "123456789012", "time": "2026-11-23T13:00:00Z",
            "region": "eu-west-1", "resources": ["arn:aws:events:eu-west-1:123456789012:rule/bench"],
            "detail": {}
        }),
    }
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

pub async fn measure(binary: &FsPath, function: &str, setup: &Setup) -> anyhow::Result<Measured> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let emu = Emulator {
        event: Arc::new(Mutex::new(Some(event_for(function, setup)))),
        answers: tx,
    };
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(error))
        .with_state(emu);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let log = std::env::temp_dir().join(format!("broker-bench-{function}-{}.log", setup.label));
    let mut command = tokio::process::Command::new(binary);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{function}"),
        )
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_LEVEL", "warn")
        .envs(setup.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(log.with_extension("err"))?)
        .current_dir(std::env::temp_dir())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = command.spawn()?;
    let pid = child.id().unwrap_or(0);
    let answer = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
    let peak_kib = vm_hwm_kib(pid);
    let _ = child.kill().await;
    server.abort();
    let (at, ok, body) = match answer {
        Ok(Some(a)) => a,
        _ => anyhow::bail!(
            "{function} ({}) gave no answer in 30 s; see {}",
            setup.label,
            log.with_extension("err").display()
        ),
    };
    Ok(Measured {
        to_first_invocation: at - started,
        peak_kib,
        ok,
        answer: body,
    })
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn release_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("release")
}

/// `cargo build --release` of the four functions (a no-op when they are up to date).
pub fn build_native() -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command
        .current_dir(workspace_root())
        .args(["build", "--release"]);
    for f in FUNCTIONS {
        command.args(["-p", f]);
    }
    println!("  building the functions: {command:?}");
    let status = command.status()?;
    anyhow::ensure!(status.success(), "cargo build --release failed");
    Ok(())
}

/// `cargo lambda build --release --arm64`, as tests/tests/infra.rs does (tools in .tools/venv-infra).
pub fn build_arm64() -> anyhow::Result<()> {
    let root = workspace_root();
    let venv_bin = root.join(".tools/venv-infra/bin");
    anyhow::ensure!(
        venv_bin.join("cargo-lambda").exists(),
        "cargo-lambda is not installed in .tools/venv-infra (run `cargo test -p broker-tests --test infra -- --ignored` once)"
    );
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for f in FUNCTIONS {
        let status = std::process::Command::new("cargo")
            .current_dir(&root)
            .env("PATH", &path)
            .env("CARGO_TARGET_DIR", root.join("target/lambda-build"))
            .args([
                "lambda",
                "build",
                "--release",
                "--arm64",
                "--bin",
                f,
                "--lambda-dir",
            ])
            .arg(root.join("target/lambda"))
            .status()?;
        anyhow::ensure!(status.success(), "cargo lambda build of {f} failed");
    }
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / 1_048_576.0)
}

/// The functions on DynamoDB + Secrets Manager (moto), the only backend a Lambda build links: without
/// BROKER_TABLE they refuse to start rather than open an embedded store.
async fn setup() -> anyhow::Result<(Setup, World)> {
    let mut env = vec![
        ("AWS_REGION".to_string(), "eu-west-1".to_string()),
        ("AWS_DEFAULT_REGION".into(), "eu-west-1".into()),
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ("BROKER_SENDER".into(), "broker@example.com".into()),
        (
            "BROKER_PUBLIC_URL".into(),
            "https://broker.example.com".into(),
        ),
    ];
    let (stores, table, prefix) = aws_stores(&CallCounter::default()).await?;
    env.push(("AWS_ENDPOINT_URL".into(), moto_endpoint()));
    env.push(("BROKER_TABLE".into(), table));
    env.push(("BROKER_SECRET_PREFIX".into(), prefix));
    // Real time: the function judges token validity by the system clock.
    let world = World::starting_at(stores, None).await?;
    let connection = world.seed(1, 1).await?.remove(0);
    let key = ApiKeyRecord::generate(
        world.tenant.clone(),
        "bench",
        ApiKeyScope::default(),
        world.clock.now(),
    );
    world.stores.store.insert_api_key(&key.record).await?;
    Ok((
        Setup {
            label: "aws",
            env,
            connection: connection.id.to_string(),
            api_key: format!("Bearer {}", key.plaintext.expose()),
        },
        world,
    ))
}

pub async fn bench(quick: bool, arm64: bool) -> anyhow::Result<()> {
    println!("== Cold start (native x86_64 release binaries; local Lambda runtime API emulator in this process)");
    build_native()?;
    if arm64 {
        build_arm64()?;
    }
    let repeats = if quick { 3 } else { 7 };
    println!(
        "  median of {repeats} cold starts each: process spawn → first invocation's response received; peak RSS = VmHWM just before stopping"
    );
    println!(
        "  {:<17} {:<9} {:>12} {:>12} {:>10}  answer",
        "function", "store", "first inv.", "(min..max)", "peak RSS"
    );
    let (setup, world) = setup().await?;
    for f in FUNCTIONS {
        let binary = release_dir().join(f);
        let mut runs = Vec::new();
        for _ in 0..repeats {
            runs.push(measure(&binary, f, &setup).await?);
        }
        runs.sort_by_key(|m| m.to_first_invocation);
        let mid = &runs[runs.len() / 2];
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let peak = runs.iter().map(|m| m.peak_kib).max().unwrap_or(0);
        let answer: String = mid.answer.chars().take(60).collect();
        println!(
            "  {:<17} {:<9} {:>9.1} ms {:>5.1}..{:<5.1}ms {:>6.1} MiB  {}{}",
            f,
            setup.label,
            ms(mid.to_first_invocation),
            ms(runs[0].to_first_invocation),
            ms(runs.last().unwrap().to_first_invocation),
            peak as f64 / 1024.0,
            if mid.ok { "" } else { "ERROR " },
            answer.replace('\n', " ")
        );
    }
    world.sim.shutdown();
    println!("  targets: < 50 ms to first invocation, peak memory < 32 MiB");
    println!("  binary sizes (target < 8 MB):");
    for f in FUNCTIONS {
        let native = std::fs::metadata(release_dir().join(f))
            .map(|m| m.len())
            .ok();
        let arm = workspace_root()
            .join("target/lambda")
            .join(f)
            .join("bootstrap");
        let arm = std::fs::metadata(&arm).ok().map(|m| m.len());
        println!(
            "    {:<17} x86_64 native release {:>10}   arm64 (cargo lambda, target/lambda/{f}/bootstrap) {}",
            f,
            native.map(mib).unwrap_or("-".into()),
            match arm {
                Some(b) => format!("{}{}", mib(b), if arm64 { "" } else { " (built earlier; --arm64 rebuilds)" }),
                None => "not built (pass --arm64)".into(),
            }
        );
    }
    Ok(())
}
