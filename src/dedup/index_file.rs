//! The dedup index file (redb): its tables, opening it (read-write, or
//! read-only for `ferry dedup stats`), loading it at start-up, and look-ups
//! of bloom hits.
//!
//! Tables: `meta` (checkpoint and counters), `generations` (one row per held
//! generation), `blooms` (persisted filters), `runs` (the sorted runs of each
//! generation) and, per generation, a chunk table `chunks_<generation>`
//! holding its runs (layout in `runs.rs`) and, once it is sealed,
//! `sealed_<generation>` holding them merged into one; both are dropped whole
//! when the generation ages out, so expiry frees pages without touching ids
//! one by one.

use super::bloom::{Bloom, BITS_PER_ID};
use super::error::{AtPath, DedupError};
use super::generations::{Filter, Generation};
use super::key::Key;
use super::runs::{self, RUNS};
use redb::{Database, ReadTransaction, ReadableTable, StorageError, TableDefinition};
use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

/// Layout version stored in `meta`; bump on any change of the tables.
/// 1: one B-tree row per id (segment tables); 2: sorted runs in chunks;
/// 3: split block bloom filters, and each sealed generation's runs merged
/// into one run in a table of its own (`sealed_<generation>`).
pub(crate) const FORMAT: u64 = 3;
/// Counters and positions by name (see the `M_*` names).
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Generation id → (start ms, ids, filter bits, bits set per id (8), ids
/// covered by the persisted filter, next run id).
pub(crate) const GENS: TableDefinition<u64, GenTuple> = TableDefinition::new("generations");

/// A row of `generations` as stored (see [`GenRow`]).
pub(crate) type GenTuple = (u64, u64, u64, u64, u64, u64);

/// Generation id → its filter's bytes (split blocks of 8 × 32-bit words).
pub(crate) const BLOOMS: TableDefinition<u64, &[u8]> = TableDefinition::new("blooms");

/// `meta` names.
pub(crate) const M_FORMAT: &str = "format";
pub(crate) const M_CHECKPOINT: &str = "checkpoint";
pub(crate) const M_NEXT_GEN: &str = "next_generation";
/// Start (ms) of the oldest generation kept after an early eviction; 0 = none.
pub(crate) const M_EARLY: &str = "early_boundary_ms";
pub(crate) const M_DUPLICATES: &str = "duplicates";
pub(crate) const M_WINDOW: &str = "window_ms";
pub(crate) const M_CAPACITY: &str = "capacity";

/// One row of `generations`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GenRow {
    pub start_ms: u64,
    pub count: u64,
    pub num_bits: u64,
    pub hashes: u64,
    /// Ids the persisted filter covers; it is usable only if this equals `count`.
    pub snapshot_count: u64,
    /// The id the generation's next run takes.
    pub next_run: u64,
}

impl GenRow {
    pub fn from_tuple(t: GenTuple) -> GenRow {
        GenRow {
            start_ms: t.0,
            count: t.1,
            num_bits: t.2,
            hashes: t.3,
            snapshot_count: t.4,
            next_run: t.5,
        }
    }
    pub fn to_tuple(self) -> GenTuple {
        (
            self.start_ms,
            self.count,
            self.num_bits,
            self.hashes,
            self.snapshot_count,
            self.next_run,
        )
    }
}

/// Everything read from the file at start-up.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub checkpoint: u64,
    pub next_gen: u64,
    pub early_boundary_ms: Option<u64>,
    pub duplicates: u64,
    /// Held generations, oldest first, filters ready.
    pub gens: Vec<Generation>,
    /// Generations whose filter had to be rebuilt by scanning their ids.
    pub rebuilt: usize,
}

/// Opens (or creates) the index read-write; redb recovers it after a crash.
/// Records the window and capacity in use, for `ferry dedup stats`.
pub(crate) fn open(
    path: &Path,
    cache_bytes: usize,
    window_ms: u64,
    capacity: u64,
) -> Result<Database, DedupError> {
    let create = || {
        crate::disk::create_or_undo(path, || {
            Database::builder()
                .set_cache_size(cache_bytes)
                .create(path)
                .at(path)
        })
    };
    let mut db = create()?;
    match stored_format(&db, path)? {
        Some(old) if old < FORMAT => {
            // The layout of an earlier ferry. Every id it holds is also in
            // the log above its checkpoint or older; a new index re-indexed
            // from the log keeps every retained id, and can only forget
            // older ones (a duplicate stored, never an event dropped).
            tracing::warn!(
                path = %path.display(),
                format = old,
                "the dedup index has an earlier layout; starting a new one, re-indexed from the log"
            );
            drop(db);
            std::fs::remove_file(path).at(path)?;
            db = create()?;
        }
        Some(other) if other > FORMAT => {
            return Err(DedupError::Corruption {
                path: path.to_path_buf(),
                reason: format!("unknown index format {other} (this ferry reads {FORMAT})"),
            })
        }
        _ => {}
    }
    let tx = db.begin_write().at(path)?;
    {
        let mut meta = tx.open_table(META).at(path)?;
        meta.insert(M_FORMAT, FORMAT).at(path)?;
        meta.insert(M_WINDOW, window_ms).at(path)?;
        meta.insert(M_CAPACITY, capacity).at(path)?;
        tx.open_table(GENS).at(path)?;
        tx.open_table(BLOOMS).at(path)?;
        tx.open_table(RUNS).at(path)?;
    }
    tx.commit().at(path)?;
    compact_if_sparse(&mut db, path, COMPACT_MIN_BYTES)?;
    Ok(db)
}

/// The layout version a file records, if it records one.
fn stored_format(db: &Database, path: &Path) -> Result<Option<u64>, DedupError> {
    let tx = db.begin_read().at(path)?;
    let t = match tx.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(DedupError::index(path, e)),
    };
    let v = t.get(M_FORMAT).at(path)?;
    Ok(v.map(|v| v.value()))
}

/// Files smaller than this are never compacted at open.
const COMPACT_MIN_BYTES: u64 = 256 << 20;

/// Rough bytes per held id: a 24-byte entry in a chunk of 1,360 that fills
/// a 32 KiB page, plus branch pages and merge churn.
const BYTES_PER_ID: u64 = 27;

/// redb files never shrink by themselves. Expiry frees whole generation
/// tables whose pages the next generations reuse, so under steady load the
/// file stays at its high-water mark; after load fell (or capacity was
/// lowered) that mark can be far above what is held. Compacting then, at
/// open, before any reader or writer exists, gives the space back. Returns
/// whether it compacted.
pub(crate) fn compact_if_sparse(
    db: &mut Database,
    path: &Path,
    min_bytes: u64,
) -> Result<bool, DedupError> {
    let file = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if file < min_bytes {
        return Ok(false);
    }
    let tx = db.begin_read().at(path)?;
    let live: u64 = read_gen_rows(&tx, path)?
        .iter()
        .map(|(_, r)| r.count * BYTES_PER_ID + 2 * r.num_bits / 8)
        .sum();
    drop(tx);
    if file <= 3 * live.max(1 << 20) {
        return Ok(false);
    }
    let started = std::time::Instant::now();
    db.compact().at(path)?;
    let after = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    tracing::info!(
        before = file,
        after,
        secs = started.elapsed().as_secs_f64(),
        "dedup index compacted"
    );
    Ok(true)
}

/// Opens an existing index for reading only: never creates it and refuses
/// (instead of repairing) one that was not closed cleanly.
pub(crate) fn open_read_only(path: &Path) -> Result<Database, DedupError> {
    if !path.is_file() {
        return Err(DedupError::Corruption {
            path: path.to_path_buf(),
            reason: "no such file".into(),
        });
    }
    Database::builder()
        .set_cache_size(16 << 20)
        .set_repair_callback(|s| s.abort())
        .open(path)
        .at(path)
}

/// Reads a `meta` value (0 when absent).
pub(crate) fn meta(tx: &ReadTransaction, path: &Path, name: &str) -> Result<u64, DedupError> {
    let t = tx.open_table(META).at(path)?;
    let v = t.get(name).at(path)?;
    Ok(v.map(|v| v.value()).unwrap_or(0))
}

/// The rows of `generations`, oldest first.
pub(crate) fn gen_rows(
    table: &impl ReadableTable<u64, GenTuple>,
) -> Result<Vec<(u64, GenRow)>, StorageError> {
    let mut rows = Vec::new();
    for r in table.iter()? {
        let (k, v) = r?;
        rows.push((k.value(), GenRow::from_tuple(v.value())));
    }
    Ok(rows)
}

/// The rows of `generations` in a read transaction, oldest first.
pub(crate) fn read_gen_rows(
    tx: &ReadTransaction,
    path: &Path,
) -> Result<Vec<(u64, GenRow)>, DedupError> {
    gen_rows(&tx.open_table(GENS).at(path)?).at(path)
}

/// Loads positions, counters and every held generation's filter: the
/// persisted one when it covers all the generation's ids, else rebuilt by a
/// scan of its id table (after a crash: at most the active generation).
pub(crate) fn load(db: &Database, path: &Path) -> Result<Loaded, DedupError> {
    let tx = db.begin_read().at(path)?;
    let early = meta(&tx, path, M_EARLY)?;
    let mut loaded = Loaded {
        checkpoint: meta(&tx, path, M_CHECKPOINT)?,
        next_gen: meta(&tx, path, M_NEXT_GEN)?,
        early_boundary_ms: (early != 0).then_some(early),
        duplicates: meta(&tx, path, M_DUPLICATES)?,
        gens: Vec::new(),
        rebuilt: 0,
    };
    let blooms = tx.open_table(BLOOMS).at(path)?;
    for (id, row) in read_gen_rows(&tx, path)? {
        let corrupt = |reason: String| DedupError::Corruption {
            path: path.to_path_buf(),
            reason: format!("generation {id}: {reason}"),
        };
        if row.num_bits == 0 || row.num_bits % 256 != 0 || row.hashes != u64::from(BITS_PER_ID) {
            return Err(corrupt(format!("bad filter shape {row:?}")));
        }
        let snapshot = if row.snapshot_count == row.count {
            blooms.get(id).at(path)?
        } else {
            None
        };
        let bloom = match snapshot {
            Some(bytes) => {
                let bytes = bytes.value();
                match Bloom::from_bytes(bytes) {
                    Some(b) if b.num_bits() == row.num_bits => b,
                    _ => {
                        return Err(corrupt(format!(
                            "filter of {} bytes, expected {}",
                            bytes.len(),
                            row.num_bits / 8
                        )))
                    }
                }
            }
            None => {
                loaded.rebuilt += 1;
                let mut bloom = Bloom::with_bytes(row.num_bits / 8);
                add_ids(&tx, path, id, &mut bloom)?;
                bloom
            }
        };
        loaded.gens.push(Generation {
            id,
            start_ms: row.start_ms,
            count: row.count,
            filter: Filter::Own(bloom),
        });
    }
    Ok(loaded)
}

/// Inserts every id the index holds for generation `id` into `bloom` (a
/// filter rebuilt at start-up, or grown by the writer).
pub(crate) fn add_ids(
    tx: &ReadTransaction,
    path: &Path,
    id: u64,
    bloom: &mut Bloom,
) -> Result<(), DedupError> {
    for name in [runs::chunks_table_name(id), runs::sealed_table_name(id)] {
        match tx.open_table(runs::chunks_table(&name)) {
            Ok(t) => runs::for_each_key(&t, |k| {
                bloom.insert(Key::from_u128(k).bloom_hash());
            })
            .at(path)?,
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(DedupError::index(path, e)),
        }
    }
    Ok(())
}

/// The runs of generation `id`, oldest first: (run, ids).
pub(crate) fn held_runs(
    table: &impl ReadableTable<(u64, u64), u64>,
    id: u64,
) -> Result<Vec<(u64, u64)>, redb::StorageError> {
    let mut out = Vec::new();
    for r in table.range((id, 0)..=(id, u64::MAX))? {
        let (k, v) = r?;
        out.push((k.value().1, v.value()));
    }
    Ok(out)
}

/// Confirms bloom hits: for each (key, generations whose filter hit), the
/// first-seen time if the key is in one of those generations' runs. Runs are
/// probed newest first (a retry usually repeats a recent id), one chunk each.
pub(crate) fn lookup(
    db: &Database,
    path: &Path,
    queries: &[(Key, Vec<u64>)],
) -> Result<Vec<Option<SystemTime>>, DedupError> {
    let tx = db.begin_read().at(path)?;
    let runs_table = tx.open_table(RUNS).at(path)?;
    // Opened once per call: each generation's runs (newest first), and the
    // tables they are in.
    let mut held: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut tables = HashMap::new();
    let mut out = Vec::with_capacity(queries.len());
    for (key, gens) in queries {
        let mut found = None;
        'gens: for &id in gens {
            let runs = match held.entry(id) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let mut runs: Vec<u64> = held_runs(&runs_table, id)
                        .at(path)?
                        .into_iter()
                        .map(|(run, _)| run)
                        .collect();
                    runs.reverse();
                    v.insert(runs)
                }
            };
            for &run in runs.iter() {
                // Keyed by (generation, sealed): the name is built only once.
                let table = match tables.entry((id, run == runs::SEALED_RUN)) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let name = runs::table_name(id, run);
                        let table = match tx.open_table(runs::chunks_table(&name)) {
                            Ok(t) => Some(t),
                            // Not written yet: its ids are all still pending.
                            Err(redb::TableError::TableDoesNotExist(_)) => None,
                            Err(x) => return Err(DedupError::index(path, x)),
                        };
                        v.insert(table)
                    }
                };
                let Some(table) = table else { continue };
                if let Some(t) = runs::find(table, run, key.as_u128()).at(path)? {
                    found = Some(super::clock::from_ms(t));
                    break 'gens;
                }
            }
        }
        out.push(found);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_file_is_compacted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        let mut db = open(&path, 1 << 20, 1, 1).unwrap();
        let name = runs::chunks_table_name(0);
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(runs::chunks_table(&name)).unwrap();
            let mut ids: Vec<runs::Entry> = (0..1_000_000u128)
                .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835), 1))
                .collect();
            runs::sort_unique(&mut ids, &mut Vec::new());
            runs::write_run(&mut t, 0, &ids).unwrap();
        }
        tx.open_table(GENS)
            .unwrap()
            .insert(0, (0, 1_000_000, 64, 1, 0, 1))
            .unwrap();
        tx.commit().unwrap();
        // Dense: nothing to do.
        assert!(!compact_if_sparse(&mut db, &path, 0).unwrap());
        let tx = db.begin_write().unwrap();
        tx.delete_table(runs::chunks_table(&name)).unwrap();
        tx.open_table(GENS).unwrap().remove(0).unwrap();
        tx.commit().unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        // Below the size threshold: left alone.
        assert!(!compact_if_sparse(&mut db, &path, before + 1).unwrap());
        assert!(compact_if_sparse(&mut db, &path, 0).unwrap());
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(after < before / 2, "{before} -> {after}");
    }

    #[test]
    fn an_index_of_an_earlier_layout_is_replaced_by_a_new_one() {
        for earlier in 1..FORMAT {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("d.redb");
            {
                let db = Database::create(&path).unwrap();
                let tx = db.begin_write().unwrap();
                {
                    let mut meta = tx.open_table(META).unwrap();
                    meta.insert(M_FORMAT, earlier).unwrap();
                    meta.insert(M_CHECKPOINT, 500).unwrap();
                }
                tx.commit().unwrap();
            }
            let db = open(&path, 1 << 20, 1, 1).unwrap();
            let loaded = load(&db, &path).unwrap();
            // Re-indexing starts from the beginning of the log.
            assert_eq!(loaded.checkpoint, 0, "format {earlier}");
            let tx = db.begin_read().unwrap();
            assert_eq!(meta(&tx, &path, M_FORMAT).unwrap(), FORMAT);
        }
    }

    #[test]
    fn an_unknown_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(META).unwrap().insert(M_FORMAT, 99).unwrap();
            tx.commit().unwrap();
        }
        let err = open(&path, 1 << 20, 1, 1).unwrap_err();
        assert!(err.to_string().contains("unknown index format 99"), "{err}");
    }
}
