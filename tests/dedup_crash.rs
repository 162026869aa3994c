//! Crash consistency of dedup: ids committed (durable in the WAL) but not yet
//! written to the index when the process dies must come back as duplicates
//! after re-indexing the WAL tail; ids whose append failed must be new on
//! retry. Two crash flavours: the writer stopped in-process with commits
//! queued (also with a generation's seal queued: it is redone after the
//! re-index), and a real `abort()` of a child process after non-durable redb
//! commits (redb rolls back to its last durable commit).

use ferry::dedup::{Dedup, DedupOptions, Key, ManualClock, SystemClock, Verdict};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn k(i: u64) -> Key {
    Key::new("crash", &format!("id-{i}"))
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn verdicts(d: &Dedup, keys: &[Key]) -> Vec<Verdict> {
    block_on(d.begin(keys)).unwrap().verdicts().to_vec()
}

/// The simulated WAL: (offset, key, time).
type Wal = Vec<(u64, Key, SystemTime)>;

fn tail(wal: &Wal, from: u64) -> impl Iterator<Item = (u64, Option<(Key, SystemTime)>)> + '_ {
    wal.iter()
        .filter(move |r| r.0 >= from)
        .map(|&(o, k, t)| (o, Some((k, t))))
}

#[test]
fn commits_lost_with_the_writer_come_back_from_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dedup.redb");
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_750_000_000),
    ));
    let now = || ferry::dedup::Clock::now(&*clock);
    let d = Dedup::open(&path, DedupOptions::default(), clock.clone()).unwrap();
    let mut wal: Wal = Vec::new();
    // 0..100 indexed durably.
    let first: Vec<Key> = (0..100).map(k).collect();
    block_on(d.begin(&first)).unwrap().commit(0..100);
    wal.extend(first.iter().enumerate().map(|(i, &k)| (i as u64, k, now())));
    d.flush().unwrap();
    assert_eq!(d.checkpoint(), 100);
    // 100..200 durable in the WAL, committed, but the writer never writes them.
    d.hold_writer();
    let second: Vec<Key> = (100..200).map(k).collect();
    block_on(d.begin(&second)).unwrap().commit(100..200);
    wal.extend(
        second
            .iter()
            .enumerate()
            .map(|(i, &k)| (100 + i as u64, k, now())),
    );
    // 200..250: the append failed.
    let failed: Vec<Key> = (200..250).map(k).collect();
    block_on(d.begin(&failed)).unwrap().abort();
    // Before the crash the pending set answers for the unwritten ids.
    assert!(verdicts(&d, &second)
        .iter()
        .all(|v| *v == Verdict::Duplicate));
    assert_eq!(d.stats().pending, 100);
    d.crash();

    // Without re-indexing, the index really lost them (the test can fail).
    let d = Dedup::open(&path, DedupOptions::default(), clock.clone()).unwrap();
    assert_eq!(d.checkpoint(), 100);
    assert!(verdicts(&d, &second).iter().all(|v| *v == Verdict::New));
    drop(d);

    let d = Dedup::open(&path, DedupOptions::default(), clock.clone()).unwrap();
    let added = d.reindex(tail(&wal, d.checkpoint())).unwrap();
    assert_eq!(added, 100);
    assert_eq!(d.checkpoint(), 200);
    let all: Vec<Key> = (0..200).map(k).collect();
    assert!(verdicts(&d, &all).iter().all(|v| *v == Verdict::Duplicate));
    assert!(verdicts(&d, &failed).iter().all(|v| *v == Verdict::New));
    // Re-indexing again (or from the start) adds nothing.
    assert_eq!(d.reindex(tail(&wal, 0)).unwrap(), 0);
    assert_eq!(d.stats().ids_held, 200);
}

/// The dedup index's tables, by name (read after the handle is gone).
fn tables(path: &Path) -> Vec<String> {
    use redb::TableHandle;
    let db = redb::Database::open(path).unwrap();
    let tx = db.begin_read().unwrap();
    let names = tx.list_tables().unwrap().map(|t| t.name().to_owned());
    names.collect()
}

#[test]
fn a_seal_lost_in_a_crash_is_redone_after_reindexing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dedup.redb");
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_750_000_000),
    ));
    let now = || ferry::dedup::Clock::now(&*clock);
    // 100 ids per generation, runs of at most 16, no timed durable commit.
    let opts = || DedupOptions {
        capacity: 400,
        max_run_ids: 16,
        sync_interval: Duration::from_secs(3600),
        ..DedupOptions::default()
    };
    let d = Dedup::open(&path, opts(), clock.clone()).unwrap();
    let mut wal: Wal = Vec::new();
    // Generation 0 fills with 0..100 in batches of 10, durably.
    for b in 0..10u64 {
        let keys: Vec<Key> = (b * 10..b * 10 + 10).map(k).collect();
        block_on(d.begin(&keys))
            .unwrap()
            .commit(b * 10..b * 10 + 10);
        wal.extend(
            keys.iter()
                .enumerate()
                .map(|(i, &k)| (b * 10 + i as u64, k, now())),
        );
        d.write_non_durable().unwrap();
    }
    d.flush().unwrap();
    // 100..150 start generation 1, which seals generation 0; the process
    // dies before the writer writes any of it.
    d.hold_writer();
    let more: Vec<Key> = (100..150).map(k).collect();
    block_on(d.begin(&more)).unwrap().commit(100..150);
    wal.extend(
        more.iter()
            .enumerate()
            .map(|(i, &k)| (100 + i as u64, k, now())),
    );
    d.crash();
    // Generation 0 is still in runs; nothing is sealed.
    let t = tables(&path);
    let g0 = format!("{:020}", 0);
    assert!(t.contains(&format!("chunks_{g0}")), "{t:?}");
    assert!(!t.iter().any(|n| n.starts_with("sealed_")), "{t:?}");

    let d = Dedup::open(&path, opts(), clock.clone()).unwrap();
    assert_eq!(d.checkpoint(), 100);
    assert_eq!(d.reindex(tail(&wal, d.checkpoint())).unwrap(), 50);
    d.flush().unwrap();
    let all: Vec<Key> = (0..150).map(k).collect();
    assert!(verdicts(&d, &all).iter().all(|v| *v == Verdict::Duplicate));
    assert_eq!(d.stats().ids_held, 150);
    drop(d);
    // The re-indexed ids started generation 1 again, so generation 0 was
    // sealed again: one run in its sealed table, its chunk table gone.
    let t = tables(&path);
    assert!(t.contains(&format!("sealed_{g0}")), "{t:?}");
    assert!(!t.contains(&format!("chunks_{g0}")), "{t:?}");
    let d = Dedup::open(&path, opts(), clock.clone()).unwrap();
    assert!(verdicts(&d, &all).iter().all(|v| *v == Verdict::Duplicate));
}

const CHILD_ENV: &str = "FERRY_DEDUP_CRASH_CHILD";

fn child_keys() -> (Vec<Key>, Vec<Key>) {
    ((0..500).map(k).collect(), (500..1500).map(k).collect())
}

/// The child process of the test below: indexes a durably, b non-durably,
/// then dies without any clean-up.
fn crash_child(dir: &Path) -> ! {
    let path = dir.join("dedup.redb");
    let opts = DedupOptions {
        sync_interval: Duration::from_secs(3600),
        ..DedupOptions::default()
    };
    let d = Dedup::open(&path, opts, Arc::new(SystemClock)).unwrap();
    let (a, b) = child_keys();
    block_on(d.begin(&a)).unwrap().commit(0..500);
    d.flush().unwrap();
    block_on(d.begin(&b)).unwrap().commit(500..1500);
    d.write_non_durable().unwrap();
    assert_eq!(d.stats().pending, 0, "b is written (not synced)");
    std::process::abort();
}

/// Runs itself again as a child process that aborts in [`crash_child`],
/// then opens what the child left.
#[test]
fn process_abort_after_non_durable_commits() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        crash_child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "process_abort_after_non_durable_commits",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the child must die by abort: {out:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let path = dir.path().join("dedup.redb");
    let (a, b) = child_keys();
    let start = SystemTime::now();
    let wal: Wal = a
        .iter()
        .chain(&b)
        .enumerate()
        .map(|(i, &k)| (i as u64, k, start))
        .collect();
    let d = Dedup::open(&path, DedupOptions::default(), Arc::new(SystemClock)).unwrap();
    // redb recovered to its last durable commit: a's, with its checkpoint.
    assert_eq!(d.checkpoint(), 500);
    assert!(verdicts(&d, &a).iter().all(|v| *v == Verdict::Duplicate));
    assert_eq!(d.reindex(tail(&wal, d.checkpoint())).unwrap(), 1000);
    assert_eq!(d.checkpoint(), 1500);
    assert!(verdicts(&d, &b).iter().all(|v| *v == Verdict::Duplicate));
    assert_eq!(verdicts(&d, &[k(9999)]), [Verdict::New]);
}
