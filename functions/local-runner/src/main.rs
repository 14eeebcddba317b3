//! `cargo run -p local-runner`: the whole broker on this machine, with sandbox providers.

use std::future::Future;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    broker_core::telemetry::init();
    // Listening for SIGTERM starts before anything else: a process manager that stops the runner while
    // it starts must not meet the default action (an abrupt exit, with the store's writer mid-batch).
    let stopped = stop_signal()?;
    let running = local_runner::start(local_runner::RunnerConfig::from_env()).await?;
    println!("{}", local_runner::describe(&running));
    println!("Press Ctrl-C to stop.");
    let signal = stopped.await?;
    // Returning drops the runner: its servers and timers stop and the store's writer finishes what it
    // holds, whether a person pressed Ctrl-C or a process manager sent SIGTERM.
    println!("{signal}: stopping.");
    drop(running);
    Ok(())
}

/// Starts listening for Ctrl-C (SIGINT) and SIGTERM at once; the future names the one that came.
fn stop_signal() -> std::io::Result<impl Future<Output = std::io::Result<&'static str>>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => Ok("interrupted"),
                _ = terminate.recv() => Ok("terminated"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async { tokio::signal::ctrl_c().await.map(|()| "interrupted") })
    }
}
