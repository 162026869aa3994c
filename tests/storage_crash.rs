//! Crash simulation of segment rolls and retention through `CrashStorage`: a
//! crash at a chosen sync point of a roll or of `Log::delete_segments_below`
//! (each unsynced write kept, dropped, torn, zeroed or garbled; each unsynced
//! directory entry kept or lost) must recover to one contiguous run of records
//! that holds every acknowledged record and only whole appends after them.

mod common;

use common::env::env_or;
use ferry::log::crash_storage::CrashStorage;
use ferry::log::{Log, LogError, LogOptions, Storage};
use proptest::prelude::*;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

const DIR: &str = "/data/log";
/// Seeds tried per chosen sync point in the exhaustive tests.
const SEEDS: u64 = 24;

fn options() -> LogOptions {
    LogOptions {
        segment_bytes: 600,
        min_free_bytes: 0,
        ..LogOptions::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Payload naming its append, its position in it and the append's size, so
/// whole appends can be checked without knowing unacknowledged offsets.
fn payload(append: u32, idx: u16, count: u16, size: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + size as usize);
    p.extend_from_slice(&append.to_le_bytes());
    p.extend_from_slice(&idx.to_le_bytes());
    p.extend_from_slice(&count.to_le_bytes());
    p.extend((0..size).map(|i| (append as u16).wrapping_mul(7).wrapping_add(i) as u8));
    p
}

fn parse(p: &[u8]) -> (u32, u16, u16) {
    (
        u32::from_le_bytes(p[0..4].try_into().unwrap()),
        u16::from_le_bytes(p[4..6].try_into().unwrap()),
        u16::from_le_bytes(p[6..8].try_into().unwrap()),
    )
}

fn append_records(append: u32, sizes: &[u16]) -> Vec<Vec<u8>> {
    let count = sizes.len() as u16;
    sizes
        .iter()
        .enumerate()
        .map(|(i, s)| payload(append, i as u16, count, *s))
        .collect()
}

/// What the test knows about the log: every record ever known durable, by
/// offset, and the offset below which retention was allowed to delete.
#[derive(Default, Clone)]
struct Model {
    records: Vec<Vec<u8>>,
    /// Records at or above this offset must survive (retention asked for less).
    keep_from: u64,
}

/// Recovers the crash image and checks it against the model; returns the
/// reopened log and the model extended by whatever unacknowledged whole
/// appends survived.
fn recover_and_check(
    image: CrashStorage,
    model: &Model,
) -> Result<(Log, CrashStorage, Model), String> {
    let log = Log::open_with(Arc::new(image.clone()), Path::new(DIR), options())
        .map_err(|e| format!("recovery failed: {e}"))?;
    let start = log.start_offset();
    let end = log.durable_end();
    if start > model.keep_from.min(model.records.len() as u64) {
        return Err(format!(
            "records from {start} on only, but retention allowed deleting below {} only",
            model.keep_from
        ));
    }
    if end < model.records.len() as u64 {
        return Err(format!(
            "lost acknowledged records: end {end} < {}",
            model.records.len()
        ));
    }
    let mut reader = log.reader(start).map_err(|e| e.to_string())?;
    let mut back = Vec::new();
    loop {
        match reader.next() {
            Ok(Some(r)) => {
                if r.offset != start + back.len() as u64 {
                    return Err(format!(
                        "offset {} where {} was expected",
                        r.offset,
                        start + back.len() as u64
                    ));
                }
                back.push(r.payload);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(format!(
                    "reading the recovered log from its start {start}: {e}"
                ))
            }
        }
    }
    if start + back.len() as u64 != end {
        return Err(format!(
            "read {} records from {start}, durable end is {end}",
            back.len()
        ));
    }
    for (i, p) in back.iter().enumerate() {
        let offset = start as usize + i;
        if offset < model.records.len() && model.records[offset] != *p {
            return Err(format!("record {offset} differs after recovery"));
        }
    }
    // Beyond the acknowledged prefix: whole appends only, each once.
    let mut extended = model.clone();
    let mut i = model.records.len();
    let mut seen = HashSet::new();
    while i < end as usize {
        let (id, idx, count) = parse(&back[i - start as usize]);
        if idx != 0 || !seen.insert(id) {
            return Err(format!("a partial or repeated append {id} survived at {i}"));
        }
        for k in 0..count as usize {
            let at = i + k;
            if at >= end as usize || parse(&back[at - start as usize]) != (id, k as u16, count) {
                return Err(format!("append {id} cut short at {at}"));
            }
        }
        i += count as usize;
    }
    extended
        .records
        .extend(back[model.records.len() - start as usize..].iter().cloned());
    Ok((log, image, extended))
}

/// Appends one append per call sequentially, recording how many sync points
/// each took (a roll takes three: segment header, directory, data).
fn build(
    rt: &tokio::runtime::Runtime,
    storage: &CrashStorage,
    log: &Log,
    appends: u32,
) -> (Model, Vec<u64>) {
    let mut model = Model::default();
    let mut cost = Vec::new();
    for a in 0..appends {
        let before = storage.sync_points();
        let recs = append_records(a, &[40 + (a % 5) as u16 * 30, 20]);
        rt.block_on(log.append(recs.clone())).unwrap();
        model.records.extend(recs);
        cost.push(storage.sync_points() - before);
    }
    (model, cost)
}

#[test]
fn a_crash_at_any_sync_point_of_a_segment_roll_recovers() {
    let rt = rt();
    // Find which appends roll, from a dry run.
    let dry = CrashStorage::new();
    let log = Log::open_with(Arc::new(dry.clone()), Path::new(DIR), options()).unwrap();
    let (_, cost) = build(&rt, &dry, &log, 30);
    drop(log);
    let rolls: Vec<usize> = (0..cost.len()).filter(|&i| cost[i] > 1).collect();
    assert!(
        rolls.len() >= 5,
        "the workload must roll segments: {cost:?}"
    );
    let mut crashes = 0;
    for &r in rolls.iter().take(4) {
        for point in 1..=cost[r] {
            for seed in 0..SEEDS {
                let storage = CrashStorage::new();
                let log =
                    Log::open_with(Arc::new(storage.clone()), Path::new(DIR), options()).unwrap();
                let (model, _) = build(&rt, &storage, &log, r as u32);
                storage.crash_at_sync_point(storage.sync_points() + point, seed);
                let recs = append_records(r as u32, &[40 + (r % 5) as u16 * 30, 20]);
                match rt.block_on(log.append(recs)) {
                    Err(LogError::Failed(_)) => {}
                    other => {
                        panic!("append {r} with a crash at roll sync point {point}: {other:?}")
                    }
                }
                let image = storage.crashed_image().expect("the crash happened");
                drop(log);
                let (log, image, after) = recover_and_check(image, &model).unwrap_or_else(|e| {
                    panic!("roll of append {r}, sync point {point}, seed {seed}: {e}")
                });
                // The recovered log takes appends again, and they survive a clean reopen.
                let next = after.records.len() as u64;
                let more = append_records(1000, &[33]);
                assert_eq!(
                    rt.block_on(log.append(more.clone())).unwrap(),
                    next..next + 1
                );
                drop(log);
                let mut model = after;
                model.records.extend(more);
                recover_and_check(image, &model)
                    .unwrap_or_else(|e| panic!("reopen after roll crash: {e}"));
                crashes += 1;
            }
        }
    }
    assert!(crashes >= 4 * 3 * SEEDS as usize);
}

#[test]
fn a_crash_at_any_sync_point_of_retention_recovers() {
    let rt = rt();
    let mut crashes = 0;
    for cut_segments in [1usize, 3, 6] {
        for point in 1..=cut_segments as u64 {
            for seed in 0..SEEDS {
                let storage = CrashStorage::new();
                let log =
                    Log::open_with(Arc::new(storage.clone()), Path::new(DIR), options()).unwrap();
                let (mut model, _) = build(&rt, &storage, &log, 40);
                let segments = storage
                    .list(Path::new(DIR))
                    .unwrap()
                    .into_iter()
                    .filter_map(|n| ferry::log::segment::parse_segment_file_name(&n))
                    .collect::<std::collections::BTreeSet<u64>>();
                assert!(segments.len() > cut_segments + 1, "{segments:?}");
                // Delete the first `cut_segments` segments.
                let below = *segments.iter().nth(cut_segments).unwrap();
                model.keep_from = below;
                storage.crash_at_sync_point(storage.sync_points() + point, seed);
                let outcome = log.delete_segments_below(below);
                let Some(image) = storage.crashed_image() else {
                    // Fewer sync points than planned: retention finished first.
                    assert!(outcome.is_ok(), "{outcome:?}");
                    continue;
                };
                assert!(outcome.is_err(), "a crashed retention cannot succeed");
                drop(log);
                let (log, _, _) = recover_and_check(image, &model).unwrap_or_else(|e| {
                    panic!("retention below {below} ({cut_segments} segments), crash at its sync point {point}, seed {seed}: {e}")
                });
                // Retention after recovery finishes the job.
                log.delete_segments_below(below).unwrap();
                assert_eq!(log.start_offset(), below);
                crashes += 1;
            }
        }
    }
    assert!(crashes >= 3 * SEEDS as usize);
}

#[derive(Debug, Clone)]
struct Step {
    /// Concurrent appends: record sizes of each.
    appends: Vec<Vec<u16>>,
    /// Retention, concurrently, below this share (in 1/8) of the durable end.
    retain: Option<u8>,
    /// Crash at this many sync points from now (0: no crash this step).
    crash_in: u8,
    /// Seed for the fate of unsynced writes and directory entries.
    seed: u64,
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop::collection::vec(prop::collection::vec(1u16..200, 1..4), 1..5),
        prop::option::of(0u8..=8),
        0u8..6,
        any::<u64>(),
    )
        .prop_map(|(appends, retain, crash_in, seed)| Step {
            appends,
            retain,
            crash_in,
            seed,
        })
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let rt = rt();
    let mut storage = CrashStorage::new();
    let mut log = Log::open_with(Arc::new(storage.clone()), Path::new(DIR), options()).unwrap();
    let mut model = Model::default();
    let mut next_id = 0u32;
    for s in steps {
        if s.crash_in > 0 {
            storage.crash_at_sync_point(storage.sync_points() + u64::from(s.crash_in), s.seed);
        }
        let batches: Vec<Vec<Vec<u8>>> = s
            .appends
            .iter()
            .map(|sizes| {
                next_id += 1;
                append_records(next_id, sizes)
            })
            .collect();
        let retain_below = s
            .retain
            .map(|share| log.durable_end() * u64::from(share) / 8);
        let results = rt.block_on(async {
            let retention = retain_below.map(|below| {
                let log = log.clone();
                tokio::task::spawn_blocking(move || log.delete_segments_below(below))
            });
            let mut pending = Vec::new();
            for b in &batches {
                pending.push(log.submit(b.clone()).await);
            }
            let mut out = Vec::new();
            for p in pending {
                out.push(match p {
                    Ok(rx) => rx.await.unwrap_or(Err(LogError::Closed)),
                    Err(e) => Err(e),
                });
            }
            if let Some(r) = retention {
                let _ = r.await.unwrap();
            }
            out
        });
        if let Some(below) = retain_below {
            model.keep_from = model.keep_from.max(below);
        }
        let mut failed = false;
        for (b, r) in batches.iter().zip(results) {
            match r {
                Ok(range) => {
                    prop_assert!(!failed, "acknowledged after an earlier append failed");
                    prop_assert_eq!(range.start, model.records.len() as u64);
                    model.records.extend(b.iter().cloned());
                }
                Err(LogError::Failed(_)) => failed = true,
                Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
            }
        }
        let image = match storage.crashed_image() {
            Some(img) => img,
            None if s.crash_in > 0 => storage.crash_image(s.seed),
            None => continue,
        };
        drop(log);
        let (l, img, m) = recover_and_check(image, &model).map_err(TestCaseError::fail)?;
        log = l;
        storage = img;
        model = m;
    }
    Ok(())
}

/// Cases per property run: `FERRY_CRASH_CASES` (default 300).
fn cases() -> u32 {
    env_or("FERRY_CRASH_CASES", 300)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]
    #[test]
    fn appends_rolls_and_retention_recover_to_a_contiguous_prefix(steps in prop::collection::vec(step(), 1..10)) {
        run(steps)?;
    }
}
