//! Delivery throughput from a pre-filled log to a local HTTP sink on the
//! same machine, in batch mode and single-event mode, and the isolation
//! check (a healthy destination beside a black-holed one).
//!
//! Run: `cargo bench --bench delivery` (env: FERRY_BENCH_EVENTS, default 1000000).

use axum::body::Bytes;
use axum::extract::State;
use ferry::delivery::config::DestinationConfig;
use ferry::delivery::{make_sink, Delivery};
use ferry::log::{Log, LogOptions};
use ferry::store::StateStore;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn count_events(body: &[u8]) -> u64 {
    body.windows(11).filter(|w| *w == b"\"messageId\"").count() as u64
}

async fn sink_handler(State(n): State<Arc<AtomicU64>>, body: Bytes) -> &'static str {
    n.fetch_add(count_events(&body), Ordering::Relaxed);
    "ok"
}

async fn hang_handler() -> &'static str {
    std::future::pending::<()>().await;
    "never"
}

/// Starts a sink server on its own runtime thread; returns its URL and counter.
fn start_sink(hang: bool) -> (String, Arc<AtomicU64>) {
    let counter = Arc::new(AtomicU64::new(0));
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/", std_listener.local_addr().unwrap());
    let c = counter.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = if hang {
                axum::Router::new().route("/", axum::routing::post(hang_handler))
            } else {
                axum::Router::new()
                    .route("/", axum::routing::post(sink_handler))
                    .with_state(c)
            };
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (url, counter)
}

fn event(i: u64) -> Vec<u8> {
    let mut e = format!(
        r#"{{"type":"track","event":"Product Viewed","userId":"user-{}","messageId":"m-{i}","timestamp":"2026-11-26T10:00:00.000Z","properties":{{"sku":"SKU-{i}","price":19.99,"currency":"EUR"}},"_ferry":{{"source":"web"}}}}"#,
        i % 1000
    )
    .into_bytes();
    e.resize(300, b' ');
    e
}

fn dest(name: &str, url: &str, extra: &str) -> DestinationConfig {
    let c: DestinationConfig = toml::from_str(&format!(
        "name='{name}'\ntype='webhook'\nurl='{url}'\ntimeout='1h'\n{extra}\n"
    ))
    .unwrap();
    c.validate().unwrap();
    c
}

/// Delivers the whole log to `dests[0]` (others run beside it); events/s.
fn run(rt: &tokio::runtime::Runtime, events: u64, dests: Vec<DestinationConfig>) -> f64 {
    let tmp = tempfile::tempdir_in("target").unwrap();
    let log = Log::open(
        &tmp.path().join("log"),
        LogOptions {
            min_free_bytes: 0,
            ..LogOptions::default()
        },
    )
    .unwrap();
    rt.block_on(async {
        let mut i = 0;
        while i < events {
            let n = 1000.min(events - i);
            log.append((i..i + n).map(event).collect()).await.unwrap();
            i += n;
        }
    });
    let store = Arc::new(StateStore::open(&tmp.path().join("state.redb")).unwrap());
    let main = dests[0].name.clone();
    let start = Instant::now();
    let rate = rt.block_on(async {
        let pairs = dests
            .iter()
            .map(|d| (d.clone(), make_sink(d).unwrap()))
            .collect();
        let delivery = Delivery::start(log.clone(), store.clone(), pairs).unwrap();
        while delivery.board.get(&main).unwrap_or(0) < events {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let rate = events as f64 / start.elapsed().as_secs_f64();
        drop(delivery);
        rate
    });
    rate
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let events: u64 = std::env::var("FERRY_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (url, counter) = start_sink(false);
    let (black_hole, _) = start_sink(true);

    let batch = run(
        &rt,
        events,
        vec![dest(
            "batch",
            &url,
            "batch_size=100\nconcurrency=8\nwindow=20000",
        )],
    );
    println!("batch mode (100 events/request, 8 requests in flight), {events} events: {batch:.0} events/s");
    let single = run(
        &rt,
        events,
        vec![dest("single", &url, "concurrency=64\nwindow=20000")],
    );
    println!("single-event mode (64 in flight), {events} events: {single:.0} events/s");
    let n = events / 5;
    let alone = run(&rt, n, vec![dest("alone", &url, "concurrency=64")]);
    let beside = run(
        &rt,
        n,
        vec![
            dest("healthy", &url, "concurrency=64"),
            dest("dead", &black_hole, "concurrency=64"),
        ],
    );
    println!(
        "isolation, {n} events single mode: alone {alone:.0} events/s, beside a black-holed destination {beside:.0} events/s ({:.0} %)",
        100.0 * beside / alone
    );
    println!(
        "(sink counted {} events in all)",
        counter.load(Ordering::Relaxed)
    );
}
