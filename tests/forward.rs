//! Forwarding to a Segment-compatible upstream (`type = "segment"`) against
//! the tests' mock upstream on 127.0.0.1: what goes on the wire (Basic auth,
//! gzip, bounded batches, the client's event without ferry's metadata), a
//! refused event dead-lettered alone, a refused write key pausing the
//! destination with nothing dead-lettered, and `Retry-After` on 429.
//! ferry → ferry with real processes is in tests/forward_ferry.rs.

mod common;

use base64::Engine;
use common::events::{step, user_seq};
use common::webhook::{first_deliveries, Reply, Webhook};
use common::{delivery_env, wait_status, DeliveryEnv};
use ferry::delivery::config::DestinationConfig;
use ferry::delivery::status::Control;
use ferry::delivery::{make_sink, Delivery};
use ferry::log::LogOptions;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const UPSTREAM_KEY: &str = "wk_central";

fn env() -> DeliveryEnv {
    delivery_env(LogOptions {
        min_free_bytes: 0,
        ..LogOptions::default()
    })
}

/// A segment destination named "central" forwarding to `mock`, with quick
/// retries and `extra` TOML lines.
fn central(mock: &Webhook, extra: &str) -> DestinationConfig {
    let text = format!(
        "name='central'\ntype='segment'\nurl='{}'\nwrite_key='{UPSTREAM_KEY}'\ntimeout='5s'\n{extra}\n[retry]\nbase='10ms'\ncap='200ms'\n",
        mock.base_url()
    );
    let c: DestinationConfig = toml::from_str(&text).unwrap();
    c.validate().unwrap();
    c
}

fn start(e: &DeliveryEnv, cfg: &DestinationConfig) -> Delivery {
    Delivery::start(
        e.log.clone(),
        e.store.clone(),
        vec![(cfg.clone(), make_sink(cfg).unwrap())],
    )
    .unwrap()
}

/// A stored event as ingestion makes it: the client's fields, ferry's
/// receipt and send times, and the `_ferry` tag.
fn stored(user: &str, seq: u64) -> Vec<u8> {
    step(user, seq)
        .with(
            "timestamp",
            format!("2026-03-04T05:06:{:02}.123Z", seq % 60),
        )
        .with("originalTimestamp", "2026-03-04T05:00:00.000Z")
        .with("sentAt", "2026-03-04T05:00:01.000Z")
        .with("receivedAt", "2026-03-04T05:00:02.000Z")
        .with("properties", json!({"seq": seq, "plan": "pro"}))
        .with("context", json!({"library": {"name": "analytics-python"}}))
        .with("integrations", json!({"All": true}))
        .logged()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_the_clients_events_with_basic_auth_gzip_and_bounded_batches() {
    let e = env();
    let mock = Webhook::start().await;
    // Up to 10 events a request, and at most 4 KiB of them.
    let cfg = central(&mock, "batch_size=10\nbatch_max_bytes=4096");
    let users: Vec<String> = (0..30).map(|i| format!("user{i}")).collect();
    for s in 0..3 {
        let round: Vec<Vec<u8>> = users.iter().map(|u| stored(u, s)).collect();
        e.log.append(round).await.unwrap();
    }
    // One event of 1.5 KB more, and one above Segment's 32 KB per event.
    e.log
        .append(vec![
            step("padded", 0).pad(1500).logged(),
            step("huge", 0).pad(40_000).logged(),
            step("huge", 1).logged(),
        ])
        .await
        .unwrap();
    let delivery = start(&e, &cfg);
    mock.delivered.wait_until(|s| s.len() == 92).await;
    delivery.shutdown().await;

    let requests = mock.received();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{UPSTREAM_KEY}:"));
    let mut by_id: HashMap<String, Value> = HashMap::new();
    for r in &requests {
        assert_eq!(
            r.headers["authorization"],
            format!("Basic {basic}").as_str()
        );
        assert_eq!(r.headers["content-encoding"], "gzip");
        assert!(r.headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("ferry/"));
        let batch = r.body["batch"].as_array().unwrap();
        assert!(!batch.is_empty() && batch.len() <= 10, "{}", batch.len());
        assert!(r.json_bytes <= 4096 + 100, "{} bytes", r.json_bytes);
        assert!(r.body["sentAt"].as_str().unwrap().ends_with('Z'));
        for event in batch {
            let id = event["messageId"].as_str().unwrap().to_owned();
            by_id.insert(id, event.clone());
        }
    }
    // Gzip shrinks what goes on the wire.
    let (wire, json): (usize, usize) = requests
        .iter()
        .map(|r| (r.wire_bytes, r.json_bytes))
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
    assert!(
        wire * 2 < json,
        "{wire} bytes on the wire for {json} of JSON"
    );
    // The client's event, without ferry's metadata or the edge's times.
    let event = &by_id["user7-2"];
    assert_eq!(
        *event,
        json!({
            "type": "track", "event": "Step", "userId": "user7", "messageId": "user7-2",
            "timestamp": "2026-03-04T05:06:02.123Z",
            "originalTimestamp": "2026-03-04T05:00:00.000Z",
            "properties": {"seq": 2, "plan": "pro"},
            "context": {"library": {"name": "analytics-python"}},
            "integrations": {"All": true}
        })
    );
    // Per-user order, every event once (no retries were needed).
    let seen = mock.delivered.snapshot();
    assert_eq!(first_deliveries(&seen).len(), seen.len());
    for u in &users {
        let seqs: Vec<u64> = seen
            .iter()
            .map(|id| user_seq(id))
            .filter(|(user, _)| user == u)
            .map(|(_, s)| s)
            .collect();
        assert_eq!(seqs, [0, 1, 2], "{u}");
    }
    // The event above 32 KB is dead-lettered without being sent; its
    // user's next event goes on.
    assert_eq!(mock.tries("huge-0"), 0);
    assert!(seen.contains(&"huge-1".to_string()));
    let dead = e.store.dead_letters("central").unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].message_id, "huge-0");
    assert!(
        dead[0].last_error.contains("max_event_bytes"),
        "{}",
        dead[0].last_error
    );
    assert_eq!(e.store.cursors().unwrap()["central"], 93);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_upstream_refuses_is_dead_lettered_alone() {
    let e = env();
    // The upstream refuses any request that carries "bad-0" (as
    // rudder-server refuses a whole batch for one bad event).
    let mock = Webhook::builder()
        .otherwise(|id, _| (id == "bad-0").then(|| Reply::status(400)))
        .start()
        .await;
    let cfg = central(&mock, "batch_size=50");
    let mut first: Vec<Vec<u8>> = (0..20).map(|i| stored(&format!("u{i}"), 0)).collect();
    first.insert(7, stored("bad", 0));
    e.log.append(first).await.unwrap();
    e.log.append(vec![stored("bad", 1)]).await.unwrap();
    let delivery = start(&e, &cfg);
    mock.delivered.wait_until(|s| s.len() == 21).await;
    delivery.shutdown().await;
    let seen = mock.delivered.snapshot();
    assert!(!seen.contains(&"bad-0".to_string()));
    assert_eq!(
        seen.last().unwrap(),
        "bad-1",
        "the user's next event goes on"
    );
    let dead = e.store.dead_letters("central").unwrap();
    assert_eq!(dead.len(), 1, "only the refused event: {dead:?}");
    assert_eq!(dead[0].message_id, "bad-0");
    assert_eq!(dead[0].last_status, Some(400));
    assert!(
        dead[0].last_error.contains("status 400"),
        "the upstream's answer is kept: {}",
        dead[0].last_error
    );
    // The refused batch of 21 was split in halves down to the bad event:
    // a handful of requests, not one per event.
    assert!(mock.requests() <= 12, "{} requests", mock.requests());
    assert_eq!(e.store.cursors().unwrap()["central"], 22);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_key_pauses_the_destination_and_dead_letters_nothing() {
    let e = env();
    let fixed = Arc::new(AtomicBool::new(false));
    let mock = {
        let fixed = fixed.clone();
        Webhook::builder()
            .otherwise(move |_, _| (!fixed.load(Ordering::SeqCst)).then(|| Reply::status(401)))
            .start()
            .await
    };
    // A long retry cap: no try of its own during the test.
    let text = format!(
        "name='central'\ntype='segment'\nurl='{}'\nwrite_key='wrong'\n[retry]\nbase='10ms'\ncap='1h'\n",
        mock.base_url()
    );
    let cfg: DestinationConfig = toml::from_str(&text).unwrap();
    for s in 0..5 {
        let round: Vec<Vec<u8>> = (0..20).map(|i| stored(&format!("u{i}"), s)).collect();
        e.log.append(round).await.unwrap();
    }
    let delivery = start(&e, &cfg);
    let handle = delivery.destination("central").unwrap().clone();
    wait_status(&handle, "paused by the upstream", |s| {
        s["paused"] == true
            && s["pause_reason"]
                .as_str()
                .is_some_and(|r| r.contains("HTTP 401") && r.contains("write_key"))
    })
    .await;
    let requests = mock.requests();
    assert!(
        requests <= 4,
        "no more than the first requests in flight: {requests}"
    );
    assert!(e.store.dead_letters("central").unwrap().is_empty());
    assert_eq!(handle.status().cursor, 0, "nothing counts as delivered");
    assert!(handle.status().pause_reason.unwrap().contains("resume"));
    // The key is fixed upstream; an operator resumes: everything arrives,
    // in order.
    fixed.store(true, Ordering::SeqCst);
    assert!(handle.control(Control::Resume).await);
    mock.delivered.wait_until(|s| s.len() == 100).await;
    wait_status(&handle, "resumed", |s| {
        s["paused"] == false && s["cursor"] == 100
    })
    .await;
    delivery.shutdown().await;
    let seen = mock.delivered.snapshot();
    for i in 0..20 {
        let u = format!("u{i}");
        let seqs: Vec<u64> = seen
            .iter()
            .map(|id| user_seq(id))
            .filter(|(user, _)| *user == u)
            .map(|(_, s)| s)
            .collect();
        assert_eq!(seqs, [0, 1, 2, 3, 4], "{u}");
    }
    assert!(e.store.dead_letters("central").unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_destination_tries_again_by_itself() {
    let e = env();
    let fixed = Arc::new(AtomicBool::new(false));
    let mock = {
        let fixed = fixed.clone();
        Webhook::builder()
            .otherwise(move |_, _| (!fixed.load(Ordering::SeqCst)).then(|| Reply::status(403)))
            .start()
            .await
    };
    let cfg = central(&mock, "");
    e.log
        .append((0..10).map(|i| stored(&format!("u{i}"), 0)).collect())
        .await
        .unwrap();
    let delivery = start(&e, &cfg);
    let handle = delivery.destination("central").unwrap().clone();
    wait_status(&handle, "paused", |s| s["paused"] == true).await;
    // While paused it tries again every retry.cap (200 ms), one request at a time.
    let before = mock.requests();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while mock.requests() < before + 2 {
        assert!(tokio::time::Instant::now() < deadline, "no new try");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(e.store.dead_letters("central").unwrap().is_empty());
    fixed.store(true, Ordering::SeqCst);
    mock.delivered.wait_until(|s| s.len() == 10).await;
    wait_status(&handle, "no longer paused", |s| s["paused"] == false).await;
    delivery.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_retry_after_is_honoured() {
    let e = env();
    let mock = Webhook::builder()
        .script("a-0", [Reply::status(429).retry_after("1")])
        .start()
        .await;
    // Without Retry-After the first retry would come within 10 ms.
    let text = format!(
        "name='central'\ntype='segment'\nurl='{}'\nwrite_key='{UPSTREAM_KEY}'\n[retry]\nbase='10ms'\ncap='5s'\n",
        mock.base_url()
    );
    let cfg: DestinationConfig = toml::from_str(&text).unwrap();
    e.log.append(vec![stored("a", 0)]).await.unwrap();
    let delivery = start(&e, &cfg);
    mock.delivered.wait_until(|s| s.len() == 1).await;
    delivery.shutdown().await;
    let tries: Vec<_> = mock
        .received()
        .into_iter()
        .map(|r| (r.at, r.status))
        .collect();
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert_eq!(tries[0].1, Some(429));
    let gap = tries[1].0 - tries[0].0;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
    assert!(e.store.dead_letters("central").unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_gzip_the_body_is_plain_json() {
    let e = env();
    let mock = Webhook::start().await;
    let cfg = central(&mock, "gzip=false");
    e.log.append(vec![stored("a", 0)]).await.unwrap();
    let delivery = start(&e, &cfg);
    mock.delivered.wait_until(|s| s.len() == 1).await;
    delivery.shutdown().await;
    let r = &mock.received()[0];
    assert!(!r.headers.contains_key("content-encoding"));
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.wire_bytes, r.json_bytes);
}
