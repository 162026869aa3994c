//! Delivery: route every logged event to every destination, in per-user
//! order, with retries, dead letters and cursor-bounded retention.
//!
//! Each destination gets its own task, its own ordering window and its own
//! connection pool, so a dead or slow destination cannot hold up another.

pub mod backlog;
pub mod backoff;
pub mod broker;
mod broker_keys;
pub mod config;
mod cursor_reset;
mod destination;
pub mod event;
pub mod file;
mod http_client;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod nats;
pub mod order_window;
pub mod rate_limit;
mod replay;
pub mod segment;
mod settle;
pub mod sink;
pub mod status;
pub mod webhook;

pub use cursor_reset::resolve_target;
pub use destination::{DeliveryError, DestinationLoop, COMMIT_EVERY};

use crate::log::Log;
use crate::metrics::Metrics;
use crate::store::StateStore;
use config::{DestinationConfig, DestinationType};
use sink::Sink;
use status::DestinationHandle;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The committed cursor of every running destination (retention reads it).
#[derive(Default)]
pub struct CursorBoard {
    cursors: Mutex<HashMap<String, u64>>,
}

impl CursorBoard {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.cursors.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Records a destination's durably committed cursor.
    pub fn set(&self, dest: &str, cursor: u64) {
        self.lock().insert(dest.to_string(), cursor);
    }
    /// The committed cursor of `dest`.
    pub fn get(&self, dest: &str) -> Option<u64> {
        self.lock().get(dest).copied()
    }
    /// The lowest committed cursor over `dests`, if every one has
    /// committed (`u64::MAX` for no destination).
    pub fn min_over(&self, dests: &[String]) -> Option<u64> {
        let map = self.lock();
        dests
            .iter()
            .map(|d| map.get(d).copied())
            .try_fold(u64::MAX, |min, c| Some(min.min(c?)))
    }
}

/// Builds the sink of a destination.
pub fn make_sink(cfg: &DestinationConfig) -> Result<Arc<dyn Sink>, String> {
    Ok(match cfg.kind {
        DestinationType::Webhook => Arc::new(webhook::Webhook::new(cfg)?),
        DestinationType::File => Arc::new(file::FileSink::new(cfg)),
        DestinationType::Segment => Arc::new(segment::Segment::new(cfg)?),
        DestinationType::Nats => Arc::new(nats::Nats::new(cfg)?),
        #[cfg(feature = "kafka")]
        DestinationType::Kafka => Arc::new(kafka::Kafka::new(cfg)?),
        #[cfg(not(feature = "kafka"))]
        DestinationType::Kafka => return Err(broker_keys::NO_KAFKA.to_owned()),
    })
}

/// Running delivery: one loop (and one replay lane) per destination.
pub struct Delivery {
    /// Committed cursors.
    pub board: Arc<CursorBoard>,
    /// One handle per destination, in configuration order.
    pub destinations: Vec<Arc<DestinationHandle>>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl Delivery {
    /// Starts delivery with metrics of its own (tests, benchmarks).
    pub fn start(
        log: Log,
        store: Arc<StateStore>,
        dests: Vec<(DestinationConfig, Arc<dyn Sink>)>,
    ) -> Result<Delivery, crate::store::StoreError> {
        Self::start_with(log, store, dests, Arc::new(Metrics::new()))
    }

    /// Starts delivery of `log` to `dests` with the given sinks (one per
    /// destination, same order), reporting into `metrics`. Cursors of
    /// destinations no longer configured stop holding segments back (logged
    /// once here).
    pub fn start_with(
        log: Log,
        store: Arc<StateStore>,
        dests: Vec<(DestinationConfig, Arc<dyn Sink>)>,
        metrics: Arc<Metrics>,
    ) -> Result<Delivery, crate::store::StoreError> {
        let runtime = tokio::runtime::Handle::current();
        Self::start_on(&runtime, log, store, dests, metrics)
    }

    /// Like [`Delivery::start_with`], with the destinations' loops running
    /// on `runtime` (the server gives delivery threads of its own, so a
    /// busy ingest API cannot starve it).
    pub fn start_on(
        runtime: &tokio::runtime::Handle,
        log: Log,
        store: Arc<StateStore>,
        dests: Vec<(DestinationConfig, Arc<dyn Sink>)>,
        metrics: Arc<Metrics>,
    ) -> Result<Delivery, crate::store::StoreError> {
        let board = Arc::new(CursorBoard::default());
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let names: Vec<String> = dests.iter().map(|(c, _)| c.name.clone()).collect();
        for (old, cursor) in store.cursors()? {
            if !names.contains(&old) {
                tracing::warn!(destination = %old, cursor, "destination {old} is no longer configured: its cursor ({cursor}) no longer holds log segments back; `ferry cursors` still lists it");
            }
        }
        let mut handles = Vec::new();
        for (cfg, sink) in dests {
            let (handle, control) = DestinationHandle::new(&cfg.name, cfg.kind.as_str());
            let handle = Arc::new(handle);
            handles.push(handle.clone());
            let worker = Arc::new(DestinationLoop {
                labels: Metrics::dest(&cfg.name),
                cfg: Arc::new(cfg),
                log: log.clone(),
                store: store.clone(),
                sink,
                board: board.clone(),
                cancel: cancel.clone(),
                metrics: metrics.clone(),
                handle,
            });
            tasks.spawn_on(worker.clone().run_replays(), runtime);
            tasks.spawn_on(async move {
                if let Err(e) = worker.run(control).await {
                    tracing::error!(destination = %worker.cfg.name, "delivery stopped: {}", crate::error_text::with_causes(&e));
                }
            }, runtime);
        }
        tasks.close();
        Ok(Delivery {
            board,
            destinations: handles,
            tasks,
            cancel,
        })
    }

    /// The names of the destinations, in configuration order.
    pub fn names(&self) -> Vec<String> {
        self.destinations.iter().map(|h| h.name.clone()).collect()
    }

    /// The handle of a destination by name.
    pub fn destination(&self, name: &str) -> Option<&Arc<DestinationHandle>> {
        self.destinations.iter().find(|h| h.name == name)
    }

    /// Stops taking new work, lets in-flight requests finish, commits cursors.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.wait().await;
    }
}
