//! Back-pressure instead of loss: a full disk budget or free-space reserve,
//! a failed log and too many requests in flight all refuse with 503/429 and
//! `Retry-After`, store nothing, and ingestion resumes once space is freed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::events::track;
use common::*;
use ferry::log::crash_storage::CrashStorage;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The request body every test here sends: a padded `/v1/track` call, `m{i}`.
fn event(i: usize) -> Value {
    track().untyped().id(format!("m{i}")).pad(300).json()
}

async fn health(s: &TestServer) -> (u16, Value) {
    let r = s.get("/health").send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn disk_budget_refuses_with_503_until_space_is_freed() {
    let mut c = config();
    c.log.segment_bytes = Some(2048);
    c.log.max_bytes = Some(8192);
    let s = start_with(c).await;
    let mut acked = 0;
    let refusal = loop {
        let r = s
            .post("/v1/track")
            .json(&event(acked))
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            break r;
        }
        acked += 1;
        assert!(acked < 100, "the budget never filled");
    };
    assert!(acked > 0);
    assert_eq!(refusal.headers()["retry-after"], "1");
    expect_error(refusal, 503, "storage_full").await;
    assert_eq!(
        s.events().len(),
        acked,
        "the refused request stored nothing"
    );
    let (status, h) = health(&s).await;
    assert_eq!(
        (status, &h["accepting"], &h["log"]["full"]),
        (200, &json!(false), &json!(true))
    );

    // Retention frees whole segments; the next request goes through.
    assert!(s.log.delete_segments_below(s.log.durable_end()).unwrap() > 0);
    expect_ok(s.post("/v1/track").json(&event(1000)).send().await.unwrap()).await;
    let (_, h) = health(&s).await;
    assert_eq!(h["accepting"], true);
    s.stop().await;
}

#[tokio::test]
async fn free_space_reserve_refuses_with_503_and_recovers() {
    let sim = CrashStorage::new();
    let s = start_on(
        Arc::new(sim.clone()),
        tempfile::tempdir().unwrap(),
        config(),
    )
    .await;
    expect_ok(s.post("/v1/track").json(&event(0)).send().await.unwrap()).await;
    sim.set_available_space(Some(1024 * 1024)); // below the 64 MiB reserve
    let r = s
        .post("/v1/batch")
        .json(&json!({"batch": [{"type": "track", "userId": "u", "event": "E"}]}))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("retry-after"));
    expect_error(r, 503, "storage_full").await;
    assert_eq!(s.events().len(), 1);
    sim.set_available_space(None);
    expect_ok(s.post("/v1/track").json(&event(1)).send().await.unwrap()).await;
    assert_eq!(s.events().len(), 2);
    s.stop().await;
}

#[tokio::test]
async fn a_failed_log_refuses_with_503_and_health_says_why() {
    let sim = CrashStorage::new();
    let s = start_on(
        Arc::new(sim.clone()),
        tempfile::tempdir().unwrap(),
        config(),
    )
    .await;
    expect_ok(s.post("/v1/track").json(&event(0)).send().await.unwrap()).await;
    sim.fail_syncs(true);
    let r = s.post("/v1/track").json(&event(1)).send().await.unwrap();
    expect_error(r, 503, "storage_unavailable").await;
    sim.fail_syncs(false);
    // The log stays stopped (no retried fsync): refused before the body is read.
    let r = s.post("/v1/track").json(&event(2)).send().await.unwrap();
    assert!(r.headers().contains_key("retry-after"));
    expect_error(r, 503, "storage_unavailable").await;
    let (status, h) = health(&s).await;
    assert_eq!(status, 503);
    assert_eq!(h["status"], "failed");
    assert_eq!(h["accepting"], false);
    assert!(
        h["log"]["failure"].as_str().unwrap().contains("sync"),
        "{h}"
    );
    assert_eq!(s.get("/ready").send().await.unwrap().status().as_u16(), 503);
    assert_eq!(
        s.events().len(),
        1,
        "only the acknowledged event is durable"
    );
    s.stop().await;
}

#[tokio::test]
async fn too_many_requests_in_flight_get_429() {
    let mut c = config();
    c.limits.max_in_flight = 1;
    let s = start_with(c).await;
    let body = json!({"writeKey": WEB_KEY, "userId": "u", "event": "slow"}).to_string();
    let (first, rest) = body.split_at(10);
    let mut slow = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(first.as_bytes()).await.unwrap();
    // Wait until the server holds the slow request's permit.
    tokio::time::timeout(Duration::from_secs(10), async {
        while health(&s).await.1["requests_in_flight"] != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the slow request never started");

    let r = s.post("/v1/track").json(&event(1)).send().await.unwrap();
    assert_eq!(r.headers()["retry-after"], "1");
    expect_error(r, 429, "overloaded").await;

    slow.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    expect_ok(s.post("/v1/track").json(&event(2)).send().await.unwrap()).await;
    let names: Vec<Value> = s.events().iter().map(|e| e["event"].clone()).collect();
    assert_eq!(names, [json!("slow"), json!("E")]);
    s.stop().await;
}
