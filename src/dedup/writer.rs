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

use super::bloom::BITS_PER_ID;
use super::checkpoint::Progress;
use super::error::{DedupError, Failure};
use super::generations::Change;
use super::index_file::{self, GenRow};
use super::key::Key;
use super::queue::{Inbox, Op};
use super::runs::{self, Entry, RUNS};
use super::shared::Shared;
use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most operations folded into one transaction.
const MAX_OPS: usize = 4096;

/// The writer thread's state.
pub(crate) struct Writer {
    /// The index.
    pub db: Arc<Database>,
    /// Its path, for errors.
    pub path: PathBuf,
    /// State shared with the handles.
    pub shared: Arc<Shared>,
    /// Incoming work.
    pub rx: Receiver<Op>,
    /// Contiguous-offset tracking behind the checkpoint.
    pub progress: Progress,
    /// Longest time between durable commits while there is unsynced work.
    pub sync_interval: Duration,
    /// How long a batch gathers commits before it is written.
    pub linger: Duration,
    /// Largest run a merge may produce.
    pub max_run_ids: u64,
    /// Run buffers reused from batch to batch.
    pub bufs: RunBuffers,
}

impl Writer {
    /// The thread body: batch, write, repeat until closed.
    pub fn run(mut self) {
        let mut last_durable = Instant::now();
        let mut dirty = false;
        loop {
            let wait = if dirty {
                self.sync_interval.saturating_sub(last_durable.elapsed())
            } else {
                Duration::from_secs(3600)
            };
            let mut batch = Vec::new();
            match self.rx.recv_timeout(wait) {
                Ok(op) => batch.push(op),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => batch.push(Op::Close),
            }
            // Gather for `linger` unless something waits for the write: few
            // large transactions cost far less than many small. Ordinary
            // ops do not wake this thread (that would be a context switch
            // per commit); those that wait for the write unpark it.
            let deadline = Instant::now() + self.linger;
            while !batch.is_empty() && !batch.last().is_some_and(Op::urgent) {
                while batch.len() < MAX_OPS && !batch.last().is_some_and(Op::urgent) {
                    match self.rx.try_recv() {
                        Ok(op) => batch.push(op),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => batch.push(Op::Close),
                    }
                }
                let now = Instant::now();
                if batch.len() >= MAX_OPS || now >= deadline {
                    break;
                }
                if !batch.last().is_some_and(Op::urgent) {
                    std::thread::park_timeout(deadline - now);
                }
            }
            if !batch.is_empty() {
                // Everything queued up to now, under the lock: the pending
                // ids are then exactly those of this batch.
                let spare = &mut self.bufs.inbox;
                self.shared.lock().take(&self.rx, &mut batch, spare);
            }
            // A simulated crash: what was taken is lost.
            #[cfg(any(test, feature = "testing"))]
            if self.shared.hooks.crashed() {
                return;
            }
            let close = batch.iter().any(|op| matches!(op, Op::Close));
            let mut replies = Vec::new();
            #[cfg(any(test, feature = "testing"))]
            let mut holds = Vec::new();
            let mut forced = close;
            for op in &batch {
                match op {
                    Op::Flush { reply, durable } => {
                        replies.push(reply.clone());
                        forced |= *durable;
                    }
                    #[cfg(any(test, feature = "testing"))]
                    Op::Hold(ack) => holds.push(ack.clone()),
                    _ => {}
                }
            }
            let durable = forced || (dirty && last_durable.elapsed() >= self.sync_interval);
            let result = match self.shared.failure.get() {
                Some(f) => Err(f.to_error()),
                None if batch.is_empty() && !durable => Ok(()),
                None => self.write(batch, durable, close),
            };
            match &result {
                Ok(()) if durable => {
                    last_durable = Instant::now();
                    dirty = false;
                    self.shared
                        .durable_checkpoint
                        .store(self.progress.checkpoint(), Ordering::Release);
                }
                Ok(()) => dirty = true,
                Err(e) => {
                    if self.shared.failure.get().is_none() {
                        tracing::error!(error = %e, "dedup index write failed; dedup stops until it is reopened");
                    }
                    let _ = self.shared.failure.set(Failure::of(e));
                    self.shared.drained.notify_waiters();
                }
            }
            for r in replies {
                let _ = r.send(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(self
                        .shared
                        .failure
                        .get()
                        .map_or_else(|| Failure::of(e).to_error(), Failure::to_error)),
                });
            }
            if close {
                return;
            }
            #[cfg(any(test, feature = "testing"))]
            if !holds.is_empty() {
                for ack in holds {
                    let _ = ack.send(());
                }
                self.shared.hooks.wait_while_held();
            }
        }
    }

    /// Applies a batch in one write transaction, then forgets the ids it
    /// took from the pending set (they are in redb now).
    fn write(&mut self, batch: Vec<Op>, durable: bool, close: bool) -> Result<(), DedupError> {
        let p = self.path.clone();
        let e = |err: redb::Error| DedupError::index(&p, err);
        let mut tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        tx.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        });
        // Saves redb's allocator state so recovery after a crash is quick
        // instead of a walk over the whole file.
        tx.set_quick_repair(durable);
        {
            let mut gens = tx.open_table(index_file::GENS).map_err(|x| e(x.into()))?;
            let mut blooms = tx.open_table(index_file::BLOOMS).map_err(|x| e(x.into()))?;
            let mut meta = tx.open_table(index_file::META).map_err(|x| e(x.into()))?;
            let mut rows: HashMap<u64, GenRow> = HashMap::new();
            for r in gens.iter().map_err(|x| e(x.into()))? {
                let (k, v) = r.map_err(|x| e(x.into()))?;
                rows.insert(k.value(), GenRow::from_tuple(v.value()));
            }
            let mut to = Target {
                tx: &tx,
                tables: HashMap::new(),
                run_rows: tx.open_table(RUNS).map_err(|x| e(x.into()))?,
                rows,
                max_run_ids: self.max_run_ids,
                // `max_pending` bounds a batch. A batch-sized buffer
                // allocated afresh per batch costs page faults (huge-page
                // zeroing) every time; one trimmed below the batch size is
                // reallocated, and the inbox grows again on request threads.
                keep: self.shared.max_pending,
                staged: std::mem::take(&mut self.bufs.staged),
                bufs: &mut self.bufs,
            };
            for op in batch {
                if matches!(op, Op::Change(_)) {
                    to.insert_runs().map_err(|x| x.at(&p))?;
                }
                match op {
                    Op::Change(Change::Created {
                        id,
                        start_ms,
                        num_bits,
                    }) => {
                        let row = GenRow {
                            start_ms,
                            count: 0,
                            num_bits,
                            hashes: u64::from(BITS_PER_ID),
                            snapshot_count: u64::MAX,
                            next_run: 0,
                        };
                        to.rows.insert(id, row);
                        let next = meta
                            .get(index_file::M_NEXT_GEN)
                            .map_err(|x| e(x.into()))?
                            .map(|v| v.value())
                            .unwrap_or(0);
                        meta.insert(index_file::M_NEXT_GEN, next.max(id + 1))
                            .map_err(|x| e(x.into()))?;
                    }
                    Op::Change(Change::Sealed { id }) => {
                        if to.rows.contains_key(&id) {
                            to.seal(id).map_err(|x| x.at(&p))?;
                            // A generation dropped meanwhile has nothing to
                            // persist: its drop follows in this queue.
                            let buf = &mut to.bufs.filter;
                            if let Some(bytes) = export_filter(&self.shared, id, buf) {
                                blooms.insert(id, bytes).map_err(|x| e(x.into()))?;
                                if let Some(row) = to.rows.get_mut(&id) {
                                    row.snapshot_count = row.count;
                                }
                            }
                        }
                    }
                    Op::Change(Change::Dropped {
                        id,
                        early_boundary_ms,
                    }) => {
                        to.tables.remove(&id);
                        to.rows.remove(&id);
                        gens.remove(id).map_err(|x| e(x.into()))?;
                        blooms.remove(id).map_err(|x| e(x.into()))?;
                        to.run_rows
                            .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)
                            .map_err(|x| e(x.into()))?;
                        for name in [runs::chunks_table_name(id), runs::sealed_table_name(id)] {
                            tx.delete_table(runs::chunks_table(&name))
                                .map_err(|x| e(x.into()))?;
                        }
                        meta.insert(index_file::M_EARLY, early_boundary_ms.unwrap_or(0))
                            .map_err(|x| e(x.into()))?;
                    }
                    Op::Insert(Inbox {
                        mut entries,
                        mut offsets,
                    }) => {
                        if to.staged.is_empty() {
                            // The usual case, one insert per batch: no copy.
                            std::mem::swap(&mut to.staged, &mut entries);
                        } else {
                            to.staged.append(&mut entries);
                        }
                        for r in offsets.drain(..) {
                            self.progress.complete(r);
                        }
                        // The inbox's buffers go back to it on the next take.
                        if entries.capacity() > to.bufs.inbox.entries.capacity() {
                            entries.shrink_to(to.keep);
                            to.bufs.inbox = Inbox { entries, offsets };
                        }
                    }
                    Op::Skip(r) => self.progress.complete(r),
                    _ => {}
                }
            }
            to.insert_runs().map_err(|x| x.at(&p))?;
            let Target {
                mut rows,
                mut staged,
                keep,
                ..
            } = to;
            staged.shrink_to(keep);
            self.bufs.staged = staged;
            if close {
                // Persist every filter that does not cover its generation yet
                // (the active one), so a clean restart rebuilds nothing.
                let state = self.shared.lock();
                for (id, row) in rows.iter_mut() {
                    if row.snapshot_count != row.count {
                        if let Some(bytes) = state.gens.filter_bytes(*id) {
                            blooms
                                .insert(*id, bytes.as_slice())
                                .map_err(|x| e(x.into()))?;
                            row.snapshot_count = row.count;
                        }
                    }
                }
            }
            for (id, row) in &rows {
                gens.insert(*id, row.to_tuple()).map_err(|x| e(x.into()))?;
            }
            meta.insert(index_file::M_CHECKPOINT, self.progress.checkpoint())
                .map_err(|x| e(x.into()))?;
            let dups = self.shared.duplicates.load(Ordering::Relaxed);
            meta.insert(index_file::M_DUPLICATES, dups)
                .map_err(|x| e(x.into()))?;
        }
        tx.commit().map_err(|x| e(x.into()))?;
        self.shared.lock().written();
        self.shared.drained.notify_waiters();
        Ok(())
    }
}

/// Blocks of a sealed filter the writer copies out per hold of the state
/// lock: 2,048 blocks are 2,048 lines, tens of µs, where the whole filter
/// (a line in every group of the region) held every request up for about
/// a millisecond or more.
const SLICE_BLOCKS: u64 = 2048;

/// Sealed generation `id`'s filter bytes, copied out a slice per lock hold;
/// `None` if the generation was dropped meanwhile.
/// `out` is reused from seal to seal: growing a fresh vector to a filter's
/// size (6.4 MiB at the defaults) cost about 20 reallocations, each touching
/// fresh memory (page faults), per seal.
fn export_filter<'a>(shared: &Shared, id: u64, out: &'a mut Vec<u8>) -> Option<&'a [u8]> {
    out.clear();
    loop {
        if shared.lock().gens.export_some(id, out, SLICE_BLOCKS)? {
            return Some(out);
        }
    }
}

/// Where a batch's ids go: the open transaction's tables.
struct Target<'a, 't> {
    /// The write transaction.
    tx: &'t WriteTransaction,
    /// Chunk tables opened so far, by generation.
    tables: HashMap<u64, Table<'t, (u64, u128), &'static [u8]>>,
    /// The `runs` table.
    run_rows: Table<'t, (u64, u64), u64>,
    /// Generation rows, written back at the end of the transaction.
    rows: HashMap<u64, GenRow>,
    /// Ids of the batch not yet written: (generation, key, first-seen ms).
    staged: Vec<(u64, Key, u64)>,
    /// Largest run a merge may produce.
    max_run_ids: u64,
    /// Entries a buffer keeps between batches.
    keep: usize,
    /// Reused between batches: fresh allocations of run-sized buffers would
    /// cost a page fault per 4 KiB.
    bufs: &'a mut RunBuffers,
}

/// Buffers of a batch: its ids, the run being built and the run merged
/// into it. Kept from batch to batch.
#[derive(Default)]
pub(crate) struct RunBuffers {
    inbox: Inbox,
    staged: Vec<(u64, Key, u64)>,
    current: Vec<Entry>,
    older: Vec<Entry>,
    merged: Vec<Entry>,
    /// A sealed filter's bytes, copied out of the interleaved region.
    filter: Vec<u8>,
}

impl Target<'_, '_> {
    /// Merges the runs of generation `gen`, sealed (it takes no more ids),
    /// into its one sealed run: a look-up there then probes one run instead
    /// of one per writer batch merged up to `max_run_ids`. Streaming, so it
    /// costs one more write per id and memory for one chunk per run.
    fn seal(&mut self, gen: u64) -> Result<(), runs::RunError> {
        let index = |x: redb::TableError| runs::RunError::Index(Box::new(x.into()));
        let held = index_file::held_runs(&self.run_rows, gen)?;
        // One run is already one probe; a sealed run is never merged again.
        if held.len() < 2 || held.iter().any(|&(run, _)| run == runs::SEALED_RUN) {
            return Ok(());
        }
        let name = runs::chunks_table_name(gen);
        let src = match self.tables.remove(&gen) {
            Some(t) => t,
            None => self
                .tx
                .open_table(runs::chunks_table(&name))
                .map_err(index)?,
        };
        let sealed = runs::sealed_table_name(gen);
        let mut dst = self
            .tx
            .open_table(runs::chunks_table(&sealed))
            .map_err(index)?;
        let merged: Vec<u64> = held.iter().map(|&(run, _)| run).collect();
        let started = Instant::now();
        let ids = runs::merge_into(&src, &merged, &mut dst, runs::SEALED_RUN)?;
        tracing::debug!(
            generation = gen,
            runs = held.len(),
            ids,
            secs = started.elapsed().as_secs_f64(),
            "dedup: sealed generation merged into one run"
        );
        drop((src, dst));
        for &(run, _) in &held {
            self.run_rows.remove((gen, run))?;
        }
        self.run_rows.insert((gen, runs::SEALED_RUN), ids)?;
        self.tx
            .delete_table(runs::chunks_table(&name))
            .map_err(index)?;
        if let Some(row) = self.rows.get_mut(&gen) {
            // Ids in several runs (re-indexed after a crash) count once now.
            let before: u64 = held.iter().map(|&(_, n)| n).sum();
            row.count = row.count.saturating_sub(before) + ids;
        }
        Ok(())
    }

    /// Writes the staged ids of each generation as one new sorted run,
    /// first merging into it the generation's newest runs while they are no
    /// larger than it (binary-counter style: every id is rewritten about
    /// log₂(run size / batch size) times, and a generation holds about that
    /// many runs), up to `max_run_ids`. Empties `staged`.
    fn insert_runs(&mut self) -> Result<(), runs::RunError> {
        let staged = &mut self.staged;
        // A batch nearly always holds one generation, two across a rotation.
        let mut gens: Vec<u64> = Vec::new();
        for &(gen, _, _) in staged.iter() {
            if gens.last() != Some(&gen) && !gens.contains(&gen) {
                gens.push(gen);
            }
        }
        gens.sort_unstable();
        for gen in gens {
            let Some(row) = self.rows.get_mut(&gen) else {
                continue; // aged out before it was written
            };
            let RunBuffers {
                current,
                older,
                merged,
                ..
            } = &mut *self.bufs;
            current.clear();
            current.extend(
                staged
                    .iter()
                    .filter(|s| s.0 == gen)
                    .map(|&(_, k, t)| (k.as_u128(), t)),
            );
            runs::sort_unique(current, merged);
            let table = match self.tables.entry(gen) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let name = runs::chunks_table_name(gen);
                    let t = self.tx.open_table(runs::chunks_table(&name));
                    v.insert(t.map_err(|x| runs::RunError::Index(Box::new(x.into())))?)
                }
            };
            let mut held = index_file::held_runs(&self.run_rows, gen)?;
            while let Some(&(run, ids)) = held.last() {
                let len = current.len() as u64;
                if ids > len || ids + len > self.max_run_ids {
                    break;
                }
                older.clear();
                runs::read_run(&*table, run, older)?;
                runs::delete_run(table, run)?;
                self.run_rows.remove((gen, run))?;
                row.count = row.count.saturating_sub(ids);
                runs::merge(older, current, merged);
                std::mem::swap(current, merged);
                held.pop();
            }
            let run = row.next_run;
            row.next_run += 1;
            runs::write_run(table, run, current)?;
            self.run_rows.insert((gen, run), current.len() as u64)?;
            row.count += current.len() as u64;
        }
        staged.clear();
        // Keep batch-sized buffers, not the memory of a rare large merge.
        for buf in [
            &mut self.bufs.current,
            &mut self.bufs.older,
            &mut self.bufs.merged,
        ] {
            buf.clear();
            buf.shrink_to(self.keep);
        }
        Ok(())
    }
}
