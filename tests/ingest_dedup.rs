//! Dedup through the real server: each (source, messageId) is stored once
//! within the window — across requests, inside one batch, under concurrent
//! requests, across a restart and across kill -9 (the index is completed
//! from the log tail on start-up) — and an event whose request failed is
//! stored when retried.

mod common;

use common::events::{batch, track};
use common::{config, read_events, spawn_server, start_with, ServerProcess, APP_KEY, WEB_KEY};
use ferry::dedup::{Dedup, DedupOptions, SystemClock};
use ferry::log::LogView;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The event with messageId `id` (of user "u1").
fn ev(id: &str) -> Value {
    track().id(id).user("u1").json()
}

/// messageId → how many times it is stored in the data directory's log.
fn stored(data: &std::path::Path) -> HashMap<(String, String), usize> {
    let view = LogView::open(&data.join("log")).unwrap();
    let mut r = view.reader(view.start_offset()).unwrap();
    let mut out = HashMap::new();
    while let Some(rec) = r.next().unwrap() {
        let v: Value = serde_json::from_slice(ferry::stored_event::json(&rec.payload)).unwrap();
        let key = (
            v["_ferry"]["source"].as_str().unwrap().to_string(),
            v["messageId"].as_str().unwrap().to_string(),
        );
        *out.entry(key).or_default() += 1;
    }
    out
}

/// The real binary over `dir`: sources "web" and "app", data in `dir/data`.
fn serve(dir: &std::path::Path) -> ServerProcess {
    let path = dir.join("ferry.toml");
    std::fs::write(&path, format!("[[sources]]\nname = \"web\"\nwrite_key = \"{WEB_KEY}\"\n[[sources]]\nname = \"app\"\nwrite_key = \"{APP_KEY}\"\n")).unwrap();
    let args = [
        "--config",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        "data",
    ];
    spawn_server(dir, &args, &[])
}

async fn post(http: &reqwest::Client, url: &str, key: &str, events: Vec<Value>) -> u16 {
    let r = http
        .post(url)
        .basic_auth(key, Some(""))
        .json(&batch(events))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    if status == 200 {
        assert_eq!(
            body["success"], true,
            "a duplicate is answered exactly like a success"
        );
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_id_is_stored_once_across_requests_batches_concurrency_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let server = serve(dir.path());
    let url = server.url("/v1/batch");

    // Inside one batch, and across requests; the same id from another source is another event.
    assert_eq!(
        post(&http, &url, WEB_KEY, vec![ev("a"), ev("a"), ev("b")]).await,
        200
    );
    assert_eq!(
        post(&http, &url, WEB_KEY, vec![ev("a"), ev("b"), ev("c")]).await,
        200
    );
    assert_eq!(post(&http, &url, APP_KEY, vec![ev("a")]).await, 200);
    // Concurrent requests racing on the same ids.
    let mut tasks = Vec::new();
    for t in 0..16 {
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let batch = (0..10)
                .map(|i| ev(&format!("race-{}", (i + t) % 12)))
                .collect();
            post(&http, &url, WEB_KEY, batch).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    // A graceful restart: the index persists.
    assert!(server.terminate().success());
    let server = serve(dir.path());
    let url = server.url("/v1/batch");
    assert_eq!(
        post(&http, &url, WEB_KEY, vec![ev("a"), ev("race-3"), ev("d")]).await,
        200
    );
    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ferry_ingest_duplicates_total{source=\"web\"} 2"),
        "{metrics}"
    );
    // The index's own figures: 17 distinct ids held (a, b, c, d and 12 race
    // ids of "web", a of "app"), across the restart.
    for line in [
        "ferry_dedup_ids 17\n",
        "ferry_dedup_window_seconds 86400.0\n",
        "ferry_dedup_effective_window_seconds 86400.0\n",
        "ferry_dedup_capacity_ids 10000000\n",
    ] {
        assert!(metrics.contains(line), "{line} missing from {metrics}");
    }
    assert!(server.terminate().success());

    let got = stored(&dir.path().join("data"));
    let web = |id: &str| {
        got.get(&("web".to_string(), id.to_string()))
            .copied()
            .unwrap_or(0)
    };
    for id in ["a", "b", "c", "d"] {
        assert_eq!(web(id), 1, "{id}");
    }
    for i in 0..12 {
        assert_eq!(web(&format!("race-{i}")), 1, "race-{i}");
    }
    assert_eq!(got[&("app".to_string(), "a".to_string())], 1);
    assert_eq!(got.values().sum::<usize>(), 4 + 12 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_log_tail_is_reindexed_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut server = serve(dir.path());
    let url = server.url("/v1/batch");
    let batches: Vec<Vec<Value>> = (0..20)
        .map(|b| (0..5).map(|i| ev(&format!("k{b}-{i}"))).collect())
        .collect();
    for b in &batches {
        assert_eq!(post(&http, &url, WEB_KEY, b.clone()).await, 200);
    }
    // Killed right after the acks: the index's batched writes have not landed.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let server = serve(dir.path());
    let url = server.url("/v1/batch");
    for b in &batches {
        assert_eq!(post(&http, &url, WEB_KEY, b.clone()).await, 200);
    }
    assert!(server.terminate().success());
    let got = stored(&dir.path().join("data"));
    assert_eq!(got.len(), 100);
    assert!(
        got.values().all(|n| *n == 1),
        "an acknowledged event was stored twice after the crash"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_refused_with_503_is_stored_when_retried() {
    let mut config = config();
    config.dedup.enabled = true;
    config.log.segment_bytes = Some(2048);
    config.log.max_bytes = Some(6000);
    config.log.min_free_bytes = Some(0);
    let server = start_with(config).await;
    let (log, url) = (server.log.clone(), server.url("/v1/batch"));
    let http = reqwest::Client::new();
    let filler = |i: usize| track().id(format!("f{i}")).pad(400).json();
    let mut i = 0;
    while post(&http, &url, WEB_KEY, vec![filler(i)]).await == 200 {
        i += 1;
        assert!(i < 100, "the budget never filled");
    }
    // The disk budget refuses "late" (larger than the filler that did not
    // fit): nothing stored, the id not marked seen.
    let late = track().id("late").pad(600).json();
    assert_eq!(post(&http, &url, WEB_KEY, vec![late.clone()]).await, 503);
    let count = |id: &str| {
        read_events(&log)
            .iter()
            .filter(|e| e["messageId"] == id)
            .count()
    };
    assert_eq!(count("late"), 0);
    // Space returns; the SDK's retry of the same event is stored, once.
    assert!(log.delete_segments_below(log.durable_end()).unwrap() > 0);
    assert_eq!(post(&http, &url, WEB_KEY, vec![late.clone()]).await, 200);
    assert_eq!(post(&http, &url, WEB_KEY, vec![late]).await, 200);
    assert_eq!(count("late"), 1);
}

/// Events without a messageId get a fresh UUID from ferry, marked as
/// generated: they are always stored, are not held in the index (no request
/// can repeat such an id), are not re-indexed after a restart, and their
/// offsets still let the index's checkpoint (the WAL retention floor) pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_ids_are_stored_but_not_held_and_the_checkpoint_passes_them() {
    let mut config = config();
    config.dedup.enabled = true;
    let server = start_with(config).await;
    let (log, url) = (server.log.clone(), server.url("/v1/batch"));
    let dedup = server.server().dedup().unwrap().current().unwrap();
    let open_dedup = |name: &str| {
        Dedup::open(
            &server.dir.path().join(name),
            DedupOptions::default(),
            Arc::new(SystemClock),
        )
        .unwrap()
    };
    let http = reqwest::Client::new();
    let anonymous = track().user("u1").json();
    let mixed = vec![
        anonymous.clone(),
        ev("c1"),
        anonymous.clone(),
        ev("c1"),
        anonymous.clone(),
    ];
    assert_eq!(post(&http, &url, WEB_KEY, mixed.clone()).await, 200);
    assert_eq!(post(&http, &url, WEB_KEY, mixed).await, 200);
    assert_eq!(
        post(&http, &url, WEB_KEY, vec![anonymous.clone()]).await,
        200
    );

    let events = read_events(&log);
    let generated: Vec<&Value> = events
        .iter()
        .filter(|e| e["_ferry"]["messageIdGenerated"] == true)
        .collect();
    assert_eq!(generated.len(), 7, "every event without an id is stored");
    let ids: std::collections::HashSet<&str> = generated
        .iter()
        .map(|e| e["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 7, "each generated id is distinct");
    let client: Vec<&Value> = events.iter().filter(|e| e["messageId"] == "c1").collect();
    assert_eq!(client.len(), 1, "the client id is stored once");
    assert_eq!(client[0]["_ferry"], json!({"source": "web"}));
    assert_eq!(events.len(), 8);

    dedup.flush().unwrap();
    assert_eq!(dedup.stats().ids_held, 1, "only the client id is held");
    assert_eq!(
        dedup.checkpoint(),
        log.durable_end(),
        "the checkpoint passes the offsets of events without a key"
    );

    // A fresh index re-built from the whole log holds the client id only.
    let rebuilt = open_dedup("rebuilt.redb");
    assert_eq!(ferry::dedup::reindex_from_log(&log, &rebuilt).unwrap(), 1);
    assert_eq!(rebuilt.stats().ids_held, 1);
    assert_eq!(rebuilt.checkpoint(), log.durable_end());
}

/// A client that goes away while its request is being appended (as an edge
/// ferry killed mid-forward does): the append still becomes durable, so its
/// ids stay seen, and the client's retry of the request is a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_client_goes_away_mid_append_is_not_stored_again_when_retried() {
    use ferry::log::crash_storage::CrashStorage;
    use tokio::io::AsyncWriteExt;
    let storage = Arc::new(CrashStorage::new());
    let mut cfg = config();
    cfg.dedup.enabled = true;
    let server = common::start_on(storage.clone(), tempfile::tempdir().unwrap(), cfg).await;
    let events = vec![ev("gone-1"), ev("gone-2")];
    let body = serde_json::to_vec(&batch(events.clone())).unwrap();
    storage.hold_syncs(true);
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{WEB_KEY}:"))
    };
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    // The append is inside its fdatasync; then the client goes away.
    let s = storage.clone();
    tokio::task::spawn_blocking(move || s.wait_for_held_sync())
        .await
        .unwrap();
    drop(stream);
    // The server notices: the request is no longer in flight.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let health: Value = server
            .get("/health")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if health["requests_in_flight"] == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dropped request stays in flight: {health}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    storage.hold_syncs(false);
    // The retry is answered as a success and stores nothing new.
    assert_eq!(
        post(&server.client, &server.url("/v1/batch"), WEB_KEY, events).await,
        200
    );
    let ids: Vec<String> = read_events(&server.log)
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["gone-1", "gone-2"], "stored once each");
    server.stop().await;
}
