//! Body rules: JSON whatever the Content-Type, gzip (also under a form
//! content type, as rudder-node sends it), size caps on the wire and while
//! inflating, per-event cap, and 4xx (never 5xx) for malformed bodies.

mod common;

use common::events::{batch, track};
use common::*;
use ferry::config::Config;
use serde_json::json;

/// A batch of `n` track events `m0`, `m1`, … with a `sentAt`, as SDKs send it.
fn sdk_batch(n: usize) -> serde_json::Value {
    let mut body = batch((0..n).map(|i| track().id(format!("m{i}"))));
    body["sentAt"] = "2024-05-01T12:00:00Z".into();
    body
}

#[tokio::test]
async fn gzip_bodies_are_inflated_whatever_the_content_type() {
    let s = start().await;
    let z = gzip(sdk_batch(3).to_string().as_bytes());
    let r = s
        .post("/v1/batch")
        .header("content-encoding", "gzip")
        .header("content-type", "application/json")
        .body(z.clone())
        .send()
        .await
        .unwrap();
    expect_ok(r).await;
    // rudder-node: gzip JSON labelled as a form.
    let r = s
        .post("/v1/batch")
        .header("content-encoding", "gzip")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(z)
        .send()
        .await
        .unwrap();
    expect_ok(r).await;
    let r = s
        .post("/v1/batch")
        .header("content-type", "text/plain")
        .body(sdk_batch(1).to_string())
        .send()
        .await
        .unwrap();
    expect_ok(r).await;
    assert_eq!(s.events().len(), 7);
    s.stop().await;
}

fn small_limits() -> Config {
    let mut c = config();
    c.limits.max_request_bytes = 4096;
    c.limits.max_event_bytes = 1024;
    c
}

#[tokio::test]
async fn request_cap_applies_on_the_wire_and_after_inflating() {
    let s = start_with(small_limits()).await;
    let big = sdk_batch(100).to_string();
    assert!(big.len() > 4096);
    expect_error(
        s.post("/v1/batch").body(big.clone()).send().await.unwrap(),
        413,
        "request_too_large",
    )
    .await;
    // Small on the wire, too big once inflated.
    let z = gzip(big.as_bytes());
    assert!(z.len() < 4096);
    let r = s
        .post("/v1/batch")
        .header("content-encoding", "gzip")
        .body(z)
        .send()
        .await
        .unwrap();
    expect_error(r, 413, "request_too_large").await;
    // Chunked (no Content-Length) is capped while streaming.
    let mut chunked = Vec::new();
    for c in big.as_bytes().chunks(500) {
        chunked.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        chunked.extend_from_slice(c);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = format!("POST /v1/batch?writeKey={WEB_KEY} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    let (status, body) = raw_request(s.addr, &head, &chunked).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("request_too_large"), "{body}");
    assert!(s.events().is_empty());
    expect_ok(
        s.post("/v1/batch")
            .json(&sdk_batch(3))
            .send()
            .await
            .unwrap(),
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn gzip_bomb_is_refused_without_inflating_it() {
    let s = start().await; // default cap: 4 MiB
    let bomb = gzip(&vec![b' '; 64 * 1024 * 1024]);
    assert!(bomb.len() < 128 * 1024, "{}", bomb.len());
    let r = s
        .post("/v1/batch")
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    let body = expect_error(r, 413, "request_too_large").await;
    assert!(
        body["error"].as_str().unwrap().contains("4194304"),
        "{body}"
    );
    s.stop().await;
}

#[tokio::test]
async fn per_event_cap_names_the_event() {
    let s = start_with(small_limits()).await;
    let body = json!({"batch": [
        {"type": "track", "userId": "u", "event": "ok"},
        {"type": "track", "userId": "u", "event": "big", "properties": {"blob": "x".repeat(1100)}},
    ]});
    let b = expect_error(
        s.post("/v1/batch").json(&body).send().await.unwrap(),
        413,
        "event_too_large",
    )
    .await;
    assert_eq!(b["index"], 1);
    assert!(s.events().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn malformed_bodies_are_client_errors() {
    let s = start().await;
    expect_error(
        s.post("/v1/track").body("{not json").send().await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect_error(
        s.post("/v1/track").body("").send().await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect_error(
        s.post("/v1/track").body("[1,2]").send().await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect_error(
        s.post("/v1/track")
            .body(vec![0xffu8, 0xfe, 0x00])
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    let mut z = gzip(b"{\"userId\":\"u\",\"event\":\"E\"}");
    z.truncate(z.len() - 4);
    let r = s
        .post("/v1/track")
        .header("content-encoding", "gzip")
        .body(z)
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "bad_gzip").await;
    let r = s
        .post("/v1/track")
        .header("content-encoding", "br")
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_error(r, 415, "unsupported_encoding").await;
    expect_error(
        s.post("/v1/batch")
            .json(&json!({"batch": []}))
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect_error(
        s.post("/v1/batch")
            .json(&json!({"batch": {}}))
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    expect_error(
        s.post("/v1/batch")
            .json(&json!({"events": []}))
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    let r = s
        .post("/v1/batch")
        .json(&json!({"batch": [{"type": "page", "userId": "u"}], "sentAt": "later"}))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "bad_request").await;
    assert!(s.events().is_empty());
    s.stop().await;
}
