//! CORS for browser SDKs: preflight on every ingest path echoing the
//! requested headers (Authorization, rsa-* retries), origin, Max-Age.

mod common;

use common::*;
use serde_json::json;

const ASKED: &str = "authorization,content-type,anonymousid,sentat,x-retry-count,rsa-retry-attempt,rsa-retry-reason,rsa-since-last-attempt";

#[tokio::test]
async fn preflight_on_every_ingest_path() {
    let s = start().await;
    for path in [
        "/v1/t",
        "/v1/track",
        "/v1/batch",
        "/v1/b",
        "/v1/m",
        "/beacon/v1/batch",
        "/pixel/v1/track",
    ] {
        let r = s
            .client
            .request(reqwest::Method::OPTIONS, s.url(path))
            .header("origin", "https://shop.example")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", ASKED)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        let h = r.headers();
        assert_eq!(
            h["access-control-allow-origin"], "https://shop.example",
            "{path}"
        );
        let allowed = h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        for name in ASKED.split(',') {
            assert!(allowed.contains(name), "{path}: {name} not in {allowed}");
        }
        assert!(h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST"));
        assert_eq!(h["access-control-max-age"], "86400");
    }
    assert!(s.events().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn actual_requests_carry_the_allow_origin_header() {
    let s = start().await;
    let r = s
        .post("/v1/t")
        .header("origin", "https://shop.example")
        .json(&json!({"userId": "u", "event": "E"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    expect_ok(r).await;
    // Errors too, so the browser lets the page see them.
    let r = s
        .post_anon("/v1/t")
        .header("origin", "https://shop.example")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    expect_error(r, 401, "missing_write_key").await;
    s.stop().await;
}

#[tokio::test]
async fn allowed_origins_can_be_restricted() {
    let mut c = config();
    c.cors.allowed_origins = vec!["https://shop.example".into()];
    let s = start_with(c).await;
    let preflight = |origin: &'static str| {
        s.client
            .request(reqwest::Method::OPTIONS, s.url("/v1/t"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let r = preflight("https://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = preflight("https://shop.example").await.unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    s.stop().await;
}
