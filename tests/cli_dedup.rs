//! `ferry dedup stats` run as the real binary against a data directory whose
//! index was written through the library.

use ferry::data_dir::DataDir;
use ferry::dedup::{Dedup, DedupOptions, Key, SystemClock};
use std::path::Path;
use std::sync::Arc;

mod common;

use common::{ferry_cli as ferry, text};

/// An index holding 300 ids, 120 duplicates answered.
fn make_index(data_dir: &Path) -> Dedup {
    let opts = DedupOptions {
        capacity: 100_000,
        ..DedupOptions::default()
    };
    let d = Dedup::open(
        &DataDir::new(data_dir).dedup_index(),
        opts,
        Arc::new(SystemClock),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let keys: Vec<Key> = (0..300).map(|i| Key::new("cli", &i.to_string())).collect();
        d.begin(&keys).await.unwrap().commit(0..300);
        let again = d.begin(&keys[..120]).await.unwrap();
        assert!(again.new_keys().is_empty());
    });
    d
}

#[test]
fn stats_prints_ids_window_bloom_and_false_positive_rate() {
    let tmp = tempfile::tempdir().unwrap();
    drop(make_index(tmp.path()));
    let dir = tmp.path().to_str().unwrap();
    let out = ferry(&["dedup", "stats", "--data-dir", dir]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row:\n{stdout}"))
            .to_string()
    };
    assert!(
        row("ids held").contains("300 of capacity 100000"),
        "{stdout}"
    );
    assert!(row("window").ends_with("24h00m00s"), "{stdout}");
    assert!(row("effective window").contains("24h00m00s"), "{stdout}");
    assert!(row("bloom memory").contains("MiB"), "{stdout}");
    assert!(row("false-positive rate").contains("e-"), "{stdout}");
    assert!(row("duplicates seen").ends_with(" 120"), "{stdout}");
    assert!(row("checkpoint").ends_with("WAL offset 300"), "{stdout}");

    let out = ferry(&["dedup", "stats", "--data-dir", dir, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ids_held"], 300);
    assert_eq!(v["window_secs"], 86_400);
    assert_eq!(v["effective_window_secs"], 86_400);
    assert_eq!(v["duplicates"], 120);
    assert!(v["bloom_bytes"].as_u64().unwrap() > 0);
    let fp = v["false_positive_rate"].as_f64().unwrap();
    assert!(fp > 0.0 && fp < 0.01, "{fp}");
    // Read-only: a second run sees the same file unchanged in content.
    let again = ferry(&["dedup", "stats", "--data-dir", dir, "--json"]);
    assert_eq!(text(&again.stdout), text(&out.stdout));
}

#[test]
fn stats_explains_a_missing_directory_or_index() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let out = ferry(&["dedup", "stats", "--data-dir", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );

    let out = ferry(&["dedup", "stats", "--data-dir", tmp.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("has no dedup index") && err.contains("dedup.redb"),
        "{err}"
    );
    assert!(
        !DataDir::new(tmp.path()).dedup_index().exists(),
        "stats must not create the index"
    );
}

#[test]
fn stats_refuses_an_index_held_by_a_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let live = make_index(tmp.path());
    let out = ferry(&["dedup", "stats", "--data-dir", tmp.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("in use by another process"),
        "{}",
        text(&out.stderr)
    );
    drop(live);
}
