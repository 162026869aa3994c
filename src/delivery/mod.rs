//! Delivery: route every logged event to every destination, in per-user
//! order, with retries, dead letters and cursor-bounded retention.
//!
//! Each destination gets its own task, its own ordering window and its own
//! connection pool, so a dead or slow destination cannot hold up another.

pub mod backoff;
pub mod config;
pub mod dispatcher;
pub mod event;
pub mod file;
mod replay;
pub mod sink;
pub mod webhook;
mod worker;

pub use worker::{DeliveryError, Worker, COMMIT_EVERY};

use crate::log::Log;
use crate::store::StateStore;
use config::{DestinationConfig, DestinationType};
use sink::Sink;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often retention looks at the cursors.
pub const RETENTION_EVERY: Duration = Duration::from_secs(5);

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
    /// The lowest committed cursor over `dests`, if every one has committed.
    pub fn min_over(&self, dests: &[String]) -> Option<u64> {
        let map = self.lock();
        dests
            .iter()
            .map(|d| map.get(d).copied())
            .collect::<Option<Vec<u64>>>()?
            .into_iter()
            .min()
    }
}

/// Builds the sink of a destination.
pub fn make_sink(cfg: &DestinationConfig) -> Result<Arc<dyn Sink>, String> {
    Ok(match cfg.kind {
        DestinationType::Webhook => Arc::new(webhook::Webhook::new(cfg)?),
        DestinationType::File => Arc::new(file::FileSink::new(cfg)),
    })
}

/// Running delivery: one loop (and one replay lane) per destination, plus
/// retention.
pub struct Delivery {
    /// Committed cursors.
    pub board: Arc<CursorBoard>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl Delivery {
    /// Starts delivery of `log` to `dests` with the given sinks (one per
    /// destination, same order). Cursors of destinations no longer
    /// configured stop holding segments back (logged once here).
    pub fn start(
        log: Log,
        store: Arc<StateStore>,
        dests: Vec<(DestinationConfig, Arc<dyn Sink>)>,
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
        for (cfg, sink) in dests {
            let worker = Arc::new(Worker {
                cfg: Arc::new(cfg),
                log: log.clone(),
                store: store.clone(),
                sink,
                board: board.clone(),
                cancel: cancel.clone(),
            });
            tasks.spawn(worker.clone().run_replays());
            let w = Worker::clone_of(&worker);
            tasks.spawn(async move {
                let name = w.cfg.name.clone();
                if let Err(e) = w.run().await {
                    tracing::error!(destination = %name, "delivery stopped: {e}");
                }
            });
        }
        if !names.is_empty() {
            tasks.spawn(retention(log, board.clone(), names, cancel.clone()));
        }
        tasks.close();
        Ok(Delivery {
            board,
            tasks,
            cancel,
        })
    }

    /// Stops taking new work, lets in-flight requests finish, commits cursors.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.wait().await;
    }
}

impl Worker {
    fn clone_of(w: &Arc<Worker>) -> Worker {
        Worker {
            cfg: w.cfg.clone(),
            log: w.log.clone(),
            store: w.store.clone(),
            sink: w.sink.clone(),
            board: w.board.clone(),
            cancel: w.cancel.clone(),
        }
    }
}

/// Deletes log segments every destination's committed cursor has passed.
async fn retention(
    log: Log,
    board: Arc<CursorBoard>,
    names: Vec<String>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(RETENTION_EVERY);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (log, board, names) = (log.clone(), board.clone(), names.clone());
        match tokio::task::spawn_blocking(move || apply_retention(&log, &board, &names)).await {
            Ok(Err(e)) => tracing::error!("retention failed: {e}"),
            Err(e) => tracing::error!("retention task failed: {e}"),
            Ok(Ok(_)) => {}
        }
    }
}

/// One retention pass: deletes whole segments below the lowest committed
/// cursor of `names`; nothing until every destination has committed one.
/// Blocking. Returns how many segments were deleted.
pub fn apply_retention(
    log: &Log,
    board: &CursorBoard,
    names: &[String],
) -> Result<usize, crate::log::LogError> {
    let Some(min) = board.min_over(names) else {
        return Ok(0);
    };
    let n = log.delete_segments_below(min)?;
    if n > 0 {
        tracing::info!(
            segments = n,
            below = min,
            "retention deleted {n} segment(s) below offset {min}"
        );
    }
    Ok(n)
}
