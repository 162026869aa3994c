//! Durable append throughput of the write-ahead log, beside the disk's own
//! limits measured in the same run (plain write + fdatasync loops).
//!
//! Run: `cargo bench --bench log_append` (env: FERRY_BENCH_DIR to pick the
//! disk, FERRY_BENCH_SECS per measurement, FERRY_BENCH_RUNS repetitions).
//! Prints one table; each figure is the median of the runs.

use ferry::log::{Log, LogOptions};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;

use common::{env_or, median};

/// fdatasyncs per second for 4 KiB appends, one sync each.
fn raw_fsync_rate(dir: &Path, secs: Duration) -> f64 {
    let path = dir.join("raw-fsync");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .unwrap();
    let block = vec![7u8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < secs {
        f.write_all(&block).unwrap();
        f.sync_data().unwrap();
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(path).unwrap();
    rate
}

/// Sequential write bandwidth (MB/s) of 256 MiB in 1 MiB writes ending in one fdatasync.
fn raw_write_bandwidth(dir: &Path) -> f64 {
    let path = dir.join("raw-seq");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .unwrap();
    let block = vec![7u8; 1 << 20];
    let start = Instant::now();
    for _ in 0..256 {
        f.write_all(&block).unwrap();
    }
    f.sync_data().unwrap();
    let mbps = 256.0 * 1_048_576.0 / 1e6 / start.elapsed().as_secs_f64();
    std::fs::remove_file(path).unwrap();
    mbps
}

struct Run {
    records_per_s: f64,
    mb_per_s: f64,
    fsyncs_per_s: f64,
    records_per_fsync: f64,
}

fn log_run(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    size: usize,
    appenders: usize,
    per_append: usize,
    secs: Duration,
) -> Run {
    let log_dir = dir.join(format!("log-{size}-{appenders}"));
    let _ = std::fs::remove_dir_all(&log_dir);
    let log = Log::open(
        &log_dir,
        LogOptions {
            min_free_bytes: 0,
            ..LogOptions::default()
        },
    )
    .unwrap();
    let before = log.stats();
    let start = Instant::now();
    let deadline = start + secs;
    let written: u64 = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..appenders {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let batch = vec![vec![b'x'; size]; per_append];
                let mut n = 0u64;
                while Instant::now() < deadline {
                    log.append(batch.clone()).await.unwrap();
                    n += per_append as u64;
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
    let elapsed = start.elapsed().as_secs_f64();
    let after = log.stats();
    drop(log);
    std::fs::remove_dir_all(&log_dir).unwrap();
    let fsyncs = (after.fsyncs - before.fsyncs) as f64;
    Run {
        records_per_s: written as f64 / elapsed,
        mb_per_s: written as f64 * size as f64 / 1e6 / elapsed,
        fsyncs_per_s: fsyncs / elapsed,
        records_per_fsync: written as f64 / fsyncs.max(1.0),
    }
}

fn main() {
    // `cargo test --benches` passes --bench-less flags; only run under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let base: PathBuf = std::env::var_os("FERRY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/bench-data"));
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let secs = Duration::from_secs(env_or("FERRY_BENCH_SECS", 2));
    let runs = env_or("FERRY_BENCH_RUNS", 3) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let fsync_rate = median(
        (0..runs)
            .map(|_| raw_fsync_rate(dir.path(), secs))
            .collect(),
    );
    let bandwidth = median((0..runs).map(|_| raw_write_bandwidth(dir.path())).collect());
    println!("disk baseline (median of {runs}): {fsync_rate:.0} fdatasync/s (4 KiB write + fdatasync loop), {bandwidth:.1} MB/s sequential (256 MiB, 1 MiB writes, one fdatasync)");
    println!();
    // Warm-up (discarded): first file extents, page cache, thread start.
    log_run(&rt, dir.path(), 1024, 8, 1, secs);
    println!("| record | appenders | records per append | records/s | MB/s | fsyncs/s | records/fsync | vs disk |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut configs = Vec::new();
    for size in [100usize, 1024, 10 * 1024] {
        for appenders in [1usize, 8, 64] {
            configs.push((size, appenders, 1usize));
        }
    }
    // Appends the size of an HTTP batch request, as ingestion issues them.
    configs.push((1024, 8, 100));
    configs.push((1024, 64, 100));
    {
        for (size, appenders, per_append) in configs {
            let rs: Vec<Run> = (0..runs)
                .map(|_| log_run(&rt, dir.path(), size, appenders, per_append, secs))
                .collect();
            let rec = median(rs.iter().map(|r| r.records_per_s).collect());
            let mb = median(rs.iter().map(|r| r.mb_per_s).collect());
            let fs = median(rs.iter().map(|r| r.fsyncs_per_s).collect());
            let per = median(rs.iter().map(|r| r.records_per_fsync).collect());
            let vs = if appenders == 1 && per_append == 1 {
                format!("{:.0} % of fsync rate", 100.0 * fs / fsync_rate)
            } else {
                format!("{:.0} % of bandwidth", 100.0 * mb / bandwidth)
            };
            println!("| {size} B | {appenders} | {per_append} | {rec:.0} | {mb:.1} | {fs:.0} | {per:.1} | {vs} |");
        }
    }
}
