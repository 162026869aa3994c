//! Fuzzing (stable toolchain, proptest-driven) of event parsing and
//! normalisation through the real router, in process: arbitrary bytes and
//! arbitrary JSON (with edge-case timestamps, ids and types) as bodies of
//! every event endpoint, odd header values and pixel query strings. No input
//! may produce a 5xx or a panic; every answer is JSON (pixels: a GIF), and a
//! 200 stores exactly `count` well-formed events. `FERRY_FUZZ_CASES`
//! (default 256 per target) sets the run length.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::env::env_or;
use ferry::ingest::{router, AppState};
use ferry::log::crash_storage::CrashStorage;
use ferry::log::{Log, LogOptions};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::Arc;
use tower::ServiceExt;

fn cases() -> u32 {
    env_or("FERRY_FUZZ_CASES", 256)
}

/// The router over an in-memory log, and a runtime to drive it.
struct Target {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    log: Log,
}

fn target() -> Target {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let log = rt.block_on(async {
        Log::open_with(
            Arc::new(CrashStorage::new()),
            Path::new("/fuzz/log"),
            LogOptions::default(),
        )
        .unwrap()
    });
    let mut config = common::config();
    config.limits.max_event_bytes = 4096;
    config.limits.max_request_bytes = 64 * 1024;
    let metrics = Arc::new(ferry::metrics::Metrics::new());
    let app = router(AppState::new(&config, log.clone(), metrics, None));
    Target { rt, app, log }
}

impl Target {
    /// Sends one request; checks the answer; returns its status.
    fn send(&self, request: Request<Body>, pixel: bool) -> Result<u16, TestCaseError> {
        let before = self.log.durable_end();
        let (status, content_type, body) = self.rt.block_on(async {
            let r = self.app.clone().oneshot(request).await.unwrap();
            let status = r.status();
            let ct = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap_or("").to_string())
                .unwrap_or_default();
            let body = axum::body::to_bytes(r.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, ct, body)
        });
        prop_assert!(
            !status.is_server_error(),
            "{status}: {}",
            String::from_utf8_lossy(&body)
        );
        let stored = self.log.durable_end() - before;
        if pixel {
            prop_assert_eq!(content_type.as_str(), "image/gif");
            prop_assert!(stored == u64::from(status == StatusCode::OK));
        } else {
            prop_assert!(
                content_type.starts_with("application/json"),
                "{}",
                content_type
            );
            let v: Value = serde_json::from_slice(&body)
                .map_err(|e| TestCaseError::fail(format!("answer not JSON: {e}")))?;
            if status == StatusCode::OK {
                prop_assert_eq!(v["success"].as_bool(), Some(true));
                if let Some(count) = v["count"].as_u64() {
                    prop_assert_eq!(stored, count);
                }
            } else {
                prop_assert_eq!(v["success"].as_bool(), Some(false));
                prop_assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
                prop_assert_eq!(stored, 0, "a refused request stored something");
            }
        }
        // Whatever was stored is a normalised event.
        let mut reader = self.log.reader(before).unwrap();
        while let Some(rec) = reader.next().unwrap() {
            let e: Map<String, Value> =
                serde_json::from_slice(ferry::stored_event::json(&rec.payload)).unwrap();
            for field in [
                "type",
                "messageId",
                "receivedAt",
                "timestamp",
                "originalTimestamp",
                "_ferry",
            ] {
                prop_assert!(
                    e.contains_key(field),
                    "stored event lacks {}: {:?}",
                    field,
                    e
                );
            }
            prop_assert!(!e.contains_key("writeKey"));
        }
        Ok(status.as_u16())
    }
}

const PATHS: &[&str] = &[
    "/v1/track",
    "/v1/identify",
    "/v1/page",
    "/v1/screen",
    "/v1/group",
    "/v1/alias",
    "/v1/t",
    "/v1/i",
    "/v1/batch",
    "/v1/import",
    "/v1/b",
    "/beacon/v1/batch?writeKey=wk_web_test",
    "/v1/m",
];

fn post(path: &str, body: Vec<u8>, headers: &[(&str, Vec<u8>)]) -> Request<Body> {
    let mut b = Request::post(path).header("authorization", "Basic d2tfd2ViX3Rlc3Q6"); // wk_web_test:
    for (k, v) in headers {
        b = b.header(*k, v.as_slice());
    }
    b.body(Body::from(body)).unwrap()
}

/// Timestamps near every edge the parser and the skew correction have.
fn timestamp() -> impl Strategy<Value = String> {
    let year = prop_oneof![
        Just(0u32),
        Just(1),
        Just(1969),
        Just(1970),
        Just(2024),
        Just(9998),
        Just(9999),
        0u32..10000
    ];
    let offset = prop_oneof![
        Just("Z".to_string()),
        Just("+23:59".to_string()),
        Just("-23:59".to_string()),
        Just("+00:00".to_string()),
        (0u32..24, 0u32..60, any::<bool>())
            .prop_map(|(h, m, neg)| format!("{}{h:02}:{m:02}", if neg { '-' } else { '+' }))
    ];
    let frac = prop_oneof![
        Just(String::new()),
        Just(".5".to_string()),
        Just(".123456789".to_string()),
        "\\.[0-9]{1,12}"
    ];
    let day = prop_oneof![
        Just((1u32, 1u32)),
        Just((12, 31)),
        Just((2, 29)),
        (1u32..13, 1u32..32)
    ];
    prop_oneof![
        4 => (year, day, 0u32..25, 0u32..61, frac, offset).prop_map(|(y, (mo, d), h, mi, f, o)| format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:00{f}{o}")),
        1 => "[0-9T:.Z+-]{0,30}",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        ".{0,12}".prop_map(Value::String),
        Just(Value::String(String::new())),
        Just(Value::String("m".repeat(101))),
        Just(Value::String("\u{0}\u{ffff}\u{10ffff}".into())),
        timestamp().prop_map(Value::String),
        prop::sample::select(vec![
            "track", "identify", "page", "screen", "group", "alias", "TRACK", "batch"
        ])
        .prop_map(|s| Value::String(s.into())),
    ]
}

const KEYS: &[&str] = &[
    "type",
    "userId",
    "anonymousId",
    "event",
    "messageId",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "context",
    "integrations",
    "properties",
    "traits",
    "groupId",
    "previousId",
    "writeKey",
    "_ferry",
    "batch",
    "x",
];

fn json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..8).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

/// An event that is mostly valid, with a few fields replaced by fuzz.
fn near_valid_event() -> impl Strategy<Value = Value> {
    (prop::sample::select(vec!["track", "identify", "page", "screen", "group", "alias"]), prop::collection::vec((prop::sample::select(KEYS), scalar()), 0..4))
        .prop_map(|(kind, edits)| {
            let mut e = serde_json::json!({"type": kind, "userId": "u", "event": "E", "groupId": "g", "previousId": "p"});
            for (k, v) in edits {
                e[k] = v;
            }
            e
        })
}

#[test]
fn arbitrary_bytes_to_every_endpoint_never_5xx() {
    let t = target();
    let strategy = (
        prop::sample::select(PATHS),
        prop::collection::vec(any::<u8>(), 0..512),
        prop::option::of(prop::sample::select(vec!["gzip", "identity", "br", ""])),
    );
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
    .run(&strategy, |(path, body, encoding)| {
        let headers: Vec<(&str, Vec<u8>)> = encoding
            .map(|e| ("content-encoding", e.as_bytes().to_vec()))
            .into_iter()
            .collect();
        t.send(post(path, body, &headers), false).map(|_| ())
    })
    .unwrap();
}

#[test]
fn arbitrary_json_events_and_batches_never_5xx() {
    let t = target();
    let body = prop_oneof![
        json(),
        near_valid_event(),
        prop::collection::vec(prop_oneof![near_valid_event(), json()], 1..5).prop_map(|items| serde_json::json!({"batch": items})),
        (prop::collection::vec(near_valid_event(), 1..4), scalar(), json()).prop_map(|(items, sent_at, context)| serde_json::json!({"batch": items, "sentAt": sent_at, "context": context})),
    ];
    let strategy = (
        prop::sample::select(PATHS),
        body,
        prop::option::of(timestamp()),
        prop::option::of(".{0,20}"),
    );
    let accepted = std::cell::Cell::new(0u32);
    TestRunner::new(Config {
        cases: cases() * 4,
        failure_persistence: None,
        ..Config::default()
    })
    .run(&strategy, |(path, body, sent_at, anon)| {
        let mut headers = Vec::new();
        if let Some(s) = sent_at {
            headers.push(("sentat", s.into_bytes()));
        }
        if let Some(a) = anon {
            if axum::http::HeaderValue::from_str(&a).is_ok() {
                headers.push(("anonymousid", a.into_bytes()));
            }
        }
        let gz = body.to_string().len() % 3 == 0;
        let mut bytes = body.to_string().into_bytes();
        if gz {
            bytes = common::gzip(&bytes);
        }
        if t.send(post(path, bytes, &headers), false)? == 200 {
            accepted.set(accepted.get() + 1);
        }
        Ok(())
    })
    .unwrap();
    assert!(
        accepted.get() > 0,
        "the generator should produce some valid events"
    );
    eprintln!("{} fuzzed requests accepted", accepted.get());
}

#[test]
fn arbitrary_pixel_queries_never_5xx() {
    let t = target();
    let param = (
        prop::sample::select(vec![
            "userId",
            "anonymousId",
            "event",
            "messageId",
            "timestamp",
            "sentAt",
            "properties.a",
            "context.b.c",
            "type",
            "writeKey",
            "a..b",
            ".",
            "",
        ]),
        prop_oneof![timestamp(), ".{0,10}"],
    );
    let strategy = (
        prop::sample::select(vec!["/pixel/v1/track", "/pixel/v1/page"]),
        prop::collection::vec(param, 0..6),
    );
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
    .run(&strategy, |(path, params)| {
        let mut query: Vec<(String, String)> = vec![("writeKey".into(), common::WEB_KEY.into())];
        query.extend(params.into_iter().map(|(k, v)| (k.to_string(), v)));
        let q = serde_urlencoded::to_string(&query).unwrap();
        let request = Request::get(format!("{path}?{q}"))
            .body(Body::empty())
            .unwrap();
        let status = t.send(request, true)?;
        prop_assert!(status == 200 || (400..500).contains(&status));
        Ok(())
    })
    .unwrap();
}
