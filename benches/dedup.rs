//! Dedup figures at scale: lookup rate of new ids (bloom says "definitely
//! new"), duplicate lookups (bloom hit confirmed in redb), insert rate, bloom
//! memory, redb file size, and restart time (clean and after a crash) with
//! N distinct ids in the window (default 10M, the default capacity).
//!
//! Also: durable log appends with dedup on vs off in the same run (the
//! ingest path minus HTTP), and the crash restart measured after a real
//! `abort()` of a child process (redb recovery + filter rebuild).
//!
//! Run: `cargo bench --bench dedup` (env: FERRY_BENCH_IDS ids to insert,
//! FERRY_BENCH_DIR disk to use, FERRY_BENCH_RUNS repetitions of the rate
//! measurements, FERRY_BENCH_SECS per on/off append run). Prints one table;
//! rates and times are medians of the runs.

use ferry::dedup::{Clock, Dedup, DedupOptions, Key, ManualClock, Verdict};
use ferry::log::{Log, LogOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

mod common;

use common::{current_thread_cpu_us, env_or, median, thread_cpu_us};

fn key(prefix: &str, i: u64) -> Key {
    Key::new("bench-source", &format!("{prefix}-{i:016x}"))
}

const BATCH: u64 = 100;

/// begin() + abort() on batches of never-seen ids: keys per second.
fn new_id_rate(rt: &tokio::runtime::Runtime, d: &Dedup, run: u64, n: u64) -> f64 {
    let keys: Vec<Key> = (0..n).map(|i| key(&format!("fresh{run}"), i)).collect();
    let start = Instant::now();
    rt.block_on(async {
        for chunk in keys.chunks(BATCH as usize) {
            let t = d.begin(chunk).await.unwrap();
            debug_assert!(t.verdicts().iter().all(|v| *v == Verdict::New));
            t.abort();
        }
    });
    n as f64 / start.elapsed().as_secs_f64()
}

/// begin() on batches of held ids: keys per second (every key a bloom hit
/// confirmed by a redb read).
fn duplicate_rate(rt: &tokio::runtime::Runtime, d: &Dedup, total: u64, n: u64, seed: u64) -> f64 {
    let step = (total / n).max(1);
    let keys: Vec<Key> = (0..n)
        .map(|i| key("held", (i * step + seed) % total))
        .collect();
    let start = Instant::now();
    rt.block_on(async {
        for chunk in keys.chunks(BATCH as usize) {
            let t = d.begin(chunk).await.unwrap();
            assert!(t.verdicts().iter().all(|v| *v == Verdict::Duplicate));
        }
    });
    n as f64 / start.elapsed().as_secs_f64()
}

fn file_mib(p: &Path) -> f64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64 / (1 << 20) as f64
}

/// In the child process: finish filling the active generation, sync it,
/// add more without a sync, and die without any clean-up.
fn crash_child(path: &Path, start_ms: u64, from: u64, n: u64) -> ! {
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_millis(start_ms),
    ));
    let d = Dedup::open(path, DedupOptions::default(), clock).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for (i, chunk) in (from..from + n)
            .collect::<Vec<_>>()
            .chunks(BATCH as usize)
            .enumerate()
        {
            let keys: Vec<Key> = chunk.iter().map(|&i| key("held", i)).collect();
            let t = d.begin(&keys).await.unwrap();
            let at = from + i as u64 * BATCH;
            t.commit(at..at + keys.len() as u64);
        }
        d.flush().unwrap();
        let keys: Vec<Key> = (0..1000).map(|i| key("unsynced", i)).collect();
        d.begin(&keys)
            .await
            .unwrap()
            .commit(from + n..from + n + 1000);
        d.write_non_durable().unwrap();
    });
    std::process::abort();
}

/// Durable appends of 100-record requests (300 B each) by 8 tasks for
/// `secs`: records per second, with every request going through dedup
/// (begin → append → commit) or not, and the CPU each kind of thread spent
/// per request (µs: runtime workers, log writer, index writer).
fn append_rate(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    d: Option<&Dedup>,
    run: u64,
    secs: Duration,
) -> (f64, [f64; 3]) {
    let log_dir = dir.join(format!("log-{run}-{}", d.is_some()));
    let log = Log::open(
        &log_dir,
        LogOptions {
            min_free_bytes: 0,
            ..LogOptions::default()
        },
    )
    .unwrap();
    let cpu = || THREADS.map(thread_cpu_us);
    let cpu_before = cpu();
    let deadline = Instant::now() + secs;
    let start = Instant::now();
    let written: u64 = rt.block_on(async {
        let mut tasks = Vec::new();
        for task in 0..8u64 {
            let (log, d) = (log.clone(), d.cloned());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let keys: Vec<Key> = (0..BATCH)
                        .map(|j| key(&format!("ingest{run}-{task}"), i * BATCH + j))
                        .collect();
                    i += 1;
                    let ticket = match &d {
                        Some(d) => Some(d.begin(&keys).await.unwrap()),
                        None => None,
                    };
                    let count = ticket
                        .as_ref()
                        .map_or(BATCH as usize, |t| t.new_keys().len());
                    let records = vec![vec![b'x'; 300]; count];
                    let offsets = log.append(records).await.unwrap();
                    if let Some(t) = ticket {
                        t.commit(offsets);
                    }
                    n += count as u64;
                }
                n
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    });
    let rate = written as f64 / start.elapsed().as_secs_f64();
    let cpu_after = cpu();
    let requests = (written / BATCH).max(1) as f64;
    let per_request = std::array::from_fn(|i| (cpu_after[i] - cpu_before[i]) / requests);
    drop(log);
    let _ = std::fs::remove_dir_all(&log_dir);
    (rate, per_request)
}

/// Thread name prefixes of the append runs: the runtime's workers, the log's
/// writer, the dedup index's writer.
const THREADS: [&str; 3] = ["bench-worker", "ferry-log", "ferry-dedup"];

fn main() {
    if let Ok(spec) = std::env::var("FERRY_BENCH_CHILD") {
        let v: Vec<&str> = spec.split(',').collect();
        crash_child(
            Path::new(v[0]),
            v[1].parse().unwrap(),
            v[2].parse().unwrap(),
            v[3].parse().unwrap(),
        );
    }
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test` builds and runs benches without --bench
    }
    let total = env_or("FERRY_BENCH_IDS", 10_000_000);
    let runs = env_or("FERRY_BENCH_RUNS", 3) as usize;
    let secs = Duration::from_secs(env_or("FERRY_BENCH_SECS", 5));
    let base = std::env::var_os("FERRY_BENCH_DIR").map(std::path::PathBuf::from);
    let dir = match &base {
        Some(b) => tempfile::tempdir_in(b).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let path = dir.path().join("dedup.redb");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_750_000_000),
    ));
    let opts = DedupOptions::default();
    println!(
        "ids: {total}; options: window 24 h, capacity {}, fp {}, {} generations",
        opts.capacity, opts.false_positive_rate, opts.generations
    );

    // Fill: all but the last `tail` ids, spread over 23 h (inside the
    // window), in requests of 100 committed as ingestion would after each
    // WAL fsync. The child process adds the tail, then crashes.
    let tail = (total / 100).clamp(1, 100_000);
    let d = Dedup::open(&path, opts.clone(), clock.clone()).unwrap();
    let tick = Duration::from_millis(23 * 3600 * 1000 * BATCH / total.max(1));
    // What making a key costs this thread (formatting and hashing its id),
    // to take out of the fill's CPU below.
    let probe = 2_000_000u64;
    let cpu0 = current_thread_cpu_us();
    for i in 0..probe {
        std::hint::black_box(key("probe", i));
    }
    let key_us = (current_thread_cpu_us() - cpu0) / probe as f64;
    let (caller0, writer0) = (current_thread_cpu_us(), thread_cpu_us("ferry-dedup"));
    let start = Instant::now();
    rt.block_on(async {
        let mut offset = 0;
        let mut batch = Vec::with_capacity(BATCH as usize);
        while offset < total - tail {
            batch.clear();
            batch.extend((offset..(offset + BATCH).min(total - tail)).map(|i| key("held", i)));
            let t = d.begin(&batch).await.unwrap();
            let n = t.new_keys().len() as u64;
            t.commit(offset..offset + n);
            offset += batch.len() as u64;
            clock.advance(tick);
        }
    });
    d.flush().unwrap();
    let fill = start.elapsed();
    let filled = total - tail;
    let requests = filled.div_ceil(BATCH) as f64;
    let caller = (current_thread_cpu_us() - caller0) / requests - key_us * BATCH as f64;
    let writer = (thread_cpu_us("ferry-dedup") - writer0) / requests;
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| insert (begin + commit + batched redb writes, flushed) | {:.0} ids/s ({:.1} s for {filled}) |",
        filled as f64 / fill.as_secs_f64(),
        fill.as_secs_f64()
    );
    println!(
        "| CPU per 100-id request during that fill (making the keys excluded) | calling thread {caller:.1} µs, index writer {writer:.1} µs |"
    );
    drop(d);

    // The child finishes the active generation and dies by abort().
    let spec = format!("{},{},{},{}", path.display(), ms(clock.now()), filled, tail);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("FERRY_BENCH_CHILD", spec)
        .output()
        .unwrap();
    assert!(!out.status.success(), "child must abort: {out:?}");
    let start = Instant::now();
    let d = Dedup::open(&path, opts.clone(), clock.clone()).unwrap();
    let crash = start.elapsed().as_secs_f64();
    let s = d.stats();
    assert_eq!(s.ids_held, total, "{s:?}");
    assert_eq!(
        d.checkpoint(),
        total,
        "the unsynced 1000 are lost with redb's rollback"
    );
    let per_gen = opts.capacity.div_ceil(u64::from(opts.generations));
    println!(
        "| restart after kill (abort) of a writer: redb recovery + rebuild of the active filter ({} ids) | {crash:.2} s |",
        (total - 1) % per_gen + 1
    );
    println!(
        "| bloom memory (the filter region, every slot; {} generations held) | {:.1} MiB |",
        s.generations,
        s.bloom_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "| estimated false-positive rate | {:.4} |",
        s.false_positive_rate
    );

    // Warm-up, then the measured runs.
    new_id_rate(&rt, &d, 99, 100_000);
    let rates: Vec<f64> = (0..runs as u64)
        .map(|r| new_id_rate(&rt, &d, r, 1_000_000))
        .collect();
    println!(
        "| lookup of new ids (begin + abort, batches of {BATCH}) | {:.0} ids/s |",
        median(rates)
    );
    let n = 200_000.min(total);
    let dups: Vec<f64> = (0..runs as u64)
        .map(|r| duplicate_rate(&rt, &d, total, n, r))
        .collect();
    println!(
        "| lookup of held ids (bloom hit + redb read) | {:.0} ids/s |",
        median(dups)
    );
    let measured_fp = {
        let keys: Vec<Key> = (0..200_000).map(|i| key("fp", i)).collect();
        let mut hits = 0usize;
        rt.block_on(async {
            for chunk in keys.chunks(BATCH as usize) {
                let t = d.begin(chunk).await.unwrap();
                hits += chunk.len() - t.new_keys().len();
            }
        });
        hits as f64 / keys.len() as f64
    };
    println!("| false duplicates among 200k new ids (must be 0) | {measured_fp} |");
    drop(d);
    println!(
        "| redb file with {total} ids (clean close) | {:.1} MiB ({:.1} bytes/id) |",
        file_mib(&path),
        file_mib(&path) * (1 << 20) as f64 / total as f64
    );

    // Restart after a clean close: filters load from their persisted copies.
    let mut clean = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let d = Dedup::open(&path, opts.clone(), clock.clone()).unwrap();
        clean.push(start.elapsed().as_secs_f64());
        assert_eq!(d.stats().ids_held, total);
        drop(d);
    }
    println!(
        "| restart after clean close (open, filters loaded) | {:.3} s |",
        median(clean)
    );

    // Durable appends with dedup on vs off, alternating (on, off, off, on,
    // …: a steady drift favours neither), same run.
    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-worker")
        .enable_all()
        .build()
        .unwrap();
    let d = Dedup::open(&path, opts.clone(), clock.clone()).unwrap();
    append_rate(&mt, dir.path(), None, 100, Duration::from_secs(1)); // warm-up
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for r in 0..runs as u64 {
        for dedup_on in [r % 2 == 0, r % 2 == 1] {
            if dedup_on {
                on.push(append_rate(&mt, dir.path(), Some(&d), r, secs));
            } else {
                off.push(append_rate(&mt, dir.path(), None, r, secs));
            }
        }
    }
    let cpu = |v: &[(f64, [f64; 3])], i: usize| median(v.iter().map(|x| x.1[i]).collect());
    let (on_rate, off_rate) = (
        median(on.iter().map(|x| x.0).collect()),
        median(off.iter().map(|x| x.0).collect()),
    );
    println!(
        "| durable appends, 8 tasks × 100-record requests of 300 B: dedup off / on | {off_rate:.0} / {on_rate:.0} records/s ({:.0} %) |",
        100.0 * on_rate / off_rate
    );
    println!(
        "| CPU per 100-record request in those runs, dedup off / on (µs) | request tasks {:.0} / {:.0}, log writer {:.0} / {:.0}, index writer {:.0} / {:.0} |",
        cpu(&off, 0),
        cpu(&on, 0),
        cpu(&off, 1),
        cpu(&on, 1),
        cpu(&off, 2),
        cpu(&on, 2)
    );

    // How much of the file is slack: compact it offline (what open does
    // when the file is over 3x its data). The append runs above added ids.
    let held = d.stats().ids_held;
    drop(d);
    let before = file_mib(&path);
    let mut db = redb::Database::open(&path).unwrap();
    let start = Instant::now();
    db.compact().unwrap();
    drop(db);
    println!(
        "| redb file after the append runs ({held} ids held), compacted offline | {before:.1} → {:.1} MiB in {:.1} s |",
        file_mib(&path),
        start.elapsed().as_secs_f64()
    );
}

fn ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}
