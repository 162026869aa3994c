//! ferry → ferry: an edge ferry forwards to a second ferry process (the
//! upstream, on another port) through a `type = "segment"` destination,
//! both the real binary. Every event arrives once, in per-user order, with
//! its messageId, timestamp and properties; an edge killed with SIGKILL
//! mid-forward re-sends, and the upstream's dedup stores each event once;
//! an upstream that is down for a while gets the whole backlog once it is
//! back, with nothing dead-lettered.

mod common;

use common::events::{step, user_seq};
use common::{spawn_server, ServerProcess, WEB_KEY};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const UPSTREAM_KEY: &str = "wk_central";
const ADMIN: &str = "0123456789abcdef-admin";

/// The upstream ferry's configuration: one source for the edge, dedup on
/// (the default), no destination (events are stored).
fn upstream_config(root: &Path) -> PathBuf {
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nadmin_token = \"{ADMIN}\"\n[[sources]]\nname = \"edge\"\nwrite_key = \"{UPSTREAM_KEY}\"\n",
        root.join("up").display()
    );
    let path = root.join("upstream.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The edge's configuration: the tests' web source, and a segment
/// destination "central" forwarding to `upstream`, with `extra` lines.
fn edge_config(root: &Path, upstream: SocketAddr, extra: &str) -> PathBuf {
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nadmin_token = \"{ADMIN}\"\n[[sources]]\nname = \"web\"\nwrite_key = \"{WEB_KEY}\"\n\
         [[destinations]]\nname = \"central\"\ntype = \"segment\"\nurl = \"http://{upstream}\"\nwrite_key = \"{UPSTREAM_KEY}\"\nbatch_size = 100\n{extra}\n\
         [destinations.retry]\nbase = \"20ms\"\ncap = \"300ms\"\n",
        root.join("edge").display()
    );
    let path = root.join("edge.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn serve(root: &Path, config: &Path, extra_args: &[&str]) -> ServerProcess {
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(extra_args);
    spawn_server(root, &args, &[])
}

/// `users` × `per_user` events, users interleaved: the `seq`th of a user
/// happened `seq` seconds after 2026-01-01T00:00:00Z by the client's clock,
/// which runs an hour ahead (each request's `sentAt`).
async fn send(http: &reqwest::Client, edge: &ServerProcess, users: usize, per_user: u64) {
    let mut events = Vec::new();
    for seq in 0..per_user {
        for u in 0..users {
            let e = step(&format!("u{u}"), seq)
                .with(
                    "originalTimestamp",
                    format!("2026-01-01T00:{:02}:{:02}.250Z", seq / 60, seq % 60),
                )
                .with(
                    "properties",
                    json!({"seq": seq, "user": u, "nested": {"ok": true}}),
                );
            events.push(Value::from(e));
        }
    }
    for chunk in events.chunks(100) {
        let body = json!({"batch": chunk, "sentAt": "2026-01-01T01:00:00.000Z"});
        let r = http
            .post(edge.url("/v1/batch"))
            .basic_auth(WEB_KEY, Some(""))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
}

/// The edge's destination status, polled until `done` holds (at most 2 min).
async fn wait_edge(
    http: &reqwest::Client,
    edge: &ServerProcess,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let status = edge.first_destination(http, ADMIN).await;
        if done(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} not reached: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Everything `total` events forwarded: the cursor at the end, committed.
async fn wait_forwarded(http: &reqwest::Client, edge: &ServerProcess, total: u64) -> Value {
    wait_edge(http, edge, "everything forwarded", |s| {
        s["committed_cursor"] == total && s["lag_events"] == 0
    })
    .await
}

/// The edge's dead letters, through its admin API.
async fn dead_letters(http: &reqwest::Client, edge: &ServerProcess) -> Vec<Value> {
    let r = http
        .get(edge.url("/admin/destinations/central/dlq"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["dead_letters"].as_array().unwrap().clone()
}

/// The events stored in a stopped ferry's data directory, in log order.
fn stored(data_dir: &Path) -> Vec<Value> {
    let view = ferry::log::LogView::open(&data_dir.join("log")).unwrap();
    let mut reader = view.reader(view.start_offset()).unwrap();
    let mut out = Vec::new();
    while let Some(r) = reader.next().unwrap() {
        out.push(serde_json::from_slice(ferry::stored_event::json(&r.payload)).unwrap());
    }
    out
}

/// Checks the upstream's store against the edge's: each event exactly once,
/// in per-user order, with the edge's messageId, timestamp, original
/// timestamp and properties; stored as the upstream's source "edge".
fn assert_forwarded_once(upstream: &[Value], edge: &[Value], users: usize, per_user: u64) {
    let total = users * per_user as usize;
    assert_eq!(edge.len(), total);
    let ids: Vec<&str> = upstream
        .iter()
        .map(|e| e["messageId"].as_str().unwrap())
        .collect();
    let distinct: HashSet<&&str> = ids.iter().collect();
    assert_eq!(
        distinct.len(),
        ids.len(),
        "an event was stored twice upstream"
    );
    assert_eq!(ids.len(), total, "events missing upstream");
    let mut last: HashMap<&str, u64> = HashMap::new();
    for id in &ids {
        let (user, seq) = user_seq(id);
        if let Some(prev) = last.insert(user, seq) {
            assert!(prev < seq, "user {user}: {seq} stored after {prev}");
        }
    }
    let at_edge: HashMap<&str, &Value> = edge
        .iter()
        .map(|e| (e["messageId"].as_str().unwrap(), e))
        .collect();
    for up in upstream {
        let id = up["messageId"].as_str().unwrap();
        let original = at_edge[id];
        for field in [
            "timestamp",
            "originalTimestamp",
            "properties",
            "userId",
            "type",
            "event",
        ] {
            assert_eq!(up[field], original[field], "{id}: {field}");
        }
        assert_eq!(up["_ferry"]["source"], "edge");
        assert_ne!(up["_ferry"], original["_ferry"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_forwards_every_event_once_in_order_with_its_time() {
    let root = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let upstream = serve(root.path(), &upstream_config(root.path()), &[]);
    let edge = serve(
        root.path(),
        &edge_config(root.path(), upstream.addr, ""),
        &[],
    );
    let (users, per_user) = (40, 25);
    send(&http, &edge, users, per_user).await;
    let status = wait_forwarded(&http, &edge, (users as u64) * per_user).await;
    assert_eq!(status["kind"], "segment");
    assert!(dead_letters(&http, &edge).await.is_empty());
    assert!(edge.terminate().success());
    assert!(upstream.terminate().success());
    let edge_events = stored(&root.path().join("edge"));
    let up_events = stored(&root.path().join("up"));
    assert_forwarded_once(&up_events, &edge_events, users, per_user);
    // The client's clock ran an hour ahead: the edge corrected the time,
    // and the upstream kept the edge's `timestamp` instead of correcting it
    // again against the forwarding time.
    let first = &up_events[0];
    assert_ne!(first["timestamp"], first["originalTimestamp"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_killed_mid_forward_resends_and_the_upstream_stores_each_event_once() {
    let root = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let upstream = serve(root.path(), &upstream_config(root.path()), &[]);
    // 2,000 events a second: forwarding 6,000 takes about three seconds.
    let config = edge_config(root.path(), upstream.addr, "rate_limit = 2000");
    let mut edge = serve(root.path(), &config, &[]);
    let (users, per_user) = (60, 100);
    let total = (users as u64) * per_user;
    send(&http, &edge, users, per_user).await;
    wait_edge(&http, &edge, "a quarter forwarded", |s| {
        s["committed_cursor"].as_u64().unwrap() >= total / 4
    })
    .await;
    edge.child.kill().unwrap(); // SIGKILL
    edge.child.wait().unwrap();
    let status = {
        let edge = serve(root.path(), &config, &[]);
        let status = wait_forwarded(&http, &edge, total).await;
        assert!(dead_letters(&http, &edge).await.is_empty());
        assert!(edge.terminate().success());
        status
    };
    assert_eq!(status["paused"], false);
    // How many re-sent events the upstream's dedup dropped (the edge's
    // in-flight requests and its last uncommitted cursor progress).
    let dropped = upstream
        .metric(&http, "ferry_ingest_duplicates_total")
        .await;
    eprintln!("the upstream dropped {dropped} re-sent events as duplicates");
    assert!(upstream.terminate().success());
    assert_forwarded_once(
        &stored(&root.path().join("up")),
        &stored(&root.path().join("edge")),
        users,
        per_user,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_drains_once_the_upstream_is_back_and_nothing_is_dead_lettered() {
    let root = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let up_config = upstream_config(root.path());
    // The upstream's port, then the upstream goes away: connections are refused.
    let upstream = serve(root.path(), &up_config, &[]);
    let addr = upstream.addr;
    assert!(upstream.terminate().success());
    let edge = serve(root.path(), &edge_config(root.path(), addr, ""), &[]);
    let (users, per_user) = (30, 40);
    let total = (users as u64) * per_user;
    send(&http, &edge, users, per_user).await;
    let status = wait_edge(&http, &edge, "the refusal seen", |s| {
        s["failing"] == true
            && s["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("connection"))
            && s["retrying_users"].as_u64().unwrap() > 0
            && s["lag_events"] == total
    })
    .await;
    assert_eq!(status["paused"], false);
    assert!(dead_letters(&http, &edge).await.is_empty());
    // Back on the same port: the backlog drains, nothing lost or dead.
    let upstream = serve(root.path(), &up_config, &["--listen", &addr.to_string()]);
    let status = wait_forwarded(&http, &edge, total).await;
    assert_eq!(status["failing"], false, "{status}");
    assert!(dead_letters(&http, &edge).await.is_empty());
    assert!(edge.terminate().success());
    assert!(upstream.terminate().success());
    assert_forwarded_once(
        &stored(&root.path().join("up")),
        &stored(&root.path().join("edge")),
        users,
        per_user,
    );
}
