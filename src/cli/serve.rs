//! `ferry serve`: load the configuration, open the log, start delivery to
//! every destination, serve the ingest API until SIGINT or SIGTERM, then
//! finish the requests in progress and commit the delivery cursors.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::delivery::{make_sink, Delivery};
use crate::ingest::{self, AppState};
use crate::log::{Log, LogOptions};
use crate::store::StateStore;

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
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let dev = config.ensure_dev_source()?;
    let log_dir = config.data_dir.join("log");
    let log = Log::open(&log_dir, log_options(&config))
        .with_context(|| format!("cannot open the log in {}", log_dir.display()))?;
    let store = StateStore::open(&config.data_dir.join("state.redb"))?;
    if embedded && config.destinations.is_empty() {
        config.destinations.push(config.default_destination());
    }
    if config.destinations.is_empty() {
        tracing::warn!("no destinations configured: events are stored but not delivered");
    }
    let mut destinations = Vec::new();
    for d in &config.destinations {
        let sink = make_sink(d).map_err(anyhow::Error::msg)?;
        destinations.push((d.clone(), sink));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let shutdown = shutdown_signal()?;
        // Scripts and tests read these lines from stdout; the listening
        // line comes last and means the server accepts connections.
        if let Some(dev) = &dev {
            println!("{dev}");
        }
        println!("ferry listening on http://{addr}");
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "serving");
        for (d, _) in &destinations {
            tracing::info!(destination = %d.name, kind = ?d.kind, "delivering to {}", d.name);
        }
        let delivery = Delivery::start(log.clone(), std::sync::Arc::new(store), destinations)?;
        let state = AppState::new(&config, log);
        let served = ingest::run(listener, state, shutdown)
            .await
            .context("server error");
        // Ingestion has stopped taking requests; let delivery finish what is in flight.
        delivery.shutdown().await;
        served
    })?;
    tracing::info!("stopped");
    Ok(())
}

/// The log settings from the configuration, the log's defaults elsewhere.
fn log_options(config: &Config) -> LogOptions {
    let defaults = LogOptions::default();
    LogOptions {
        segment_bytes: config.log.segment_bytes.unwrap_or(defaults.segment_bytes),
        max_log_bytes: config.log.max_bytes,
        min_free_bytes: config.log.min_free_bytes.unwrap_or(defaults.min_free_bytes),
        min_retention: config.log.min_retention.unwrap_or_default(),
        ..defaults
    }
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
