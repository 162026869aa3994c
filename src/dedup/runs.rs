//! Sorted runs: how a generation's ids are laid out in redb. Each writer
//! batch becomes one sorted run, stored as chunks of up to [`CHUNK_IDS`]
//! entries, one chunk per row (one 32 KiB page), keyed by (run, last key
//! in the chunk). Runs are merged binary-counter style up to a largest size,
//! so writing a batch costs one B-tree insert per chunk instead of one per id,
//! and a look-up reads one chunk per run of the generation. Once a generation
//! is sealed (takes no more ids) its runs are merged, streaming, into one
//! run, [`SEALED_RUN`], in a table of its own: a look-up there (a bloom false
//! positive, mostly) then reads one chunk instead of one per run.

use super::error::{AtPath, DedupError};
use redb::{AccessGuard, ReadableTable, Table, TableDefinition};
use std::cmp::Reverse;
use std::collections::binary_heap::{BinaryHeap, PeekMut};
use std::path::Path;

/// One id of a run: (key as u128, first-seen ms since the epoch).
pub(crate) type Entry = (u128, u64);

/// Bytes of one entry: the key (u128, little-endian), then the first-seen
/// time (u64, little-endian).
const ENTRY_BYTES: usize = 24;

/// Entries per chunk: 32,640 bytes, so one chunk row fills one 32 KiB leaf
/// page (redb sizes pages in powers of two). Against 4 KiB chunks this makes
/// an eighth of the B-tree inserts (each rebuilds a branch page) and a
/// shallower tree (measured with `cargo bench --bench dedup`).
pub(crate) const CHUNK_IDS: usize = 1360;

/// (generation, run) → ids in the run. Run ids grow within a generation: a
/// higher id holds newer ids (a merge result takes a fresh id).
pub(crate) const RUNS: TableDefinition<(u64, u64), u64> = TableDefinition::new("runs");

/// A generation's chunk table: (run, last key of the chunk) → packed entries.
pub(crate) type ChunkDef<'a> = TableDefinition<'a, (u64, u128), &'static [u8]>;

/// The name of a generation's chunk table.
pub(crate) fn chunks_table_name(generation: u64) -> String {
    format!("chunks_{generation:020}")
}

/// The run a sealed generation's runs are merged into. It is alone in the
/// generation's sealed table ([`sealed_table_name`]).
pub(crate) const SEALED_RUN: u64 = u64::MAX;

/// The name of a generation's sealed table.
pub(crate) fn sealed_table_name(generation: u64) -> String {
    format!("sealed_{generation:020}")
}

/// The name of the table holding run `run` of `generation`.
pub(crate) fn table_name(generation: u64, run: u64) -> String {
    if run == SEALED_RUN {
        sealed_table_name(generation)
    } else {
        chunks_table_name(generation)
    }
}

/// A generation's chunk table definition.
pub(crate) fn chunks_table(name: &str) -> ChunkDef<'_> {
    TableDefinition::new(name)
}

/// What reading or writing runs can fail with.
#[derive(Debug)]
pub(crate) enum RunError {
    /// redb failed (boxed: redb's error type is large).
    Index(Box<redb::Error>),
    /// A chunk that cannot be decoded: corruption inside the index.
    BadChunk(String),
}

impl From<redb::StorageError> for RunError {
    fn from(e: redb::StorageError) -> RunError {
        RunError::Index(Box::new(e.into()))
    }
}

impl<T> AtPath<T> for Result<T, RunError> {
    fn at(self, path: &Path) -> Result<T, DedupError> {
        self.map_err(|e| match e {
            RunError::Index(e) => DedupError::index(path, *e),
            RunError::BadChunk(reason) => DedupError::Corruption {
                path: path.to_path_buf(),
                reason,
            },
        })
    }
}

/// Sorts entries by key and keeps one entry per key (the latest time: a key
/// re-added after a restart carries the time of its stored event).
///
/// Keys are hashes, so a bucket pass on their top bits (about four entries
/// per bucket) leaves only tiny buckets to sort: two linear passes and many
/// small sorts, where a comparison sort of a writer batch took most of the
/// writer's sorting time. Each bucket is sorted with `sort_unstable`, so keys
/// crowded into one bucket (chosen ids) cost n log n, never n².
pub(crate) fn sort_unique(entries: &mut Vec<Entry>, scratch: &mut Vec<Entry>) {
    let n = entries.len();
    if n < 1024 {
        entries.sort_unstable();
    } else {
        // At most 2¹⁴ buckets (64 KiB of counts): ~4 entries per bucket at
        // a 75,000-id batch.
        let bits = (usize::BITS - (n / 4).leading_zeros()).clamp(8, 14);
        let bucket = |e: &Entry| (e.0 >> (128 - bits)) as usize;
        let mut at = vec![0u32; 1 << bits];
        for e in entries.iter() {
            at[bucket(e)] += 1;
        }
        let mut start = 0;
        for c in at.iter_mut() {
            (*c, start) = (start, start + *c);
        }
        scratch.clear();
        scratch.resize(n, (0, 0));
        for e in entries.iter() {
            let b = bucket(e);
            scratch[at[b] as usize] = *e;
            at[b] += 1;
        }
        // Now `at[b]` is where bucket b ends and bucket b + 1 starts.
        let mut start = 0;
        for &end in &at {
            let end = end as usize;
            if end - start > 1 {
                scratch[start..end].sort_unstable();
            }
            start = end;
        }
        std::mem::swap(entries, scratch);
    }
    // Sorted by (key, time): of equal keys the last has the latest time.
    let mut kept = 0;
    for i in 0..n {
        if i + 1 == n || entries[i + 1].0 != entries[i].0 {
            entries[kept] = entries[i];
            kept += 1;
        }
    }
    entries.truncate(kept);
}

/// Merges two runs sorted by unique key into `out` (cleared first); a key
/// in both keeps the latest time.
pub(crate) fn merge(a: &[Entry], b: &[Entry], out: &mut Vec<Entry>) {
    out.clear();
    out.reserve(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push((a[i].0, a[i].1.max(b[j].1)));
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
}

/// Writes `entries` (sorted, unique) as run `run`, chunk by chunk.
pub(crate) fn write_run(
    table: &mut Table<'_, (u64, u128), &'static [u8]>,
    run: u64,
    entries: &[Entry],
) -> Result<(), RunError> {
    let mut buf = Vec::with_capacity(CHUNK_IDS * ENTRY_BYTES);
    for chunk in entries.chunks(CHUNK_IDS) {
        write_chunk(table, run, chunk, &mut buf)?;
    }
    Ok(())
}

/// Writes one chunk (sorted, non-empty) of run `run`, encoded in `buf`.
fn write_chunk(
    table: &mut Table<'_, (u64, u128), &'static [u8]>,
    run: u64,
    chunk: &[Entry],
    buf: &mut Vec<u8>,
) -> Result<(), RunError> {
    buf.clear();
    for &(key, t) in chunk {
        buf.extend_from_slice(&key.to_le_bytes());
        buf.extend_from_slice(&t.to_le_bytes());
    }
    let last = chunk[chunk.len() - 1].0;
    table.insert((run, last), buf.as_slice())?;
    Ok(())
}

/// Reads one run in key order, a chunk at a time.
struct Cursor<'a> {
    rows: redb::Range<'a, (u64, u128), &'static [u8]>,
    chunk: Vec<Entry>,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(
        table: &'a impl ReadableTable<(u64, u128), &'static [u8]>,
        run: u64,
    ) -> Result<Cursor<'a>, RunError> {
        Ok(Cursor {
            rows: table.range(run_keys(run))?,
            chunk: Vec::with_capacity(CHUNK_IDS),
            at: 0,
        })
    }

    /// The next entry, without consuming it; `None` at the end of the run.
    fn peek(&mut self) -> Result<Option<Entry>, RunError> {
        if self.at == self.chunk.len() {
            let Some(row) = self.rows.next() else {
                return Ok(None);
            };
            let (k, v) = row?;
            let bytes = checked(&k, &v)?;
            self.chunk.clear();
            self.chunk
                .extend(bytes.chunks_exact(ENTRY_BYTES).map(decode));
            self.at = 0;
        }
        Ok(Some(self.chunk[self.at]))
    }
}

/// Merges runs `runs` of `src` (each sorted by unique key) into run `out` of
/// `dst`, streaming: memory holds one chunk per run. A key in several runs
/// keeps its latest time. Returns the ids written.
pub(crate) fn merge_into(
    src: &impl ReadableTable<(u64, u128), &'static [u8]>,
    runs: &[u64],
    dst: &mut Table<'_, (u64, u128), &'static [u8]>,
    out: u64,
) -> Result<u64, RunError> {
    let mut cursors = runs
        .iter()
        .map(|&r| Cursor::new(src, r))
        .collect::<Result<Vec<_>, _>>()?;
    // The runs' heads in a min-heap by (key, run): about log₂(runs)
    // comparisons per entry, where a scan of every head took 2 × runs.
    let mut heads = BinaryHeap::with_capacity(cursors.len());
    for (i, c) in cursors.iter_mut().enumerate() {
        if let Some(e) = c.peek()? {
            heads.push(Reverse((e.0, i)));
        }
    }
    let mut pending: Vec<Entry> = Vec::with_capacity(CHUNK_IDS);
    let mut buf = Vec::with_capacity(CHUNK_IDS * ENTRY_BYTES);
    let mut written = 0;
    while let Some(mut top) = heads.peek_mut() {
        let Reverse((key, i)) = *top;
        let c = &mut cursors[i];
        let t = c.chunk[c.at].1;
        c.at += 1;
        match c.peek()? {
            Some(e) => *top = Reverse((e.0, i)),
            None => drop(PeekMut::pop(top)),
        }
        // A key in several runs comes out once per run, consecutively:
        // it keeps its latest time.
        match pending.last_mut() {
            Some(last) if last.0 == key => last.1 = last.1.max(t),
            _ => {
                if pending.len() == CHUNK_IDS {
                    write_chunk(dst, out, &pending, &mut buf)?;
                    written += pending.len() as u64;
                    pending.clear();
                }
                pending.push((key, t));
            }
        }
    }
    if !pending.is_empty() {
        write_chunk(dst, out, &pending, &mut buf)?;
        written += pending.len() as u64;
    }
    Ok(written)
}

/// Appends every entry of run `run`, in key order, to `out`.
pub(crate) fn read_run(
    table: &impl ReadableTable<(u64, u128), &'static [u8]>,
    run: u64,
    out: &mut Vec<Entry>,
) -> Result<(), RunError> {
    for row in table.range(run_keys(run))? {
        let (k, v) = row?;
        out.extend(checked(&k, &v)?.chunks_exact(ENTRY_BYTES).map(decode));
    }
    Ok(())
}

/// Calls `f` with every key of every run in the table (a filter rebuild).
pub(crate) fn for_each_key(
    table: &impl ReadableTable<(u64, u128), &'static [u8]>,
    mut f: impl FnMut(u128),
) -> Result<(), RunError> {
    for row in table.iter()? {
        let (k, v) = row?;
        checked(&k, &v)?
            .chunks_exact(ENTRY_BYTES)
            .for_each(|e| f(decode(e).0));
    }
    Ok(())
}

/// Removes run `run`.
pub(crate) fn delete_run(
    table: &mut Table<'_, (u64, u128), &'static [u8]>,
    run: u64,
) -> Result<(), RunError> {
    table.retain_in(run_keys(run), |_, _| false)?;
    Ok(())
}

/// The first-seen time of `key` if run `run` holds it: one B-tree descent to
/// the only chunk that can hold it, then a binary search inside it.
pub(crate) fn find(
    table: &impl ReadableTable<(u64, u128), &'static [u8]>,
    run: u64,
    key: u128,
) -> Result<Option<u64>, RunError> {
    let Some(row) = table.range((run, key)..=(run, u128::MAX))?.next() else {
        return Ok(None);
    };
    let (k, v) = row?;
    let bytes = checked(&k, &v)?;
    let n = bytes.len() / ENTRY_BYTES;
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let (k, t) = decode(&bytes[mid * ENTRY_BYTES..(mid + 1) * ENTRY_BYTES]);
        match k.cmp(&key) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Ok(Some(t)),
        }
    }
    Ok(None)
}

/// The keys of run `run`'s chunk rows.
fn run_keys(run: u64) -> std::ops::RangeInclusive<(u64, u128)> {
    (run, 0)..=(run, u128::MAX)
}

/// A chunk row's packed entries, checked (see [`check`]).
fn checked<'a>(
    key: &AccessGuard<'_, (u64, u128)>,
    value: &'a AccessGuard<'_, &'static [u8]>,
) -> Result<&'a [u8], RunError> {
    let bytes = value.value();
    check(bytes, key.value().1)?;
    Ok(bytes)
}

/// A chunk must hold whole entries, at least one, and end with its row key.
fn check(bytes: &[u8], last: u128) -> Result<(), RunError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(ENTRY_BYTES) {
        return Err(RunError::BadChunk(format!(
            "a chunk of {} bytes",
            bytes.len()
        )));
    }
    let (k, _) = decode(&bytes[bytes.len() - ENTRY_BYTES..]);
    if k != last {
        return Err(RunError::BadChunk(format!(
            "a chunk ending at {k:032x} filed under {last:032x}"
        )));
    }
    Ok(())
}

/// One entry from its 24 bytes.
fn decode(e: &[u8]) -> Entry {
    let key = u128::from_le_bytes(e[..16].try_into().expect("16 bytes"));
    let t = u64::from_le_bytes(e[16..24].try_into().expect("8 bytes"));
    (key, t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Database, ReadableTableMetadata};

    const T: ChunkDef<'static> = TableDefinition::new("chunks_test");
    const D: ChunkDef<'static> = TableDefinition::new("sealed_test");

    fn spread(i: u128) -> u128 {
        i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
    }

    /// A sorted run of the spread keys of `ids`, first seen at `time(i)`.
    fn run_of(ids: std::ops::Range<u128>, time: impl Fn(u128) -> u64) -> Vec<Entry> {
        let mut run: Vec<Entry> = ids.map(|i| (spread(i), time(i))).collect();
        sort_unique(&mut run, &mut Vec::new());
        run
    }

    /// A fresh database in its own temporary directory (kept alive with it).
    fn temp_db() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("r.redb")).unwrap();
        (dir, db)
    }

    #[test]
    fn sort_unique_keeps_the_latest_time() {
        let mut v = vec![(5, 1), (3, 9), (5, 7), (1, 2), (5, 4)];
        sort_unique(&mut v, &mut Vec::new());
        assert_eq!(v, [(1, 2), (3, 9), (5, 7)]);
    }

    #[test]
    fn sort_unique_of_a_batch_matches_a_plain_sort() {
        // Batches large enough for the bucket pass: spread keys with
        // repeats, keys crowded into one bucket, and both at once.
        let spread_keys: Vec<Entry> = (0..20_000u128)
            .map(|i| (spread(i % 15_000), (i * 7 % 13) as u64))
            .collect();
        let crowded: Vec<Entry> = (0..5_000u128).map(|i| (i % 4_000, i as u64)).collect();
        let mixed: Vec<Entry> = spread_keys.iter().chain(&crowded).copied().collect();
        let mut scratch = Vec::new();
        for input in [spread_keys, crowded, mixed] {
            let mut expected = input.clone();
            expected.sort_unstable();
            expected.reverse();
            expected.dedup_by_key(|e| e.0);
            expected.reverse();
            let mut got = input;
            sort_unique(&mut got, &mut scratch);
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn merge_interleaves_and_keeps_the_latest_time_of_a_shared_key() {
        let a = [(1, 10), (4, 10), (9, 10)];
        let b = [(2, 20), (4, 5), (10, 20)];
        let mut out = vec![(99, 99)];
        merge(&a, &b, &mut out);
        assert_eq!(out, [(1, 10), (2, 20), (4, 10), (9, 10), (10, 20)]);
        merge(&a, &[], &mut out);
        assert_eq!(out, a);
        merge(&[], &b, &mut out);
        assert_eq!(out, b);
    }

    #[test]
    fn runs_round_trip_and_every_key_is_found_in_its_run_only() {
        let (_dir, db) = temp_db();
        // Run 1 spans several chunks, with a partial last one; run 2 is small.
        let one = run_of(0..3000, |i| i as u64);
        let two = run_of(5000..5002, |i| (i - 4999) as u64);
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(T).unwrap();
            write_run(&mut t, 1, &one).unwrap();
            write_run(&mut t, 2, &two).unwrap();
            assert_eq!(t.len().unwrap() as usize, 3000usize.div_ceil(CHUNK_IDS) + 1);
        }
        tx.commit().unwrap();
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(T).unwrap();
        let mut back = Vec::new();
        read_run(&t, 1, &mut back).unwrap();
        assert_eq!(back, one);
        for &(k, time) in &one {
            assert_eq!(find(&t, 1, k).unwrap(), Some(time));
            assert_eq!(find(&t, 2, k).unwrap(), None);
        }
        assert_eq!(find(&t, 2, spread(5001)).unwrap(), Some(2));
        // Absent keys: below, between and above the stored ones.
        for k in [1, spread(4000), u128::MAX] {
            assert!(one.iter().all(|e| e.0 != k));
            assert_eq!(find(&t, 1, k).unwrap(), None);
        }
        let mut all = 0;
        for_each_key(&t, |_| all += 1).unwrap();
        assert_eq!(all, 3002);
        drop(t);
        drop(tx);
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(T).unwrap();
            delete_run(&mut t, 1).unwrap();
            assert_eq!(t.len().unwrap(), 1);
            assert_eq!(find(&t, 1, one[0].0).unwrap(), None);
        }
        tx.commit().unwrap();
    }

    #[test]
    fn a_chunk_fills_one_leaf_page() {
        // The layout's point: 1,360 entries (32,640 bytes) per 32 KiB leaf
        // page, so about 24.1 bytes per id plus a few branch pages.
        let (_dir, db) = temp_db();
        let ids = run_of(0..100_000, |_| 1);
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(T).unwrap();
            write_run(&mut t, 0, &ids).unwrap();
            let stats = t.stats().unwrap();
            assert_eq!(stats.leaf_pages(), 100_000u64.div_ceil(CHUNK_IDS as u64));
            assert!(stats.branch_pages() * 20 < stats.leaf_pages(), "{stats:?}");
            let leaf_bytes = stats.leaf_pages() * 32 * 1024;
            assert!(stats.stored_bytes() * 100 > leaf_bytes * 98, "{stats:?}");
            assert!(
                stats.fragmented_bytes() * 50 < stats.stored_bytes(),
                "{stats:?}"
            );
        }
        tx.commit().unwrap();
    }

    #[test]
    fn runs_of_smaller_chunks_from_earlier_builds_are_read_and_merged() {
        // Files written before chunks grew to 32 KiB hold chunks of 160
        // entries: look-ups, reads and merges take a chunk's size from its
        // value, whatever it is.
        let (_dir, db) = temp_db();
        let old = run_of(0..1000, |_| 7);
        let new = run_of(1000..1500, |_| 8);
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(T).unwrap();
            let mut buf = Vec::new();
            for chunk in old.chunks(160) {
                write_chunk(&mut t, 1, chunk, &mut buf).unwrap();
            }
            assert_eq!(t.len().unwrap(), 7);
            write_run(&mut t, 2, &new).unwrap();
            for &(k, time) in &old {
                assert_eq!(find(&t, 1, k).unwrap(), Some(time));
            }
            let mut back = Vec::new();
            read_run(&t, 1, &mut back).unwrap();
            assert_eq!(back, old);
        }
        tx.commit().unwrap();
        let tx = db.begin_write().unwrap();
        {
            let src = tx.open_table(T).unwrap();
            let mut dst = tx.open_table(D).unwrap();
            assert_eq!(
                merge_into(&src, &[1, 2], &mut dst, SEALED_RUN).unwrap(),
                1500
            );
            let mut all = Vec::new();
            merge(&old, &new, &mut all);
            for &(k, time) in &all {
                assert_eq!(find(&dst, SEALED_RUN, k).unwrap(), Some(time));
            }
            assert_eq!(dst.len().unwrap() as usize, 1500usize.div_ceil(CHUNK_IDS));
        }
        tx.commit().unwrap();
    }

    #[test]
    fn merging_many_runs_keeps_one_entry_per_key_with_its_latest_time() {
        // Four runs of different sizes that share keys (a re-index after a
        // crash writes an id again): the merged run must hold each key once,
        // in order, with its latest time, across chunk boundaries.
        let (_dir, db) = temp_db();
        let runs = [
            run_of(0..4000, |i| i as u64),
            run_of(2000..2100, |_| 1),
            run_of(3990..6000, |i| 10_000 + i as u64),
            run_of(0..1, |_| 99_999),
        ];
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(T).unwrap();
            for (r, run) in runs.iter().enumerate() {
                write_run(&mut t, r as u64, run).unwrap();
            }
        }
        tx.commit().unwrap();
        let mut expected = Vec::new();
        for run in &runs {
            let mut next = Vec::new();
            merge(&expected, run, &mut next);
            expected = next;
        }
        assert_eq!(expected.len(), 6000);
        let tx = db.begin_write().unwrap();
        {
            let src = tx.open_table(T).unwrap();
            let mut dst = tx.open_table(D).unwrap();
            assert_eq!(
                merge_into(&src, &[0, 1, 2, 3], &mut dst, SEALED_RUN).unwrap(),
                6000
            );
            let mut back = Vec::new();
            read_run(&dst, SEALED_RUN, &mut back).unwrap();
            assert_eq!(back, expected);
            assert_eq!(find(&dst, SEALED_RUN, spread(0)).unwrap(), Some(99_999));
            assert_eq!(find(&dst, SEALED_RUN, spread(3995)).unwrap(), Some(13_995));
            assert_eq!(find(&dst, SEALED_RUN, spread(2050)).unwrap(), Some(2050));
        }
        tx.commit().unwrap();
    }

    #[test]
    fn a_damaged_chunk_is_reported_not_misread() {
        let (_dir, db) = temp_db();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(T).unwrap();
            t.insert((1, 7u128), [0u8; 23].as_slice()).unwrap();
            let mut entry = 8u128.to_le_bytes().to_vec();
            entry.extend_from_slice(&1u64.to_le_bytes());
            t.insert((2, 7u128), entry.as_slice()).unwrap();
        }
        tx.commit().unwrap();
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(T).unwrap();
        assert!(matches!(find(&t, 1, 7), Err(RunError::BadChunk(_))));
        assert!(matches!(find(&t, 2, 7), Err(RunError::BadChunk(_))));
        assert!(read_run(&t, 1, &mut Vec::new()).is_err());
        assert!(for_each_key(&t, |_| {}).is_err());
    }
}
