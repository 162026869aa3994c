//! Disk faults seen through the HTTP API, on the fault-injecting storage:
//! fsync EIO under load (also in a segment roll and in retention) stops
//! acknowledgements with 503 and `/health` says why, and a restart on the
//! crash image keeps every acknowledged event; ENOSPC on write answers 503
//! with Retry-After, leaves no part of the refused request after a crash,
//! and ingestion resumes once space returns.

mod common;

use common::events::{batch, track};
use common::{config, expect_error, expect_ok, read_events, start_on, TestServer};
use ferry::log::crash_storage::CrashStorage;
use ferry::log::{Log, LogOptions};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tempfile::TempDir;

/// Crash images checked per scenario.
const SEEDS: u64 = 16;

fn options(segment_bytes: u64) -> LogOptions {
    LogOptions {
        segment_bytes,
        min_free_bytes: 0,
        ..LogOptions::default()
    }
}

/// A server whose log lives on `storage` (at `<dir>/log` there) and the rest
/// of its data in `dir` on disk, so a crash image of that storage can be
/// served again at the same place.
async fn serve(storage: &CrashStorage, segment_bytes: u64, dir: TempDir) -> TestServer {
    let mut c = config();
    c.log.segment_bytes = Some(segment_bytes);
    c.log.min_free_bytes = Some(0);
    start_on(Arc::new(storage.clone()), dir, c).await
}

async fn health(s: &TestServer) -> (u16, Value) {
    let r = s.get("/health").send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn log_dir(s: &TestServer) -> PathBuf {
    s.dir.path().join("log")
}

/// A request of `n` events of user `tag`, messageIds `{tag}-{k}`.
fn tagged_batch(tag: &str, n: usize) -> Value {
    batch((0..n).map(|k| track().id(format!("{tag}-{k}")).user(tag).pad(60)))
}

/// Recovers each crash image and checks: every acknowledged request whole,
/// every stored request whole (never a part), none twice, nothing in `never`.
fn check_images(
    storage: &CrashStorage,
    dir: &Path,
    acked: &[String],
    per_request: usize,
    never: &[&str],
) {
    for seed in 0..SEEDS {
        let image = storage.crash_image(seed);
        let log = Log::open_with(Arc::new(image), dir, options(1 << 20))
            .unwrap_or_else(|e| panic!("seed {seed}: recovery failed: {e}"));
        let events = read_events(&log);
        let mut per_tag: HashMap<String, usize> = HashMap::new();
        let mut ids = HashSet::new();
        for e in &events {
            let id = e["messageId"].as_str().unwrap();
            assert!(ids.insert(id.to_string()), "seed {seed}: {id} stored twice");
            *per_tag
                .entry(e["userId"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        for tag in acked {
            assert_eq!(
                per_tag.get(tag),
                Some(&per_request),
                "seed {seed}: acknowledged request {tag} lost or torn"
            );
        }
        for (tag, n) in &per_tag {
            assert_eq!(*n, per_request, "seed {seed}: request {tag} stored in part");
            assert!(
                !never.contains(&tag.as_str()),
                "seed {seed}: refused request {tag} was stored"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_eio_under_load_stops_acks_and_a_restart_keeps_every_ack() {
    let sim = CrashStorage::new();
    let s = Arc::new(serve(&sim, 4096, tempfile::tempdir().unwrap()).await);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let (count_tx, mut count_rx) = tokio::sync::watch::channel(0usize);
    let count_tx = Arc::new(count_tx);
    let mut clients = Vec::new();
    for c in 0..4 {
        let (s, acked, count_tx) = (s.clone(), acked.clone(), count_tx.clone());
        clients.push(tokio::spawn(async move {
            for n in 0.. {
                let tag = format!("c{c}r{n}");
                let r = s
                    .post("/v1/batch")
                    .json(&tagged_batch(&tag, 3))
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    200 => {
                        acked.lock().unwrap().push(tag);
                        count_tx.send_modify(|k| *k += 1);
                    }
                    503 => {
                        assert!(r.headers().contains_key("retry-after"));
                        expect_error(r, 503, "storage_unavailable").await;
                        return n;
                    }
                    other => panic!("client {c}: status {other}"),
                }
            }
            unreachable!()
        }));
    }
    count_rx.wait_for(|k| *k >= 40).await.unwrap();
    sim.fail_syncs(true);
    for c in clients {
        c.await.unwrap();
    }
    // Stopped for good: later requests are refused too, even with fsync working again.
    sim.fail_syncs(false);
    for k in 0..5 {
        let r = s
            .post("/v1/batch")
            .json(&tagged_batch(&format!("late{k}"), 3))
            .send()
            .await
            .unwrap();
        expect_error(r, 503, "storage_unavailable").await;
    }
    let (status, h) = health(&s).await;
    assert_eq!(
        (status, &h["status"], &h["accepting"]),
        (503, &json!("failed"), &json!(false)),
        "{h}"
    );
    assert!(
        h["log"]["failure"].as_str().unwrap().contains("fdatasync"),
        "{h}"
    );
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 40);
    check_images(
        &sim,
        &log_dir(&s),
        &acked,
        3,
        &["late0", "late1", "late2", "late3", "late4"],
    );

    // Restart on a crash image: recovered, healthy, accepting.
    let image = sim.crash_image(1);
    let dir = Arc::into_inner(s).unwrap().stop_keeping_dir().await;
    let s = serve(&image, 4096, dir).await;
    assert_eq!(health(&s).await.0, 200);
    expect_ok(
        s.post("/v1/batch")
            .json(&tagged_batch("after", 3))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let tags: HashSet<String> = read_events(&s.log)
        .iter()
        .map(|e| e["userId"].as_str().unwrap().to_string())
        .collect();
    assert!(acked.iter().all(|t| tags.contains(t)) && tags.contains("after"));
    s.stop().await;
}

#[tokio::test]
async fn fsync_eio_while_rolling_a_segment_is_reported_and_recovers() {
    let sim = CrashStorage::new();
    // Tiny segments: every request after the first of a segment rolls.
    let s = serve(&sim, 64, tempfile::tempdir().unwrap()).await;
    expect_ok(
        s.post("/v1/batch")
            .json(&tagged_batch("a", 2))
            .send()
            .await
            .unwrap(),
    )
    .await;
    expect_ok(
        s.post("/v1/batch")
            .json(&tagged_batch("b", 2))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let segments_before = s.log.stats().segments;
    sim.fail_syncs(true);
    let r = s
        .post("/v1/batch")
        .json(&tagged_batch("c", 2))
        .send()
        .await
        .unwrap();
    expect_error(r, 503, "storage_unavailable").await;
    let (status, h) = health(&s).await;
    assert_eq!(status, 503);
    assert!(
        h["log"]["failure"].as_str().unwrap().contains("rolling"),
        "{h}"
    );
    assert!(s.log.stats().segments <= segments_before + 1);
    check_images(&sim, &log_dir(&s), &["a".into(), "b".into()], 2, &["c"]);
    s.stop().await;
}

#[tokio::test]
async fn directory_fsync_eio_in_retention_stops_acks_and_leaves_no_gap() {
    let sim = CrashStorage::new();
    let s = serve(&sim, 1024, tempfile::tempdir().unwrap()).await;
    let mut acked = Vec::new();
    for n in 0..12 {
        let tag = format!("r{n}");
        expect_ok(
            s.post("/v1/batch")
                .json(&tagged_batch(&tag, 2))
                .send()
                .await
                .unwrap(),
        )
        .await;
        acked.push(tag);
    }
    assert!(s.log.stats().segments > 4);
    sim.fail_syncs(true);
    let below = s.log.durable_end();
    assert!(s.log.delete_segments_below(below).is_err());
    sim.fail_syncs(false);
    let r = s
        .post("/v1/batch")
        .json(&tagged_batch("refused", 2))
        .send()
        .await
        .unwrap();
    expect_error(r, 503, "storage_unavailable").await;
    let (_, h) = health(&s).await;
    assert!(
        h["log"]["failure"].as_str().unwrap().contains("directory"),
        "{h}"
    );
    // Whatever deletions survive the crash, the log reads from its start
    // without a gap and still ends with the last acknowledged request.
    for seed in 0..SEEDS {
        let log =
            Log::open_with(Arc::new(sim.crash_image(seed)), &log_dir(&s), options(1024)).unwrap();
        let events = read_events(&log);
        assert_eq!(log.durable_end(), below, "seed {seed}");
        assert_eq!(
            events.len() as u64,
            below - log.start_offset(),
            "seed {seed}"
        );
        assert_eq!(events.last().unwrap()["userId"], "r11", "seed {seed}");
    }
    s.stop().await;
}

#[tokio::test]
async fn enospc_on_write_refuses_with_503_stores_nothing_and_resumes() {
    let sim = CrashStorage::new();
    let s = serve(&sim, 4096, tempfile::tempdir().unwrap()).await;
    let mut acked = Vec::new();
    for n in 0..5 {
        let tag = format!("ok{n}");
        expect_ok(
            s.post("/v1/batch")
                .json(&tagged_batch(&tag, 4))
                .send()
                .await
                .unwrap(),
        )
        .await;
        acked.push(tag);
    }
    sim.set_disk_full(true);
    for k in 0..3 {
        let r = s
            .post("/v1/batch")
            .json(&tagged_batch(&format!("full{k}"), 4))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["retry-after"], "1");
        expect_error(r, 503, "storage_full").await;
    }
    let (status, h) = health(&s).await;
    assert_eq!(
        (status, &h["accepting"], &h["log"]["full"]),
        (200, &json!(false), &json!(true)),
        "{h}"
    );
    assert!(h["log"]["failure"].is_null(), "ENOSPC is not fatal: {h}");
    // A crash now: no part of a refused request is visible after recovery.
    check_images(&sim, &log_dir(&s), &acked, 4, &["full0", "full1", "full2"]);

    sim.set_disk_full(false);
    expect_ok(
        s.post("/v1/batch")
            .json(&tagged_batch("back", 4))
            .send()
            .await
            .unwrap(),
    )
    .await;
    acked.push("back".into());
    let (status, h) = health(&s).await;
    assert_eq!((status, &h["accepting"]), (200, &json!(true)), "{h}");
    check_images(&sim, &log_dir(&s), &acked, 4, &["full0", "full1", "full2"]);
    let stored: Vec<String> = read_events(&s.log)
        .iter()
        .map(|e| e["userId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stored.len(), 6 * 4);
    assert!(stored.iter().all(|t| !t.starts_with("full")));
    s.stop().await;
}
