//! Operating a running server: `/metrics` counters add up, the admin API
//! (auth, pause/resume, cursor reset, dead letters), the CLI going through
//! it, `ferry config check`, and start-up safety (lock, foreign data dir).

mod common;

use common::events::{batch, identify, track};
use common::webhook::{Reply, Webhook};
use common::{serve_fails, spawn_server, ServerProcess};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

const TOKEN: &str = "admin-token-0123456789";
const KEY: &str = "wk_ops";

/// A webhook that answers 400 to events whose messageId starts with "bad".
async fn start_hook() -> Webhook {
    Webhook::builder()
        .otherwise(|id, _| id.starts_with("bad").then(|| Reply::status(400)))
        .start()
        .await
}

fn write_config(dir: &std::path::Path, hook_url: &str) -> std::path::PathBuf {
    let path = dir.join("ferry.toml");
    std::fs::write(
        &path,
        format!(
            r#"admin_token = "{TOKEN}"
[[sources]]
name = "app"
write_key = "{KEY}"

[[destinations]]
name = "hook"
type = "webhook"
url = "{hook_url}"
[destinations.filter]
types = ["track"]

[[destinations]]
name = "archive"
type = "file"
path = "{}"
"#,
            dir.join("archive.jsonl").display()
        ),
    )
    .unwrap();
    path
}

struct Ops {
    server: ServerProcess,
    http: reqwest::Client,
}

impl Ops {
    async fn send(&self, events: Vec<Value>) {
        let r = self
            .http
            .post(self.server.url("/v1/batch"))
            .basic_auth(KEY, Some(""))
            .json(&batch(events))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, self.server.url(path))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
    async fn status(&self, dest: &str) -> Value {
        self.admin(
            reqwest::Method::GET,
            &format!("/admin/destinations/{dest}"),
            None,
        )
        .await
        .1
    }
    /// Waits (bounded) until a destination's status satisfies `pred`.
    async fn wait_status(&self, dest: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.status(dest).await;
            if pred(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{dest} never reached the state; last: {s}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    async fn metrics(&self) -> HashMap<String, f64> {
        let text = self
            .http
            .get(self.server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                l.rsplit_once(' ')
                    .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(f64::NAN)))
            })
            .collect()
    }
}

fn sum(m: &HashMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_add_up_and_the_admin_api_operates_delivery() {
    let hook = start_hook().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &hook.url());
    let server = spawn_server(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "data",
        ],
        &[],
    );
    let ops = Ops {
        server,
        http: reqwest::Client::new(),
    };

    // 6 tracks (one is rejected by the webhook), 2 identifies (filtered out of "hook").
    let mut batch: Vec<Value> = (0..5)
        .map(|i| track().id(format!("t{i}")).user("u1").json())
        .collect();
    batch.push(track().id("bad-1").user("u2").json());
    batch.push(identify().id("i1").user("u1").json());
    batch.push(identify().id("i2").user("u3").json());
    ops.send(batch).await;
    // The status is published every commit tick: a cursor at the end means
    // every event below it was settled before that publish (a lag of 0
    // alone may be from a publish before the events arrived).
    ops.wait_status("hook", |s| {
        s["cursor"] == 8 && s["lag_events"] == 0 && s["dead_letters"] == 1
    })
    .await;
    ops.wait_status("archive", |s| s["cursor"] == 8 && s["lag_events"] == 0)
        .await;

    let m = ops.metrics().await;
    let ingested = sum(&m, "ferry_ingest_events_total");
    assert_eq!(ingested, 8.0);
    for (kind, n) in [("track", 6.0), ("identify", 2.0)] {
        let key = format!("ferry_ingest_events_total{{source=\"app\",type=\"{kind}\"}}");
        assert_eq!(m.get(&key), Some(&n), "{key}");
    }
    for dest in ["hook", "archive"] {
        let get = |name: &str| {
            m.get(&format!("{name}{{destination=\"{dest}\"}}"))
                .copied()
                .unwrap_or(0.0)
        };
        let accounted = get("ferry_delivery_delivered_total")
            + get("ferry_delivery_filtered_total")
            + get("ferry_delivery_dead_lettered_total")
            + get("ferry_delivery_lag_events");
        assert_eq!(
            accounted, ingested,
            "{dest}: delivered + filtered + dead-lettered + lag must equal ingested"
        );
    }
    assert_eq!(
        m["ferry_delivery_filtered_total{destination=\"hook\"}"],
        2.0
    );
    assert_eq!(
        m["ferry_delivery_dead_lettered_total{destination=\"hook\"}"],
        1.0
    );
    assert_eq!(
        m["ferry_delivery_delivered_total{destination=\"archive\"}"],
        8.0
    );
    assert_eq!(
        m["ferry_ingest_requests_total{source=\"app\",status=\"200\"}"],
        1.0
    );
    assert_eq!(m["ferry_log_end_offset"], 8.0);
    assert!(m["ferry_log_fsync_duration_seconds_count"] >= 1.0);

    // Auth: none or wrong → 401 with a JSON message.
    let r = ops
        .http
        .get(ops.server.url("/admin/destinations"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "unauthorized");
    let r = ops
        .http
        .get(ops.server.url("/admin/destinations"))
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (code, list) = ops
        .admin(reqwest::Method::GET, "/admin/destinations", None)
        .await;
    assert_eq!(code, 200);
    assert_eq!(list["destinations"].as_array().unwrap().len(), 2);
    assert_eq!(
        ops.admin(
            reqwest::Method::POST,
            "/admin/destinations/nope/pause",
            None
        )
        .await
        .0,
        404
    );

    // Pause: new events wait; resume: they go out.
    assert_eq!(
        ops.admin(
            reqwest::Method::POST,
            "/admin/destinations/hook/pause",
            None
        )
        .await
        .0,
        200
    );
    ops.wait_status("hook", |s| s["paused"] == true).await;
    ops.send(vec![track().id("p1").user("u1").json()]).await;
    ops.wait_status("hook", |s| s["lag_events"] == 1).await;
    assert!(!hook.delivered.snapshot().contains(&"p1".to_string()));
    assert_eq!(
        ops.admin(
            reqwest::Method::POST,
            "/admin/destinations/hook/resume",
            None
        )
        .await
        .0,
        200
    );
    ops.wait_status("hook", |s| s["lag_events"] == 0 && s["paused"] == false)
        .await;
    assert!(hook.delivered.snapshot().contains(&"p1".to_string()));

    // Cursor reset to earliest: everything is delivered again.
    let before = hook.delivered.len();
    let (code, v) = ops
        .admin(
            reqwest::Method::POST,
            "/admin/destinations/hook/cursor",
            Some(json!({"to": "earliest"})),
        )
        .await;
    assert_eq!((code, v["cursor"].as_u64()), (200, Some(0)));
    // The reset redelivers.
    hook.delivered
        .wait_within(Duration::from_secs(30), |seen| seen.len() >= before + 6)
        .await;
    ops.wait_status("hook", |s| s["lag_events"] == 0 && s["dead_letters"] == 1)
        .await;
    assert_eq!(
        hook.delivered.len(),
        before + 6,
        "5 tracks and p1 again, nothing more"
    );
    let (code, v) = ops
        .admin(
            reqwest::Method::POST,
            "/admin/destinations/hook/cursor",
            Some(json!({"to": "next week"})),
        )
        .await;
    assert_eq!(code, 400, "{v}");

    // Dead letters through the CLI while the server holds the data dir.
    let data = dir.path().join("data");
    let cli = |args: &[&str], token: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
        c.args(args)
            .arg("--data-dir")
            .arg(&data)
            .env_remove("FERRY_ADMIN_TOKEN");
        if token {
            c.env("FERRY_ADMIN_TOKEN", TOKEN);
        }
        c.output().unwrap()
    };
    let out = cli(&["dlq", "list", "hook"], false);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--admin-token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["dlq", "list", "hook"], true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        listing.contains("messageId=bad-1") && listing.contains("status=400"),
        "{listing}"
    );
    let id = listing.split('\t').next().unwrap().to_string();
    let (code, v) = ops
        .admin(
            reqwest::Method::GET,
            &format!("/admin/destinations/hook/dlq/{id}"),
            None,
        )
        .await;
    assert_eq!((code, v["message_id"].as_str()), (200, Some("bad-1")));
    let out = cli(&["cursors"], true);
    assert!(String::from_utf8_lossy(&out.stdout).contains("archive"));
    let out = cli(&["dlq", "replay", "hook", "--all"], true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Replayed, rejected again (still "bad"), so back among the dead letters.
    ops.wait_status("hook", |s| {
        s["replay_queued"] == 0 && s["dead_letters"] == 1
    })
    .await;
    let out = cli(&["dlq", "purge", "hook"], true);
    assert!(String::from_utf8_lossy(&out.stdout).contains("purged 1"));
    assert_eq!(ops.status("hook").await["dead_letters"], 0);

    assert!(ops.server.terminate().success());
    assert!(
        !data.join("server.json").exists(),
        "the admin address file is removed at shutdown"
    );
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = spawn_server(dir.path(), &["--listen", "127.0.0.1:0"], &[]);
    let err = serve_fails(dir.path(), &["--listen", "127.0.0.1:0"]);
    assert!(err.contains("in use by another ferry process"), "{err}");
    assert!(first.terminate().success());
}

#[test]
fn foreign_and_unusable_data_dirs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("thesis.tex"), "precious").unwrap();
    let err = serve_fails(dir.path(), &["--listen", "127.0.0.1:0", "--data-dir", "."]);
    assert!(err.contains("is not a ferry data directory"), "{err}");
    std::fs::write(dir.path().join("file"), "x").unwrap();
    let err = serve_fails(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--data-dir", "file"],
    );
    assert!(err.contains("is not a directory"), "{err}");
}

#[test]
fn config_check_prints_the_effective_config_or_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), "http://127.0.0.1:9/hook");
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["config", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let effective: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        effective["destinations"][0]["timeout"], "10s",
        "defaults are filled in"
    );
    assert_eq!(
        effective["destinations"][0]["batch_size"], 1,
        "and the type's defaults"
    );
    assert_eq!(effective["destinations"][0]["retry"]["max_duration"], "4h");
    assert_eq!(effective["admin_token"], "<redacted>");
    assert_eq!(effective["sources"][0]["write_key"], "<redacted>");
    // The memory budget, its split, and what it sizes.
    assert_eq!(effective["memory"]["budget"], "128MiB");
    assert_eq!(effective["memory"]["split"]["dedup_filters"], 32 << 20);
    assert_eq!(effective["dedup"]["capacity"], 10_000_000);
    assert_eq!(
        effective["destinations"][0]["window_bytes"],
        16 << 20,
        "at least twice what the webhook's requests in flight carry (16 × 512 KiB × 2)"
    );
    assert_eq!(
        effective["destinations"][1]["window_bytes"],
        16 << 20,
        "the file's: 2 × 4 MiB × 2, above its share (an eighth of the budget / 2)"
    );

    let small = dir.path().join("small.toml");
    std::fs::write(&small, "[memory]\nbudget = \"4MiB\"\n").unwrap();
    let out = common::ferry_cli(&["config", "check", small.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("memory.budget") && err.contains("below the smallest budget, 16MiB"),
        "{err}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[destinations]]\nname = \"x\"\ntype = \"webhook\"\nurl = \"http://h/\"\nretry = { base = \"soon\" }\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("destinations[0].retry.base") && err.contains("invalid duration"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["config", "check", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}
