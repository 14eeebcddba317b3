//! `cargo run --release -p broker-benches [-- <name>...] [--quick] [--arm64]`
//!
//! Benchmarks that print figures (never timed assertions): `fanout`, `session`, `coldstart`,
//! `secret-writes`, `throttled`; none named runs all. `--quick` shrinks every benchmark for a fast look;
//! `--arm64` also builds the functions with cargo lambda for arm64 and reports those sizes.

mod coldstart;
mod counting;
mod fanout;
mod session;
mod throttled;
mod world;

use std::time::Instant;

const ALL: [&str; 5] = [
    "fanout",
    "session",
    "secret-writes",
    "coldstart",
    "throttled",
];

/// The 1/5/15-minute load averages: the machine is shared, so say how busy it was.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kib| format!("{:.1} GiB", kib / 1_048_576.0))
        .unwrap_or_else(|| "?".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cpus} CPUs ({cpu}), {mem} memory")
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let arm64 = args.iter().any(|a| a == "--arm64");
    let mut names: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    if let Some(unknown) = names.iter().find(|n| !ALL.contains(n)) {
        anyhow::bail!(
            "unknown benchmark {unknown:?}; choose from {ALL:?} (none: all), --quick, --arm64"
        );
    }
    if names.is_empty() {
        names = ALL.to_vec();
    }
    println!(
        "broker-benches {}— {} — {} UTC",
        if quick { "--quick " } else { "" },
        machine(),
        chrono::Utc::now().format("%Y-%m-%d %H:%M")
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    runtime.block_on(async {
        for name in names {
            let t = Instant::now();
            println!("[{name}] load average before: {}", load());
            match name {
                "fanout" => fanout::bench(quick).await?,
                "session" => session::bench(quick).await?,
                "secret-writes" => session::secret_writes(quick).await?,
                "coldstart" => coldstart::bench(quick, arm64).await?,
                "throttled" => throttled::bench(quick).await?,
                _ => unreachable!(),
            }
            println!("  ({name} took {:.0} s)\n", t.elapsed().as_secs_f64());
        }
        anyhow::Ok(())
    })?;
    println!(
        "all benchmarks took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
