//! Crash-kill loop against the real binary: client tasks send batches for
//! many users (retrying unacknowledged ones, as SDKs do) while `ferry serve`
//! is SIGKILLed at seeded random moments (during ingestion, mid-delivery,
//! right after retention deleted segments; small segments so rolls happen)
//! and restarted, again and again. At the end everything drains to the
//! tests' webhook on 127.0.0.1. Every acknowledged event is delivered at least once,
//! first deliveries keep per-user order, nothing unsent is delivered, and
//! duplicates are counted. `FERRY_CRASH_CYCLES` (default 10) and
//! `FERRY_CRASH_SEED` choose the run; `scripts/crash-loop.sh` runs a long one.

mod common;

use common::env::env_or;
use common::events::{batch, step, user_seq};
use common::spawn_server;
use common::webhook::{first_deliveries, Reply, Webhook};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const CLIENTS: usize = 4;
const USERS_PER_CLIENT: usize = 6;
const BATCH: usize = 5;
const WINDOW: usize = 300;
const KEY: &str = "wk_crash_loop";
/// Clients wait while more acknowledged events than this await delivery,
/// so the backlog (and the final drain) stays short.
const MAX_BACKLOG: usize = 1000;

/// The server clients talk to: a generation number and, while one runs, its URL.
type Current = watch::Receiver<(u64, Option<String>)>;

/// Ids a client has sent (some may be unacknowledged) and those acknowledged.
#[derive(Default)]
struct Ledger {
    sent: HashSet<String>,
    acked: Vec<String>,
}

/// One client: batches for its own users, each batch retried (same
/// messageIds) on the next server until acknowledged; stops when `stop` is set.
async fn client(
    c: usize,
    mut current: Current,
    stop: watch::Receiver<bool>,
    ledger: Arc<Mutex<Ledger>>,
    acks: Arc<watch::Sender<usize>>,
    mut delivered: watch::Receiver<Vec<String>>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut seq = [0u64; USERS_PER_CLIENT];
    for b in 0u64.. {
        if *stop.borrow() {
            return;
        }
        let acked_now = *acks.borrow();
        delivered
            .wait_for(|d| acked_now < d.len() + MAX_BACKLOG)
            .await
            .expect("the test keeps the channel");
        let events: Vec<Value> = (0..BATCH)
            .map(|k| {
                let u = (b as usize * 7 + k * 3) % USERS_PER_CLIENT;
                seq[u] += 1;
                step(&format!("c{c}u{u}"), seq[u]).pad(40).json()
            })
            .collect();
        let ids: Vec<String> = events
            .iter()
            .map(|e| e["messageId"].as_str().unwrap().to_string())
            .collect();
        ledger.lock().unwrap().sent.extend(ids.iter().cloned());
        let body = batch(events);
        loop {
            let (generation, url) = current
                .wait_for(|(_, url)| url.is_some())
                .await
                .map(|v| v.clone())
                .expect("the test keeps the channel");
            let url = url.unwrap();
            let sent = http
                .post(format!("{url}/v1/batch"))
                .basic_auth(KEY, Some(""))
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status() == 200 => break,
                Ok(r) => panic!("client {c}: unexpected status {}", r.status()),
                // The server was killed: retry the same batch on the next one.
                Err(_) => {
                    current
                        .wait_for(|(g, url)| *g > generation && url.is_some())
                        .await
                        .expect("the test keeps the channel");
                }
            }
        }
        ledger.lock().unwrap().acked.extend(ids);
        acks.send_modify(|n| *n += BATCH);
    }
}

/// The lowest segment base in the log directory, if any.
fn lowest_segment(log_dir: &Path) -> Option<u64> {
    std::fs::read_dir(log_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            ferry::log::segment::parse_segment_file_name(&e.file_name().to_string_lossy())
        })
        .min()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_loses_nothing_acknowledged_and_keeps_user_order() {
    let cycles: usize = env_or("FERRY_CRASH_CYCLES", 10);
    let seed: u64 = env_or("FERRY_CRASH_SEED", 0x00fe_7721);
    eprintln!(
        "crash-kill loop: {cycles} cycles, seed {seed} (FERRY_CRASH_CYCLES, FERRY_CRASH_SEED)"
    );
    let mut rng = StdRng::seed_from_u64(seed);

    // A destination of uneven speed, so kills land while requests are in flight.
    let hook = Webhook::builder()
        .otherwise(|id, _| {
            let h = id
                .bytes()
                .fold(7u64, |a, b| a.wrapping_mul(31) ^ u64::from(b));
            let delay = Duration::from_millis(if h % 4 == 0 { h % 5 } else { 0 });
            Some(Reply::ok().after(delay))
        })
        .start()
        .await;
    let (hook_url, delivered_rx) = (hook.url(), hook.delivered.subscribe());

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.toml");
    // Small segments: rolls on every few requests, and retention (no
    // min_retention) deletes delivered segments every 5 s.
    std::fs::write(
        &config,
        format!(
            "[[sources]]\nname = \"app\"\nwrite_key = \"{KEY}\"\n\n[log]\nsegment_bytes = 16384\nmin_free_bytes = 0\n\n[[destinations]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{hook_url}\"\nconcurrency = 4\nwindow = {WINDOW}\ntimeout = \"5s\"\n[destinations.retry]\nbase = \"10ms\"\ncap = \"100ms\"\n"
        ),
    )
    .unwrap();
    let args: Vec<String> = vec![
        "--config".into(),
        config.to_str().unwrap().into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        "data".into(),
    ];
    let log_dir = dir.path().join("data/log");
    let start = |args: Vec<String>, cwd: std::path::PathBuf| async move {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            spawn_server(&cwd, &args, &[])
        })
        .await
        .unwrap()
    };

    let (current_tx, current_rx) = watch::channel((0u64, None::<String>));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (acks_tx, acks_rx) = watch::channel(0usize);
    let acks_tx = Arc::new(acks_tx);
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(client(
                c,
                current_rx.clone(),
                stop_rx.clone(),
                ledger.clone(),
                acks_tx.clone(),
                delivered_rx.clone(),
            ))
        })
        .collect();

    let mut kinds: HashMap<&str, usize> = HashMap::new();
    let mut retention_seen = 0;
    for cycle in 0..cycles {
        let mut server = start(args.clone(), dir.path().to_path_buf()).await;
        current_tx.send_replace((cycle as u64 + 1, Some(format!("http://{}", server.addr))));
        // One cycle in eight (the second one first) waits for retention.
        let kind = if cycle % 8 == 1 {
            "retention"
        } else if rng.random_bool(0.5) {
            "ingestion"
        } else {
            "delivery"
        };
        *kinds.entry(kind).or_default() += 1;
        let bound = Duration::from_secs(30);
        match kind {
            "ingestion" => {
                let target = *acks_rx.borrow() + rng.random_range(1..200);
                let mut rx = acks_rx.clone();
                tokio::time::timeout(bound, rx.wait_for(|n| *n >= target))
                    .await
                    .expect("ingestion stalled")
                    .unwrap();
            }
            "delivery" => {
                let target = hook.delivered.len() + rng.random_range(1..400);
                let mut rx = delivered_rx.clone();
                tokio::time::timeout(bound, rx.wait_for(|d| d.len() >= target))
                    .await
                    .expect("delivery stalled")
                    .unwrap();
            }
            _ => {
                // An external process's directory: poll it, bounded.
                let before = lowest_segment(&log_dir);
                let deleted = tokio::time::timeout(Duration::from_secs(20), async {
                    let mut tick = tokio::time::interval(Duration::from_millis(10));
                    loop {
                        tick.tick().await;
                        if lowest_segment(&log_dir) > before {
                            return;
                        }
                    }
                })
                .await;
                deleted.expect("retention never deleted a delivered segment");
                retention_seen += 1;
            }
        }
        // A random moment shortly after the condition.
        let jitter = rng.random_range(0..15);
        if jitter > 0 {
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        current_tx.send_replace((cycle as u64 + 1, None));
    }

    // The last run: clients finish their batch, then everything drains.
    let server = start(args.clone(), dir.path().to_path_buf()).await;
    current_tx.send_replace((cycles as u64 + 1, Some(format!("http://{}", server.addr))));
    stop_tx.send_replace(true);
    for c in clients {
        tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("a client hung")
            .unwrap();
    }
    let (sent, acked) = {
        let l = ledger.lock().unwrap();
        (l.sent.clone(), l.acked.clone())
    };
    let want: HashSet<&String> = acked.iter().collect();
    let mut rx = delivered_rx.clone();
    let drained = matches!(
        tokio::time::timeout(
            Duration::from_secs(90),
            rx.wait_for(|seen| {
                let seen: HashSet<&String> = seen.iter().collect();
                want.iter().all(|id| seen.contains(*id))
            }),
        )
        .await,
        Ok(Ok(_))
    );
    let seen = hook.delivered.snapshot();
    let seen_set: HashSet<&String> = seen.iter().collect();
    let missing: Vec<&&String> = want
        .iter()
        .filter(|id| !seen_set.contains(**id))
        .take(10)
        .collect();
    assert!(
        drained,
        "acknowledged events never delivered, e.g. {missing:?}"
    );
    assert!(server.terminate().success(), "graceful stop after the loop");

    // Nothing delivered that was never sent; per-user order over first deliveries.
    for id in &seen {
        assert!(
            sent.contains(id),
            "delivered an event that was never sent: {id}"
        );
    }
    let once = first_deliveries(&seen);
    let mut first_seq: HashMap<&str, u64> = HashMap::new();
    for id in &once {
        let (user, s) = user_seq(id);
        if let Some(prev) = first_seq.insert(user, s) {
            assert!(
                prev < s,
                "user {user}: event {s} first delivered after {prev}"
            );
        }
    }
    let duplicates = seen.len() - once.len();
    eprintln!(
        "crash-kill loop: {cycles} kills ({kinds:?}; retention observed {retention_seen}×), {} sent, {} acknowledged, {} delivered, {} deliveries, {duplicates} duplicates",
        sent.len(),
        acked.len(),
        once.len(),
        seen.len()
    );
    assert!(
        duplicates <= cycles * (WINDOW + CLIENTS * BATCH),
        "duplicates ({duplicates}) exceed one window plus one batch per client per kill"
    );
    assert!(acked.len() >= cycles, "the clients made progress");

    // The log the loop left behind verifies clean.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["log", "verify", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ferry log verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
