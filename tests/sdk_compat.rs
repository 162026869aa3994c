//! Compatibility with the real segment-analytics-python SDK from PyPI: it
//! sends every event type (plain and gzipped) to a running `ferry serve`,
//! and each event shows up in `ferry log dump` with its fields.
//!
//! Needs python3 with venv, as `cargo test` does (README.md), and PyPI
//! the first time: the SDK is installed into a venv under `target/` that
//! later runs reuse. Without them the test fails and says what is missing.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// The venv holding the SDK, made by tests/sdk/setup-venv.sh.
fn venv() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sdk-venv");
    let python = Command::new("python3").arg("--version").output();
    assert!(
        python.is_ok_and(|o| o.status.success()),
        "the SDK compatibility test needs python3, which is not installed"
    );
    let setup = Command::new("bash")
        .arg(manifest.join("tests/sdk/setup-venv.sh"))
        .arg(&venv)
        .status()
        .unwrap();
    assert!(
        setup.success(),
        "tests/sdk/setup-venv.sh failed: python3-venv missing (Debian: apt-get install python3-venv), or PyPI unreachable?"
    );
    venv
}

fn dump(data_dir: &Path) -> HashMap<String, Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["log", "dump", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            let event = record["payload"].clone();
            (event["messageId"].as_str().unwrap().to_owned(), event)
        })
        .collect()
}

#[test]
fn segment_python_sdk_events_arrive_with_their_fields() {
    let venv = venv();
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_server(dir.path(), &["--listen", "127.0.0.1:0"], &[]);
    let key = server.dev_key.clone().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/segment_python.py");
    let out = Command::new(venv.join("bin/python"))
        .arg(script)
        .arg(server.url(""))
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "SDK script failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(server.terminate().success());

    let events = dump(&dir.path().join("ferry-data"));
    assert_eq!(events.len(), 7, "{:?}", events.keys());
    for e in events.values() {
        assert_eq!(e["_ferry"]["source"], "dev");
        assert_eq!(e["context"]["library"]["name"], "analytics-python");
        for f in ["receivedAt", "timestamp", "originalTimestamp", "sentAt"] {
            assert!(
                e[f].as_str().is_some_and(|s| s.ends_with('Z')),
                "{f} in {e}"
            );
        }
    }
    let t = &events["py-track"];
    assert_eq!(
        (&t["type"], &t["userId"], &t["event"]),
        (&json!("track"), &json!("u-py"), &json!("Order Completed"))
    );
    assert_eq!(
        t["properties"],
        json!({"revenue": 9.5, "items": [{"sku": "a-1", "qty": 2}]})
    );
    assert_eq!(t["context"]["ip"], "10.0.0.1");
    let i = &events["py-identify"];
    assert_eq!(i["type"], "identify");
    assert_eq!(
        i["traits"],
        json!({"email": "py@example.com", "plan": "pro"})
    );
    let p = &events["py-page"];
    assert_eq!(
        (&p["type"], &p["name"], &p["category"]),
        (&json!("page"), &json!("Install"), &json!("Docs"))
    );
    assert_eq!(p["properties"]["url"], "https://example.com/install");
    let g = &events["py-group"];
    assert_eq!(
        (&g["type"], &g["groupId"], &g["traits"]["name"]),
        (&json!("group"), &json!("g-py"), &json!("Acme"))
    );
    let a = &events["py-alias"];
    assert_eq!(
        (&a["type"], &a["userId"], &a["previousId"]),
        (&json!("alias"), &json!("u-py"), &json!("anon-py"))
    );
    assert_eq!(
        events["py-timestamp"]["timestamp"],
        "2020-01-02T03:04:05.678Z"
    );
    let z = &events["py-gzip"];
    assert_eq!(
        (&z["event"], &z["anonymousId"]),
        (&json!("Gzipped"), &json!("anon-gz"))
    );
    assert!(z.get("userId").is_none());
}
