//! Logging, set up the same way in every function: the level from `AWS_LAMBDA_LOG_LEVEL` or
//! `RUST_LOG` (default `info`), JSON lines when `AWS_LAMBDA_LOG_FORMAT=JSON` (Lambda's advanced
//! logging controls), plain text otherwise.
//!
//! Nothing logged by the broker carries a secret value: secrets are redacting types (see `secret`).
//! The AWS SDK and HTTP client crates are capped at `info` whatever the broker's own level: at `trace`
//! some of them log request bodies, which would carry tokens.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The broker's own crates, by the log target their events carry (the crate name with `_`).
const BROKER_TARGETS: &[&str] = &[
    "broker_core",
    "broker_http_main",
    "oauth_callback",
    "session_exchange",
    "token_refresh",
    "expiry_notifier",
    "broker_admin",
    "local_runner",
];

/// The log filter: the broker's own crates at `level`, dependencies at most at `info`.
pub fn filter(level: &str) -> EnvFilter {
    let level = match level.to_ascii_lowercase().as_str() {
        l @ ("trace" | "debug" | "info" | "warn" | "error") => l.to_string(),
        _ => "info".to_string(),
    };
    let deps = if matches!(level.as_str(), "trace" | "debug") {
        "info"
    } else {
        level.as_str()
    };
    let own = BROKER_TARGETS
        .iter()
        .map(|target| format!("{target}={level}"))
        .collect::<Vec<_>>()
        .join(",");
    EnvFilter::new(format!(
        "{deps},{own},aws_smithy_runtime={deps},aws_smithy_http_client={deps},\
         hyper={deps},hyper_util={deps},reqwest={deps},h2={deps},rustls={deps}"
    ))
}

fn configured_level() -> String {
    std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into())
}

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init() {
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(&configured_level()))
        .with_target(true)
        .with_ansi(colour_wanted(
            std::io::IsTerminal::is_terminal(&std::io::stdout()),
            std::env::var_os("NO_COLOR"),
        ));
    let result = if json {
        builder
            .json()
            .with_current_span(false)
            .without_time()
            .try_init()
    } else {
        builder.try_init()
    };
    // Already installed (tests, or a second call): keep the first.
    let _ = result;
}

/// Colour codes only for a person at a terminal: in a file, a pipe or CloudWatch they are noise that
/// breaks searching. `NO_COLOR` set to anything but an empty value turns them off (no-color.org).
fn colour_wanted(stdout_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stdout_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// A subscriber writing to `writer` with the production filter: for tests that inspect log output.
pub fn subscriber_for<W>(writer: W, level: &str) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_writer(writer)
        .with_ansi(false)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::{colour_wanted, BROKER_TARGETS};

    #[test]
    fn colour_only_at_a_terminal_without_no_color() {
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some("".into())));
        assert!(!colour_wanted(true, Some("1".into())));
        assert!(!colour_wanted(false, None));
    }

    /// A function crate missing from the list would log only at the dependencies' level.
    #[test]
    fn every_function_crate_logs_at_the_brokers_level() {
        let functions = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions");
        let mut seen = 0;
        for entry in std::fs::read_dir(&functions).unwrap() {
            let manifest = entry.unwrap().path().join("Cargo.toml");
            let Ok(text) = std::fs::read_to_string(&manifest) else {
                continue;
            };
            let name = text
                .lines()
                .find_map(|l| l.strip_prefix("name = \""))
                .and_then(|rest| rest.strip_suffix('"'))
                .unwrap_or_else(|| panic!("{} names no package", manifest.display()));
            let target = name.replace('-', "_");
            assert!(
                BROKER_TARGETS.contains(&target.as_str()),
                "{target} is not among the broker's log targets"
            );
            seen += 1;
        }
        assert!(seen >= 6, "only {seen} function crates found");
    }

    #[test]
    fn the_brokers_crates_follow_the_level_and_dependencies_stay_at_info() {
        let filter = super::filter("debug").to_string();
        assert!(filter.contains("broker_admin=debug"), "{filter}");
        assert!(filter.contains("reqwest=info"), "{filter}");
        assert!(!filter.contains("connection_broker"), "{filter}");
    }
}
