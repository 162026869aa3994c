//! The segmented write-ahead log: ferry's single source of truth.
//!
//! [`Log`] is the writing handle (recovery on open, group-committed appends,
//! retention); [`LogReader`] iterates durable records; [`LogView`] is the
//! read-only view `ferry log` uses, safe beside a running server. The log
//! knows nothing of HTTP, events or destinations: records are bytes.

#[cfg(any(test, feature = "testing"))]
pub mod crash_storage;
mod error;
mod inspect;
mod reader;
pub mod record;
mod recovery;
mod scan;
pub mod segment;
mod segment_reader;
mod shared;
mod storage;
mod writer;

pub use error::{LogError, Result};
pub use inspect::{LogView, SegmentReport, VerifyProblem};
pub use reader::{LogReader, Record};
pub use recovery::{RecoveryMode, QUARANTINE_DIR};
pub use scan::{Problem, ProblemKind, SegmentScan};
pub use shared::LogStats;
// The storage seam is public only for tests, which open logs on `CrashStorage`.
#[cfg(any(test, feature = "testing"))]
pub use storage::{FsStorage, LockGuard, Storage, StorageFile};

use shared::Shared;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use writer::{AppendRequest, Writer, WriterLimits};

/// File in the log directory whose lock marks the log's one writer.
pub const LOCK_FILE: &str = ".lock";

/// Settings of a log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Roll to a new segment once the active one would exceed this many
    /// bytes. Default: 128 MiB.
    pub segment_bytes: u64,
    /// Disk budget: appends that would grow the log past this many bytes are
    /// refused with [`LogError::Full`]. Default: none.
    pub max_log_bytes: Option<u64>,
    /// Appends that would leave less free space on the disk than this are
    /// refused with [`LogError::Full`]. Default: 64 MiB.
    pub min_free_bytes: u64,
    /// What opening does on corruption. Default: [`RecoveryMode::Strict`].
    pub recovery: RecoveryMode,
    /// Appends that may wait for the writer before appenders wait to queue.
    /// Default: 4096.
    pub queue_depth: usize,
    /// A commit group stops taking queued appends past this many bytes.
    /// Default: 16 MiB.
    pub max_group_bytes: u64,
    /// Segments younger than this (since their last write) are kept by
    /// retention. Default: zero.
    pub min_retention: std::time::Duration,
    /// Called by the writer thread after each commit group with the
    /// fdatasync's duration and the records it covered (metrics). Default: none.
    pub on_commit: Option<CommitObserver>,
    /// Longest wait of a commit group for appenders that the previous
    /// fdatasync just answered (only when several are active). Default: 200 µs.
    pub group_linger: std::time::Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: 128 << 20,
            max_log_bytes: None,
            min_free_bytes: 64 << 20,
            recovery: RecoveryMode::Strict,
            queue_depth: 4096,
            max_group_bytes: 16 << 20,
            group_linger: std::time::Duration::from_micros(200),
            min_retention: std::time::Duration::ZERO,
            on_commit: None,
        }
    }
}

/// A callback for each commit group: (fdatasync duration, records covered).
#[derive(Clone)]
pub struct CommitObserver(pub Arc<dyn Fn(std::time::Duration, u64) + Send + Sync>);

impl std::fmt::Debug for CommitObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitObserver")
    }
}

/// The writing handle of a log. Cheap to clone; the writer thread stops when
/// the last clone is dropped.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// Segments younger than this are kept by retention.
    min_retention: std::time::Duration,
    /// Queue to the writer thread; `None` once shutting down.
    tx: Option<mpsc::Sender<AppendRequest>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The directory lock; released after the writer thread stopped.
    _lock: storage::LockGuard,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Log {
    /// Opens (creating if needed) the log in `dir` on the real file system.
    pub fn open(dir: &Path, options: LogOptions) -> Result<Log> {
        Self::open_on(Arc::new(storage::FsStorage), dir, options)
    }

    /// [`Log::open`] on the given storage (a crash-simulating one in tests).
    #[cfg(any(test, feature = "testing"))]
    pub fn open_with(
        storage: Arc<dyn storage::Storage>,
        dir: &Path,
        options: LogOptions,
    ) -> Result<Log> {
        Self::open_on(storage, dir, options)
    }

    /// Opens the log in `dir` on `storage`, recovering its tail.
    /// Only one handle may write a log directory at a time: opening takes an
    /// exclusive lock on `<dir>/.lock` before recovery touches anything.
    fn open_on(storage: Arc<dyn storage::Storage>, dir: &Path, options: LogOptions) -> Result<Log> {
        storage
            .create_dir_all(dir)
            .map_err(|e| LogError::io(dir, e))?;
        let lock = match storage.try_lock(&dir.join(LOCK_FILE)) {
            Ok(guard) => guard,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(LogError::Locked {
                    path: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(LogError::io(dir.join(LOCK_FILE), e)),
        };
        let rec = recovery::recover(&*storage, dir, options.recovery)?;
        let shared = Arc::new(Shared::new(
            storage,
            dir.to_path_buf(),
            rec.segments,
            rec.next_offset,
            rec.total_bytes,
        ));
        let limits = WriterLimits {
            segment_bytes: options.segment_bytes.max(segment::SEGMENT_HEADER_LEN + 1),
            max_log_bytes: options.max_log_bytes,
            min_free_bytes: options.min_free_bytes,
            max_group_bytes: options.max_group_bytes.max(1),
            linger: options.group_linger,
            on_commit: options.on_commit.clone(),
        };
        let writer = Writer::new(
            shared.clone(),
            limits,
            rec.active,
            rec.write_pos,
            rec.next_offset,
        );
        let (tx, rx) = mpsc::channel(options.queue_depth.max(1));
        let thread = std::thread::Builder::new()
            .name("ferry-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| LogError::io(dir, e))?;
        tracing::info!(dir = %dir.display(), next_offset = rec.next_offset, "log opened");
        Ok(Log {
            inner: Arc::new(Inner {
                shared,
                min_retention: options.min_retention,
                tx: Some(tx),
                thread: Some(thread),
                _lock: lock,
            }),
        })
    }

    /// Appends `records` atomically and in order; completes once they are
    /// covered by a completed fdatasync. Returns their offsets.
    pub async fn append(&self, records: Vec<Vec<u8>>) -> Result<Range<u64>> {
        let reply = self.submit(records).await?;
        reply.await.map_err(|_| LogError::Closed)?
    }

    /// Queues an append without waiting for it (the receiver yields the
    /// outcome). Lets one task pipeline many appends.
    pub async fn submit(
        &self,
        records: Vec<Vec<u8>>,
    ) -> Result<oneshot::Receiver<Result<Range<u64>>>> {
        let (reply, rx) = oneshot::channel();
        if records.is_empty() {
            let end = self.durable_end();
            let _ = reply.send(Ok(end..end));
            return Ok(rx);
        }
        if records.len() > u32::MAX as usize / 2 {
            return Err(LogError::RecordTooLarge {
                size: records.len(),
                max: u32::MAX as usize / 2,
            });
        }
        let mut encoded_len = 0u64;
        for r in &records {
            if r.len() > record::MAX_RECORD_LEN {
                return Err(LogError::RecordTooLarge {
                    size: r.len(),
                    max: record::MAX_RECORD_LEN,
                });
            }
            encoded_len += (record::RECORD_HEADER_LEN + r.len()) as u64;
        }
        if let Some(reason) = self.failure() {
            return Err(LogError::Failed(reason));
        }
        let tx = self.inner.tx.as_ref().ok_or(LogError::Closed)?;
        let req = AppendRequest {
            records,
            encoded_len,
            reply,
        };
        tx.send(req).await.map_err(|_| LogError::Closed)?;
        Ok(rx)
    }

    /// The next offset to be written; everything below it is durable.
    pub fn durable_end(&self) -> u64 {
        self.inner.shared.durable_end()
    }

    /// The first offset still held (older segments were deleted).
    pub fn start_offset(&self) -> u64 {
        self.inner.shared.start_offset()
    }

    /// Watches the durable end (for readers that wait for new records).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.shared.durable.subscribe()
    }

    /// `Some(reason)` once a storage failure made the log refuse appends.
    pub fn failure(&self) -> Option<String> {
        self.inner.shared.failure.get().cloned()
    }

    /// A reader positioned at `from` that sees only durable records.
    pub fn reader(&self, from: u64) -> Result<LogReader> {
        LogReader::new(self.inner.shared.clone(), from)
    }

    /// Figures about the log now.
    pub fn stats(&self) -> LogStats {
        self.inner.shared.stats()
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// Deletes every whole segment whose records all lie below `offset`,
    /// never the active segment, and none written to within the
    /// `min_retention` window. Returns how many segments were deleted.
    /// Blocking (file removal and a directory fsync).
    pub fn delete_segments_below(&self, offset: u64) -> Result<usize> {
        let shared = &self.inner.shared;
        let offset = offset.min(shared.durable_end());
        let now = shared.storage.now();
        let keep_for = self.inner.min_retention;
        let old_enough = |path: &PathBuf| {
            keep_for.is_zero()
                || shared
                    .storage
                    .modified(path)
                    .is_ok_and(|m| now.duration_since(m).unwrap_or_default() >= keep_for)
        };
        let victims: Vec<(u64, PathBuf)> = {
            let mut segments = shared.segments_lock();
            let bases: Vec<u64> = segments.keys().copied().collect();
            let doomed: Vec<u64> = bases
                .windows(2)
                .take_while(|w| w[1] <= offset && old_enough(&segments[&w[0]]))
                .map(|w| w[0])
                .collect();
            doomed
                .iter()
                .map(|b| (*b, segments.remove(b).expect("listed")))
                .collect()
        };
        if victims.is_empty() {
            return Ok(0);
        }
        // Oldest first, each removal made durable before the next: removals
        // not yet fsynced may each survive a crash or not, so deleting
        // several under one directory fsync could bring back an old segment
        // without the ones after it — a gap in the log. This way a crash
        // leaves a suffix of the segments.
        for (_, path) in &victims {
            let len = shared
                .storage
                .open_read(path)
                .and_then(|f| f.size())
                .unwrap_or(0);
            shared
                .storage
                .remove(path)
                .map_err(|e| LogError::io(path, e))?;
            shared.total_bytes.fetch_sub(len, Ordering::Relaxed);
            if let Err(e) = shared.storage.sync_dir(&shared.dir) {
                let reason = format!("fsync of directory {} failed: {e}", shared.dir.display());
                tracing::error!("{reason}; the log refuses appends until ferry restarts");
                let _ = shared.failure.set(reason.clone());
                return Err(LogError::Failed(reason));
            }
            tracing::info!(segment = %path.display(), "retention deleted segment");
        }
        Ok(victims.len())
    }
}
