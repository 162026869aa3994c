//! Fuzzing (stable toolchain, proptest-driven) of record/segment decoding and
//! recovery: arbitrary bytes, mutated valid segments, records with valid CRCs
//! but absurd header fields, and several segments with odd names as a log
//! directory. Opening (strict and quarantine), `ferry log`'s read-only view
//! (inspect, verify) and reading must never panic: only Ok or a clean error,
//! and what opens reads back as contiguous offsets. `FERRY_FUZZ_CASES`
//! (default 256 per target) sets the run length.

mod common;

use common::env::env_or;
use ferry::log::crash_storage::CrashStorage;
use ferry::log::record::{encode_record, RecordHeader};
use ferry::log::segment::{encode_segment_header, segment_file_name};
use ferry::log::{Log, LogOptions, LogView, RecoveryMode, Storage};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::path::Path;
use std::sync::Arc;

const DIR: &str = "/fuzz/log";

fn cases() -> u32 {
    env_or("FERRY_FUZZ_CASES", 256)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

/// Reads every record from `from` (bounded); checks offsets are contiguous.
fn drain(mut reader: ferry::log::LogReader, from: u64) -> Result<(), TestCaseError> {
    let mut expected = from;
    for _ in 0..100_000 {
        match reader.next() {
            Ok(Some(r)) => {
                prop_assert_eq!(r.offset, expected);
                expected += 1;
            }
            Ok(None) | Err(_) => return Ok(()),
        }
    }
    Err(TestCaseError::fail("reader never ended"))
}

/// Puts `files` (name, bytes) into a fresh log directory and runs every
/// reading and recovering path over it.
fn exercise(files: &[(String, Vec<u8>)]) -> Result<(), TestCaseError> {
    let sim = CrashStorage::new();
    let dir = Path::new(DIR);
    sim.create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        sim.write_file(&dir.join(name), bytes.clone());
    }
    // The read-only view of `ferry log inspect|dump|verify`.
    if let Ok(view) = LogView::open_with(Arc::new(sim.clone()), dir) {
        let _ = view.inspect();
        let _ = view.verify();
        if let Ok(r) = view.reader(view.start_offset()) {
            drain(r, view.start_offset())?;
        }
    }
    for mode in [RecoveryMode::Strict, RecoveryMode::Quarantine] {
        // Each mode on its own copy: recovery writes.
        let copy = sim.crash_image(0);
        let options = LogOptions {
            segment_bytes: 4096,
            min_free_bytes: 0,
            recovery: mode,
            ..LogOptions::default()
        };
        let Ok(log) = Log::open_with(Arc::new(copy.clone()), dir, options.clone()) else {
            continue;
        };
        let start = log.start_offset();
        if let Ok(r) = log.reader(start) {
            drain(r, start)?;
        }
        // A recovered log takes appends at its end and reopens cleanly.
        let end = log.durable_end();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        if let Ok(range) = rt.block_on(log.append(vec![b"after".to_vec()])) {
            prop_assert_eq!(range, end..end + 1);
            drop(log);
            let log = Log::open_with(Arc::new(copy), dir, options).map_err(|e| {
                TestCaseError::fail(format!("reopen after a clean append failed: {e}"))
            })?;
            prop_assert_eq!(log.durable_end(), end + 1);
        }
    }
    Ok(())
}

/// A valid segment at `base`: appends of the given record counts, grouped.
fn valid_segment(base: u64, groups: &[Vec<u8>]) -> Vec<u8> {
    let mut out = encode_segment_header(base).to_vec();
    let mut offset = base;
    for group in groups {
        let group_base = offset;
        for &n in group {
            let n = u32::from(n.max(1));
            for i in 0..n {
                let payload = format!("p{offset}");
                let h = RecordHeader {
                    len: payload.len() as u32,
                    offset,
                    group_delta: (offset - group_base) as u32,
                    batch_remaining: n - 1 - i,
                };
                encode_record(&mut out, &h, payload.as_bytes());
                offset += 1;
            }
        }
    }
    out
}

fn groups() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(1u8..4, 1..4), 0..6)
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        mask: u8,
    },
    Truncate {
        to: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    /// A record with a valid CRC and arbitrary header fields, written over
    /// the segment at `at` (or appended).
    Forged {
        at: usize,
        len: u32,
        offset: u64,
        group_delta: u32,
        batch_remaining: u32,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let edge32 = prop_oneof![
        any::<u32>(),
        Just(0u32),
        Just(1),
        Just(u32::MAX),
        Just(u32::MAX - 1)
    ];
    let edge64 = prop_oneof![0u64..64, Just(u64::MAX), any::<u64>()];
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|to| Mutation::Truncate { to }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..40))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 0u32..40, edge64, edge32.clone(), edge32).prop_map(
            |(at, len, offset, group_delta, batch_remaining)| {
                Mutation::Forged {
                    at,
                    len,
                    offset,
                    group_delta,
                    batch_remaining,
                }
            }
        ),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len();
    match m {
        Mutation::Flip { at, mask } if n > 0 => bytes[at % n] ^= mask,
        Mutation::Flip { .. } => {}
        Mutation::Truncate { to } => bytes.truncate(to % (n + 1)),
        Mutation::Insert { at, bytes: b } => {
            let at = at % (n + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Mutation::Forged {
            at,
            len,
            offset,
            group_delta,
            batch_remaining,
        } => {
            let mut rec = Vec::new();
            let h = RecordHeader {
                len: *len,
                offset: *offset,
                group_delta: *group_delta,
                batch_remaining: *batch_remaining,
            };
            encode_record(&mut rec, &h, &vec![b'z'; *len as usize]);
            let at = (*at % (n + 1)).max(32.min(n));
            let end = (at + rec.len()).min(n);
            bytes.splice(at..end, rec);
        }
    }
}

#[test]
fn arbitrary_bytes_as_a_segment_never_panic() {
    let strategy = (prop::collection::vec(any::<u8>(), 0..2048), any::<bool>());
    runner()
        .run(&strategy, |(mut bytes, with_header)| {
            if with_header {
                // Past the header check, so the record walk sees the bytes.
                let mut h = encode_segment_header(0).to_vec();
                h.append(&mut bytes);
                bytes = h;
            }
            exercise(&[(segment_file_name(0), bytes)])
        })
        .unwrap();
}

#[test]
fn mutated_valid_segments_never_panic() {
    let strategy = (
        0u64..1000,
        groups(),
        prop::collection::vec(mutation(), 1..5),
    );
    runner()
        .run(&strategy, |(base, groups, mutations)| {
            let mut bytes = valid_segment(base, &groups);
            for m in &mutations {
                apply(&mut bytes, m);
            }
            exercise(&[(segment_file_name(base), bytes)])
        })
        .unwrap();
}

#[test]
fn odd_sets_of_segments_never_panic() {
    // Bases that may overlap, leave gaps or disagree with the headers inside,
    // plus files that only look like segments.
    let segment = (0u64..200, groups(), prop::option::of(mutation()), 0u8..4);
    let strategy = prop::collection::vec(segment, 1..5);
    runner()
        .run(&strategy, |segments| {
            let mut files = Vec::new();
            for (base, groups, m, naming) in segments {
                let mut bytes = valid_segment(base, &groups);
                if let Some(m) = m {
                    apply(&mut bytes, &m);
                }
                let name = match naming {
                    0 | 1 => segment_file_name(base),
                    2 => segment_file_name(base + 1),
                    _ => format!("{base}.log"),
                };
                files.push((name, bytes));
            }
            exercise(&files)
        })
        .unwrap();
}

#[test]
fn forged_runs_of_valid_records_never_panic() {
    // Records in offset order with valid CRCs but arbitrary group deltas and
    // append countdowns: the scan's state machine sees every combination.
    let field = prop_oneof![0u32..4, Just(u32::MAX), Just(u32::MAX - 1), any::<u32>()];
    let strategy = (
        0u64..100,
        prop::collection::vec((field.clone(), field, 0u32..12), 1..12),
    );
    runner()
        .run(&strategy, |(base, records)| {
            let mut bytes = encode_segment_header(base).to_vec();
            for (i, (delta, remaining, len)) in records.iter().enumerate() {
                let offset = base + i as u64;
                let h = RecordHeader {
                    len: *len,
                    offset,
                    group_delta: (*delta).min(offset as u32),
                    batch_remaining: *remaining,
                };
                encode_record(&mut bytes, &h, &vec![b'f'; *len as usize]);
            }
            exercise(&[(segment_file_name(base), bytes)])
        })
        .unwrap();
}

/// Crashes found by these targets, kept as fixed cases.
#[test]
fn regressions() {
    // A valid-CRC record whose group delta exceeds its offset, behind a bad
    // spot (decoding must refuse it rather than compute `offset - delta`).
    let mut bytes = valid_segment(0, &[vec![1]]);
    bytes.extend_from_slice(&[0xAB; 30]);
    let end = bytes.len();
    apply(
        &mut bytes,
        &Mutation::Forged {
            at: end,
            len: 3,
            offset: 5,
            group_delta: 100,
            batch_remaining: 0,
        },
    );
    exercise(&[(segment_file_name(0), bytes)]).unwrap();
    // A valid record claiming u32::MAX records follow, then one that
    // continues the append: the scan computed `batch_remaining + 1` and
    // overflowed (a panic in debug builds). Fixed in src/log/scan.rs.
    let mut bytes = encode_segment_header(0).to_vec();
    for (offset, remaining) in [(0u64, u32::MAX), (1, u32::MAX)] {
        let h = RecordHeader {
            len: 1,
            offset,
            group_delta: offset as u32,
            batch_remaining: remaining,
        };
        encode_record(&mut bytes, &h, b"x");
    }
    exercise(&[(segment_file_name(0), bytes)]).unwrap();
}
