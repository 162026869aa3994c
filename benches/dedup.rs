//! Dedup figures at scale: lookup rate of new ids (bloom says "definitely
//! new"), duplicate lookups (bloom hit confirmed in redb), insert rate, bloom
//! memory, redb file size, and restart time (clean and after a crash) with
//! N distinct ids in the window (default 10M, the default capacity).
//!
//! Run: `cargo bench --bench dedup` (env: FERRY_BENCH_IDS ids to insert,
//! FERRY_BENCH_DIR disk to use, FERRY_BENCH_RUNS repetitions of the rate
//! measurements). Prints one table; rates are medians of the runs.

use ferry::dedup::{Dedup, DedupOptions, Key, ManualClock, Verdict};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

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

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test` builds and runs benches without --bench
    }
    let total = env_or("FERRY_BENCH_IDS", 10_000_000);
    let runs = env_or("FERRY_BENCH_RUNS", 3) as usize;
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

    // Fill: `total` distinct ids spread over 23 h (all inside the window), in
    // requests of 100, as ingestion would commit them after each WAL fsync.
    let d = Dedup::open(&path, opts.clone(), clock.clone()).unwrap();
    let tick = Duration::from_millis(23 * 3600 * 1000 * BATCH / total.max(1));
    let start = Instant::now();
    rt.block_on(async {
        let mut offset = 0;
        let mut batch = Vec::with_capacity(BATCH as usize);
        while offset < total {
            batch.clear();
            batch.extend((offset..(offset + BATCH).min(total)).map(|i| key("held", i)));
            let t = d.begin(&batch).await.unwrap();
            let n = t.new_keys().len() as u64;
            t.commit(offset..offset + n);
            offset += batch.len() as u64;
            clock.advance(tick);
        }
    });
    d.flush().unwrap();
    let fill = start.elapsed();
    let s = d.stats();
    assert_eq!(s.ids_held, total, "{s:?}");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| insert (begin + commit + batched redb writes, flushed) | {:.0} ids/s ({:.1} s for {total}) |", total as f64 / fill.as_secs_f64(), fill.as_secs_f64());
    println!(
        "| bloom memory ({} generations held) | {:.1} MiB |",
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
        "| redb file after {total} ids (clean close) | {:.1} MiB ({:.1} bytes/id) |",
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
        "| restart after clean close (open, filters loaded) | {:.2} s |",
        median(clean)
    );

    // Restart after a crash: redb recovery plus a rebuild of the active
    // generation's filter from its table.
    let d = Dedup::open(&path, opts.clone(), clock.clone()).unwrap();
    rt.block_on(async {
        let keys: Vec<Key> = (0..1000).map(|i| key("late", i)).collect();
        d.begin(&keys).await.unwrap().commit(total..total + 1000);
    });
    d.flush().unwrap();
    d.crash();
    let start = Instant::now();
    let d = Dedup::open(&path, opts.clone(), clock.clone()).unwrap();
    let crash = start.elapsed().as_secs_f64();
    assert_eq!(d.stats().ids_held, total + 1000);
    println!("| restart after a crash (redb recovery + active filter rebuilt) | {crash:.2} s |");
    println!("| redb file at the end | {:.1} MiB |", file_mib(&path));
}
