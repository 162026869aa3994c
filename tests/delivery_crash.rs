//! Delivery survives kill -9: the real `ferry serve` delivers a backlog to a
//! slow webhook on 127.0.0.1 and is killed with SIGKILL mid-delivery, three
//! times. At the end every acknowledged event was delivered at least once,
//! first deliveries keep per-user order, nothing unknown was delivered, and
//! redeliveries stay within the in-flight window.

mod common;

use common::{recording_hook, spawn_server};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const USERS: usize = 20;
const ROUNDS_PER_CYCLE: usize = 40;
const KILLS: usize = 3;
const WINDOW: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_delivery_loses_nothing_and_keeps_user_order() {
    // A slow destination, so the kills land while delivery is under way.
    let hook = recording_hook(|_| Duration::from_millis(2)).await;
    let (hook_addr, mut count_rx) = (hook.addr, hook.count.clone());

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "[[sources]]\nname = \"app\"\nwrite_key = \"wk_test\"\n\n[[destinations]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{hook_addr}/hook\"\nconcurrency = 4\nwindow = {WINDOW}\n[destinations.retry]\nbase = \"10ms\"\ncap = \"200ms\"\n"
        ),
    )
    .unwrap();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        "data",
    ];
    let http = reqwest::Client::new();
    let mut acked: Vec<String> = Vec::new();
    let mut seq = 0usize;
    for cycle in 0..=KILLS {
        let mut server = spawn_server(dir.path(), &args, &[]);
        if cycle == KILLS {
            // Last round: let everything drain, then stop gracefully.
            let all: HashSet<String> = acked.iter().cloned().collect();
            let wait = async {
                loop {
                    let seen: HashSet<String> = hook.seen.lock().unwrap().iter().cloned().collect();
                    if all.is_subset(&seen) {
                        break;
                    }
                    count_rx.changed().await.unwrap();
                }
            };
            tokio::time::timeout(Duration::from_secs(120), wait)
                .await
                .expect("the backlog drains after the last restart");
            assert!(server.terminate().success());
            break;
        }
        for _ in 0..ROUNDS_PER_CYCLE {
            let batch: Vec<Value> = (0..USERS)
                .map(|u| json!({"type": "track", "event": "Step", "userId": format!("u{u}"), "messageId": format!("u{u}-{seq}")}))
                .collect();
            let r = http
                .post(server.url("/v1/batch"))
                .basic_auth("wk_test", Some(""))
                .json(&json!({"batch": batch}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            acked.extend((0..USERS).map(|u| format!("u{u}-{seq}")));
            seq += 1;
        }
        // Kill once this cycle's backlog is partly delivered.
        let target = *count_rx.borrow() + USERS * ROUNDS_PER_CYCLE / 3;
        tokio::time::timeout(Duration::from_secs(60), count_rx.wait_for(|n| *n >= target))
            .await
            .unwrap()
            .unwrap();
        server.child.kill().unwrap();
        server.child.wait().unwrap();
    }

    let seen = hook.seen.lock().unwrap().clone();
    let acked_set: HashSet<&String> = acked.iter().collect();
    let mut first: Vec<&String> = Vec::new();
    let mut once = HashSet::new();
    for id in &seen {
        assert!(
            acked_set.contains(id),
            "delivered an event that was never sent: {id}"
        );
        if once.insert(id) {
            first.push(id);
        }
    }
    assert_eq!(
        once.len(),
        acked.len(),
        "every acknowledged event is delivered"
    );
    let mut last: HashMap<&str, usize> = HashMap::new();
    for id in first {
        let (user, s) = id.split_once('-').unwrap();
        let s: usize = s.parse().unwrap();
        if let Some(prev) = last.insert(user, s) {
            assert!(prev < s, "user {user}: {s} delivered before {prev}");
        }
    }
    let duplicates = seen.len() - once.len();
    eprintln!(
        "{} events, {} deliveries, {duplicates} duplicates after {KILLS} kills",
        acked.len(),
        seen.len()
    );
    assert!(
        duplicates <= KILLS * WINDOW,
        "redeliveries ({duplicates}) exceed the in-flight window"
    );
}
