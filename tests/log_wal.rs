//! Black-box tests of the write-ahead log through its public API, on the real
//! file system and on the crash-simulating storage.

use ferry::log::crash_storage::CrashStorage;
use ferry::log::{FsStorage, Log, LogError, LogOptions, LogView, RecoveryMode, Storage};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn opts(segment_bytes: u64) -> LogOptions {
    LogOptions {
        segment_bytes,
        min_free_bytes: 0,
        ..LogOptions::default()
    }
}

fn payload(i: u64, len: usize) -> Vec<u8> {
    let mut p = format!("record-{i}-").into_bytes();
    p.resize(len.max(p.len()), b'a' + (i % 26) as u8);
    p
}

fn read_all(log: &Log, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut r = log.reader(from).unwrap();
    let mut out = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        out.push((rec.offset, rec.payload));
    }
    out
}

fn segment_files(storage: &dyn Storage, dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = storage
        .list(dir)
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

/// Both storages, for tests that must hold on each.
fn storages() -> Vec<(Arc<dyn Storage>, PathBuf, Option<tempfile::TempDir>)> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    vec![
        (Arc::new(FsStorage), dir, Some(tmp)),
        (
            Arc::new(CrashStorage::new()),
            PathBuf::from("/data/log"),
            None,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_contiguous_offsets_and_read_back() {
    for (storage, dir, _guard) in storages() {
        let log = Log::open_with(storage.clone(), &dir, opts(4096)).unwrap();
        let mut tasks = Vec::new();
        for t in 0..16u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for j in 0..20u64 {
                    let n = 1 + (t + j) % 4;
                    let recs: Vec<Vec<u8>> =
                        (0..n).map(|k| payload(t * 1000 + j * 10 + k, 50)).collect();
                    let range = log.append(recs.clone()).await.unwrap();
                    assert_eq!(range.end - range.start, n);
                    got.push((range, recs));
                }
                got
            }));
        }
        let mut expected = std::collections::BTreeMap::new();
        for t in tasks {
            for (range, recs) in t.await.unwrap() {
                for (o, r) in range.zip(recs) {
                    assert!(expected.insert(o, r).is_none(), "offset handed out twice");
                }
            }
        }
        let end = log.durable_end();
        assert_eq!(expected.len() as u64, end);
        assert_eq!(
            expected.keys().copied().collect::<Vec<_>>(),
            (0..end).collect::<Vec<_>>()
        );
        let back = read_all(&log, 0);
        assert_eq!(back, expected.clone().into_iter().collect::<Vec<_>>());
        let stats = log.stats();
        assert!(stats.segments > 1, "small segments must roll");
        assert!(stats.fsyncs <= stats.appends_synced);
        drop(log);

        // Reopen: the same records, appends continue at the right offset.
        let log = Log::open_with(storage.clone(), &dir, opts(4096)).unwrap();
        assert_eq!(log.durable_end(), end);
        assert_eq!(read_all(&log, 0), expected.into_iter().collect::<Vec<_>>());
        assert_eq!(
            log.append(vec![b"next".to_vec()]).await.unwrap(),
            end..end + 1
        );
        // Segment files are named by their first offset.
        for name in segment_files(&*storage, &dir) {
            let base: u64 = name.trim_end_matches(".log").parse().unwrap();
            let mut r = log.reader(base).unwrap();
            assert_eq!(r.next().unwrap().unwrap().offset, base);
        }
    }
}

#[tokio::test]
async fn readers_seek_into_any_segment_and_cross_boundaries() {
    let storage = Arc::new(CrashStorage::new());
    let dir = PathBuf::from("/d/log");
    let log = Log::open_with(storage.clone(), &dir, opts(1000)).unwrap();
    for i in 0..200u64 {
        log.append(vec![payload(i, 30 + (i as usize * 7) % 90)])
            .await
            .unwrap();
    }
    assert!(segment_files(&*storage, &dir).len() > 10);
    for from in [0u64, 1, 17, 99, 150, 199, 200] {
        let got = read_all(&log, from);
        assert_eq!(got.len() as u64, 200 - from);
        for (k, (o, p)) in got.iter().enumerate() {
            assert_eq!(*o, from + k as u64);
            assert_eq!(p, &payload(*o, 30 + (*o as usize * 7) % 90));
        }
    }
    match log.reader(201) {
        Err(LogError::OffsetOutOfRange {
            offset: 201,
            start: 0,
            end: 200,
        }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("reader past the durable end"),
    }
}

#[tokio::test]
async fn a_reader_follows_the_writer_and_only_sees_durable_records() {
    let storage = Arc::new(CrashStorage::new());
    let dir = PathBuf::from("/d/log");
    let log = Log::open_with(storage, &dir, opts(2048)).unwrap();
    let mut reader = log.reader(0).unwrap();
    let mut durable = log.subscribe();
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            for i in 0..300u64 {
                log.append(vec![payload(i, 64)]).await.unwrap();
            }
        })
    };
    let mut seen = 0u64;
    while seen < 300 {
        let end = *durable.borrow_and_update();
        while let Some(rec) = reader.next_below(end).unwrap() {
            assert_eq!(rec.offset, seen);
            assert!(rec.offset < log.durable_end());
            assert_eq!(rec.payload, payload(seen, 64));
            seen += 1;
        }
        if seen < 300 {
            durable.changed().await.unwrap();
        }
    }
    writer.await.unwrap();
}

#[tokio::test]
async fn retention_deletes_only_whole_segments_below_the_offset() {
    let storage = Arc::new(CrashStorage::new());
    let dir = PathBuf::from("/d/log");
    let log = Log::open_with(storage.clone(), &dir, opts(600)).unwrap();
    for i in 0..100u64 {
        log.append(vec![payload(i, 40)]).await.unwrap();
    }
    let before = segment_files(&*storage, &dir);
    let bases: Vec<u64> = before
        .iter()
        .map(|n| n.trim_end_matches(".log").parse().unwrap())
        .collect();
    assert!(bases.len() > 5);
    // An offset inside the third segment: only the first two go.
    let cut = bases[2] + 1;
    assert_eq!(log.delete_segments_below(cut).unwrap(), 2);
    assert_eq!(log.start_offset(), bases[2]);
    assert_eq!(segment_files(&*storage, &dir), before[2..].to_vec());
    assert!(matches!(
        log.reader(bases[2] - 1),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log, bases[2]).len() as u64, 100 - bases[2]);
    // Even an offset past the end never deletes the active segment.
    log.delete_segments_below(u64::MAX).unwrap();
    let left = segment_files(&*storage, &dir);
    assert_eq!(left, vec![before.last().unwrap().clone()]);
    assert_eq!(
        read_all(&log, *bases.last().unwrap()).len() as u64,
        100 - bases.last().unwrap()
    );
    let stats = log.stats();
    assert_eq!(stats.segments, 1);
    drop(log);
    // Reopen after retention: offsets carry on.
    let log = Log::open_with(storage, &dir, opts(600)).unwrap();
    assert_eq!(log.start_offset(), *bases.last().unwrap());
    assert_eq!(log.append(vec![b"x".to_vec()]).await.unwrap(), 100..101);
}

#[tokio::test]
async fn fsync_failure_is_fatal_and_nothing_unsynced_is_durable() {
    let storage = Arc::new(CrashStorage::new());
    let dir = PathBuf::from("/d/log");
    let log = Log::open_with(storage.clone(), &dir, opts(1 << 20)).unwrap();
    for i in 0..10u64 {
        log.append(vec![payload(i, 20)]).await.unwrap();
    }
    storage.fail_syncs(true);
    let err = log.append(vec![payload(10, 20)]).await.unwrap_err();
    assert!(matches!(err, LogError::Failed(_)), "{err}");
    assert!(log.failure().unwrap().contains("fdatasync"));
    assert_eq!(
        log.durable_end(),
        10,
        "nothing after the last good fsync is reported durable"
    );
    // The fsync is never retried: even once the disk "recovers", appends fail.
    storage.fail_syncs(false);
    let sync_points = storage.sync_points();
    assert!(matches!(
        log.append(vec![payload(11, 20)]).await,
        Err(LogError::Failed(_))
    ));
    assert_eq!(
        storage.sync_points(),
        sync_points,
        "no fsync was attempted after the failure"
    );
    assert_eq!(read_all(&log, 0).len(), 10);
    drop(log);
    for seed in 0..20 {
        let image = Arc::new(storage.crash_image(seed));
        let log = Log::open_with(image, &dir, opts(1 << 20)).unwrap();
        let back = read_all(&log, 0);
        assert!(
            back.len() == 10 || back.len() == 11,
            "seed {seed}: {}",
            back.len()
        );
        for (o, p) in &back[..10] {
            assert_eq!(p, &payload(*o, 20));
        }
    }
}

#[tokio::test]
async fn disk_full_refuses_without_damage_and_resumes() {
    let storage = Arc::new(CrashStorage::new());
    let dir = PathBuf::from("/d/log");
    let log = Log::open_with(storage.clone(), &dir, opts(1 << 20)).unwrap();
    log.append(vec![payload(0, 20)]).await.unwrap();
    storage.set_disk_full(true);
    let err = log
        .append(vec![payload(1, 20), payload(2, 20)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, LogError::Full(_)) && err.is_transient(),
        "{err}"
    );
    assert!(log.failure().is_none());
    storage.set_disk_full(false);
    assert_eq!(log.append(vec![payload(1, 20)]).await.unwrap(), 1..2);
    drop(log);
    let log = Log::open_with(storage, &dir, opts(1 << 20)).unwrap();
    assert_eq!(
        read_all(&log, 0),
        vec![(0, payload(0, 20)), (1, payload(1, 20))]
    );
}

#[tokio::test]
async fn disk_budget_and_free_space_reserve_push_back() {
    let storage = Arc::new(CrashStorage::new());
    let dir = PathBuf::from("/d/log");
    let options = LogOptions {
        max_log_bytes: Some(2000),
        ..opts(700)
    };
    let log = Log::open_with(storage.clone(), &dir, options.clone()).unwrap();
    let mut accepted = 0u64;
    let mut refused = false;
    for i in 0..100u64 {
        match log.append(vec![payload(i, 100)]).await {
            Ok(r) => {
                assert_eq!(r.start, accepted);
                accepted += 1;
            }
            Err(LogError::Full(_)) => {
                refused = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused && accepted > 5);
    assert!(log.stats().bytes <= 2000);
    // Retention frees space; appends resume.
    assert!(log.delete_segments_below(accepted).unwrap() > 0);
    assert_eq!(
        log.append(vec![payload(accepted, 100)])
            .await
            .unwrap()
            .start,
        accepted
    );
    // The free-space reserve.
    storage.set_available_space(Some(10));
    let log2 = Log::open_with(
        Arc::new(CrashStorage::new()),
        Path::new("/e/log"),
        LogOptions {
            min_free_bytes: 100,
            ..opts(700)
        },
    )
    .unwrap();
    drop(log2);
    let reserve = LogOptions {
        min_free_bytes: 1000,
        ..options
    };
    drop(log);
    let log = Log::open_with(storage.clone(), &dir, reserve).unwrap();
    assert!(matches!(
        log.append(vec![payload(0, 10)]).await,
        Err(LogError::Full(_))
    ));
    storage.set_available_space(Some(1 << 30));
    log.append(vec![payload(0, 10)]).await.unwrap();
}

/// Builds a log of `n` single-record appends plus one 3-record append on the
/// simulated disk and returns the bytes of its only segment.
async fn small_log(storage: &CrashStorage, dir: &Path, n: u64) -> (PathBuf, Vec<u8>) {
    let log = Log::open_with(Arc::new(storage.clone()), dir, opts(1 << 20)).unwrap();
    for i in 0..n {
        log.append(vec![payload(i, 30)]).await.unwrap();
    }
    log.append(vec![payload(n, 30), payload(n + 1, 30), payload(n + 2, 30)])
        .await
        .unwrap();
    drop(log);
    let path = dir.join("00000000000000000000.log");
    let bytes = storage.read_file(&path).unwrap();
    (path, bytes)
}

#[tokio::test]
async fn every_cut_inside_the_last_append_recovers_the_prefix() {
    let dir = PathBuf::from("/d/log");
    let base = CrashStorage::new();
    let (path, full) = small_log(&base, &dir, 5).await;
    let rec_len = 24 + payload(0, 30).len();
    let last_append_start = full.len() - 3 * rec_len;
    for cut in last_append_start..full.len() {
        let storage = CrashStorage::new();
        storage.create_dir_all(&dir).unwrap();
        storage.write_file(&path, full[..cut].to_vec());
        let log = Log::open_with(Arc::new(storage.clone()), &dir, opts(1 << 20)).unwrap();
        let back = read_all(&log, 0);
        assert_eq!(
            back.len(),
            5,
            "cut at {cut}: the torn append must vanish whole"
        );
        assert_eq!(
            log.append(vec![b"after".to_vec()]).await.unwrap(),
            5..6,
            "cut at {cut}"
        );
        drop(log);
        assert_eq!(
            storage.read_file(&path).unwrap().len(),
            last_append_start + rec_len - 30 + 5
        );
    }
}

#[tokio::test]
async fn zero_and_garbage_tails_are_cut() {
    let dir = PathBuf::from("/d/log");
    let base = CrashStorage::new();
    let (path, full) = small_log(&base, &dir, 4).await;
    let mut junk_tail = Vec::new();
    let mut x = 12345u64;
    for _ in 0..3000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        junk_tail.push((x >> 33) as u8);
    }
    for tail in [vec![0u8; 4096], vec![0u8; 7], junk_tail] {
        let storage = CrashStorage::new();
        storage.create_dir_all(&dir).unwrap();
        let mut bytes = full.clone();
        bytes.extend_from_slice(&tail);
        storage.write_file(&path, bytes);
        let log = Log::open_with(Arc::new(storage.clone()), &dir, opts(1 << 20)).unwrap();
        assert_eq!(read_all(&log, 0).len(), 7);
        assert_eq!(log.append(vec![b"z".to_vec()]).await.unwrap(), 7..8);
        drop(log);
        assert!(LogView::open_with(Arc::new(storage), &dir)
            .unwrap()
            .verify()
            .unwrap()
            .is_empty());
    }
}

#[tokio::test]
async fn corruption_followed_by_valid_records_is_never_skipped() {
    let dir = PathBuf::from("/d/log");
    let base = CrashStorage::new();
    let (path, full) = small_log(&base, &dir, 6).await;
    let rec_len = 24 + payload(0, 30).len();
    // Flip a payload byte of record 2: records 3.. (later commits) follow.
    let bad_pos = 32 + 2 * rec_len;
    let mut bytes = full.clone();
    bytes[bad_pos + 30] ^= 0x40;
    let storage = CrashStorage::new();
    storage.create_dir_all(&dir).unwrap();
    storage.write_file(&path, bytes.clone());
    match Log::open_with(Arc::new(storage.clone()), &dir, opts(1 << 20)) {
        Err(LogError::Corruption {
            segment, position, ..
        }) => {
            assert_eq!(segment, path);
            assert_eq!(position, bad_pos as u64);
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("opened a corrupt log in strict mode"),
    }
    assert_eq!(
        storage.read_file(&path).unwrap(),
        bytes,
        "strict mode changes nothing"
    );
    // verify reports it with segment and byte offset.
    let problems = LogView::open_with(Arc::new(storage.clone()), &dir)
        .unwrap()
        .verify()
        .unwrap();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].fatal);
    assert_eq!(problems[0].position, bad_pos as u64);
    // Quarantine: keep a copy, cut at the damage, carry on.
    let q = LogOptions {
        recovery: RecoveryMode::Quarantine,
        ..opts(1 << 20)
    };
    let log = Log::open_with(Arc::new(storage.clone()), &dir, q).unwrap();
    assert_eq!(read_all(&log, 0).len(), 2);
    assert_eq!(log.append(vec![b"q".to_vec()]).await.unwrap(), 2..3);
    let quarantined = storage.list(&dir.join("quarantine")).unwrap();
    assert_eq!(quarantined.len(), 1);
    let copy = storage
        .read_file(&dir.join("quarantine").join(&quarantined[0]))
        .unwrap();
    assert_eq!(copy, bytes);
}

#[tokio::test]
async fn corruption_in_a_sealed_segment_is_found_by_verify() {
    let storage = CrashStorage::new();
    let dir = PathBuf::from("/d/log");
    let log = Log::open_with(Arc::new(storage.clone()), &dir, opts(500)).unwrap();
    for i in 0..40u64 {
        log.append(vec![payload(i, 40)]).await.unwrap();
    }
    drop(log);
    let names = segment_files(&storage, &dir);
    assert!(names.len() > 3);
    let victim = dir.join(&names[1]);
    let mut bytes = storage.read_file(&victim).unwrap();
    bytes[32 + 10] ^= 1; // inside the first record's header
    storage.write_file(&victim, bytes);
    let problems = LogView::open_with(Arc::new(storage.clone()), &dir)
        .unwrap()
        .verify()
        .unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.fatal && p.segment == victim && p.position == 32),
        "{problems:?}"
    );
    // A missing middle segment is a gap.
    storage.remove(&dir.join(&names[3])).unwrap();
    let problems = LogView::open_with(Arc::new(storage), &dir)
        .unwrap()
        .verify()
        .unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.reason.contains("previous segment ends")),
        "{problems:?}"
    );
}

#[tokio::test]
async fn a_segment_torn_while_being_created_is_removed() {
    let storage = CrashStorage::new();
    let dir = PathBuf::from("/d/log");
    let log = Log::open_with(Arc::new(storage.clone()), &dir, opts(1 << 20)).unwrap();
    log.append(vec![payload(0, 10), payload(1, 10)])
        .await
        .unwrap();
    drop(log);
    // A crash while creating the next segment left half a header.
    let half = dir.join("00000000000000000002.log");
    storage.write_file(&half, b"FERRYLO".to_vec());
    let log = Log::open_with(Arc::new(storage.clone()), &dir, opts(1 << 20)).unwrap();
    assert!(storage.read_file(&half).is_none());
    assert_eq!(log.append(vec![payload(2, 10)]).await.unwrap(), 2..3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_fsync_covers_everything_queued_and_acks_wait_for_it() {
    let storage = Arc::new(CrashStorage::new());
    let log = Log::open_with(storage.clone(), Path::new("/g/log"), opts(1 << 20)).unwrap();
    let before = log.stats();
    storage.hold_syncs(true);
    let mut first = log.submit(vec![payload(0, 10)]).await.unwrap();
    let s = storage.clone();
    tokio::task::spawn_blocking(move || s.wait_for_held_sync())
        .await
        .unwrap();
    // The writer is inside the fdatasync of the first group: no ack yet.
    assert!(first.try_recv().is_err());
    assert_eq!(log.durable_end(), 0);
    let mut rest = Vec::new();
    for i in 1..50u64 {
        rest.push(
            log.submit(vec![payload(i, 10), payload(i, 11)])
                .await
                .unwrap(),
        );
    }
    storage.hold_syncs(false);
    assert_eq!(first.await.unwrap().unwrap(), 0..1);
    for (i, rx) in rest.into_iter().enumerate() {
        let start = 1 + 2 * i as u64;
        assert_eq!(rx.await.unwrap().unwrap(), start..start + 2);
    }
    let after = log.stats();
    assert_eq!(
        after.fsyncs - before.fsyncs,
        2,
        "49 queued appends share one write + fdatasync"
    );
    assert_eq!(after.appends_synced - before.appends_synced, 50);
    assert_eq!(after.records_synced - before.records_synced, 99);
}

#[tokio::test]
async fn only_one_writer_per_log_directory() {
    for (storage, dir, _guard) in storages() {
        let log = Log::open_with(storage.clone(), &dir, opts(4096)).unwrap();
        log.append(vec![b"a".to_vec()]).await.unwrap();
        match Log::open_with(storage.clone(), &dir, opts(4096)) {
            Err(LogError::Locked { path }) => assert_eq!(path, dir),
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("a second writer opened the log"),
        }
        // Readers are not writers: the read-only view still works.
        assert_eq!(
            LogView::open_with(storage.clone(), &dir)
                .unwrap()
                .end_offset(),
            1
        );
        drop(log);
        let log = Log::open_with(storage, &dir, opts(4096)).unwrap();
        assert_eq!(log.durable_end(), 1);
    }
}

#[tokio::test]
async fn minimum_retention_keeps_recent_segments_for_replay() {
    let storage = Arc::new(CrashStorage::new());
    let dir = PathBuf::from("/r/log");
    let options = LogOptions {
        min_retention: std::time::Duration::from_secs(3600),
        ..opts(600)
    };
    let log = Log::open_with(storage.clone(), &dir, options).unwrap();
    for i in 0..30u64 {
        log.append(vec![payload(i, 40)]).await.unwrap();
    }
    storage.advance_clock(std::time::Duration::from_secs(3000));
    for i in 30..60u64 {
        log.append(vec![payload(i, 40)]).await.unwrap();
    }
    assert_eq!(
        log.delete_segments_below(60).unwrap(),
        0,
        "nothing is an hour old yet"
    );
    storage.advance_clock(std::time::Duration::from_secs(700));
    let deleted = log.delete_segments_below(60).unwrap();
    assert!(deleted > 0);
    // Only segments last written before the clock jump (offsets < 30) went.
    let start = log.start_offset();
    assert!(start <= 30 && start > 0, "start {start}");
    assert_eq!(read_all(&log, start).len() as u64, 60 - start);
}
