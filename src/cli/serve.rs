//! `ferry serve`: the command line of [`crate::server`]. Loads the
//! configuration (or the embedded default), applies the overrides, serves
//! until SIGINT or SIGTERM, then shuts down cleanly.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::server::Server;

/// Arguments of `ferry serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (without it, the embedded default: listen on
    /// 127.0.0.1:8080, data in ./ferry-data, one development source).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Address to listen on; overrides the configuration file.
    #[arg(long, env = "FERRY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory (holds log/); overrides the configuration file.
    #[arg(long, env = "FERRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Runs the server until a shutdown signal.
pub fn run(args: ServeArgs) -> Result<()> {
    let embedded = args.config.is_none();
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    // The development key is made (and shown below) before the effective
    // configuration is logged, so the log shows the source it belongs to.
    DataDir::new(&config.data_dir).prepare()?;
    let dev = config.ensure_dev_source()?;
    if embedded && config.destinations.is_empty() {
        config.destinations.push(config.default_destination());
    }
    tracing::info!(config = %config.redacted(), "effective configuration");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let shutdown = shutdown_signal()?;
        let server = Server::start(config, listener).await?;
        // Scripts and tests read these lines from stdout; the listening
        // line comes last and means the server accepts connections.
        if let Some(dev) = &dev {
            println!("{dev}");
        }
        println!("ferry listening on http://{}", server.addr());
        shutdown.await;
        server.shutdown().await?;
        anyhow::Ok(())
    })?;
    tracing::info!("stopped");
    Ok(())
}

/// Installs the SIGINT and SIGTERM handlers now (before the server says it
/// is listening, so an early signal is not fatal) and returns a future that
/// completes at the first of them.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down: finishing requests in progress");
    })
}
