//! Exact, crash-safe deduplication of (source, messageId) within a window:
//! bloom filters in memory answer "definitely new", a redb index confirms
//! hits, and an id counts as seen only once its event is durable in the WAL.
//!
//! Flow for one request: [`Dedup::begin`] classifies its keys and claims the
//! new ones (a concurrent request with the same id waits for the outcome);
//! the caller appends the new events and waits for the fsync; then
//! [`Ticket::commit`] with their offsets, or [`Ticket::abort`] if the append
//! failed. On start-up, [`Dedup::reindex`] re-adds what the WAL holds past
//! [`Dedup::checkpoint`]. Design and durability reasoning: docs/dedup.md.

mod batch;
mod bloom;
mod checkpoint;
mod claim;
mod clock;
mod error;
mod filters;
mod generations;
mod index_file;
mod key;
mod options;
mod queue;
mod reindex;
mod runs;
mod shared;
mod state;
mod stats;
mod supervised;
#[cfg(any(test, feature = "testing"))]
mod test_hooks;
mod writer;

pub use claim::{Ticket, Verdict};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{DedupError, Failure};
pub use key::Key;
pub use options::{bloom_too_large, DedupOptions, MAX_BLOOM_BYTES};
pub use reindex::{open_and_reindex, reindex_from_log, stored_key, ReindexError};
pub use stats::{stats_from_file, DedupStats};
pub use supervised::{DedupHealth, StartDedup, SupervisedDedup};

use clock::to_ms;
use generations::Generations;
use queue::Op;
use shared::Shared;
use state::{fresh, Class, State};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use writer::Writer;

/// The dedup index; cheap to clone (all clones share one index).
#[derive(Clone)]
pub struct Dedup {
    inner: Arc<Inner>,
}

/// One open index.
struct Inner {
    /// State shared with tickets and the writer.
    shared: Arc<Shared>,
    /// The redb database (look-ups read it directly; the writer writes).
    db: Arc<redb::Database>,
    /// Its path.
    path: PathBuf,
    /// The writer thread, joined on close (or by a test's crash).
    writer: Mutex<Option<JoinHandle<()>>>,
    /// What it was opened with, to open it again ([`Dedup::reopener`]).
    options: DedupOptions,
}

/// How to open an index again after its handles are closed: the path,
/// options and clock it was opened with.
#[derive(Clone)]
pub struct Reopener {
    path: PathBuf,
    options: DedupOptions,
    clock: Arc<dyn Clock>,
}

impl Reopener {
    /// What opens the index at `path` with `options` and `clock`, as
    /// [`Dedup::open`] would (for a first open that may have to wait).
    pub fn new(path: &Path, options: DedupOptions, clock: Arc<dyn Clock>) -> Reopener {
        Reopener {
            path: path.to_path_buf(),
            options,
            clock,
        }
    }

    /// Opens the index as [`Dedup::open`] did (blocking). The file must be
    /// closed: every handle of the previous open dropped.
    pub fn open(&self) -> Result<Dedup, DedupError> {
        Dedup::open(&self.path, self.options.clone(), self.clock.clone())
    }
}

impl Dedup {
    /// Opens (or creates) the index at `path`. Restores the filters from
    /// their persisted copies (rebuilding only those that do not cover their
    /// generation, after a crash) and starts the writer thread. `clock` is
    /// the time the window runs on.
    pub fn open(
        path: &Path,
        opts: DedupOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Dedup, DedupError> {
        options::validate(&opts)?;
        let window_ms = opts.window.as_millis() as u64;
        let db = index_file::open(path, opts.cache_bytes, window_ms, opts.capacity)?;
        let loaded = index_file::load(&db, path)?;
        if loaded.rebuilt > 0 {
            tracing::info!(
                generations = loaded.rebuilt,
                "dedup: rebuilt bloom filters from the index"
            );
        }
        let gens = Generations::new(
            window_ms,
            opts.capacity,
            opts.false_positive_rate,
            opts.generations,
            opts.min_filter_ids,
            loaded.gens,
            loaded.next_gen,
            loaded.early_boundary_ms,
        )
        .map_err(|source| DedupError::Start {
            what: "cannot map memory for the bloom filters",
            source,
        })?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(gens, tx, opts.max_pending / 2)),
            duplicates: AtomicU64::new(loaded.duplicates),
            durable_checkpoint: AtomicU64::new(loaded.checkpoint),
            failure: OnceLock::new(),
            drained: tokio::sync::Notify::new(),
            clock,
            window_ms,
            max_pending: opts.max_pending.max(1),
            writer_thread: OnceLock::new(),
            #[cfg(any(test, feature = "testing"))]
            hooks: Default::default(),
        });
        let handle = Writer::spawn(
            db.clone(),
            path.to_path_buf(),
            shared.clone(),
            rx,
            loaded.checkpoint,
            &opts,
        )
        .map_err(|source| DedupError::Start {
            what: "cannot start the dedup writer",
            source,
        })?;
        Ok(Dedup {
            inner: Arc::new(Inner {
                shared,
                db,
                path: path.to_path_buf(),
                writer: Mutex::new(Some(handle)),
                options: opts,
            }),
        })
    }

    /// Why the index stopped taking requests, if it did: its writer failed.
    /// A [`Failure::no_space`] failure is recovered by closing every handle
    /// and opening the index again (then re-indexing from the log) once the
    /// disk has room; any other needs a restart.
    pub fn failure(&self) -> Option<Failure> {
        self.inner.shared.failure.get().cloned()
    }

    /// What opens this index again once every handle is dropped.
    pub fn reopener(&self) -> Reopener {
        Reopener {
            path: self.inner.path.clone(),
            options: self.inner.options.clone(),
            clock: self.inner.shared.clock.clone(),
        }
    }

    /// Waits until the writer has stopped on a failure, and returns it.
    pub async fn stopped(&self) -> Failure {
        let shared = &self.inner.shared;
        shared.until(|| shared.failure.get().cloned()).await
    }

    /// Handles (clones, tickets included) of this open index. The file
    /// closes when the last one is dropped; reopening it needs that first.
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// The WAL offset below which every record is durably indexed: re-index
    /// from here after a restart; the WAL must keep the records above it.
    pub fn checkpoint(&self) -> u64 {
        self.inner.shared.durable_checkpoint.load(Ordering::Acquire)
    }

    /// Classifies the keys of one request, in order: repeats inside `keys`
    /// are duplicates after the first; a key whose earlier copy is still in
    /// flight waits for that append's outcome (committed → duplicate; aborted
    /// → this request takes it over as new). New keys stay claimed until the
    /// ticket is committed or aborted.
    ///
    /// Waits also while the writer is `max_pending` ids behind. A bloom hit
    /// costs a redb read on the calling thread (page-cache speed; at the
    /// configured false-positive rate of new ids, plus real duplicates).
    pub async fn begin(&self, keys: &[Key]) -> Result<Ticket, DedupError> {
        let shared = &self.inner.shared;
        loop {
            let now = to_ms(shared.clock.now());
            let pass = {
                let mut state = shared.lock();
                if let Some(f) = shared.failure.get() {
                    return Err(f.to_error());
                }
                (state.pending() < shared.max_pending)
                    .then(|| state.claim(keys, now, shared.window_ms))
            };
            match pass {
                Some(Ok(classes)) => return self.finish(keys, classes, now),
                // The sender drops when the owner commits or aborts.
                Some(Err(mut rx)) => while rx.changed().await.is_ok() {},
                None => self.wait_for_room().await,
            }
        }
    }

    /// Confirms bloom hits in redb and builds the ticket.
    fn finish(&self, keys: &[Key], classes: Vec<Class>, now: u64) -> Result<Ticket, DedupError> {
        let shared = &self.inner.shared;
        let mut verdicts = Vec::with_capacity(keys.len());
        let mut queries = Vec::new();
        let mut confirm_at = Vec::new();
        for (i, c) in classes.into_iter().enumerate() {
            verdicts.push(match c {
                Class::Duplicate => Verdict::Duplicate,
                Class::New => Verdict::New,
                Class::Confirm(gens) => {
                    queries.push((keys[i], gens));
                    confirm_at.push(i);
                    Verdict::New
                }
            });
        }
        // Sized up front: collecting a filter grows the vector step by step.
        let claimed = |v: &[Verdict]| -> Vec<Key> {
            let mut out = Vec::with_capacity(keys.len());
            out.extend(
                keys.iter()
                    .zip(v)
                    .filter(|(_, v)| **v == Verdict::New)
                    .map(|(k, _)| *k),
            );
            out
        };
        // From here the claims belong to the ticket: an error drops it,
        // which releases them.
        let mut ticket = Ticket {
            dedup: self.clone(),
            owned: claimed(&verdicts),
            verdicts,
        };
        if !queries.is_empty() {
            let found = index_file::lookup(&self.inner.db, &self.inner.path, &queries)?;
            let mut seen = Vec::new();
            for (i, f) in confirm_at.into_iter().zip(found) {
                if f.is_some_and(|t| fresh(to_ms(t), now, shared.window_ms)) {
                    ticket.verdicts[i] = Verdict::Duplicate;
                    seen.push(keys[i]);
                }
            }
            if !seen.is_empty() {
                shared.lock().release(&seen);
                ticket.owned = claimed(&ticket.verdicts);
            }
        }
        let dups = ticket
            .verdicts
            .iter()
            .filter(|v| **v == Verdict::Duplicate)
            .count();
        shared.duplicates.fetch_add(dups as u64, Ordering::Relaxed);
        Ok(ticket)
    }

    /// Waits while the writer is too far behind.
    async fn wait_for_room(&self) {
        let shared = &self.inner.shared;
        // After a writer failure `begin` reports it instead of waiting.
        let room =
            || shared.failure.get().is_some() || shared.lock().pending() < shared.max_pending;
        shared.until(|| room().then_some(())).await
    }

    /// Marks WAL offsets that carry no dedup key as indexed, so the
    /// checkpoint can pass them. Every appended offset must be reported by a
    /// commit or here; an unreported one holds the checkpoint back (costing
    /// only re-index time at restart).
    pub fn skip(&self, offsets: Range<u64>) {
        let _ = self.inner.shared.lock().tx.send(Op::Skip(offsets));
    }

    /// Writes everything committed so far durably and waits for it
    /// (blocking; for shutdown, tests and benchmarks).
    pub fn flush(&self) -> Result<(), DedupError> {
        self.write_queued(true)
    }

    /// Waits until the writer has written everything queued so far, durably
    /// or not (blocking).
    fn write_queued(&self, durable: bool) -> Result<(), DedupError> {
        let (reply, rx) = mpsc::sync_channel(1);
        let stopped = || DedupError::Failed("the dedup writer has stopped".into());
        let op = Op::Flush { reply, durable };
        self.inner.shared.send_urgent(op).map_err(|_| stopped())?;
        rx.recv().map_err(|_| stopped())?
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // After a test's crash the writer is gone, and this send fails.
        let _ = self.shared.send_urgent(Op::Close);
        // A test hold must not outlive the handle (the join would hang).
        #[cfg(any(test, feature = "testing"))]
        self.shared.hooks.release();
        if let Some(h) = self
            .writer
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = h.join();
        }
    }
}

impl std::fmt::Debug for Dedup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedup")
            .field("path", &self.inner.path)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    const H: Duration = Duration::from_secs(3600);

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn open(path: &Path, clock: &Arc<ManualClock>, opts: DedupOptions) -> Dedup {
        Dedup::open(path, opts, clock.clone()).unwrap()
    }

    fn k(s: &str) -> Key {
        Key::new("src", s)
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn committed_ids_are_written_without_a_flush() {
        // Commits leave their ids in the state's inbox; the writer must wake
        // for them by itself, twice (the second inbox after the first take),
        // and write them to redb (readable before any durable commit).
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(t0()));
        let opts = DedupOptions {
            write_interval: Duration::from_millis(1),
            ..DedupOptions::default()
        };
        let d = open(&dir.path().join("d.redb"), &clock, opts);
        run(async {
            for (round, next) in [(0u64, 0u64), (1, 3)] {
                let keys: Vec<Key> = (0..3).map(|i| k(&format!("r{round}-{i}"))).collect();
                d.begin(&keys).await.unwrap().commit(next..next + 3);
                // (The writer may already have taken them: no assertion on
                // the pending count here, only on where they end up.)
                let found = written_by_the_writer(&d, &keys, "the writer never wrote them").await;
                assert!(
                    found.iter().all(Option::is_some),
                    "round {round}: {found:?}"
                );
            }
        });
        d.flush().unwrap();
        assert_eq!(d.checkpoint(), 6);
    }

    #[test]
    fn half_of_max_pending_wakes_the_writer_before_its_interval() {
        // The writer lingers an hour for more commits here; reaching half of
        // `max_pending` (4 ids) must make it write at once.
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(t0()));
        let opts = DedupOptions {
            write_interval: H,
            max_pending: 8,
            ..DedupOptions::default()
        };
        let d = open(&dir.path().join("d.redb"), &clock, opts);
        run(async {
            let keys: Vec<Key> = (0..5).map(|i| k(&format!("u{i}"))).collect();
            d.begin(&keys[..3]).await.unwrap().commit(0..3);
            d.begin(&keys[3..]).await.unwrap().commit(3..5);
            let found =
                written_by_the_writer(&d, &keys, "the writer waited out its interval").await;
            assert!(found.iter().all(Option::is_some), "{found:?}");
        });
    }

    /// Waits (60 s at most, else fails with `why`) until the writer has
    /// written every pending id without being asked, then looks `keys` up in
    /// redb in every held generation.
    async fn written_by_the_writer(d: &Dedup, keys: &[Key], why: &str) -> Vec<Option<SystemTime>> {
        let shared = &d.inner.shared;
        let drained = shared.until(|| (shared.lock().pending() == 0).then_some(()));
        tokio::time::timeout(Duration::from_secs(60), drained)
            .await
            .expect(why);
        let gens: Vec<u64> = shared.lock().gens.iter().map(|g| g.id).collect();
        let queries: Vec<(Key, Vec<u64>)> = keys.iter().map(|&k| (k, gens.clone())).collect();
        index_file::lookup(&d.inner.db, &d.inner.path, &queries).unwrap()
    }

    #[test]
    fn repeats_in_a_request_and_across_requests() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(t0()));
        let d = open(&dir.path().join("d.redb"), &clock, DedupOptions::default());
        run(async {
            let t = d.begin(&[k("a"), k("a"), k("b")]).await.unwrap();
            assert_eq!(
                t.verdicts(),
                [Verdict::New, Verdict::Duplicate, Verdict::New]
            );
            assert_eq!(t.new_keys(), [k("a"), k("b")]);
            t.commit(0..2);
            let t = d.begin(&[k("b"), k("c")]).await.unwrap();
            assert_eq!(t.verdicts(), [Verdict::Duplicate, Verdict::New]);
            t.abort();
            let t = d.begin(&[k("c")]).await.unwrap();
            assert_eq!(t.verdicts(), [Verdict::New]);
            drop(t); // dropping aborts too
            assert_eq!(d.begin(&[k("c")]).await.unwrap().verdicts(), [Verdict::New]);
        });
        d.flush().unwrap();
        assert_eq!(d.checkpoint(), 2);
        let s = d.stats();
        assert_eq!((s.ids_held, s.pending, s.in_flight), (2, 0, 0));
        assert_eq!(s.duplicates, 2);
        // After the flush, "b" is answered from redb through a bloom hit.
        run(async {
            let t = d.begin(&[k("b")]).await.unwrap();
            assert_eq!(t.verdicts(), [Verdict::Duplicate]);
        });
    }

    #[test]
    fn batches_merge_into_few_runs_up_to_the_largest_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        let clock = Arc::new(ManualClock::new(t0()));
        let opts = DedupOptions {
            max_run_ids: 64,
            ..Default::default()
        };
        let d = open(&path, &clock, opts);
        run(async {
            for i in 0..200u64 {
                let t = d.begin(&[k(&i.to_string())]).await.unwrap();
                t.commit(i..i + 1);
                d.write_non_durable().unwrap();
            }
        });
        // One id per batch: binary-counter merges give full runs of 64 and
        // the rest (200 = 3 × 64 + 8), never more than log₂ small runs.
        let tx = d.inner.db.begin_read().unwrap();
        let runs = tx.open_table(runs::RUNS).unwrap();
        let sizes: Vec<u64> = index_file::held_runs(&runs, 0)
            .unwrap()
            .into_iter()
            .map(|(_, ids)| ids)
            .collect();
        assert_eq!(sizes, [64, 64, 64, 8]);
        drop((runs, tx));
        assert_eq!(d.stats().ids_held, 200);
        // Every id is answered from redb (nothing pending) as a duplicate.
        assert_eq!(d.stats().pending, 0);
        run(async {
            let keys: Vec<Key> = (0..200u64).map(|i| k(&i.to_string())).collect();
            let t = d.begin(&keys).await.unwrap();
            assert!(t.verdicts().iter().all(|v| *v == Verdict::Duplicate));
        });
    }

    #[test]
    fn a_sealed_generation_is_merged_into_one_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        let clock = Arc::new(ManualClock::new(t0()));
        // 100 ids per generation, runs of at most 16.
        let opts = || DedupOptions {
            capacity: 400,
            max_run_ids: 16,
            ..Default::default()
        };
        let d = open(&path, &clock, opts());
        let keys: Vec<Key> = (0..150u64).map(|i| k(&i.to_string())).collect();
        run(async {
            for (i, key) in keys.iter().enumerate() {
                let i = i as u64;
                d.begin(&[*key]).await.unwrap().commit(i..i + 1);
                d.write_non_durable().unwrap();
            }
        });
        let held = |d: &Dedup, gen: u64| {
            let tx = d.inner.db.begin_read().unwrap();
            let runs = tx.open_table(runs::RUNS).unwrap();
            index_file::held_runs(&runs, gen).unwrap()
        };
        // Generation 0 took ids 0..100 in runs of ≤ 16 and was sealed when
        // id 100 arrived: its runs are now one, in its sealed table.
        assert_eq!(held(&d, 0), [(runs::SEALED_RUN, 100)]);
        assert!(held(&d, 1).len() > 1, "{:?}", held(&d, 1));
        {
            let tx = d.inner.db.begin_read().unwrap();
            let name = runs::chunks_table_name(0);
            assert!(matches!(
                tx.open_table(runs::chunks_table(&name)),
                Err(redb::TableError::TableDoesNotExist(_))
            ));
        }
        // Every id is still answered from redb, sealed or not, and after a
        // restart.
        let all_duplicates = |d: &Dedup| {
            run(async {
                let t = d.begin(&keys).await.unwrap();
                assert!(t.verdicts().iter().all(|v| *v == Verdict::Duplicate));
            })
        };
        assert_eq!(d.stats().pending, 0);
        all_duplicates(&d);
        drop(d);
        let d = open(&path, &clock, opts());
        assert_eq!(d.stats().ids_held, 150);
        all_duplicates(&d);
        assert_eq!(held(&d, 0), [(runs::SEALED_RUN, 100)]);
    }

    #[test]
    fn ids_age_out_exactly_at_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(t0()));
        let d = open(&dir.path().join("d.redb"), &clock, DedupOptions::default());
        run(async {
            d.begin(&[k("a")]).await.unwrap().commit(0..1);
            clock.advance(24 * H - Duration::from_millis(1));
            let t = d.begin(&[k("a")]).await.unwrap();
            assert_eq!(t.verdicts(), [Verdict::Duplicate]);
            d.flush().unwrap();
            clock.advance(Duration::from_millis(1));
            let t = d.begin(&[k("a")]).await.unwrap();
            assert_eq!(t.verdicts(), [Verdict::New]);
            t.commit(1..2);
            clock.advance(H);
            assert_eq!(
                d.begin(&[k("a")]).await.unwrap().verdicts(),
                [Verdict::Duplicate]
            );
        });
    }

    #[test]
    fn a_clean_restart_restores_filters_without_rebuilding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        let clock = Arc::new(ManualClock::new(t0()));
        let d = open(&path, &clock, DedupOptions::default());
        run(async {
            for i in 0..100u64 {
                d.begin(&[k(&i.to_string())])
                    .await
                    .unwrap()
                    .commit(i..i + 1);
                clock.advance(H);
            }
        });
        let before = d.stats();
        drop(d);
        let db = index_file::open(&path, 1 << 20, 0, 0).unwrap();
        let loaded = index_file::load(&db, &path).unwrap();
        assert_eq!(loaded.rebuilt, 0);
        drop(db);
        let d = open(&path, &clock, DedupOptions::default());
        let after = d.stats();
        assert_eq!(
            (before.ids_held, before.bloom_bytes),
            (after.ids_held, after.bloom_bytes)
        );
        // Nothing was flushed before the drop: closing wrote the checkpoint.
        assert_eq!((before.checkpoint, after.checkpoint), (0, 100));
        run(async {
            // The last 24 ids (hours 76..99) are inside the window.
            for i in 0..100u64 {
                let v = d.begin(&[k(&i.to_string())]).await.unwrap().verdicts()[0];
                let expect = if i >= 77 {
                    Verdict::Duplicate
                } else {
                    Verdict::New
                };
                assert_eq!(v, expect, "id {i}");
            }
        });
    }

    #[test]
    fn a_filter_grows_with_its_generation_and_keeps_its_size_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        let clock = Arc::new(ManualClock::new(t0()));
        let opts = DedupOptions {
            min_filter_ids: 16,
            ..DedupOptions::default()
        };
        let d = open(&path, &clock, opts.clone());
        let keys: Vec<Key> = (0..5000).map(|i| k(&i.to_string())).collect();
        run(async {
            d.begin(&keys[..1]).await.unwrap().commit(0..1);
        });
        let first = d.stats().bloom_bytes;
        assert!(first <= 64, "a filter for 16 ids: {first} bytes");
        run(async {
            for (i, chunk) in keys[1..].chunks(100).enumerate() {
                let at = 1 + 100 * i as u64;
                d.begin(chunk)
                    .await
                    .unwrap()
                    .commit(at..at + chunk.len() as u64);
                // A write, after which the writer grows a full filter.
                d.flush().unwrap();
            }
        });
        let grown = d.stats().bloom_bytes;
        let full = opts.max_bloom_bytes() / 5;
        assert!(grown >= 5000 * 2 && grown < full / 100, "{grown} bytes");
        let still = |d: &Dedup| {
            run(async {
                for chunk in keys.chunks(100) {
                    let t = d.begin(chunk).await.unwrap();
                    assert!(t.verdicts().iter().all(|v| *v == Verdict::Duplicate));
                }
            })
        };
        still(&d);
        drop(d);
        // The persisted filter has the grown size; nothing is rebuilt.
        let db = index_file::open(&path, 1 << 20, 0, 0).unwrap();
        let loaded = index_file::load(&db, &path).unwrap();
        assert_eq!(loaded.rebuilt, 0);
        drop(db);
        let d = open(&path, &clock, opts);
        assert_eq!(d.stats().bloom_bytes, grown);
        still(&d);
    }

    #[test]
    fn filters_of_another_size_or_count_still_answer_after_a_restart() {
        // Reopened with another capacity (filters of another size) and then
        // fewer generations: the loaded filters that fit no slot keep their
        // own memory, and every id held before is still a duplicate.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        let clock = Arc::new(ManualClock::new(t0()));
        let small = DedupOptions {
            capacity: 1000,
            ..DedupOptions::default()
        };
        let fewer = DedupOptions {
            capacity: 4000,
            generations: 1,
            ..DedupOptions::default()
        };
        let mut next = 0u64;
        for (round, opts) in [small.clone(), small, fewer].into_iter().enumerate() {
            let d = open(&path, &clock, opts);
            let standalone = d.inner.shared.lock().gens.standalone();
            assert_eq!(standalone > 0, round == 2, "round {round}: {standalone}");
            run(async {
                for i in 0..next {
                    let v = d.begin(&[k(&i.to_string())]).await.unwrap().verdicts()[0];
                    assert_eq!(v, Verdict::Duplicate, "round {round}, id {i}");
                }
                // Over a generation's worth of ids (250), three hours apart.
                for _ in 0..2 {
                    let keys: Vec<Key> = (next..next + 200).map(|i| k(&i.to_string())).collect();
                    d.begin(&keys).await.unwrap().commit(next..next + 200);
                    next += 200;
                    clock.advance(3 * H);
                }
            });
        }
    }

    #[test]
    fn capacity_shrinks_the_effective_window_and_bounds_ids() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(t0()));
        let opts = DedupOptions {
            capacity: 400,
            ..DedupOptions::default()
        };
        let d = open(&dir.path().join("d.redb"), &clock, opts);
        run(async {
            for i in 0..2000u64 {
                d.begin(&[k(&i.to_string())])
                    .await
                    .unwrap()
                    .commit(i..i + 1);
                clock.advance(Duration::from_secs(1));
            }
        });
        d.flush().unwrap();
        let s = d.stats();
        assert!(s.ids_held >= 400 && s.ids_held <= 500, "{s:?}");
        assert!(s.effective_window < s.window, "{s:?}");
        assert!(s.effective_window >= Duration::from_secs(400), "{s:?}");
        let f = stats_from_file(&dir.path().join("d.redb"), clock.now());
        assert!(matches!(f, Err(DedupError::InUse(_))), "{f:?}");
        drop(d);
        let f = stats_from_file(&dir.path().join("d.redb"), clock.now()).unwrap();
        assert_eq!(
            (f.ids_held, f.effective_window),
            (s.ids_held, s.effective_window)
        );
        assert!((f.false_positive_rate - s.false_positive_rate).abs() < 1e-12);
    }

    #[test]
    fn the_file_stays_bounded_as_generations_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        let clock = Arc::new(ManualClock::new(t0()));
        let opts = DedupOptions {
            capacity: 20_000,
            ..DedupOptions::default()
        };
        let d = open(&path, &clock, opts);
        let mut size_after = Vec::new();
        let mut next = 0u64;
        run(async {
            for day in 0..12 {
                for _ in 0..20 {
                    let keys: Vec<Key> = (next..next + 500).map(|i| k(&i.to_string())).collect();
                    let t = d.begin(&keys).await.unwrap();
                    t.commit(next..next + 500);
                    next += 500;
                    clock.advance(Duration::from_secs(3 * 3600 / 5));
                }
                d.flush().unwrap();
                size_after.push((day, d.stats().file_bytes));
            }
        });
        let (_, settled) = size_after[3];
        let (_, last) = size_after[11];
        assert!(last <= settled + settled / 2, "file grew: {size_after:?}");
        assert!(d.stats().ids_held <= 25_000);
    }

    #[test]
    fn invalid_options_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        for o in [
            DedupOptions {
                capacity: 0,
                ..Default::default()
            },
            DedupOptions {
                false_positive_rate: 1.0,
                ..Default::default()
            },
            DedupOptions {
                window: Duration::ZERO,
                ..Default::default()
            },
            DedupOptions {
                generations: 0,
                ..Default::default()
            },
            DedupOptions {
                capacity: 10_000_000_000,
                ..Default::default()
            },
        ] {
            let r = Dedup::open(&dir.path().join("x.redb"), o, clock.clone());
            assert!(matches!(r, Err(DedupError::InvalidOptions(_))));
        }
    }
}
