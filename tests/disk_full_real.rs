//! A real full disk, against the real binary: small tmpfs file systems are
//! mounted for the test and filled by ferry itself. Mounting needs
//! CAP_SYS_ADMIN, as root (and CI) has: build.rs turns on `cfg(tmpfs_tests)`
//! where the build has it. Elsewhere these tests show as ignored, with the
//! command that runs them; where they run, a mount that fails fails them.
//!
//! - The log's file system full, with no free-space reserve: requests are
//!   refused with 503 `storage_full` (never another error), ingestion resumes
//!   by itself once space is freed, every refused batch is stored when
//!   retried, and a kill -9 afterwards keeps every acknowledged event once.
//! - Only the dedup index's file system full (its file is a symlink onto a
//!   tiny tmpfs, so the log keeps room): the index stops, requests get 503
//!   `storage_full` and `/health` says why, and once space is freed the
//!   index is reopened and re-indexed in the same process, with no restart:
//!   batches stored before the stop are still duplicates, refused ones are
//!   stored, each event once.
//! - Only the delivery state store's file system full (`state.redb` on a
//!   tiny tmpfs), while a webhook rejects every event so each becomes a dead
//!   letter: delivery waits instead of stopping, its status says why, and
//!   once space is freed every event ends up dead-lettered once and the
//!   cursor reaches the end.

mod common;

use common::events::{batch, track};
use common::webhook::{Reply, Webhook};
use common::{ferry_cli, spawn_server, text, ServerProcess};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const KEY: &str = "wk_disk_full";
/// Events per batch; each event carries 300 bytes of padding.
const PER_BATCH: usize = 100;
/// How long the server may take to notice that space was freed.
const RESUME_DEADLINE: Duration = Duration::from_secs(60);

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts `bytes` of tmpfs at `dir` (created); fails the test when it
    /// cannot.
    fn mount(dir: &Path, bytes: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount, so no tmpfs for this test: {e}"));
        assert!(
            out.status.success(),
            "cannot mount a tmpfs at {}, which this test needs (CAP_SYS_ADMIN): {}",
            dir.display(),
            text(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Changes the size: what an operator freeing space amounts to.
    fn resize(&self, bytes: u64) {
        let o = Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "remount failed: {}", text(&o.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A data directory under `work` whose `file` is a symlink onto `disk`: only
/// that file is short of space.
fn data_dir_with_file_on(work: &Path, disk: &Tmpfs, file: &str) -> PathBuf {
    let data_dir = work.join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    std::os::unix::fs::symlink(disk.dir.join(file), data_dir.join(file)).unwrap();
    data_dir
}

/// `ferry serve` on `data_dir` with no free-space reserve, 1 MiB segments
/// and a dedup capacity the test cannot exhaust.
fn serve(work: &Path, data_dir: &Path) -> ServerProcess {
    serve_with(work, data_dir, "", "")
}

/// [`serve`], with `top` among the configuration file's top-level keys and
/// `tables` appended to it.
fn serve_with(work: &Path, data_dir: &Path, top: &str, tables: &str) -> ServerProcess {
    let config = work.join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:0"
data_dir = "{}"
{top}
[[sources]]
name = "app"
write_key = "{KEY}"
[log]
min_free_bytes = 0
segment_bytes = 1048576
[dedup]
capacity = 1000000
{tables}"#,
            data_dir.display()
        ),
    )
    .unwrap();
    spawn_server(work, &["--config", config.to_str().unwrap()], &[])
}

/// Batch `n`: [`PER_BATCH`] events with messageIds `b{n}-{i}`.
fn numbered_batch(n: usize) -> Value {
    batch((0..PER_BATCH).map(|i| {
        track()
            .id(format!("b{n}-{i}"))
            .user(&format!("u{}", i % 7))
            .name("Disk Filled")
            .pad(300)
    }))
}

/// The outcome of one batch: 200, or 503 `storage_full` with `Retry-After`
/// (anything else fails the test).
#[derive(Debug, PartialEq)]
enum Outcome {
    Stored,
    Full,
}

async fn send(http: &reqwest::Client, server: &ServerProcess, n: usize) -> Outcome {
    let r = http
        .post(server.url("/v1/batch"))
        .basic_auth(KEY, Some(""))
        .json(&numbered_batch(n))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry_after = r.headers().get("retry-after").is_some();
    let body: Value = r.json().await.unwrap();
    match status {
        200 => {
            assert_eq!(body["count"], PER_BATCH, "{body}");
            Outcome::Stored
        }
        503 => {
            assert_eq!(body["code"], "storage_full", "{body}");
            assert!(retry_after, "503 without Retry-After: {body}");
            Outcome::Full
        }
        other => panic!("batch {n}: HTTP {other}: {body}"),
    }
}

async fn get(http: &reqwest::Client, server: &ServerProcess, path: &str) -> (u16, Value) {
    let r = http.get(server.url(path)).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Sends batches from `first` until one is refused; returns the batches
/// stored and the first refused.
async fn fill(
    http: &reqwest::Client,
    server: &ServerProcess,
    first: usize,
    limit: usize,
) -> (Vec<usize>, usize) {
    let mut stored = Vec::new();
    for n in first..first + limit {
        match send(http, server, n).await {
            Outcome::Stored => stored.push(n),
            Outcome::Full => return (stored, n),
        }
    }
    panic!("{limit} batches stored and none refused: the file system never filled");
}

/// Retries batch `n` until it is stored (the server noticed the space).
async fn resend_until_stored(http: &reqwest::Client, server: &ServerProcess, n: usize) {
    let started = Instant::now();
    while send(http, server, n).await == Outcome::Full {
        assert!(
            started.elapsed() < RESUME_DEADLINE,
            "still refused {RESUME_DEADLINE:?} after space was freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many times each messageId is in the log (read with `ferry log dump`).
fn stored_ids(data_dir: &Path) -> HashMap<String, usize> {
    let out = ferry_cli(&["log", "dump", "--data-dir", data_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut ids = HashMap::new();
    for line in text(&out.stdout).lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        let id = record["payload"]["messageId"].as_str().unwrap().to_owned();
        *ids.entry(id).or_insert(0) += 1;
    }
    ids
}

/// Every event of batches `0..batches` is in the log exactly once, and
/// nothing else is.
fn assert_each_once(data_dir: &Path, batches: usize) {
    let ids = stored_ids(data_dir);
    let twice: Vec<_> = ids.iter().filter(|(_, &n)| n > 1).take(5).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    for n in 0..batches {
        for i in 0..PER_BATCH {
            let id = format!("b{n}-{i}");
            assert!(ids.contains_key(&id), "{id} is missing from the log");
        }
    }
    assert_eq!(
        ids.len(),
        batches * PER_BATCH,
        "unexpected events in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tmpfs_tests),
    ignore = "needs root to mount a tmpfs: run `sudo cargo test --test disk_full_real`"
)]
async fn a_full_log_disk_refuses_with_503_resumes_by_itself_and_survives_kill_9() {
    let work = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&work.path().join("disk"), 12 << 20);
    let data_dir = disk.dir.join("data");
    let http = reqwest::Client::new();
    let mut server = serve(work.path(), &data_dir);

    let (stored, refused) = fill(&http, &server, 0, 2000).await;
    assert!(stored.len() > 10, "only {} batches fit", stored.len());
    // Health says why, right away (a stopped dedup index waits at least a
    // quarter of a second before its first reopen attempt).
    let (status, health) = get(&http, &server, "/health").await;
    assert_eq!(
        (status, &health["accepting"]),
        (200, &json!(false)),
        "{health}"
    );
    assert_eq!(get(&http, &server, "/ready").await.0, 200);

    // Space freed: the refused batch goes in without a restart, then more.
    disk.resize(64 << 20);
    resend_until_stored(&http, &server, refused).await;
    for n in refused + 1..refused + 20 {
        assert_eq!(send(&http, &server, n).await, Outcome::Stored, "batch {n}");
    }
    // Everything sent again: all duplicates, nothing stored twice.
    for n in 0..refused + 20 {
        assert_eq!(send(&http, &server, n).await, Outcome::Stored, "batch {n}");
    }
    let (_, health) = get(&http, &server, "/health").await;
    assert_eq!(health["accepting"], true, "{health}");

    // A crash after all this: the restarted server holds each event once.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let server = serve(work.path(), &data_dir);
    assert_eq!(send(&http, &server, 0).await, Outcome::Stored);
    drop(server);
    assert_each_once(&data_dir, refused + 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tmpfs_tests),
    ignore = "needs root to mount a tmpfs: run `sudo cargo test --test disk_full_real`"
)]
async fn a_full_dedup_index_disk_stops_dedup_and_it_reopens_without_a_restart() {
    let work = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&work.path().join("index-disk"), 2 << 20);
    // The log stays on the roomy test directory; only the index is short of space.
    let data_dir = data_dir_with_file_on(work.path(), &disk, "dedup.redb");
    let http = reqwest::Client::new();
    let server = serve(work.path(), &data_dir);

    let (stored, refused) = fill(&http, &server, 0, 5000).await;
    assert!(stored.len() > 10, "only {} batches fit", stored.len());
    // Checked at once: the index waits at least a quarter of a second
    // before it tries to reopen.
    let (status, health) = get(&http, &server, "/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["accepting"], false, "{health}");
    assert_eq!(health["dedup"]["state"], "full", "{health}");
    assert!(
        health["dedup"]["failure"]
            .as_str()
            .is_some_and(|f| f.contains("No space left on device")),
        "{health}"
    );
    // Not unready: it recovers by itself.
    assert_eq!(get(&http, &server, "/ready").await.0, 200);

    disk.resize(64 << 20);
    resend_until_stored(&http, &server, refused).await;
    let (_, health) = get(&http, &server, "/health").await;
    assert_eq!(health["dedup"]["state"], "ok", "{health}");
    for n in refused + 1..refused + 20 {
        assert_eq!(send(&http, &server, n).await, Outcome::Stored, "batch {n}");
    }
    // The reopened index knows what was stored before it stopped.
    for n in 0..refused + 20 {
        assert_eq!(send(&http, &server, n).await, Outcome::Stored, "batch {n}");
    }
    let pid = server.child.id();
    assert!(server.terminate().success());
    assert_each_once(&data_dir, refused + 20);
    eprintln!("dedup index reopened in process {pid}; {refused} batches before the stop");
}

const ADMIN_TOKEN: &str = "disk-full-admin-token";

/// A webhook on 127.0.0.1 that rejects every delivery with 400, so each
/// event becomes a dead letter.
async fn rejecting_hook() -> Webhook {
    Webhook::builder()
        .otherwise(|_, _| Some(Reply::status(400)))
        .start()
        .await
}

/// Polls the destination's status until `done` holds for it.
async fn wait_for(
    http: &reqwest::Client,
    server: &ServerProcess,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let d = server.first_destination(http, ADMIN_TOKEN).await;
        if done(&d) {
            return d;
        }
        assert!(
            started.elapsed() < RESUME_DEADLINE,
            "no {what} after {RESUME_DEADLINE:?}: {d}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tmpfs_tests),
    ignore = "needs root to mount a tmpfs: run `sudo cargo test --test disk_full_real`"
)]
async fn a_full_state_store_disk_pauses_delivery_and_it_resumes_when_space_returns() {
    let work = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&work.path().join("state-disk"), 2 << 20);
    let data_dir = data_dir_with_file_on(work.path(), &disk, "state.redb");
    let hook = rejecting_hook().await;
    let top = format!("admin_token = \"{ADMIN_TOKEN}\"");
    let tables = format!(
        "[[destinations]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}\"\n",
        hook.url()
    );
    let http = reqwest::Client::new();
    let server = serve_with(work.path(), &data_dir, &top, &tables);

    // 6,000 events of about 500 bytes as dead letters cannot fit in 2 MiB.
    const BATCHES: usize = 60;
    for n in 0..BATCHES {
        assert_eq!(send(&http, &server, n).await, Outcome::Stored, "batch {n}");
    }
    let d = wait_for(&http, &server, "wait for disk space", |d| {
        d["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("waiting for disk space"))
    })
    .await;
    assert!(d["stopped"].is_null(), "{d}");
    assert!(
        d["committed_cursor"].as_u64().unwrap() < (BATCHES * PER_BATCH) as u64,
        "{d}"
    );

    disk.resize(64 << 20);
    let end = (BATCHES * PER_BATCH) as u64;
    let d = wait_for(&http, &server, "complete delivery", |d| {
        d["committed_cursor"] == end && d["dead_letters"] == end
    })
    .await;
    assert!(d["stopped"].is_null(), "{d}");
    assert!(server.terminate().success());

    // Each event is a dead letter exactly once.
    let out = ferry_cli(&[
        "dlq",
        "list",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "hook",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    let ids: std::collections::HashSet<&str> = listed
        .lines()
        .filter_map(|l| l.split('\t').nth(1)?.strip_prefix("messageId="))
        .collect();
    assert_eq!(listed.lines().count(), BATCHES * PER_BATCH, "{listed:.300}");
    for n in 0..BATCHES {
        for i in 0..PER_BATCH {
            let id = format!("b{n}-{i}");
            assert!(
                ids.contains(id.as_str()),
                "{id} is not a dead letter: {listed:.300}"
            );
        }
    }
}

/// Fills the rest of `disk` with a file (written until ENOSPC); returns it.
fn fill_up(disk: &Tmpfs) -> PathBuf {
    use std::io::Write;
    let path = disk.dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tmpfs_tests),
    ignore = "needs root to mount a tmpfs: run `sudo cargo test --test disk_full_real`"
)]
async fn a_server_started_on_a_full_index_disk_serves_503_then_opens_the_index() {
    let work = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&work.path().join("index-disk"), 4 << 20);
    let data_dir = data_dir_with_file_on(work.path(), &disk, "dedup.redb");
    let http = reqwest::Client::new();
    let mut server = serve(work.path(), &data_dir);
    const BEFORE: usize = 100;
    for n in 0..BEFORE {
        assert_eq!(send(&http, &server, n).await, Outcome::Stored, "batch {n}");
    }
    // A crash that also lost the index file, then no room at all: at
    // start-up the index must be made again from the whole log, and the
    // disk is full. The server still starts, and says why it refuses.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    std::fs::remove_file(disk.dir.join("dedup.redb")).unwrap();
    let filler = fill_up(&disk);
    let server = serve(work.path(), &data_dir);
    let (status, health) = get(&http, &server, "/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["dedup"]["state"], "full", "{health}");
    assert_eq!(health["accepting"], false, "{health}");
    assert_eq!(send(&http, &server, BEFORE).await, Outcome::Full);

    std::fs::remove_file(filler).unwrap();
    resend_until_stored(&http, &server, BEFORE).await;
    // The index made again from the log knows every event stored before.
    for n in 0..=BEFORE {
        assert_eq!(send(&http, &server, n).await, Outcome::Stored, "batch {n}");
    }
    assert!(server.terminate().success());
    assert_each_once(&data_dir, BEFORE + 1);
}
