//! Every endpoint of the tracking API against a real listener: single-event
//! paths (long and one-letter), batch shapes, beacon, pixel, /v1/m, health.

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn single_event_paths_store_one_event_of_the_path_type() {
    let s = start().await;
    let cases = [
        (
            "/v1/track",
            "track",
            json!({"userId": "u1", "event": "Bought"}),
        ),
        (
            "/v1/identify",
            "identify",
            json!({"userId": "u1", "traits": {"plan": "pro"}}),
        ),
        (
            "/v1/page",
            "page",
            json!({"anonymousId": "a1", "name": "Home"}),
        ),
        (
            "/v1/screen",
            "screen",
            json!({"anonymousId": "a1", "name": "Main"}),
        ),
        (
            "/v1/group",
            "group",
            json!({"userId": "u1", "groupId": "g1"}),
        ),
        (
            "/v1/alias",
            "alias",
            json!({"userId": "u2", "previousId": "u1"}),
        ),
        ("/v1/t", "track", json!({"userId": "u1", "event": "Short"})),
        ("/v1/i", "identify", json!({"userId": "u1"})),
        ("/v1/p", "page", json!({"userId": "u1"})),
        ("/v1/s", "screen", json!({"userId": "u1"})),
        ("/v1/g", "group", json!({"userId": "u1", "groupId": "g2"})),
        (
            "/v1/a",
            "alias",
            json!({"userId": "u3", "previousId": "u2"}),
        ),
    ];
    for (path, _, body) in &cases {
        let body = expect_ok(s.post(path).json(body).send().await.unwrap()).await;
        assert_eq!(body["count"], 1, "{path}");
    }
    let events = s.events();
    assert_eq!(events.len(), cases.len());
    for ((path, kind, sent), stored) in cases.iter().zip(&events) {
        assert_eq!(stored["type"], *kind, "{path}");
        for (k, v) in sent.as_object().unwrap() {
            assert_eq!(&stored[k], v, "{path}: field {k}");
        }
        assert_eq!(stored["_ferry"]["source"], "web");
    }
    s.stop().await;
}

#[tokio::test]
async fn analytics_js_sends_text_plain_with_the_key_in_the_body() {
    let s = start().await;
    let body = json!({"writeKey": WEB_KEY, "type": "track", "event": "Clicked", "anonymousId": "a1",
                      "messageId": "ajs-1", "properties": {"x": 1}});
    let r = s
        .post_anon("/v1/t")
        .header("content-type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    expect_ok(r).await;
    let events = s.events();
    assert_eq!(events[0]["messageId"], "ajs-1");
    assert_eq!(events[0]["properties"]["x"], 1);
    assert!(
        events[0].get("writeKey").is_none(),
        "the write key is not stored"
    );
    s.stop().await;
}

#[tokio::test]
async fn batch_paths_keep_order_and_apply_top_level_defaults() {
    let s = start().await;
    for path in ["/v1/batch", "/v1/import", "/v1/b"] {
        let body = json!({
            "batch": [
                {"type": "identify", "userId": "u1", "messageId": format!("{path}-0")},
                {"type": "track", "userId": "u1", "event": "E", "messageId": format!("{path}-1"),
                 "context": {"own": true}},
                {"type": "page", "anonymousId": "a", "messageId": format!("{path}-2"), "integrations": {"X": false}},
            ],
            "context": {"library": {"name": "test"}},
            "integrations": {"All": true},
            "sentAt": "2024-05-01T12:00:00.000Z",
        });
        let r = expect_ok(s.post(path).json(&body).send().await.unwrap()).await;
        assert_eq!(r["count"], 3);
    }
    let events = s.events();
    assert_eq!(events.len(), 9);
    for (i, path) in ["/v1/batch", "/v1/import", "/v1/b"].iter().enumerate() {
        let e = &events[i * 3..i * 3 + 3];
        let ids: Vec<&str> = e.iter().map(|e| e["messageId"].as_str().unwrap()).collect();
        assert_eq!(
            ids,
            [
                format!("{path}-0"),
                format!("{path}-1"),
                format!("{path}-2")
            ]
        );
        assert_eq!(e[0]["context"], json!({"library": {"name": "test"}}));
        assert_eq!(e[1]["context"], json!({"own": true}));
        assert_eq!(e[0]["integrations"], json!({"All": true}));
        assert_eq!(e[2]["integrations"], json!({"X": false}));
        assert_eq!(e[1]["sentAt"], "2024-05-01T12:00:00.000Z");
    }
    s.stop().await;
}

#[tokio::test]
async fn beacon_takes_the_key_from_the_query_string() {
    let s = start().await;
    let body = json!({"batch": [{"type": "track", "event": "Left", "anonymousId": "a1"}]});
    let url = format!("/beacon/v1/batch?writeKey={WEB_KEY}");
    let r = s
        .post_anon(&url)
        .header("content-type", "text/plain;charset=UTF-8")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    expect_ok(r).await;
    assert_eq!(s.events()[0]["event"], "Left");
    let r = s
        .post_anon("/beacon/v1/batch?writeKey=wrong")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "unknown_write_key").await;
    assert_eq!(s.events().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn rudderstack_js_headers_fill_in_anonymous_id_and_sent_at() {
    let s = start().await;
    // AnonymousId is base64("anon-7"); SentAt is the client's clock.
    let r = s
        .post("/v1/track")
        .header("AnonymousId", "YW5vbi03")
        .header("SentAt", "2024-05-01T12:00:10.000Z")
        .json(&json!({"event": "Viewed", "originalTimestamp": "2024-05-01T12:00:00.000Z"}))
        .send()
        .await
        .unwrap();
    expect_ok(r).await;
    let e = &s.events()[0];
    assert_eq!(e["anonymousId"], "anon-7");
    assert_eq!(e["sentAt"], "2024-05-01T12:00:10.000Z");
    s.stop().await;
}

#[tokio::test]
async fn telemetry_endpoint_answers_200_and_stores_nothing() {
    let s = start().await;
    let r = s
        .post_anon("/v1/m")
        .header("content-type", "text/plain")
        .body(r#"{"series":[]}"#)
        .send()
        .await
        .unwrap();
    expect_ok(r).await;
    assert!(s.events().is_empty());
    s.stop().await;
}

async fn expect_gif(r: reqwest::Response, status: u16) {
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(r.headers()["content-type"], "image/gif");
    let bytes = r.bytes().await.unwrap();
    assert!(bytes.starts_with(b"GIF89a"));
}

#[tokio::test]
async fn pixels_store_query_fields_and_always_answer_a_gif() {
    let s = start().await;
    let r = s
        .get(&format!("/pixel/v1/track?writeKey={WEB_KEY}&anonymousId=a1&event=Email%20Opened&properties.subject=Hi&messageId=px-1"))
        .send()
        .await
        .unwrap();
    expect_gif(r, 200).await;
    let r = s
        .get(&format!(
            "/pixel/v1/page?writeKey={WEB_KEY}&userId=u1&name=Landing"
        ))
        .send()
        .await
        .unwrap();
    expect_gif(r, 200).await;
    // Refusals are GIFs too, with the status saying why; nothing is stored.
    expect_gif(
        s.get("/pixel/v1/track?writeKey=nope&anonymousId=a&event=E")
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    expect_gif(
        s.get(&format!("/pixel/v1/track?writeKey={WEB_KEY}&anonymousId=a"))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    let events = s.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["type"], "track");
    assert_eq!(events[0]["event"], "Email Opened");
    assert_eq!(events[0]["properties"], json!({"subject": "Hi"}));
    assert_eq!(events[0]["messageId"], "px-1");
    assert_eq!(events[1]["type"], "page");
    assert_eq!(events[1]["name"], "Landing");
    s.stop().await;
}

#[tokio::test]
async fn health_and_ready() {
    let s = start().await;
    let r = s.get("/health").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let h: Value = r.json().await.unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["accepting"], true);
    assert_eq!(h["log"]["failure"], Value::Null);
    assert_eq!(h["log"]["durable_end"], 0);
    expect_ok(
        s.post("/v1/track")
            .json(&json!({"userId": "u", "event": "E"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let h: Value = s.get("/health").send().await.unwrap().json().await.unwrap();
    assert_eq!(h["log"]["durable_end"], 1);
    let r = s.get("/ready").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["ready"], true);
    s.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let s = start().await;
    expect_error(s.post("/v2/track").send().await.unwrap(), 404, "not_found").await;
    expect_error(
        s.get("/v1/track").send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    expect_error(
        s.post("/health").send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn metrics_token_guards_metrics_and_leaves_health_open() {
    const TOKEN: &str = "metrics-token-0123456789";
    let config = ferry::config::Config {
        metrics_token: Some(TOKEN.into()),
        ..config()
    };
    let s = start_with(config).await;
    for auth in [None, Some("wrong-token-0123456789")] {
        let mut req = s.get("/metrics");
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized", "{body}");
        assert!(body["error"].as_str().unwrap().contains("metrics_token"));
    }
    let r = s.get("/metrics").bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("ferry_log_end_offset"));
    assert_eq!(s.get("/health").send().await.unwrap().status(), 200);
    assert_eq!(s.get("/ready").send().await.unwrap().status(), 200);
    // Without the setting, /metrics stays open.
    let open = start().await;
    assert_eq!(open.get("/metrics").send().await.unwrap().status(), 200);
}
