//! One writer batch in one redb write transaction: the generations' changes
//! (created, sealed, dropped), the batch's ids as new sorted runs, a sealed
//! generation's runs merged into one, persisted filters, and the checkpoint,
//! stored with the ids it covers so that both roll back together.

use super::bloom::BITS_PER_ID;
use super::error::{AtPath, DedupError};
use super::generations::Change;
use super::index_file::{
    self, GenRow, GenTuple, BLOOMS, GENS, META, M_CHECKPOINT, M_DUPLICATES, M_EARLY, M_NEXT_GEN,
};
use super::key::Key;
use super::queue::Inbox;
use super::runs::{self, Entry, RUNS};
use super::shared::Shared;
use redb::{ReadableTable, Table, WriteTransaction};
use std::collections::hash_map::{self, HashMap};
use std::path::Path;
use std::time::Instant;

/// Buffers of a batch, kept from batch to batch: run-sized allocations made
/// afresh for every batch cost a page fault per 4 KiB (huge-page zeroing).
#[derive(Default)]
pub(crate) struct Buffers {
    /// The spare inbox, swapped in for the state's when the writer takes it.
    pub inbox: Inbox,
    /// Ids of the batch not yet written: (generation, key, first-seen ms).
    staged: Vec<(u64, Key, u64)>,
    /// The run being written.
    current: Vec<Entry>,
    /// An older run read back to be merged into it.
    older: Vec<Entry>,
    /// The two merged.
    merged: Vec<Entry>,
}

impl Buffers {
    /// Gives back what each buffer holds beyond `keep` entries: after a
    /// burst, or the start-up re-index, the buffers keep the size of the
    /// batches that follow, not of the largest one.
    pub fn trim(&mut self, keep: usize) {
        fn trim<T>(v: &mut Vec<T>, keep: usize) {
            if v.capacity() > keep {
                v.shrink_to(keep.max(v.len()));
            }
        }
        trim(&mut self.inbox.entries, keep);
        trim(&mut self.staged, keep);
        trim(&mut self.current, keep);
        trim(&mut self.older, keep);
        trim(&mut self.merged, keep);
    }
}

/// A batch being written: the transaction's tables and the generation rows.
pub(crate) struct Batch<'t> {
    /// The write transaction.
    tx: &'t WriteTransaction,
    /// The index file, for errors.
    path: &'t Path,
    /// Where the in-memory filters are (for persisting them).
    shared: &'t Shared,
    /// The tables every batch writes.
    gens: Table<'t, u64, GenTuple>,
    blooms: Table<'t, u64, &'static [u8]>,
    meta: Table<'t, &'static str, u64>,
    run_rows: Table<'t, (u64, u64), u64>,
    /// Chunk tables opened so far, by generation.
    chunks: HashMap<u64, Table<'t, (u64, u128), &'static [u8]>>,
    /// Generation rows, written back by [`Batch::finish`].
    rows: HashMap<u64, GenRow>,
    /// Largest run a merge may produce.
    max_run_ids: u64,
    /// Entries a buffer keeps between batches: `max_pending`, which bounds
    /// a batch. A buffer trimmed below the batch size is reallocated every
    /// batch, and the inbox grows again on request threads.
    keep: usize,
    /// Reused between batches.
    bufs: &'t mut Buffers,
}

impl<'t> Batch<'t> {
    /// Opens the tables of `tx` and reads the generation rows.
    pub fn open(
        tx: &'t WriteTransaction,
        path: &'t Path,
        shared: &'t Shared,
        max_run_ids: u64,
        bufs: &'t mut Buffers,
    ) -> Result<Batch<'t>, DedupError> {
        let gens = tx.open_table(GENS).at(path)?;
        let rows = index_file::gen_rows(&gens).at(path)?.into_iter().collect();
        Ok(Batch {
            tx,
            path,
            shared,
            gens,
            blooms: tx.open_table(BLOOMS).at(path)?,
            meta: tx.open_table(META).at(path)?,
            run_rows: tx.open_table(RUNS).at(path)?,
            chunks: HashMap::new(),
            rows,
            max_run_ids,
            keep: shared.max_pending,
            bufs,
        })
    }

    /// Takes an inbox's ids into the batch (the caller completes its
    /// offsets). Its emptied buffers become the spare inbox when larger.
    pub fn stage(&mut self, inbox: &mut Inbox) {
        let staged = &mut self.bufs.staged;
        if staged.is_empty() {
            // The usual case, one insert per batch: no copy.
            std::mem::swap(staged, &mut inbox.entries);
        } else {
            staged.append(&mut inbox.entries);
        }
        // The inbox's buffers go back to it on the next take.
        if inbox.entries.capacity() > self.bufs.inbox.entries.capacity() {
            inbox.entries.shrink_to(self.keep);
            self.bufs.inbox = std::mem::take(inbox);
        }
    }

    /// Applies a generation change. The ids staged before it are written
    /// first: a sealed generation's ids precede its seal (which merges
    /// them) and its drop, as they did in the queue.
    pub fn change(&mut self, change: &Change) -> Result<(), DedupError> {
        self.insert_runs()?;
        match *change {
            Change::Created {
                id,
                start_ms,
                num_bits,
            } => self.created(id, start_ms, num_bits),
            Change::Sealed { id } => self.sealed(id),
            Change::Dropped {
                id,
                early_boundary_ms,
            } => self.dropped(id, early_boundary_ms),
        }
    }

    /// A new generation: its row, and the next generation id past it.
    fn created(&mut self, id: u64, start_ms: u64, num_bits: u64) -> Result<(), DedupError> {
        let row = GenRow {
            start_ms,
            count: 0,
            num_bits,
            hashes: u64::from(BITS_PER_ID),
            snapshot_count: u64::MAX,
            next_run: 0,
        };
        self.rows.insert(id, row);
        let next = self.meta.get(M_NEXT_GEN).at(self.path)?;
        let next = next.map_or(0, |v| v.value()).max(id + 1);
        self.meta.insert(M_NEXT_GEN, next).at(self.path)?;
        Ok(())
    }

    /// Generation `id`'s filter was rebuilt at `num_bits`: a filter rebuilt
    /// after a crash takes that size, and a persisted copy of the old size
    /// no longer counts (the next one is written at the new size).
    pub fn resized(&mut self, id: u64, num_bits: u64) -> Result<(), DedupError> {
        if let Some(row) = self.rows.get_mut(&id) {
            row.num_bits = num_bits;
            if row.snapshot_count != u64::MAX {
                row.snapshot_count = u64::MAX;
                self.blooms.remove(id).at(self.path)?;
            }
        }
        Ok(())
    }

    /// A generation that takes no more ids: its runs merged into one, and
    /// its filter persisted once (it no longer changes).
    fn sealed(&mut self, id: u64) -> Result<(), DedupError> {
        if !self.rows.contains_key(&id) {
            return Ok(());
        }
        self.merge_sealed(id)?;
        // A generation dropped meanwhile has nothing to persist: its drop
        // follows in this queue.
        if let Some(bytes) = export_filter(self.shared, id) {
            self.blooms.insert(id, bytes.as_slice()).at(self.path)?;
            if let Some(row) = self.rows.get_mut(&id) {
                row.snapshot_count = row.count;
                row.num_bits = bytes.len() as u64 * 8;
            }
        }
        Ok(())
    }

    /// A generation that aged out: its row, filter, runs and tables go, so
    /// expiry frees pages without touching ids one by one.
    fn dropped(&mut self, id: u64, early_boundary_ms: Option<u64>) -> Result<(), DedupError> {
        let path = self.path;
        self.chunks.remove(&id);
        self.rows.remove(&id);
        self.gens.remove(id).at(path)?;
        self.blooms.remove(id).at(path)?;
        let all = (id, 0)..=(id, u64::MAX);
        self.run_rows.retain_in(all, |_, _| false).at(path)?;
        for name in [runs::chunks_table_name(id), runs::sealed_table_name(id)] {
            self.tx.delete_table(runs::chunks_table(&name)).at(path)?;
        }
        let early = early_boundary_ms.unwrap_or(0);
        self.meta.insert(M_EARLY, early).at(path)?;
        Ok(())
    }

    /// Merges the runs of generation `gen`, sealed (it takes no more ids),
    /// into its one sealed run: a look-up there then probes one run instead
    /// of one per writer batch merged up to `max_run_ids`. Streaming, so it
    /// costs one more write per id and memory for one chunk per run.
    fn merge_sealed(&mut self, gen: u64) -> Result<(), DedupError> {
        let path = self.path;
        let held = index_file::held_runs(&self.run_rows, gen).at(path)?;
        // One run is already one probe; a sealed run is never merged again.
        if held.len() < 2 || held.iter().any(|&(run, _)| run == runs::SEALED_RUN) {
            return Ok(());
        }
        let name = runs::chunks_table_name(gen);
        let src = match self.chunks.remove(&gen) {
            Some(t) => t,
            None => self.tx.open_table(runs::chunks_table(&name)).at(path)?,
        };
        let sealed = runs::sealed_table_name(gen);
        let mut dst = self.tx.open_table(runs::chunks_table(&sealed)).at(path)?;
        let merged: Vec<u64> = held.iter().map(|&(run, _)| run).collect();
        let started = Instant::now();
        let ids = runs::merge_into(&src, &merged, &mut dst, runs::SEALED_RUN).at(path)?;
        tracing::debug!(
            generation = gen,
            runs = held.len(),
            ids,
            secs = started.elapsed().as_secs_f64(),
            "dedup: sealed generation merged into one run"
        );
        drop((src, dst));
        for &(run, _) in &held {
            self.run_rows.remove((gen, run)).at(path)?;
        }
        self.run_rows
            .insert((gen, runs::SEALED_RUN), ids)
            .at(path)?;
        self.tx.delete_table(runs::chunks_table(&name)).at(path)?;
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
    /// many runs), up to `max_run_ids`. Empties the staged ids.
    pub fn insert_runs(&mut self) -> Result<(), DedupError> {
        let path = self.path;
        let Buffers {
            staged,
            current,
            older,
            merged,
            ..
        } = &mut *self.bufs;
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
            current.clear();
            current.extend(
                staged
                    .iter()
                    .filter(|s| s.0 == gen)
                    .map(|&(_, k, t)| (k.as_u128(), t)),
            );
            runs::sort_unique(current, merged);
            let table = match self.chunks.entry(gen) {
                hash_map::Entry::Occupied(o) => o.into_mut(),
                hash_map::Entry::Vacant(v) => {
                    let name = runs::chunks_table_name(gen);
                    v.insert(self.tx.open_table(runs::chunks_table(&name)).at(path)?)
                }
            };
            let mut held = index_file::held_runs(&self.run_rows, gen).at(path)?;
            while let Some(&(run, ids)) = held.last() {
                let len = current.len() as u64;
                if ids > len || ids + len > self.max_run_ids {
                    break;
                }
                older.clear();
                runs::read_run(&*table, run, older).at(path)?;
                runs::delete_run(table, run).at(path)?;
                self.run_rows.remove((gen, run)).at(path)?;
                row.count = row.count.saturating_sub(ids);
                runs::merge(older, current, merged);
                std::mem::swap(current, merged);
                held.pop();
            }
            let run = row.next_run;
            row.next_run += 1;
            runs::write_run(table, run, current).at(path)?;
            self.run_rows
                .insert((gen, run), current.len() as u64)
                .at(path)?;
            row.count += current.len() as u64;
        }
        staged.clear();
        staged.shrink_to(self.keep);
        // Keep batch-sized buffers, not the memory of a rare large merge.
        for buf in [current, older, merged] {
            buf.clear();
            buf.shrink_to(self.keep);
        }
        Ok(())
    }

    /// Persists every filter that does not cover its generation yet (the
    /// active one), so that a clean restart rebuilds none. After the last
    /// [`Batch::insert_runs`]: a filter counts as covering the ids counted.
    pub fn persist_filters(&mut self) -> Result<(), DedupError> {
        let state = self.shared.lock();
        for (id, row) in self.rows.iter_mut() {
            if row.snapshot_count != row.count {
                if let Some(bytes) = state.gens.filter_bytes(*id) {
                    self.blooms.insert(*id, bytes.as_slice()).at(self.path)?;
                    row.snapshot_count = row.count;
                    row.num_bits = bytes.len() as u64 * 8;
                }
            }
        }
        Ok(())
    }

    /// Writes back the generation rows, then the checkpoint and the
    /// duplicate count.
    pub fn finish(mut self, checkpoint: u64, duplicates: u64) -> Result<(), DedupError> {
        for (id, row) in &self.rows {
            self.gens.insert(*id, row.to_tuple()).at(self.path)?;
        }
        self.meta.insert(M_CHECKPOINT, checkpoint).at(self.path)?;
        self.meta.insert(M_DUPLICATES, duplicates).at(self.path)?;
        Ok(())
    }
}

/// Blocks of a sealed filter the writer copies out per hold of the state
/// lock: 2,048 blocks are 2,048 lines, tens of µs, where the whole filter
/// (a line in every group of the region) held every request up for about
/// a millisecond or more.
const SLICE_BLOCKS: u64 = 2048;

/// Sealed generation `id`'s filter bytes, copied out a slice per lock hold;
/// `None` if the generation was dropped meanwhile. The vector is allocated
/// at the filter's size at once (growing it took about 20 reallocations at
/// 6.4 MiB) and freed after the seal: one seal per `capacity / generations`
/// ids does not need a filter's worth of memory kept between seals.
fn export_filter(shared: &Shared, id: u64) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(shared.lock().gens.filter_len(id)?);
    loop {
        if shared.lock().gens.export_some(id, &mut out, SLICE_BLOCKS)? {
            return Some(out);
        }
    }
}
