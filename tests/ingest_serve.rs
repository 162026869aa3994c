//! `ferry serve` as a process: the embedded default with its development
//! key, TOML config validation naming the key, env overrides, SIGTERM.

mod common;

use common::*;

/// Sends one track call with `key`; returns the status.
async fn track(url: String, key: &str) -> u16 {
    reqwest::Client::new()
        .post(url)
        .basic_auth(key, Some(""))
        .json(&events::track().untyped().json())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn default_config_generates_the_dev_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_server(dir.path(), &["--listen", "127.0.0.1:0"], &[]);
    let key = server.dev_key.clone().expect("the dev key is printed");
    let stored = std::fs::read_to_string(dir.path().join("ferry-data/dev-write-key")).unwrap();
    assert_eq!(stored.trim(), key);
    assert_eq!(track(server.url("/v1/track"), &key).await, 200);
    assert_eq!(track(server.url("/v1/track"), "wrong").await, 401);
    assert!(server.terminate().success(), "SIGTERM is a clean stop");

    let again = spawn_server(dir.path(), &["--listen", "127.0.0.1:0"], &[]);
    assert_eq!(
        again.dev_key.as_deref(),
        Some(key.as_str()),
        "the key is generated once"
    );
    assert!(again.terminate().success());
    assert!(dir.path().join("ferry-data/log").is_dir());
}

#[tokio::test]
async fn env_overrides_listen_address_and_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("elsewhere");
    let config = dir.path().join("ferry.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:1\"\ndata_dir = \"/nonexistent/ferry\"\n[[sources]]\nname = \"web\"\nwrite_key = \"wk_cfg\"\n").unwrap();
    let server = spawn_server(
        dir.path(),
        &["--config", config.to_str().unwrap()],
        &[
            ("FERRY_LISTEN", "127.0.0.1:0"),
            ("FERRY_DATA_DIR", data.to_str().unwrap()),
        ],
    );
    assert!(
        server.dev_key.is_none(),
        "configured sources need no dev key"
    );
    assert_eq!(track(server.url("/v1/track"), "wk_cfg").await, 200);
    assert!(server.terminate().success());
    assert!(data.join("log").is_dir());
    assert!(!data.join("dev-write-key").exists());
}

#[test]
fn bad_config_files_are_rejected_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("listen = \"127.0.0.1:0\"\nlisten_port = 3\n", "listen_port"),
        (
            "[limits]\nmax_event_bytes = \"big\"\n",
            "limits.max_event_bytes",
        ),
        ("[limits]\nmax_in_flight = 0\n", "limits.max_in_flight"),
        (
            "[cors]\nallowed_origins = [\"*\"]\nmax_age = 5\n",
            "max_age",
        ),
        ("[[sources]]\nname = \"web\"\n", "write_key"),
        ("listen = \"localhost\"\n", "listen"),
    ];
    for (text, key) in cases {
        let path = dir.path().join("ferry.toml");
        std::fs::write(&path, text).unwrap();
        let stderr = serve_fails(dir.path(), &["--config", path.to_str().unwrap()]);
        assert!(stderr.contains(key), "{text:?}: {stderr}");
    }
    let stderr = serve_fails(dir.path(), &["--config", "missing.toml"]);
    assert!(stderr.contains("missing.toml"), "{stderr}");
    assert!(
        !dir.path().join("ferry-data").exists(),
        "nothing is created for a bad config"
    );
}
