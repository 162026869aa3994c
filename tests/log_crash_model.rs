//! Property test of the log against a simple model: random concurrent
//! appends, crashes at random sync points (each unsynced write kept, dropped,
//! torn, zeroed or garbled; unsynced directory entries kept or lost), and
//! reopens. After every crash, recovery must yield exactly a prefix of what
//! was written: every acknowledged record at its offset, then only whole,
//! unacknowledged appends, never a part of one.

use ferry::log::crash_storage::CrashStorage;
use ferry::log::{Log, LogError, LogOptions};
use proptest::prelude::*;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone)]
struct Step {
    /// Concurrent appends: record sizes of each.
    appends: Vec<Vec<u16>>,
    /// Crash at this many sync points from now (0: no crash this step).
    crash_in: u8,
    /// Seed for the fate of unsynced writes.
    seed: u64,
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop::collection::vec(prop::collection::vec(1u16..300, 1..5), 1..6),
        0u8..5,
        any::<u64>(),
    )
        .prop_map(|(appends, crash_in, seed)| Step {
            appends,
            crash_in,
            seed,
        })
}

/// Payload naming its append and position, so recovery can be checked for
/// whole appends without knowing unacknowledged offsets.
fn payload(append_id: u32, idx: u16, count: u16, size: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + size as usize);
    p.extend_from_slice(&append_id.to_le_bytes());
    p.extend_from_slice(&idx.to_le_bytes());
    p.extend_from_slice(&count.to_le_bytes());
    p.extend((0..size).map(|i| (append_id as u16).wrapping_mul(31).wrapping_add(i) as u8));
    p
}

fn parse(p: &[u8]) -> (u32, u16, u16) {
    (
        u32::from_le_bytes(p[0..4].try_into().unwrap()),
        u16::from_le_bytes(p[4..6].try_into().unwrap()),
        u16::from_le_bytes(p[6..8].try_into().unwrap()),
    )
}

fn options() -> LogOptions {
    LogOptions {
        segment_bytes: 1500,
        min_free_bytes: 0,
        ..LogOptions::default()
    }
}

fn read_all(log: &Log) -> Vec<Vec<u8>> {
    let mut r = log.reader(0).unwrap();
    let mut out = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        assert_eq!(rec.offset, out.len() as u64);
        out.push(rec.payload);
    }
    out
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = Path::new("/data/log");
    let mut storage = CrashStorage::new();
    let mut log = Log::open_with(Arc::new(storage.clone()), dir, options()).unwrap();
    // The model: every record known durable, by offset.
    let mut known: Vec<Vec<u8>> = Vec::new();
    let mut next_id = 0u32;
    for s in steps {
        if s.crash_in > 0 {
            storage.crash_at_sync_point(storage.sync_points() + u64::from(s.crash_in), s.seed);
        }
        let mut batches = Vec::new();
        for sizes in &s.appends {
            let count = sizes.len() as u16;
            let recs: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, sz)| payload(next_id, i as u16, count, *sz))
                .collect();
            next_id += 1;
            batches.push(recs);
        }
        let results = rt.block_on(async {
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
            out
        });
        // Acknowledged appends form a contiguous run right after what is known.
        let mut failed = false;
        for (b, r) in batches.iter().zip(results) {
            match r {
                Ok(range) => {
                    prop_assert!(
                        !failed,
                        "an append was acknowledged after an earlier one failed"
                    );
                    prop_assert_eq!(range.start, known.len() as u64);
                    known.extend(b.iter().cloned());
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
        storage = image;
        log = Log::open_with(Arc::new(storage.clone()), dir, options())
            .map_err(|e| TestCaseError::fail(format!("recovery failed: {e}")))?;
        let back = read_all(&log);
        prop_assert!(
            back.len() >= known.len(),
            "lost acknowledged records: {} < {}",
            back.len(),
            known.len()
        );
        prop_assert_eq!(&back[..known.len()], &known[..]);
        // Whatever survived beyond is whole appends, each once.
        let mut i = known.len();
        let mut seen = std::collections::HashSet::new();
        while i < back.len() {
            let (id, idx, count) = parse(&back[i]);
            prop_assert_eq!(idx, 0, "a partial append survived");
            prop_assert!(seen.insert(id));
            for k in 0..count {
                prop_assert!(i + (k as usize) < back.len(), "append {} cut short", id);
                prop_assert_eq!(parse(&back[i + k as usize]), (id, k, count));
            }
            i += count as usize;
        }
        known = back;
        prop_assert_eq!(log.durable_end(), known.len() as u64);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]
    #[test]
    fn recovery_yields_a_prefix_holding_every_acknowledged_record(steps in prop::collection::vec(step(), 1..12)) {
        run(steps)?;
    }
}
