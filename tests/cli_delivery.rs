//! `ferry cursors` and `ferry dlq` as the real binary on a data directory
//! whose state was written through the library.

use ferry::log::{Log, LogOptions};
use ferry::store::{DeadLetter, StateStore};
use std::path::Path;

mod common;

use common::events::track;
use common::{ferry_cli as ferry, text};

fn data_dir(root: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let log = Log::open(
        &root.join("log"),
        LogOptions {
            min_free_bytes: 0,
            ..LogOptions::default()
        },
    )
    .unwrap();
    rt.block_on(async {
        for i in 0..10u64 {
            let received = format!("2026-01-01T00:00:{i:02}.000Z");
            let ev = track()
                .id(format!("m{i}"))
                .name("e")
                .with("receivedAt", received);
            log.append(vec![ev.logged()]).await.unwrap();
        }
    });
    let store = StateStore::open(&root.join("state.redb")).unwrap();
    store
        .set_cursors(&[("hook".into(), 4), ("file".into(), 10)])
        .unwrap();
    for offset in [1u64, 2] {
        store
            .add_dead_letter(&DeadLetter {
                destination: "hook".into(),
                offset,
                message_id: format!("m{offset}"),
                event: format!(r#"{{"messageId":"m{offset}"}}"#),
                attempts: 1,
                first_attempt_ms: 1,
                last_attempt_ms: 2,
                last_status: Some(400),
                last_error: "HTTP 400: bad payload".into(),
            })
            .unwrap();
    }
}

#[test]
fn cursors_list_and_reset() {
    let tmp = tempfile::tempdir().unwrap();
    data_dir(tmp.path());
    let dd = tmp.path().to_str().unwrap();
    let out = ferry(&["cursors", "--data-dir", dd]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let hook = stdout.lines().find(|l| l.starts_with("hook")).unwrap();
    let cols: Vec<&str> = hook.split_whitespace().collect();
    assert_eq!(&cols[1..3], ["4", "6"], "{hook}");
    let file = stdout.lines().find(|l| l.starts_with("file")).unwrap();
    assert_eq!(file.split_whitespace().nth(2), Some("0"));

    for (to, want) in [
        ("earliest", 0),
        ("latest", 10),
        ("7", 7),
        ("2026-01-01T00:00:03Z", 3),
    ] {
        let out = ferry(&["cursors", "reset", "hook", "--to", to, "--data-dir", dd]);
        assert!(out.status.success(), "{to}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains(&format!("set to {want}")),
            "{to}: {}",
            text(&out.stdout)
        );
    }
    let out = ferry(&["cursors", "reset", "hook", "--to", "99", "--data-dir", dd]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("outside the log"));
    let out = ferry(&[
        "cursors",
        "reset",
        "nope",
        "--to",
        "earliest",
        "--data-dir",
        dd,
    ]);
    assert!(text(&out.stderr).contains("has no cursor"));
}

#[test]
fn dlq_list_show_replay_purge() {
    let tmp = tempfile::tempdir().unwrap();
    data_dir(tmp.path());
    let dd = tmp.path().to_str().unwrap();
    let out = ferry(&["dlq", "list", "hook", "--data-dir", dd]);
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stdout
        .lines()
        .next()
        .unwrap()
        .starts_with("1\tmessageId=m1\tattempts=1\tstatus=400\tHTTP 400: bad payload"));
    let out = ferry(&["dlq", "show", "hook", "m2", "--data-dir", dd]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["offset"], 2);
    assert_eq!(doc["event"]["messageId"], "m2");
    let out = ferry(&["dlq", "show", "hook", "77", "--data-dir", dd]);
    assert_eq!(out.status.code(), Some(1));

    let out = ferry(&["dlq", "replay", "hook", "--data-dir", dd]);
    assert_eq!(out.status.code(), Some(1), "replay needs ids or --all");
    let out = ferry(&["dlq", "replay", "hook", "2", "--data-dir", dd]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let store = StateStore::open(&tmp.path().join("state.redb")).unwrap();
    assert_eq!(store.replay_queue("hook").unwrap().len(), 1);
    // While a process holds the state, the CLI says so instead of blocking.
    let out = ferry(&["dlq", "purge", "hook", "--data-dir", dd]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("a running ferry serve holds"),
        "{}",
        text(&out.stderr)
    );
    drop(store);
    let out = ferry(&["dlq", "purge", "hook", "--data-dir", dd]);
    assert!(text(&out.stdout).contains("purged 1 dead letter"));
}

#[test]
fn missing_state_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ferry(&[
        "dlq",
        "list",
        "hook",
        "--data-dir",
        tmp.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("has no delivery state"));
}
