//! `cargo run -p local-runner`: the whole broker on this machine, with sandbox providers.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    broker_core::telemetry::init();
    let running = local_runner::start(local_runner::RunnerConfig::from_env()).await?;
    println!("{}", local_runner::describe(&running));
    println!("Press Ctrl-C to stop.");
    let signal = stop_signal().await?;
    // Returning drops the runner: its servers and timers stop and the store's writer finishes what it
    // holds, whether a person pressed Ctrl-C or a process manager sent SIGTERM.
    println!("{signal}: stopping.");
    drop(running);
    Ok(())
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM, and names the one that came.
async fn stop_signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            interrupted = tokio::signal::ctrl_c() => interrupted.map(|()| "interrupted"),
            _ = terminate.recv() => Ok("terminated"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map(|()| "interrupted")
    }
}
