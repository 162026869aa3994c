//! `ferry serve`: load the configuration, open the log, start delivery to
//! every destination, serve the ingest API until SIGINT or SIGTERM, then
//! finish the requests in progress and commit the delivery cursors.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::dedup::{Reopener, SystemClock};
use crate::delivery::{make_sink, Delivery};
use crate::ingest::{self, AppState, ReindexError, StartDedup};
use crate::log::{CommitObserver, Log, LogOptions};
use crate::metrics::Metrics;
use crate::store::StateStore;
use std::sync::Arc;

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

/// File in the data directory that tells the CLI where the running
/// server's admin API is (removed at shutdown).
pub const SERVER_FILE: &str = "server.json";

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
    prepare_data_dir(&config.data_dir)?;
    let dev = config.ensure_dev_source()?;
    if embedded && config.destinations.is_empty() {
        config.destinations.push(config.default_destination());
    }
    tracing::info!(config = %config.redacted(), "effective configuration");
    let metrics = Arc::new(Metrics::new());
    let log_dir = config.data_dir.join("log");
    let log = Log::open(&log_dir, log_options(&config, &metrics))
        .with_context(|| format!("cannot open the log in {}", log_dir.display()))?;
    let store = Arc::new(StateStore::open(&config.data_dir.join("state.redb"))?);
    let dedup = open_dedup(&config, &log)?;
    let state = AppState::starting(&config, log.clone(), metrics.clone(), dedup);
    // Retention keeps what the dedup index would re-index after a crash.
    let floor = state.retention_floor();
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
        for (d, _) in &destinations {
            tracing::info!(destination = %d.name, kind = ?d.kind, "delivering to {}", d.name);
        }
        let delivery = Delivery::start_with(
            log.clone(),
            store.clone(),
            destinations,
            metrics.clone(),
            floor,
        )?;
        // Reopens the dedup index after it stopped on a full disk.
        let reopening = tokio::spawn(state.clone().keep_dedup_open());
        let mut app = ingest::router(state);
        if let Some(token) = &config.admin_token {
            let admin = AdminState::new(token.clone(), delivery.destinations.clone(), store, log);
            app = app.merge(admin::router(admin));
            let server_file = config.data_dir.join(SERVER_FILE);
            std::fs::write(
                &server_file,
                serde_json::json!({"admin_url": format!("http://{addr}")}).to_string(),
            )
            .with_context(|| format!("cannot write {}", server_file.display()))?;
        }
        // Scripts and tests read these lines from stdout; the listening
        // line comes last and means the server accepts connections.
        if let Some(dev) = &dev {
            println!("{dev}");
        }
        println!("ferry listening on http://{addr}");
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "serving");
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .context("server error");
        // Ingestion has stopped taking requests; let delivery finish what is in flight.
        reopening.abort();
        delivery.shutdown().await;
        let _ = std::fs::remove_file(config.data_dir.join(SERVER_FILE));
        served
    })?;
    tracing::info!("stopped");
    Ok(())
}

/// Opens the dedup index (when enabled) and re-indexes the log tail past
/// its checkpoint before any request is taken. On a full disk the server
/// starts anyway, answering 503 until the index can be opened.
fn open_dedup(config: &Config, log: &Log) -> Result<Option<StartDedup>> {
    if !config.dedup.enabled {
        tracing::info!("dedup is disabled: every event is stored, duplicates included");
        return Ok(None);
    }
    let path = config.data_dir.join(crate::dedup::INDEX_FILE);
    let reopener = Reopener::new(&path, config.dedup.options(), Arc::new(SystemClock));
    match ingest::open_and_reindex(&reopener, log) {
        Ok(dedup) => Ok(Some(StartDedup::Open(dedup))),
        Err(e) if e.is_no_space() => {
            tracing::warn!(
                error = %e,
                "the dedup index cannot be opened: the disk is full; ingestion answers 503 until it can"
            );
            Ok(Some(StartDedup::Full {
                reopener,
                reason: e.to_string(),
            }))
        }
        Err(ReindexError::Dedup(e)) => Err(anyhow::Error::new(e)
            .context(format!("cannot open the dedup index {}", path.display()))),
        Err(e) => Err(e.into()),
    }
}

/// Creates the data directory if needed, and refuses one that holds other
/// things than ferry's (a typo in `--data-dir` must not scatter files into,
/// say, a home directory).
fn prepare_data_dir(dir: &std::path::Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!("data directory {} is not a directory", dir.display());
    }
    if dir.is_dir() {
        let ours = [
            "log",
            "state.redb",
            crate::dedup::INDEX_FILE,
            crate::config::DEV_WRITE_KEY_FILE,
            "events.jsonl",
            SERVER_FILE,
        ];
        let entries: Vec<String> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read data directory {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        if !entries.is_empty() && !entries.iter().any(|e| ours.contains(&e.as_str())) {
            anyhow::bail!(
                "{} is not empty and is not a ferry data directory (no log/ or state.redb in it); point --data-dir at an empty or a ferry directory",
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let probe = dir.join(".ferry-write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("data directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// The log settings from the configuration, the log's defaults elsewhere.
fn log_options(config: &Config, metrics: &Arc<Metrics>) -> LogOptions {
    let defaults = LogOptions::default();
    let m = metrics.clone();
    LogOptions {
        on_commit: Some(CommitObserver(Arc::new(move |fsync, records| {
            m.observe_group(fsync, records)
        }))),
        segment_bytes: config.log.segment_bytes.unwrap_or(defaults.segment_bytes),
        max_log_bytes: config.log.max_bytes,
        min_free_bytes: config.log.min_free_bytes.unwrap_or(defaults.min_free_bytes),
        min_retention: config.log.min_retention.unwrap_or_default(),
        recovery: config.log.recovery,
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
