//! Auth rules: Basic (user name = write key), `writeKey` in the body,
//! `?writeKey=`; missing or unknown keys get 401 and nothing is stored.

mod common;

use base64::Engine;
use common::events::track;
use common::*;
use serde_json::json;

/// The `/v1/track` body every request here sends.
fn event() -> serde_json::Value {
    track().untyped().user("u1").json()
}

#[tokio::test]
async fn every_key_location_works_and_records_its_source() {
    let s = start().await;
    expect_ok(s.post("/v1/track").json(&event()).send().await.unwrap()).await;
    let r = s
        .post_anon("/v1/track")
        .basic_auth(APP_KEY, Some("ignored-password"))
        .json(&event())
        .send()
        .await
        .unwrap();
    expect_ok(r).await;
    let mut body = event();
    body["writeKey"] = APP_KEY.into();
    expect_ok(s.post_anon("/v1/track").json(&body).send().await.unwrap()).await;
    let batch = json!({"writeKey": WEB_KEY, "batch": [{"type": "identify", "userId": "u1"}]});
    expect_ok(s.post_anon("/v1/batch").json(&batch).send().await.unwrap()).await;
    expect_ok(
        s.post_anon(&format!("/v1/track?writeKey={APP_KEY}"))
            .json(&event())
            .send()
            .await
            .unwrap(),
    )
    .await;
    // Basic without the trailing colon, as some hand-written clients send it.
    let b64 = base64::engine::general_purpose::STANDARD.encode(WEB_KEY);
    let r = s
        .post_anon("/v1/track")
        .header("authorization", format!("Basic {b64}"))
        .json(&event())
        .send()
        .await
        .unwrap();
    expect_ok(r).await;

    let sources: Vec<String> = s
        .events()
        .iter()
        .map(|e| e["_ferry"]["source"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sources, ["web", "app", "app", "web", "app", "web"]);
    s.stop().await;
}

#[tokio::test]
async fn missing_or_unknown_keys_are_401() {
    let s = start().await;
    expect_error(
        s.post_anon("/v1/track")
            .json(&event())
            .send()
            .await
            .unwrap(),
        401,
        "missing_write_key",
    )
    .await;
    let r = s
        .post_anon("/v1/track")
        .basic_auth("nope", Some(""))
        .json(&event())
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "unknown_write_key").await;
    let mut body = event();
    body["writeKey"] = "nope".into();
    expect_error(
        s.post_anon("/v1/track").json(&body).send().await.unwrap(),
        401,
        "unknown_write_key",
    )
    .await;
    expect_error(
        s.post_anon("/v1/batch?writeKey=nope")
            .json(&json!({"batch": [event()]}))
            .send()
            .await
            .unwrap(),
        401,
        "unknown_write_key",
    )
    .await;
    // A wrong header key is not rescued by a right body key.
    let mut body = event();
    body["writeKey"] = WEB_KEY.into();
    let r = s
        .post_anon("/v1/track")
        .basic_auth("nope", Some(""))
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "unknown_write_key").await;
    let r = s
        .post_anon("/v1/track")
        .header("authorization", "Bearer xyz")
        .json(&event())
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "missing_write_key").await;
    assert!(s.events().is_empty());
    s.stop().await;
}
