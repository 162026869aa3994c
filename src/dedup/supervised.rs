//! The dedup index requests are checked against, supervised: reopened in place after it
//! stopped on a full disk: once every handle of the stopped index is gone,
//! it is opened again and re-indexed from the log (what a restart does), so
//! ingestion resumes by itself when space is freed, as it does after the log
//! itself was full. Meanwhile requests get 503 `storage_full` with
//! `Retry-After`. A server that starts on a full disk starts the same way:
//! serving, with the index to be opened. Any other index failure still
//! needs a restart.

use super::reindex::{open_and_reindex, ReindexError};
use super::{Dedup, DedupError, DedupStats, Reopener};
use crate::log::Log;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

/// First wait between attempts to reopen a full index; doubled after each
/// attempt that finds the disk still full, up to [`MAX_RETRY`].
const MIN_RETRY: Duration = Duration::from_millis(250);
/// Longest wait between attempts to reopen.
const MAX_RETRY: Duration = Duration::from_secs(10);
/// How often the handles of a stopped index are counted while requests
/// that hold them finish.
const HANDLE_POLL: Duration = Duration::from_millis(10);

/// The index, or why there is none open.
enum Slot {
    /// Open (it may have stopped since: see [`Dedup::failure`]).
    Open(Dedup),
    /// Stopped on a full disk; being closed and opened again.
    Reopening(String),
    /// Opening it again failed for another reason than space: a restart
    /// (and maybe an operator) is needed.
    Failed(String),
}

/// The dedup index a server starts with.
pub enum StartDedup {
    /// Opened and re-indexed.
    Open(Dedup),
    /// Opening or re-indexing found the disk full: the server starts
    /// anyway, answers 503 `storage_full`, and opens the index once space is
    /// freed (see [`SupervisedDedup::keep_open`]).
    Full {
        /// What opens it.
        reopener: Reopener,
        /// Why it could not be opened.
        reason: String,
    },
}

/// What `/health` says about the index.
pub enum DedupHealth {
    /// Taking requests.
    Ok,
    /// Stopped on a full disk; it reopens once space is freed.
    Full(String),
    /// Stopped for good until a restart.
    Failed(String),
}

/// The server's dedup index, supervised.
pub struct SupervisedDedup {
    slot: RwLock<Slot>,
    /// The checkpoint of the last open index: the retention floor while none is open.
    checkpoint: AtomicU64,
    /// Opens the index again.
    reopener: Reopener,
    /// Where re-indexing reads from.
    log: Log,
}

impl SupervisedDedup {
    /// A slot holding the index the server starts with, which re-indexes
    /// from `log` when (re)opened. An index that could not be opened keeps
    /// the whole log (retention floor 0) until it is.
    pub fn new(start: StartDedup, log: Log) -> SupervisedDedup {
        let (checkpoint, reopener, slot) = match start {
            StartDedup::Open(dedup) => (dedup.checkpoint(), dedup.reopener(), Slot::Open(dedup)),
            StartDedup::Full { reopener, reason } => (0, reopener, Slot::Reopening(reason)),
        };
        SupervisedDedup {
            checkpoint: AtomicU64::new(checkpoint),
            reopener,
            slot: RwLock::new(slot),
            log,
        }
    }

    /// The open index for one request, or the error to answer with.
    pub fn current(&self) -> Result<Dedup, DedupError> {
        match &*self.slot.read().unwrap_or_else(PoisonError::into_inner) {
            Slot::Open(d) => Ok(d.clone()),
            Slot::Reopening(reason) => Err(DedupError::NoSpace(reason.clone())),
            Slot::Failed(reason) => Err(DedupError::Failed(reason.clone())),
        }
    }

    /// The WAL offset the log must keep records from, for re-indexing.
    pub fn checkpoint(&self) -> u64 {
        match self.current() {
            Ok(d) => d.checkpoint(),
            Err(_) => self.checkpoint.load(Ordering::Acquire),
        }
    }

    /// The open index's figures, if one is open.
    pub fn stats(&self) -> Option<DedupStats> {
        self.current().ok().map(|d| d.stats())
    }

    /// Whether the index takes requests, and why not.
    pub fn health(&self) -> DedupHealth {
        match self.current() {
            Ok(d) => match d.failure() {
                None => DedupHealth::Ok,
                Some(f) if f.no_space => DedupHealth::Full(f.reason),
                Some(f) => DedupHealth::Failed(f.reason),
            },
            Err(DedupError::NoSpace(reason)) => DedupHealth::Full(reason),
            Err(e) => DedupHealth::Failed(e.to_string()),
        }
    }

    fn set(&self, slot: Slot) {
        *self.slot.write().unwrap_or_else(PoisonError::into_inner) = slot;
    }

    /// Watches the open index and reopens it whenever it stopped on a full
    /// disk (or opens it, when the server started without it). Returns only
    /// when it stopped for another reason (a restart is needed then); the
    /// server spawns it and drops it at shutdown.
    pub async fn keep_open(&self) {
        let mut retry = MIN_RETRY;
        let mut last_open = Instant::now();
        loop {
            let dedup = match self.current() {
                Ok(dedup) => dedup,
                Err(DedupError::NoSpace(_)) => {
                    if !self.open_when_space(&mut retry, &mut last_open).await {
                        return;
                    }
                    continue;
                }
                Err(_) => return,
            };
            let failure = dedup.stopped().await;
            if !failure.no_space {
                return;
            }
            // A stop soon after the last reopen: the disk is still (or
            // again) full, so wait longer before the next attempt.
            retry = if last_open.elapsed() < MAX_RETRY * 2 {
                (retry * 2).min(MAX_RETRY)
            } else {
                MIN_RETRY
            };
            tracing::warn!(
                reason = %failure.reason,
                "dedup index stopped: the disk is full; requests get 503 until it is reopened"
            );
            self.checkpoint.store(dedup.checkpoint(), Ordering::Release);
            self.set(Slot::Reopening(failure.reason.clone()));
            // Requests that took a handle before the switch finish (a stopped
            // index refuses them quickly; an append in flight completes):
            // the file closes with the last handle, and the re-index below
            // then sees every append those requests made.
            while dedup.handles() > 1 {
                tokio::time::sleep(HANDLE_POLL).await;
            }
            let closing = tokio::task::spawn_blocking(move || drop(dedup));
            let _ = closing.await;
        }
    }

    /// Tries to open the index, waiting `retry` (doubled while the disk
    /// stays full) before each attempt. False when opening failed for
    /// another reason than space (the slot is then failed for good).
    async fn open_when_space(&self, retry: &mut Duration, last_open: &mut Instant) -> bool {
        loop {
            tokio::time::sleep(*retry).await;
            match self.reopen().await {
                Ok(dedup) => {
                    tracing::info!("dedup index opened and re-indexed from the log");
                    *last_open = Instant::now();
                    self.set(Slot::Open(dedup));
                    return true;
                }
                Err(e) if e.is_no_space() => {
                    tracing::warn!(error = %e, "dedup index: the disk is still full");
                    *retry = (*retry * 2).min(MAX_RETRY);
                }
                Err(e) => {
                    tracing::error!(error = %e, "dedup index cannot be opened; restart ferry");
                    self.set(Slot::Failed(e.to_string()));
                    return false;
                }
            }
        }
    }

    /// [`open_and_reindex`] off the async threads.
    async fn reopen(&self) -> Result<Dedup, ReindexError> {
        let reopener = self.reopener.clone();
        let log = self.log.clone();
        let opened = tokio::task::spawn_blocking(move || open_and_reindex(&reopener, &log)).await;
        opened.unwrap_or_else(|e| {
            Err(ReindexError::Dedup(DedupError::Failed(format!(
                "reopening the dedup index panicked: {e}"
            ))))
        })
    }
}
