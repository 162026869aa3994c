//! Acked means durable: clients send batches to the real `ferry serve`, it
//! is killed with SIGKILL mid-stream, and after a restart every event that
//! got a 200 is in the log, every batch whole or absent, none twice.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ferry::log::{Log, LogOptions};
use serde_json::json;
use tokio::sync::watch;

const CLIENTS: usize = 4;
const PER_BATCH: usize = 3;
/// Acknowledged batches to wait for before the kill.
const KILL_AFTER: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_server(dir.path(), &["--listen", "127.0.0.1:0"], &[]);
    let key = server.dev_key.clone().unwrap();
    let url = server.url("/v1/batch");

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let (count_tx, mut count_rx) = watch::channel(0usize);
    let count_tx = Arc::new(count_tx);
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (url, key, acked, count_tx) =
            (url.clone(), key.clone(), acked.clone(), count_tx.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            for seq in 0u64.. {
                let batch: Vec<_> = (0..PER_BATCH)
                    .map(|k| {
                        json!({"type": "track", "userId": format!("u{c}"), "event": "E",
                                    "messageId": format!("c{c}-{seq}-{k}")})
                    })
                    .collect();
                let sent = http
                    .post(&url)
                    .basic_auth(&key, Some(""))
                    .json(&json!({"batch": batch}))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => {
                        acked.lock().unwrap().push(format!("c{c}-{seq}"));
                        count_tx.send_modify(|n| *n += 1);
                    }
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    count_rx.wait_for(|n| *n >= KILL_AFTER).await.unwrap();
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(acked.len() >= KILL_AFTER);

    // Restart: recovery runs, and the server accepts again.
    let server = spawn_server(dir.path(), &["--listen", "127.0.0.1:0"], &[]);
    let r = reqwest::Client::new()
        .post(server.url("/v1/track"))
        .basic_auth(&key, Some(""))
        .json(&json!({"userId": "after", "event": "restart", "messageId": "after-restart"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(server.terminate().success());

    let log = Log::open(&dir.path().join("ferry-data/log"), LogOptions::default()).unwrap();
    let events = read_events(&log);
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e["messageId"].as_str().unwrap())
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no event is stored twice");
    let mut per_batch: HashMap<String, usize> = HashMap::new();
    for id in &ids {
        if let Some((batch, _)) = id.rsplit_once('-').filter(|_| id.starts_with('c')) {
            *per_batch.entry(batch.to_owned()).or_default() += 1;
        }
    }
    for batch in &acked {
        assert_eq!(
            per_batch.get(batch),
            Some(&PER_BATCH),
            "acknowledged batch {batch} is incomplete"
        );
    }
    for (batch, n) in &per_batch {
        assert_eq!(*n, PER_BATCH, "batch {batch} is torn");
    }
    assert!(
        per_batch.len() <= acked.len() + CLIENTS,
        "at most one unacknowledged batch per client"
    );
    assert_eq!(ids.last(), Some(&"after-restart"));
}
