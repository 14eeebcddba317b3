//! `cargo run -p local-runner`: the whole broker on this machine, with sandbox providers.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    broker_core::telemetry::init();
    let running = local_runner::start(local_runner::RunnerConfig::from_env()).await?;
    println!("{}", local_runner::describe(&running));
    println!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
