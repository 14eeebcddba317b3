//! The deployment template (`infra/template.yaml`) checked offline by the tools a deployment uses:
//! cfn-lint, `sam validate --lint` and checkov, installed from PyPI into `.tools/venv-infra` on first
//! use; and (once the function crates exist) an arm64 release build of every function it names.

use anyhow::{bail, Context, Result};
use broker_tests::tools::{install_once, run, tools_dir, with_lock, workspace_root};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TEMPLATE: &str = "infra/template.yaml";
const REGION: &str = "eu-west-1";

/// Pinned: a newer checkov or cfn-lint can add checks, which should arrive as a deliberate upgrade.
const LINT_TOOLS: &[&str] = &[
    "aws-sam-cli==1.170.0",
    "cfn-lint==1.58.0",
    "checkov==3.2.459",
];
/// cargo-lambda drives the cross build; ziglang is the linker it uses for aarch64.
const BUILD_TOOLS: &[&str] = &["cargo-lambda==1.9.2", "ziglang==0.17.1"];
const ARM64_TARGET: &str = "aarch64-unknown-linux-gnu";
/// The size target for a Lambda bootstrap (8 MB): a smaller package deploys and cold-starts faster.
const MAX_BOOTSTRAP_BYTES: u64 = 8_000_000;
/// The SQLite file header, present in any binary that links SQLite (the embedded store).
const SQLITE_MAGIC: &[u8] = b"SQLite format 3";

fn venv() -> PathBuf {
    tools_dir().join("venv-infra")
}

fn venv_bin(name: &str) -> PathBuf {
    venv().join("bin").join(name)
}

/// Both tool sets go into one venv, so creating it and every pip run into it take one lock: two tests
/// installing their tools at once on a fresh machine would otherwise both create it.
fn pip_install(specs: &[&str]) -> Result<()> {
    with_lock("venv-infra", || {
        let venv = venv();
        if !venv.join("bin/python").exists() {
            run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        }
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(specs))
    })
}

/// aws-sam-cli, cfn-lint and checkov in `.tools/venv-infra`, once per machine (a venv left there by
/// an earlier run is reused: pip finds the pinned versions already satisfied).
fn lint_tools() {
    install_once("infra-tools", || pip_install(LINT_TOOLS))
        .expect("installing the infra lint tools");
}

/// A tool from the venv, run from the workspace root, offline, with the venv first on PATH.
fn tool(name: &str) -> Command {
    let mut command = Command::new(venv_bin(name));
    command
        .current_dir(workspace_root())
        .env("PATH", path_with_venv())
        .env("SAM_CLI_TELEMETRY", "0")
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_REGION", REGION);
    command
}

fn path_with_venv() -> OsString {
    let mut paths = vec![venv().join("bin")];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).expect("PATH")
}

fn output_of(command: &mut Command) -> Result<Output> {
    command
        .output()
        .with_context(|| format!("starting {command:?}"))
}

fn describe(command: &Command, output: &Output) -> String {
    format!(
        "{command:?} exited with {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn template_passes_cfn_lint() {
    lint_tools();
    run(tool("cfn-lint").arg(TEMPLATE)).unwrap();
}

#[test]
fn template_passes_sam_validate() {
    lint_tools();
    run(tool("sam").args([
        "validate",
        "--lint",
        "--template",
        TEMPLATE,
        "--region",
        REGION,
    ]))
    .unwrap();
}

#[test]
fn template_passes_checkov() {
    lint_tools();
    let mut command = tool("checkov");
    // --skip-download: no call to Prisma Cloud for guidelines (offline; it changes no result).
    command.args([
        "-f",
        TEMPLATE,
        "--framework",
        "cloudformation",
        "--compact",
        "--quiet",
        "--skip-download",
    ]);
    let output = output_of(&mut command).unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "checkov found failed checks:\n{}",
        describe(&command, &output)
    );
    assert!(
        stdout.contains("Failed checks: 0"),
        "checkov did not report its results as expected:\n{}",
        describe(&command, &output)
    );
    // Checks may only be skipped in the template, each with a written reason.
    let template = std::fs::read_to_string(workspace_root().join(TEMPLATE)).unwrap();
    let skips = checkov_skips(&template);
    assert!(
        !skips.is_empty(),
        "no checkov skips found: has the skip syntax in the template changed?"
    );
    for (line, id, reason) in &skips {
        assert!(
            reason.split_whitespace().count() >= 8,
            "line {line}: skip of {id} needs a real reason, got {reason:?}"
        );
    }
}

/// `(line, check id, reason)` of every `- id: CKV_...` followed by a `comment:` (inline or a folded
/// `>-` block) in the template.
fn checkov_skips(template: &str) -> Vec<(usize, String, String)> {
    let lines: Vec<&str> = template.lines().collect();
    let mut skips = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let Some(id) = line.trim().strip_prefix("- id:").map(str::trim) else {
            continue;
        };
        if !id.starts_with("CKV") {
            continue;
        }
        let mut reason = String::new();
        if let Some(comment) = lines
            .get(index + 1)
            .and_then(|l| l.trim().strip_prefix("comment:"))
        {
            let comment = comment.trim();
            if comment == ">-" || comment == ">" || comment == "|" {
                let indent = |l: &str| l.len() - l.trim_start().len();
                let base = indent(lines[index + 1]);
                for more in &lines[index + 2..] {
                    if more.trim().is_empty() || indent(more) <= base {
                        break;
                    }
                    reason.push_str(more.trim());
                    reason.push(' ');
                }
            } else {
                reason.push_str(comment.trim_matches(['"', '\'']));
            }
        }
        skips.push((index + 1, id.to_string(), reason.trim().to_string()));
    }
    skips
}

/// Every `Binary:` named in a `BuildProperties` of the template. A line scan: the template uses
/// CloudFormation's `!Ref`/`!Sub` tags, which a strict YAML parser refuses.
fn template_binaries(template: &str) -> Vec<String> {
    template
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Binary:"))
        .map(|name| name.trim().trim_matches(['"', '\'']).to_string())
        .filter(|name| !name.is_empty())
        .collect()
}

#[test]
fn the_template_names_the_four_functions() {
    let template = std::fs::read_to_string(workspace_root().join(TEMPLATE)).unwrap();
    let mut binaries = template_binaries(&template);
    binaries.sort();
    assert_eq!(
        binaries,
        [
            "expiry-notifier",
            "oauth-callback",
            "session-exchange",
            "token-refresh"
        ]
    );
}

/// cargo-lambda and zig in the same venv, and the Rust standard library for aarch64.
fn build_tools() -> Result<()> {
    install_once("infra-build-tools", || pip_install(BUILD_TOOLS))?;
    run(Command::new("rustup").args(["target", "add", ARM64_TARGET]))
}

/// `cargo lambda build --release --arm64` of one binary, into a target dir of its own so it does not
/// thrash the debug build; the bootstrap lands in `target/lambda/<binary>/bootstrap`. (The target dir
/// goes through CARGO_TARGET_DIR: cargo-lambda 1.9 passes `--target-dir` on to `cargo metadata`,
/// which refuses it.)
fn build_for_arm64(binary: &str) -> Result<PathBuf> {
    let root = workspace_root();
    let mut command = Command::new("cargo");
    command
        .current_dir(&root)
        .env("PATH", path_with_venv())
        .env("CARGO_TARGET_DIR", root.join("target/lambda-build"))
        .args([
            "lambda",
            "build",
            "--release",
            "--arm64",
            "--bin",
            binary,
            "--lambda-dir",
        ])
        .arg(root.join("target/lambda"));
    run(&mut command)?;
    let bootstrap = root.join("target/lambda").join(binary).join("bootstrap");
    if !bootstrap.is_file() {
        bail!("{command:?} succeeded but left no {}", bootstrap.display());
    }
    Ok(bootstrap)
}

fn size_of(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Whether `needle` occurs in the file's bytes.
fn contains(path: &Path, needle: &[u8]) -> bool {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes.windows(needle.len()).any(|w| w == needle)
}

/// Each function, built exactly as `sam build` builds it (from the root, `--bin`), links neither the
/// embedded store (the root's `default-members` keep local-runner's features out of the build) nor
/// more than [`MAX_BOOTSTRAP_BYTES`].
#[test]
fn every_function_builds_for_arm64() {
    build_tools().unwrap();
    let template = std::fs::read_to_string(workspace_root().join(TEMPLATE)).unwrap();
    let binaries = template_binaries(&template);
    assert!(
        !binaries.is_empty(),
        "no BuildProperties Binary in {TEMPLATE}"
    );
    for binary in &binaries {
        let bootstrap = build_for_arm64(binary)
            .unwrap_or_else(|e| panic!("building {binary} for arm64: {e:#}"));
        let bytes = size_of(&bootstrap);
        println!(
            "{binary}: {} ({bytes} bytes, {:.1} MiB)",
            bootstrap.display(),
            bytes as f64 / 1_048_576.0
        );
        assert!(
            !contains(&bootstrap, SQLITE_MAGIC),
            "{binary} links SQLite: the Lambda functions must be built without broker-core's `embedded` feature"
        );
        assert!(
            bytes < MAX_BOOTSTRAP_BYTES,
            "{binary} is {bytes} bytes, over the {MAX_BOOTSTRAP_BYTES}-byte target"
        );
    }
}

/// The browser routes and the integration API are throttled separately, each by its own parameter, so
/// traffic on one cannot use up the other's budget.
#[test]
fn browser_routes_and_the_integration_api_have_their_own_throttles() {
    let template = std::fs::read_to_string(broker_tests::tools::workspace_root().join(TEMPLATE))
        .expect("the template");
    let settings = template
        .split("\n      RouteSettings:")
        .nth(1)
        .expect("the stage has per-route settings (not only DefaultRouteSettings)");
    let limit_of = |route: &str| -> String {
        let block = settings
            .split(&format!("{route}:"))
            .nth(1)
            .unwrap_or_else(|| panic!("no route settings for {route}"));
        let line = block
            .lines()
            .find(|l| l.contains("ThrottlingRateLimit"))
            .unwrap_or_else(|| panic!("no rate limit for {route}"));
        line.trim().to_string()
    };
    let browser = limit_of("GET /connect/{token}");
    assert!(browser.contains("BrowserRouteRateLimit"), "{browser}");
    assert_eq!(limit_of("GET /oauth/callback"), browser);
    assert_eq!(limit_of("POST /connect/division"), browser);
    let api = limit_of("ANY /v1/{proxy+}");
    assert!(api.contains("IntegrationApiRateLimit"), "{api}");
    for route_key in [
        "GET /connect/{token}",
        "GET /oauth/callback",
        "POST /connect/division",
        "ANY /v1/{proxy+}",
    ] {
        assert!(
            template.contains(&format!("RouteKey: {route_key}")),
            "{route_key} is a route of the API"
        );
    }
}
