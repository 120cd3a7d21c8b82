//! `timeshard`: the server binary. Parses the command line, sets up logging, runs the server
//! until SIGINT or SIGTERM, then shuts it down gracefully. All behaviour lives in the library.

use anyhow::Context as _;
use clap::Parser as _;
use timeshard_server::config::{Cli, Command, Config};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(args) => {
            let config = Config::resolve(&args)?;
            print!("{}", config.to_redacted_toml());
            Ok(())
        }
        Command::Serve(args) => {
            let config = Config::resolve(&args)?;
            let filter = EnvFilter::try_new(&config.log)
                .with_context(|| format!("log filter {:?}", config.log))?;
            tracing_subscriber::fmt().with_env_filter(filter).init();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("timeshard")
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(serve(config))
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = timeshard_server::start(config).await?;
    shutdown_signal().await?;
    tracing::info!("signal received, shutting down");
    server.shutdown().await;
    Ok(())
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM (what service managers and containers send).
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            res = tokio::signal::ctrl_c() => res.context("waiting for SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
