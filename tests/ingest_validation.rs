//! Validation and normalisation, end to end: each rule's 400 names the event
//! and stores nothing of the request; messageId, timestamps, unknown fields.

mod common;

use common::*;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

async fn rejected(s: &TestServer, item: Value, reason_part: &str) {
    let body = json!({"batch": [{"type": "track", "userId": "u", "event": "ok"}, item]});
    let b = expect_error(
        s.post("/v1/batch").json(&body).send().await.unwrap(),
        400,
        "invalid_event",
    )
    .await;
    assert_eq!(b["index"], 1, "{b}");
    let msg = b["error"].as_str().unwrap();
    assert!(
        msg.contains(reason_part),
        "{msg} should mention {reason_part}"
    );
}

#[tokio::test]
async fn each_rule_rejects_the_whole_request() {
    let s = start().await;
    rejected(&s, json!("not an object"), "object").await;
    rejected(&s, json!({"userId": "u"}), "type").await;
    rejected(
        &s,
        json!({"type": "purchase", "userId": "u"}),
        "unknown type",
    )
    .await;
    rejected(&s, json!({"type": "track", "userId": "u"}), "event").await;
    rejected(
        &s,
        json!({"type": "track", "userId": "u", "event": 3}),
        "event",
    )
    .await;
    rejected(&s, json!({"type": "group", "userId": "u"}), "groupId").await;
    rejected(&s, json!({"type": "alias", "userId": "u"}), "previousId").await;
    rejected(
        &s,
        json!({"type": "alias", "anonymousId": "a", "previousId": "p"}),
        "userId",
    )
    .await;
    rejected(&s, json!({"type": "identify"}), "userId or anonymousId").await;
    rejected(
        &s,
        json!({"type": "identify", "userId": "", "anonymousId": null}),
        "userId or anonymousId",
    )
    .await;
    rejected(
        &s,
        json!({"type": "identify", "userId": "u", "messageId": "x".repeat(101)}),
        "messageId",
    )
    .await;
    rejected(
        &s,
        json!({"type": "identify", "userId": "u", "messageId": 5}),
        "messageId",
    )
    .await;
    rejected(
        &s,
        json!({"type": "identify", "userId": "u", "timestamp": "yesterday"}),
        "timestamp",
    )
    .await;
    // A single-event path validates too.
    let b = expect_error(
        s.post("/v1/track")
            .json(&json!({"userId": "u"}))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_event",
    )
    .await;
    assert_eq!(b["index"], 0);
    assert!(
        s.events().is_empty(),
        "nothing of a rejected request is stored"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_valid_request_is_stored_whole_and_in_order() {
    let s = start().await;
    let items: Vec<Value> = (0..50)
        .map(
            |i| json!({"type": "track", "userId": "u", "event": "E", "messageId": format!("m{i}")}),
        )
        .collect();
    expect_ok(
        s.post("/v1/batch")
            .json(&json!({"batch": items}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let ids: Vec<String> = s
        .events()
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().to_owned())
        .collect();
    let want: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    assert_eq!(ids, want);
    s.stop().await;
}

#[tokio::test]
async fn message_ids_are_kept_or_generated() {
    let s = start().await;
    let body = json!({"batch": [
        {"type": "page", "userId": "u", "messageId": "x".repeat(100)},
        {"type": "page", "userId": "u"},
        {"type": "page", "userId": "u", "messageId": null},
    ]});
    expect_ok(s.post("/v1/batch").json(&body).send().await.unwrap()).await;
    let e = s.events();
    assert_eq!(e[0]["messageId"], "x".repeat(100));
    let a = uuid::Uuid::parse_str(e[1]["messageId"].as_str().unwrap()).unwrap();
    let b = uuid::Uuid::parse_str(e[2]["messageId"].as_str().unwrap()).unwrap();
    assert_eq!((a.get_version_num(), b.get_version_num()), (4, 4));
    assert_ne!(a, b);
    s.stop().await;
}

fn parse(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(v.as_str().unwrap(), &Rfc3339).unwrap()
}

fn is_millis_utc(v: &Value) -> bool {
    let s = v.as_str().unwrap();
    // 2024-05-01T12:00:00.123Z
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[19] == b'.'
}

#[tokio::test]
async fn timestamps_follow_the_segment_formula() {
    let s = start().await;
    let before = OffsetDateTime::now_utc();
    // Client clock is a day behind: sentAt − originalTimestamp = 2.5 s.
    let body = json!({
        "sentAt": "2024-04-30T12:00:02.500+00:00",
        "batch": [
            {"type": "track", "userId": "u", "event": "skewed", "originalTimestamp": "2024-04-30T12:00:00Z"},
            {"type": "track", "userId": "u", "event": "explicit", "timestamp": "2020-01-01T00:00:00.123456+02:00"},
            {"type": "track", "userId": "u", "event": "bare"},
            {"type": "track", "userId": "u", "event": "own sentAt", "originalTimestamp": "2024-04-30T12:00:00Z",
             "sentAt": "2024-04-30T12:00:10Z"},
        ],
    });
    expect_ok(s.post("/v1/batch").json(&body).send().await.unwrap()).await;
    let after = OffsetDateTime::now_utc();
    let e = s.events();
    for ev in &e {
        for f in ["receivedAt", "timestamp", "originalTimestamp"] {
            assert!(is_millis_utc(&ev[f]), "{f}: {}", ev[f]);
        }
    }
    let received = parse(&e[0]["receivedAt"]);
    assert!(received >= before - time::Duration::milliseconds(1) && received <= after);
    assert_eq!(
        parse(&e[0]["timestamp"]),
        received - time::Duration::milliseconds(2500)
    );
    assert_eq!(e[0]["originalTimestamp"], "2024-04-30T12:00:00.000Z");
    assert_eq!(e[0]["sentAt"], "2024-04-30T12:00:02.500Z");
    assert_eq!(
        e[1]["timestamp"], "2019-12-31T22:00:00.123Z",
        "an explicit timestamp is kept"
    );
    assert_eq!(e[2]["timestamp"], e[2]["receivedAt"]);
    assert_eq!(e[2]["originalTimestamp"], e[2]["receivedAt"]);
    assert_eq!(
        parse(&e[3]["timestamp"]),
        parse(&e[3]["receivedAt"]) - time::Duration::seconds(10)
    );
    // All events of one request share receivedAt.
    assert!(e.iter().all(|ev| ev["receivedAt"] == e[0]["receivedAt"]));
    s.stop().await;
}

#[tokio::test]
async fn unknown_fields_and_null_ids_as_the_python_sdks_send_them() {
    let s = start().await;
    let body = json!({"batch": [{
        "type": "identify", "userId": "u1", "anonymousId": null,
        "context": {"traits": {"email": "a@b.c"}, "library": {"name": "analytics-python"}},
        "traits": {"plan": "pro"}, "customTopLevel": {"deep": [1, {"x": null}]},
        "_ferry": {"source": "forged"},
    }]});
    expect_ok(s.post("/v1/batch").json(&body).send().await.unwrap()).await;
    let e = &s.events()[0];
    assert!(e.get("anonymousId").is_none());
    assert_eq!(e["customTopLevel"], json!({"deep": [1, {"x": null}]}));
    assert_eq!(e["context"]["traits"]["email"], "a@b.c");
    assert_eq!(e["traits"]["plan"], "pro");
    assert_eq!(
        e["_ferry"],
        json!({"source": "web", "messageIdGenerated": true}),
        "a forged source tag is replaced (and the event had no messageId)"
    );
    s.stop().await;
}
