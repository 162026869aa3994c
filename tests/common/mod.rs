//! Shared helpers of the black-box tests: the server `ferry serve` runs, on
//! 127.0.0.1:0 over a temporary data directory, reading events back from the log, the
//! real binary as a child process, and a webhook that records deliveries.
#![allow(dead_code)] // each test file uses a different subset

pub mod brokers;
pub mod env;
pub mod events;
pub mod streams;
pub mod webhook;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use ferry::config::{Config, SourceConfig};
use ferry::log::{Log, Storage};
use ferry::server::Server;
use serde_json::Value;

/// Write key of the source named "web".
pub const WEB_KEY: &str = "wk_web_test";
/// Write key of the source named "app".
pub const APP_KEY: &str = "wk_app_test";

/// A running ferry (what `ferry serve` runs) over a temporary data directory.
pub struct TestServer {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub log: Log,
    pub dir: tempfile::TempDir,
    server: Server,
}

/// Two sources, "web" and "app", dedup off (these tests count every stored
/// copy; the dedup tests turn it on), otherwise the default configuration
/// (its data directory is set by the `start` functions).
pub fn config() -> Config {
    let mut config = Config {
        sources: vec![
            SourceConfig {
                name: "web".into(),
                write_key: WEB_KEY.into(),
            },
            SourceConfig {
                name: "app".into(),
                write_key: APP_KEY.into(),
            },
        ],
        ..Config::default()
    };
    config.dedup.enabled = false;
    config
}

/// A server with [`config`].
pub async fn start() -> TestServer {
    start_with(config()).await
}

/// A server with the given configuration in a new temporary data directory.
pub async fn start_with(config: Config) -> TestServer {
    start_in(tempfile::tempdir().unwrap(), config).await
}

/// A server with the given configuration in `dir` (kept across restarts).
pub async fn start_in(dir: tempfile::TempDir, config: Config) -> TestServer {
    serve_in(dir, config, Server::start).await
}

/// A server whose log lives on the given storage (e.g. a fault-injecting
/// one), with the rest of its data directory in `dir`.
pub async fn start_on(
    storage: Arc<dyn Storage>,
    dir: tempfile::TempDir,
    config: Config,
) -> TestServer {
    serve_in(dir, config, |config, listener| {
        Server::start_on(storage, config, listener)
    })
    .await
}

/// Starts a server in `dir` with `start`, on 127.0.0.1 and a free port.
async fn serve_in<F>(
    dir: tempfile::TempDir,
    mut config: Config,
    start: impl FnOnce(Config, tokio::net::TcpListener) -> F,
) -> TestServer
where
    F: std::future::Future<Output = Result<Server, ferry::server::ServerError>>,
{
    config.data_dir = dir.path().to_path_buf();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = start(config, listener).await.unwrap();
    TestServer {
        addr: server.addr(),
        client: reqwest::Client::new(),
        log: server.log().clone(),
        dir,
        server,
    }
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A POST with Basic auth as the "web" source.
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(path))
            .basic_auth(WEB_KEY, Some(""))
    }

    /// A POST without any credentials.
    pub fn post_anon(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path))
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path))
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let response = self.get("/metrics").send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// Every durable event, read back through the log's reader.
    pub fn events(&self) -> Vec<Value> {
        read_events(&self.log)
    }

    /// The running server.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Stops accepting, waits for requests in progress, and returns.
    pub async fn stop(self) {
        self.server.shutdown().await.unwrap();
    }

    /// Stops the server and returns its data directory (to start it again).
    pub async fn stop_keeping_dir(self) -> tempfile::TempDir {
        self.server.shutdown().await.unwrap();
        self.dir
    }
}

/// Every durable record of `log`, parsed as JSON.
pub fn read_events(log: &Log) -> Vec<Value> {
    let mut reader = log.reader(log.start_offset()).unwrap();
    let mut out = Vec::new();
    while let Some(record) = reader.next().unwrap() {
        let json = ferry::stored_event::json(&record.payload);
        out.push(serde_json::from_slice(json).expect("stored events are JSON"));
    }
    out
}

/// Asserts an error answer: the status, a JSON body with `success: false`,
/// the machine-readable `code` and a message; returns the body.
pub async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(!body["error"].as_str().unwrap().is_empty(), "{body}");
    body
}

/// Asserts a 200 acknowledgement and returns its JSON body.
pub async fn expect_ok(response: reqwest::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status.as_u16(), 200, "{body}");
    assert_eq!(body["success"], true, "{body}");
    body
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Sends raw bytes (a request head, then `body`) and reads the answer until
/// the server closes; returns the status and the whole response text. The
/// head should carry `Connection: close`.
pub async fn raw_request(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (413) and close before reading all of the body.
    let _ = stream.write_all(body).await;
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A `ferry serve` process started from the real binary.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// The development write key, when the server printed one.
    pub dev_key: Option<String>,
}

/// Starts `ferry serve` with `args` in `cwd` and waits for its listening
/// line on stdout. Panics with the exit status if it stops first.
pub fn spawn_server(cwd: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> ServerProcess {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.arg("serve")
        .args(args)
        .current_dir(cwd)
        .env_remove("FERRY_LISTEN")
        .env_remove("FERRY_DATA_DIR")
        .env("FERRY_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn ferry");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut dev_key = None;
    loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("ferry serve stopped before listening: {:?}", child.wait());
        };
        if let Some(rest) = line.strip_prefix("development source \"dev\": write key ") {
            dev_key = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(addr) = line.strip_prefix("ferry listening on http://") {
            let addr = addr.trim().parse().unwrap();
            return ServerProcess {
                child,
                addr,
                dev_key,
            };
        }
    }
}

impl ServerProcess {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The first configured destination's status from the admin API.
    pub async fn first_destination(&self, http: &reqwest::Client, admin_token: &str) -> Value {
        let r = http
            .get(self.url("/admin/destinations"))
            .bearer_auth(admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        body["destinations"][0].clone()
    }

    /// The sum of the samples of `metric` (over every label set) on /metrics.
    pub async fn metric(&self, http: &reqwest::Client, metric: &str) -> f64 {
        let text = http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| {
                l.strip_prefix(metric)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Sends SIGTERM and waits; returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        // The shell's builtin kill: no procps needed.
        let ok = std::process::Command::new("sh")
            .args(["-c", &format!("kill -TERM {pid}")])
            .status()
            .unwrap();
        assert!(ok.success());
        self.child.wait().unwrap()
    }
}

/// A test that fails half-way leaves no server behind.
impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `ferry serve` expecting it to fail at start-up; returns stderr.
pub fn serve_fails(cwd: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("serve")
        .args(args)
        .current_dir(cwd)
        .env_remove("FERRY_LISTEN")
        .env_remove("FERRY_DATA_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "ferry serve should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the real `ferry` binary with `args` (no `FERRY_DATA_DIR` from the
/// environment) and returns its output.
pub fn ferry_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env_remove("FERRY_DATA_DIR")
        .output()
        .unwrap()
}

/// Output bytes as text, for assertions and failure messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A log and a delivery state store in a temporary directory, for tests
/// that run delivery in process.
pub struct DeliveryEnv {
    _tmp: tempfile::TempDir,
    pub log: Log,
    pub store: Arc<ferry::store::StateStore>,
}

/// A [`DeliveryEnv`] whose log has the given options (no free-space
/// reserve unless they set one).
pub fn delivery_env(options: ferry::log::LogOptions) -> DeliveryEnv {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(&tmp.path().join("log"), options).unwrap();
    let store = Arc::new(ferry::store::StateStore::open(&tmp.path().join("state.redb")).unwrap());
    DeliveryEnv {
        _tmp: tmp,
        log,
        store,
    }
}

/// Polls `done` on a destination's status (as JSON) until it holds, at most
/// 60 s; panics with `what` and the last status otherwise.
pub async fn wait_status(
    handle: &ferry::delivery::status::DestinationHandle,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = serde_json::to_value(handle.status()).unwrap();
        if done(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} not reached: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
