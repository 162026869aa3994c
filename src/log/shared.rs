//! What the writer thread, readers and handles of one log share: the
//! segment map, the durable end they wait on, the first storage failure and
//! the running figures behind [`LogStats`].

use super::storage::Storage;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::watch;

/// Figures about a log at one moment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogStats {
    /// First offset still held.
    pub start_offset: u64,
    /// Durable end: the next offset to be written.
    pub durable_end: u64,
    /// Segment files.
    pub segments: u64,
    /// Bytes of all segment files.
    pub bytes: u64,
    /// Commit groups written (one fdatasync each) since open.
    pub fsyncs: u64,
    /// Records written by those groups.
    pub records_synced: u64,
    /// Appends (atomic record groups) written by those groups.
    pub appends_synced: u64,
}

/// State shared by the writer thread, readers and handles.
pub(crate) struct Shared {
    /// The log directory.
    pub dir: PathBuf,
    /// Where the bytes go.
    pub storage: Arc<dyn Storage>,
    /// Every segment by base offset; the last is the active one.
    segments: Mutex<BTreeMap<u64, PathBuf>>,
    /// The durable end, published after each fdatasync.
    pub durable: watch::Sender<u64>,
    /// Set once, by the first storage failure.
    pub failure: OnceLock<String>,
    /// Bytes of all segment files.
    pub total_bytes: AtomicU64,
    fsyncs: AtomicU64,
    records_synced: AtomicU64,
    appends_synced: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        segments: BTreeMap<u64, PathBuf>,
        end: u64,
        bytes: u64,
    ) -> Self {
        Shared {
            dir,
            storage,
            segments: Mutex::new(segments),
            durable: watch::Sender::new(end),
            failure: OnceLock::new(),
            total_bytes: AtomicU64::new(bytes),
            fsyncs: AtomicU64::new(0),
            records_synced: AtomicU64::new(0),
            appends_synced: AtomicU64::new(0),
        }
    }

    pub(crate) fn segments_lock(&self) -> MutexGuard<'_, BTreeMap<u64, PathBuf>> {
        self.segments.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn durable_end(&self) -> u64 {
        *self.durable.borrow()
    }

    pub(crate) fn start_offset(&self) -> u64 {
        self.segments_lock()
            .keys()
            .next()
            .copied()
            .unwrap_or_else(|| self.durable_end())
    }

    pub(crate) fn active_path(&self) -> PathBuf {
        self.segments_lock()
            .values()
            .next_back()
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn note_group(&self, appends: u64, records: u64) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.appends_synced.fetch_add(appends, Ordering::Relaxed);
        self.records_synced.fetch_add(records, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> LogStats {
        let segments = self.segments_lock();
        LogStats {
            start_offset: segments.keys().next().copied().unwrap_or(0),
            durable_end: self.durable_end(),
            segments: segments.len() as u64,
            bytes: self.total_bytes.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            records_synced: self.records_synced.load(Ordering::Relaxed),
            appends_synced: self.appends_synced.load(Ordering::Relaxed),
        }
    }
}
