//! A running ferry, built from a [`Config`]: the only place that assembles
//! the data directory, the log, the dedup index (supervised, so it reopens
//! after a full disk), the delivery state, delivery to every destination,
//! retention, the admin API and the HTTP router. `ferry serve` and the
//! tests start exactly this.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::config::{Config, ConfigError, DevSource};
use crate::data_dir::{DataDir, DataDirError};
use crate::dedup::{ReindexError, Reopener, StartDedup, SupervisedDedup, SystemClock};
use crate::delivery::status::DestinationHandle;
use crate::delivery::{make_sink, Delivery};
use crate::ingest::{self, AppState};
use crate::log::{CommitObserver, Log, LogError, LogOptions};
use crate::metrics::Metrics;
use crate::retention::{Retention, RetentionFloor};
use crate::store::{StateStore, StoreError};

/// Why a server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory cannot be used.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The configuration is invalid, or the development key cannot be made.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The log cannot be opened.
    #[error("cannot open the log in {path}: {source}")]
    Log {
        /// The log's directory.
        path: PathBuf,
        /// The cause.
        source: LogError,
    },
    /// The delivery state cannot be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The dedup index cannot be opened or re-indexed.
    #[error("cannot open the dedup index {path}: {source}")]
    Dedup {
        /// The index file.
        path: PathBuf,
        /// The cause.
        source: ReindexError,
    },
    /// A destination's settings are unusable (e.g. a bad `ca_file`).
    #[error("destination {name}: {message}")]
    Destination {
        /// The destination.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// Writing `server.json` (where the admin API is) failed.
    #[error("cannot write {path}: {source}")]
    ServerFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("server error: {0}")]
    Serve(#[source] std::io::Error),
    /// Opening the storage panicked or was cancelled.
    #[error("start-up task failed: {0}")]
    Task(String),
}

/// A running ferry. Stop it with [`Server::shutdown`]; dropping it leaves
/// its tasks running until the runtime ends.
pub struct Server {
    /// Where the HTTP API listens.
    addr: SocketAddr,
    /// The data directory.
    data_dir: DataDir,
    /// The write-ahead log.
    log: Log,
    /// Every metric the server reports.
    metrics: Arc<Metrics>,
    /// The development source, when no source is configured.
    dev_source: Option<DevSource>,
    /// The dedup index, when dedup is on.
    dedup: Option<Arc<SupervisedDedup>>,
    /// Delivery to every destination.
    delivery: Delivery,
    /// The threads delivery runs on.
    delivery_runtime: DeliveryThreads,
    /// Whether `server.json` was written (removed at shutdown).
    server_file: bool,
    /// Stops the HTTP server, retention and the dedup supervision.
    stop: CancellationToken,
    /// Retention and the dedup supervision.
    background: TaskTracker,
    /// The HTTP server, until it has finished the requests in progress.
    serving: JoinHandle<std::io::Result<()>>,
}

/// Opens the log in a directory (on the real file system, or in tests on
/// another storage).
type OpenLog = Box<dyn FnOnce(&std::path::Path, LogOptions) -> Result<Log, LogError> + Send>;

/// The storage a server opens before it serves.
struct Opened {
    log: Log,
    store: Arc<StateStore>,
    dedup: Option<Arc<SupervisedDedup>>,
}

impl Server {
    /// Starts ferry as configured, serving on `listener`.
    pub async fn start(config: Config, listener: TcpListener) -> Result<Server, ServerError> {
        Self::start_with(config, listener, Box::new(Log::open)).await
    }

    /// Like [`Server::start`], with the log on `storage` (a fault-injecting
    /// storage in tests); everything else lives in the data directory.
    #[cfg(any(test, feature = "testing"))]
    pub async fn start_on(
        storage: Arc<dyn crate::log::Storage>,
        config: Config,
        listener: TcpListener,
    ) -> Result<Server, ServerError> {
        let open_log: OpenLog = Box::new(move |dir, options| Log::open_with(storage, dir, options));
        Self::start_with(config, listener, open_log).await
    }

    async fn start_with(
        mut config: Config,
        listener: TcpListener,
        open_log: OpenLog,
    ) -> Result<Server, ServerError> {
        let data_dir = DataDir::new(&config.data_dir);
        data_dir.prepare()?;
        let dev_source = config.ensure_dev_source()?;
        config.validate()?;
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new());
        let opened = {
            let (config, metrics, data_dir) = (config.clone(), metrics.clone(), data_dir.clone());
            tokio::task::spawn_blocking(move || open(open_log, &config, &metrics, &data_dir))
                .await
                .map_err(|e| ServerError::Task(e.to_string()))??
        };
        let Opened { log, store, dedup } = opened;
        let split = config.memory_split();
        metrics.set_memory(&split);
        let window_bytes = split.window_bytes_each(config.destinations.len());
        let mut destinations = Vec::new();
        for d in &config.destinations {
            let sink = make_sink(d).map_err(|message| ServerError::Destination {
                name: d.name.clone(),
                message,
            })?;
            tracing::info!(destination = %d.name, kind = ?d.kind, "delivering to {}", d.name);
            let mut d = d.clone();
            if d.window_bytes.is_none() {
                d.window_bytes = Some(d.default_window_bytes(window_bytes));
            }
            destinations.push((d, sink));
        }
        if destinations.is_empty() {
            tracing::warn!("no destinations configured: events are stored but not delivered");
        }
        let delivery_runtime = delivery_runtime()?;
        let delivery = Delivery::start_on(
            delivery_runtime.handle(),
            log.clone(),
            store.clone(),
            destinations,
            metrics.clone(),
        )?;

        let addr = listener.local_addr().map_err(ServerError::Serve)?;
        let state = AppState::new(&config, log.clone(), metrics.clone(), dedup.clone());
        let mut app: Router = ingest::router(state);
        let server_file = config.admin_token.is_some();
        if let Some(token) = &config.admin_token {
            let admin = AdminState::new(
                token.clone(),
                delivery.destinations.clone(),
                store,
                log.clone(),
            );
            app = app.merge(admin::router(admin));
            let path = data_dir.server_file();
            let info = serde_json::json!({"admin_url": format!("http://{addr}")});
            std::fs::write(&path, info.to_string())
                .map_err(|source| ServerError::ServerFile { path, source })?;
        }
        let stop = CancellationToken::new();
        let background = TaskTracker::new();
        // Retention keeps what the dedup index would re-index after a crash.
        let floor = dedup
            .clone()
            .map(|d| -> RetentionFloor { Arc::new(move || d.checkpoint()) });
        let retention =
            Retention::new(log.clone(), delivery.board.clone(), delivery.names(), floor);
        background.spawn(retention.run(stop.clone()));
        if let Some(dedup) = dedup.clone() {
            // Reopens the dedup index after it stopped on a full disk.
            let stop = stop.clone();
            background.spawn(async move {
                tokio::select! {
                    _ = dedup.keep_open() => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
        background.close();

        let serving = {
            let stop = stop.clone();
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            })
        };
        tracing::info!(%addr, data_dir = %data_dir.root().display(), "serving");
        Ok(Server {
            addr,
            data_dir,
            log,
            metrics,
            dev_source,
            dedup,
            delivery,
            delivery_runtime,
            server_file,
            stop,
            background,
            serving,
        })
    }

    /// Where the HTTP API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The data directory.
    pub fn data_dir(&self) -> &DataDir {
        &self.data_dir
    }

    /// The write-ahead log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The metrics the server reports into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The development source, when the configuration has no source.
    pub fn dev_source(&self) -> Option<&DevSource> {
        self.dev_source.as_ref()
    }

    /// The dedup index, when dedup is on.
    pub fn dedup(&self) -> Option<&Arc<SupervisedDedup>> {
        self.dedup.as_ref()
    }

    /// One handle per destination, in configuration order.
    pub fn destinations(&self) -> &[Arc<DestinationHandle>] {
        &self.delivery.destinations
    }

    /// Stops taking connections, finishes the requests in progress (every
    /// append started gets its answer), then lets delivery finish what is in
    /// flight and commit its cursors.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.stop.cancel();
        let served = self
            .serving
            .await
            .map_err(|e| ServerError::Task(e.to_string()))
            .and_then(|r| r.map_err(ServerError::Serve));
        self.background.wait().await;
        self.delivery.shutdown().await;
        drop(self.delivery_runtime);
        if self.server_file {
            let _ = std::fs::remove_file(self.data_dir.server_file());
        }
        served
    }
}

/// Runs ferry as configured on `listener` until `shutdown` completes, then
/// shuts it down as [`Server::shutdown`] does.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let server = Server::start(config, listener).await?;
    shutdown.await;
    server.shutdown().await
}

/// The runtime delivery runs on: threads of its own (half the cores, at
/// least one), so that when ingestion alone could use every core, the
/// operating system still gives delivery its share and the backlog drains.
fn delivery_runtime() -> Result<DeliveryThreads, ServerError> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads((cores / 2).max(1))
        .thread_name("ferry-delivery")
        .enable_all()
        .build()
        .map(|r| DeliveryThreads(Some(r)))
        .map_err(|e| ServerError::Task(format!("cannot start the delivery threads: {e}")))
}

/// Delivery's runtime, shut down without blocking when dropped (it is
/// dropped inside the server's own runtime, where blocking is not allowed).
struct DeliveryThreads(Option<tokio::runtime::Runtime>);

impl DeliveryThreads {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("present until dropped").handle()
    }
}

impl Drop for DeliveryThreads {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Opens the log, the delivery state and the dedup index (blocking: the
/// dedup index re-indexes the log's tail before any request is taken).
fn open(
    open_log: OpenLog,
    config: &Config,
    metrics: &Arc<Metrics>,
    data_dir: &DataDir,
) -> Result<Opened, ServerError> {
    let path = data_dir.log();
    let log = open_log(&path, log_options(config, metrics))
        .map_err(|source| ServerError::Log { path, source })?;
    let cache = usize::try_from(config.memory_split().state_cache).unwrap_or(usize::MAX);
    let store = Arc::new(StateStore::open_with_cache(&data_dir.state(), cache)?);
    let dedup =
        open_dedup(config, &log, data_dir)?.map(|d| Arc::new(SupervisedDedup::new(d, log.clone())));
    Ok(Opened { log, store, dedup })
}

/// Opens the dedup index (when enabled) and re-indexes the log tail past
/// its checkpoint. On a full disk the server starts anyway, answering 503
/// until the index can be opened.
fn open_dedup(
    config: &Config,
    log: &Log,
    data_dir: &DataDir,
) -> Result<Option<StartDedup>, ServerError> {
    if !config.dedup.enabled {
        tracing::info!("dedup is disabled: every event is stored, duplicates included");
        return Ok(None);
    }
    let path = data_dir.dedup_index();
    let reopener = Reopener::new(&path, config.dedup_options(), Arc::new(SystemClock));
    match crate::dedup::open_and_reindex(&reopener, log) {
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
        Err(source) => Err(ServerError::Dedup { path, source }),
    }
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
