//! The index writer: one thread owns redb's single write transaction and
//! folds every commit queued meanwhile into it, so the index costs one redb
//! transaction per group of commits, never one per event.
//!
//! Durability: most transactions commit with `Durability::None` (no fsync).
//! That is safe because the WAL already holds every id durably and the
//! checkpoint is stored *in the same transaction* as the ids it covers: a
//! crash rolls redb back to its last durable transaction, whose checkpoint is
//! old enough that re-indexing the WAL tail from it restores everything lost.
//! A durable (`Immediate`) commit happens every `sync_interval`, on flush and
//! on close; it bounds the WAL tail to re-index and lets redb reuse pages.
//! Ids leave the pending sets only once the transaction holding them
//! committed ([`super::state::State::written`]).

use super::batch::{Batch, Buffers};
use super::bloom::Bloom;
use super::checkpoint::Progress;
use super::error::{AtPath, DedupError, Failure};
use super::index_file;
use super::options::DedupOptions;
use super::queue::Op;
use super::shared::Shared;
use redb::{Database, Durability};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most operations gathered into one batch while it lingers.
const MAX_OPS: usize = 4096;

/// How long the writer waits for work when nothing is left unsynced.
const IDLE: Duration = Duration::from_secs(3600);

/// The writer thread's state.
pub(crate) struct Writer {
    /// The index.
    db: Arc<Database>,
    /// Its path, for errors.
    path: PathBuf,
    /// State shared with the handles.
    shared: Arc<Shared>,
    /// Incoming work.
    rx: Receiver<Op>,
    /// Contiguous-offset tracking behind the checkpoint.
    progress: Progress,
    /// Longest time between durable commits while there is unsynced work.
    sync_interval: Duration,
    /// How long a batch gathers commits before it is written.
    linger: Duration,
    /// Largest run a merge may produce.
    max_run_ids: u64,
    /// Batch buffers reused from batch to batch.
    bufs: Buffers,
    /// Filters grown since the last write: (generation, bits), for its rows.
    grown: Vec<(u64, u64)>,
}

impl Writer {
    /// Starts the writer thread of the index at `path`, whose persisted
    /// checkpoint is `checkpoint`. A panic of the thread stops the index
    /// like a failed write.
    pub fn spawn(
        db: Arc<Database>,
        path: PathBuf,
        shared: Arc<Shared>,
        rx: Receiver<Op>,
        checkpoint: u64,
        opts: &DedupOptions,
    ) -> std::io::Result<JoinHandle<()>> {
        let writer = Writer {
            db,
            path,
            shared: shared.clone(),
            rx,
            progress: Progress::new(checkpoint),
            sync_interval: opts.sync_interval,
            linger: opts.write_interval,
            max_run_ids: opts.max_run_ids,
            bufs: Buffers::default(),
            grown: Vec::new(),
        };
        let on_panic = shared.clone();
        let handle = std::thread::Builder::new()
            .name("ferry-dedup-writer".into())
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| writer.run());
                if std::panic::catch_unwind(run).is_err() {
                    let _ = on_panic.failure.set(Failure {
                        reason: "the dedup writer panicked".into(),
                        no_space: false,
                    });
                    on_panic.drained.notify_waiters();
                }
            })?;
        let _ = shared.writer_thread.set(handle.thread().clone());
        Ok(handle)
    }

    /// The thread body: gather a batch, write it, answer, repeat until closed.
    fn run(mut self) {
        let mut last_durable = Instant::now();
        // Something was committed without an fsync since `last_durable`.
        let mut dirty = false;
        loop {
            let wait = if dirty {
                self.sync_interval.saturating_sub(last_durable.elapsed())
            } else {
                IDLE
            };
            let mut batch = self.gather(wait);
            // A simulated crash: what was taken is lost.
            #[cfg(any(test, feature = "testing"))]
            if self.shared.hooks.crashed() {
                return;
            }
            let close = batch.iter().any(|op| matches!(op, Op::Close));
            let flush = batch
                .iter()
                .any(|op| matches!(op, Op::Flush { durable: true, .. }));
            let due = dirty && last_durable.elapsed() >= self.sync_interval;
            let durable = close || flush || due;
            let result = match self.shared.failure.get() {
                Some(f) => Err(f.clone()),
                None if batch.is_empty() && !durable => Ok(()),
                None => self
                    .write(&mut batch, durable, close)
                    .and_then(|()| if close { Ok(()) } else { self.grow_filter() })
                    .map_err(|e| self.stop(&e)),
            };
            match result {
                Ok(()) if durable => {
                    last_durable = Instant::now();
                    dirty = false;
                    let checkpoint = self.progress.checkpoint();
                    let durable_checkpoint = &self.shared.durable_checkpoint;
                    durable_checkpoint.store(checkpoint, Ordering::Release);
                }
                Ok(()) => dirty = true,
                Err(_) => {}
            }
            for op in &batch {
                if let Op::Flush { reply, .. } = op {
                    let _ = reply.send(result.clone().map_err(|f| f.to_error()));
                }
            }
            if close {
                return;
            }
            #[cfg(any(test, feature = "testing"))]
            self.hold(&batch);
        }
    }

    /// The next batch: waits up to `wait` for a first op (empty if none
    /// came), gathers more for `linger`, then takes the rest of the queue
    /// and the inbox.
    fn gather(&mut self, wait: Duration) -> Vec<Op> {
        let mut batch = Vec::new();
        match self.rx.recv_timeout(wait) {
            Ok(op) => batch.push(op),
            Err(RecvTimeoutError::Timeout) => return batch,
            Err(RecvTimeoutError::Disconnected) => batch.push(Op::Close),
        }
        // Gather for `linger` unless something waits for the write: few
        // large transactions cost far less than many small. Ordinary ops do
        // not wake this thread (that would be a context switch per commit);
        // those that wait for the write unpark it.
        let deadline = Instant::now() + self.linger;
        while batch.len() < MAX_OPS && !batch.last().is_some_and(Op::urgent) {
            match self.rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(TryRecvError::Disconnected) => batch.push(Op::Close),
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    std::thread::park_timeout(deadline - now);
                }
            }
        }
        // Everything queued up to now, under the lock: the pending ids are
        // then exactly those of this batch.
        let spare = &mut self.bufs.inbox;
        self.shared.lock().take(&self.rx, &mut batch, spare);
        batch
    }

    /// Writes a batch in one write transaction, then forgets the ids it
    /// took from the pending set (they are in redb now).
    fn write(&mut self, batch: &mut [Op], durable: bool, close: bool) -> Result<(), DedupError> {
        let path = self.path.as_path();
        let mut tx = self.db.begin_write().at(path)?;
        tx.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        });
        // Saves redb's allocator state so recovery after a crash is quick
        // instead of a walk over the whole file.
        tx.set_quick_repair(durable);
        let shared = &*self.shared;
        let mut b = Batch::open(&tx, path, shared, self.max_run_ids, &mut self.bufs)?;
        for (id, num_bits) in self.grown.drain(..) {
            b.resized(id, num_bits)?;
        }
        for op in batch {
            match op {
                Op::Change(change) => b.change(change)?,
                Op::Insert(inbox) => {
                    for r in inbox.offsets.drain(..) {
                        self.progress.complete(r);
                    }
                    b.stage(inbox);
                }
                Op::Skip(r) => self.progress.complete(r.clone()),
                _ => {}
            }
        }
        b.insert_runs()?;
        if close {
            b.persist_filters()?;
        }
        let duplicates = shared.duplicates.load(Ordering::Relaxed);
        b.finish(self.progress.checkpoint(), duplicates)?;
        tx.commit().at(path)?;
        let keep = shared.lock().written(shared.max_pending);
        self.bufs.trim(keep);
        shared.drained.notify_waiters();
        Ok(())
    }

    /// Rebuilds the active generation's filter larger once it holds the ids
    /// it was sized for: every id the index has for it (all but the pending
    /// ones, just after a write), then the pending ones under the lock, where
    /// it replaces the old filter. Requests go on meanwhile; the full filter
    /// only answers "maybe" more often.
    fn grow_filter(&mut self) -> Result<(), DedupError> {
        let Some((id, bytes)) = self.shared.lock().gens.growth_due() else {
            return Ok(());
        };
        let started = Instant::now();
        let mut bloom = Bloom::with_bytes(bytes);
        let tx = self.db.begin_read().at(&self.path)?;
        index_file::add_ids(&tx, &self.path, id, &mut bloom)?;
        drop(tx);
        if let Some(num_bits) = self.shared.lock().grow(id, bloom) {
            self.grown.push((id, num_bits));
            tracing::debug!(
                generation = id,
                bytes = num_bits / 8,
                micros = started.elapsed().as_micros() as u64,
                "dedup: grew the active generation's filter"
            );
        }
        Ok(())
    }

    /// Stops the index after a failed write: from now on requests get the
    /// failure (the first one, if there was one already), which is returned.
    fn stop(&self, e: &DedupError) -> Failure {
        let mut first = false;
        let failure = self.shared.failure.get_or_init(|| {
            first = true;
            Failure::of(e)
        });
        if first {
            tracing::error!(error = %e, "dedup index write failed; dedup stops until it is reopened");
        }
        self.shared.drained.notify_waiters();
        failure.clone()
    }

    /// Tests: acknowledges the batch's holds, then waits while held.
    #[cfg(any(test, feature = "testing"))]
    fn hold(&self, batch: &[Op]) {
        let mut held = false;
        for op in batch {
            if let Op::Hold(ack) = op {
                let _ = ack.send(());
                held = true;
            }
        }
        if held {
            self.shared.hooks.wait_while_held();
        }
    }
}
