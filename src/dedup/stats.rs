//! Figures about the dedup index: live from an open index, or read from
//! the file alone for `ferry dedup stats`.

use super::clock::to_ms;
use super::error::{AtPath, DedupError};
use super::index_file::{
    held_runs, meta, read_gen_rows, M_CAPACITY, M_CHECKPOINT, M_DUPLICATES, M_EARLY, M_WINDOW,
};
use super::runs::RUNS;
use super::{bloom, generations, index_file, Dedup};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

/// Figures about the index at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct DedupStats {
    /// Distinct ids held (across all generations).
    pub ids_held: u64,
    /// Configured window.
    pub window: Duration,
    /// Look-back actually guaranteed: the window, or less while capacity
    /// forces ids out early.
    pub effective_window: Duration,
    /// Configured capacity.
    pub capacity: u64,
    /// Generations held.
    pub generations: u64,
    /// Memory of the bloom filters.
    pub bloom_bytes: u64,
    /// Estimated chance that a new id hits a filter (and costs a redb read).
    pub false_positive_rate: f64,
    /// Duplicates answered since the index was created.
    pub duplicates: u64,
    /// WAL offset below which every record is durably indexed.
    pub checkpoint: u64,
    /// Ids committed, not yet written to redb (0 when read from a file).
    pub pending: u64,
    /// Ids claimed by requests whose append is in flight (0 from a file).
    pub in_flight: u64,
    /// Size of the index file.
    pub file_bytes: u64,
}

impl Dedup {
    /// Figures about the index now.
    pub fn stats(&self) -> DedupStats {
        let shared = &self.inner.shared;
        let now = to_ms(shared.clock.now());
        let state = shared.lock();
        DedupStats {
            ids_held: state.gens.ids_held(),
            window: Duration::from_millis(shared.window_ms),
            effective_window: Duration::from_millis(state.gens.effective_window_ms(now)),
            capacity: self.inner.options.capacity,
            generations: state.gens.iter().count() as u64,
            bloom_bytes: state.gens.bloom_bytes(),
            false_positive_rate: state.gens.false_positive_rate(),
            duplicates: shared.duplicates.load(Ordering::Relaxed),
            checkpoint: self.checkpoint(),
            pending: state.pending() as u64,
            in_flight: state.in_flight() as u64,
            file_bytes: std::fs::metadata(&self.inner.path)
                .map(|m| m.len())
                .unwrap_or(0),
        }
    }
}

/// Reads the figures of an index file without opening it for writing
/// (`ferry dedup stats`). Fails if a running server holds it open.
pub fn stats_from_file(path: &Path, now: SystemTime) -> Result<DedupStats, DedupError> {
    let db = index_file::open_read_only(path)?;
    let tx = db.begin_read().at(path)?;
    let rows = read_gen_rows(&tx, path)?;
    let runs = tx.open_table(RUNS).at(path)?;
    let mut ids_held = 0;
    for (id, _) in &rows {
        let held = held_runs(&runs, *id).at(path)?;
        ids_held += held.iter().map(|(_, ids)| ids).sum::<u64>();
    }
    let window_ms = meta(&tx, path, M_WINDOW)?;
    let early = meta(&tx, path, M_EARLY)?;
    let early_boundary_ms = (early != 0).then_some(early);
    // (bits, ids) of each held generation's filter.
    let filters = rows.iter().map(|(_, r)| (r.num_bits, r.count));
    Ok(DedupStats {
        ids_held,
        window: Duration::from_millis(window_ms),
        effective_window: Duration::from_millis(generations::effective_window_ms(
            window_ms,
            early_boundary_ms,
            to_ms(now),
        )),
        capacity: meta(&tx, path, M_CAPACITY)?,
        generations: rows.len() as u64,
        bloom_bytes: filters.clone().map(|(bits, _)| bits / 8).sum(),
        false_positive_rate: bloom::union_false_positive_rate(filters),
        duplicates: meta(&tx, path, M_DUPLICATES)?,
        checkpoint: meta(&tx, path, M_CHECKPOINT)?,
        pending: 0,
        in_flight: 0,
        file_bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
    })
}
