//! Delivery survives kill -9: the real `ferry serve` delivers a backlog to a
//! slow webhook on 127.0.0.1 and is killed with SIGKILL mid-delivery, three
//! times. At the end every acknowledged event was delivered at least once,
//! first deliveries keep per-user order, nothing unknown was delivered, and
//! redeliveries stay within the in-flight window.

mod common;

use common::events::{batch, step, user_seq};
use common::spawn_server;
use common::webhook::{first_deliveries, Reply, Webhook};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const USERS: usize = 20;
const ROUNDS_PER_CYCLE: usize = 40;
const KILLS: usize = 3;
const WINDOW: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_delivery_loses_nothing_and_keeps_user_order() {
    // A slow destination, so the kills land while delivery is under way.
    let hook = Webhook::builder()
        .otherwise(|_, _| Some(Reply::ok().after(Duration::from_millis(2))))
        .start()
        .await;
    let (hook_url, mut delivered_rx) = (hook.url(), hook.delivered.subscribe());

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "[[sources]]\nname = \"app\"\nwrite_key = \"wk_test\"\n\n[[destinations]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{hook_url}\"\nconcurrency = 4\nwindow = {WINDOW}\n[destinations.retry]\nbase = \"10ms\"\ncap = \"200ms\"\n"
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
    let mut seq = 0u64;
    for cycle in 0..=KILLS {
        let mut server = spawn_server(dir.path(), &args, &[]);
        if cycle == KILLS {
            // Last round: let everything drain, then stop gracefully.
            let all: HashSet<&String> = acked.iter().collect();
            let wait = delivered_rx.wait_for(|seen| all.is_subset(&seen.iter().collect()));
            tokio::time::timeout(Duration::from_secs(120), wait)
                .await
                .expect("the backlog drains after the last restart")
                .unwrap();
            assert!(server.terminate().success());
            break;
        }
        for _ in 0..ROUNDS_PER_CYCLE {
            let events = (0..USERS).map(|u| step(&format!("u{u}"), seq));
            let r = http
                .post(server.url("/v1/batch"))
                .basic_auth("wk_test", Some(""))
                .json(&batch(events))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            acked.extend((0..USERS).map(|u| format!("u{u}-{seq}")));
            seq += 1;
        }
        // Kill once this cycle's backlog is partly delivered.
        let target = hook.delivered.len() + USERS * ROUNDS_PER_CYCLE / 3;
        let wait = delivered_rx.wait_for(|seen| seen.len() >= target);
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .unwrap()
            .unwrap();
        server.child.kill().unwrap();
        server.child.wait().unwrap();
    }

    let seen = hook.delivered.snapshot();
    let acked_set: HashSet<&String> = acked.iter().collect();
    for id in &seen {
        assert!(
            acked_set.contains(id),
            "delivered an event that was never sent: {id}"
        );
    }
    let first = first_deliveries(&seen);
    assert_eq!(
        first.len(),
        acked.len(),
        "every acknowledged event is delivered"
    );
    let mut last: HashMap<&str, u64> = HashMap::new();
    for id in &first {
        let (user, s) = user_seq(id);
        if let Some(prev) = last.insert(user, s) {
            assert!(prev < s, "user {user}: {s} delivered before {prev}");
        }
    }
    let duplicates = seen.len() - first.len();
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
