//! What the streaming-destination tests (NATS, Kafka) share: a ferry with
//! one destination, per-user steps sent to it, waiting until everything is
//! delivered, dead letters read over the admin API, and a `ferry serve`
//! process with a config file that a test kills mid-stream and restarts.

use super::events::{batch, step};
use super::{config, spawn_server, start_with, wait_status, ServerProcess, TestServer, WEB_KEY};
use serde_json::Value;
use std::path::PathBuf;

/// The admin token of these servers.
pub const ADMIN: &str = "admin-token-0123456789";

/// An in-process ferry whose one destination is the TOML table `destination`.
pub async fn ferry_with(destination: &str) -> TestServer {
    let mut c = config();
    c.admin_token = Some(ADMIN.into());
    c.destinations = vec![toml::from_str(destination).unwrap()];
    start_with(c).await
}

/// `user0`, `user1`, …
pub fn users(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user{i}")).collect()
}

/// Steps `from..to` of every user, round by round (see `events::step`).
pub fn steps(users: &[String], from: u64, to: u64) -> Vec<Value> {
    (from..to)
        .flat_map(|seq| users.iter().map(move |u| step(u, seq).json()))
        .collect()
}

/// Sends `events` as the "web" source to `base` (`http://addr`), `per`
/// events per request; each must be acknowledged.
pub async fn send(http: &reqwest::Client, base: &str, events: &[Value], per: usize) {
    for chunk in events.chunks(per) {
        let r = http
            .post(format!("{base}/v1/batch"))
            .basic_auth(WEB_KEY, Some(""))
            .json(&batch(chunk.to_vec()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
}

/// Posts `events` to `server` as one batch, which must be accepted.
pub async fn post_batch(server: &TestServer, events: Vec<Value>) {
    let r = server
        .post("/v1/batch")
        .json(&batch(events))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Sends steps `from..to` of every user to `server`, 100 per request.
pub async fn send_steps(server: &TestServer, users: &[String], from: u64, to: u64) {
    let base = server.url("");
    send(&server.client, &base, &steps(users, from, to), 100).await;
}

/// Waits until the destination's cursor reaches the log's durable end.
pub async fn wait_delivered(server: &TestServer) -> Value {
    let end = server.log.durable_end();
    let handle = &server.server().destinations()[0];
    wait_status(handle, "every event delivered", |s| s["cursor"] == end).await
}

/// Waits until the destination reports failures with an error, and checks
/// that its cursor stays below the log's durable end meanwhile.
pub async fn wait_failing(server: &TestServer, what: &str) -> Value {
    let handle = &server.server().destinations()[0];
    let status = wait_status(handle, what, |s| {
        s["failing"] == true && s["last_error"].is_string()
    })
    .await;
    assert!(
        status["cursor"].as_u64().unwrap() < server.log.durable_end(),
        "{status}"
    );
    status
}

/// The dead letters of `dest`, from the admin API.
pub async fn dead_letters(server: &TestServer, dest: &str) -> Vec<Value> {
    let r = server
        .get(&format!("/admin/destinations/{dest}/dlq"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["dead_letters"].as_array().expect("a list").clone()
}

/// A `ferry serve` process over a data directory of its own, with the "web"
/// source and one destination (`destination`, a TOML table body).
pub struct FerryProcess {
    /// The running server, if started.
    pub server: Option<ServerProcess>,
    pub http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl FerryProcess {
    /// Writes the config file and starts the process.
    pub fn start(destination: &str) -> FerryProcess {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ferry.toml"),
            format!(
                "admin_token = \"{ADMIN}\"\n[[sources]]\nname = \"web\"\nwrite_key = \"{WEB_KEY}\"\n\n[[destinations]]\n{}",
                destination.replace("\n[retry]", "\n[destinations.retry]")
            ),
        )
        .unwrap();
        let mut p = FerryProcess {
            server: None,
            http: reqwest::Client::new(),
            dir,
        };
        p.restart();
        p
    }

    /// Starts the process (again) on the same data directory.
    pub fn restart(&mut self) {
        let config: PathBuf = self.dir.path().join("ferry.toml");
        let config = config.to_str().unwrap();
        let args = [
            "--config",
            config,
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "data",
        ];
        self.server = Some(spawn_server(self.dir.path(), &args, &[]));
    }

    fn running(&self) -> &ServerProcess {
        self.server.as_ref().expect("the server is running")
    }

    /// `http://addr` of the running process.
    pub fn base(&self) -> String {
        self.running().url("")
    }

    /// The destination's status from the admin API.
    pub async fn status(&self) -> Value {
        self.running().first_destination(&self.http, ADMIN).await
    }

    /// Polls the status (every 20 ms, at most 60 s) until `done` holds.
    pub async fn wait(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let status = self.status().await;
            if done(&status) {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} not reached: {status}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The sum of a metric's samples on /metrics.
    pub async fn metric(&self, name: &str) -> f64 {
        self.running().metric(&self.http, name).await
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        let mut server = self.server.take().expect("the server is running");
        server.child.kill().unwrap();
        server.child.wait().unwrap();
    }
}
