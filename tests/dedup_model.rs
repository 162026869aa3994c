//! Property test of dedup against a model (a HashMap id → time first stored):
//! random requests with repeats, appends that succeed or fail, clock jumps
//! across the window, writer stalls, clean restarts and crashes (writer
//! stopped with commits unwritten) followed by a re-index of the simulated
//! WAL tail. Every verdict must be exactly the model's.

use ferry::dedup::{Clock, Dedup, DedupOptions, Key, ManualClock, Verdict};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WINDOW_MS: u64 = 24 * 3600 * 1000;

#[derive(Debug, Clone)]
enum Step {
    /// A request with these ids; the append succeeds or fails; a record
    /// without a key may follow it in the WAL.
    Request {
        ids: Vec<u8>,
        append_ok: bool,
        unkeyed: bool,
    },
    /// The clock moves forward.
    Advance(u64),
    /// Durable flush: the checkpoint must reach the WAL end.
    Flush,
    /// The writer stalls (commits stay pending).
    Hold,
    /// Restart: `crash` stops the writer without writing what is queued;
    /// `reindex_all` re-indexes the whole WAL instead of the tail (must
    /// change nothing).
    Restart { crash: bool, reindex_all: bool },
}

fn step() -> impl Strategy<Value = Step> {
    let advance = prop_oneof![
        Just(0u64),
        1u64..5_000,
        Just(3_600_000),
        Just(6 * 3_600_000),
        Just(WINDOW_MS - 1),
        Just(WINDOW_MS),
        0u64..30 * 3_600_000,
    ];
    prop_oneof![
        6 => (prop::collection::vec(0u8..40, 1..8), prop::bool::weighted(0.8), prop::bool::weighted(0.2))
            .prop_map(|(ids, append_ok, unkeyed)| Step::Request { ids, append_ok, unkeyed }),
        3 => advance.prop_map(Step::Advance),
        1 => Just(Step::Flush),
        1 => Just(Step::Hold),
        1 => (any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(crash, reindex_all)| Step::Restart { crash, reindex_all }),
    ]
}

fn key(id: u8) -> Key {
    Key::new("model", &format!("m-{id}"))
}

fn opts() -> DedupOptions {
    DedupOptions {
        capacity: 10_000,
        // Tiny runs: ids spread over many runs per generation, merged and
        // left unmerged at the cap.
        max_run_ids: 8,
        // Filters sized for one id at first: they grow (rebuilt from the
        // index by the writer) as the model's 40 ids arrive, across
        // restarts and crashes.
        min_filter_ids: 1,
        ..DedupOptions::default()
    }
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The model: when each id was first stored, and the simulated WAL.
#[derive(Default)]
struct Model {
    seen: HashMap<u8, u64>,
    /// (offset, id and time, or None for a record without a key).
    wal: Vec<(u64, Option<(u8, u64)>)>,
}

impl Model {
    fn verdicts(&self, ids: &[u8], now: u64) -> Vec<Verdict> {
        let mut here = HashSet::new();
        ids.iter()
            .map(|id| {
                let repeat = !here.insert(*id);
                let fresh = self.seen.get(id).is_some_and(|&t| now - t < WINDOW_MS);
                if repeat || fresh {
                    Verdict::Duplicate
                } else {
                    Verdict::New
                }
            })
            .collect()
    }

    fn end(&self) -> u64 {
        self.wal.len() as u64
    }

    fn records_from(
        &self,
        from: u64,
    ) -> impl Iterator<Item = (u64, Option<(Key, SystemTime)>)> + '_ {
        self.wal
            .iter()
            .filter(move |(o, _)| *o >= from)
            .map(|(o, r)| {
                (
                    *o,
                    r.map(|(id, t)| (key(id), UNIX_EPOCH + Duration::from_millis(t))),
                )
            })
    }
}

fn reopen(path: &Path, clock: &Arc<ManualClock>, model: &Model, reindex_all: bool) -> Dedup {
    let d = Dedup::open(path, opts(), clock.clone()).unwrap();
    let from = if reindex_all { 0 } else { d.checkpoint() };
    assert!(d.checkpoint() <= model.end());
    d.reindex(model.records_from(from)).unwrap();
    assert_eq!(
        d.checkpoint(),
        model.end(),
        "after re-index the checkpoint is the WAL end"
    );
    d
}

fn run_case(steps: Vec<Step>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dedup.redb");
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_750_000_000),
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut model = Model::default();
    let mut d = Dedup::open(&path, opts(), clock.clone()).unwrap();
    let mut held = false;
    for (i, s) in steps.into_iter().enumerate() {
        match s {
            Step::Request {
                ids,
                append_ok,
                unkeyed,
            } => {
                let now = ms(clock.now());
                let keys: Vec<Key> = ids.iter().map(|&id| key(id)).collect();
                let t = rt.block_on(d.begin(&keys)).unwrap();
                let expect = model.verdicts(&ids, now);
                assert_eq!(t.verdicts(), expect.as_slice(), "step {i}: ids {ids:?}");
                if append_ok {
                    let start = model.end();
                    for (id, v) in ids.iter().zip(&expect) {
                        if *v == Verdict::New {
                            model.seen.insert(*id, now);
                            model.wal.push((model.end(), Some((*id, now))));
                        }
                    }
                    t.commit(start..model.end());
                    if unkeyed {
                        model.wal.push((model.end(), None));
                        d.skip(model.end() - 1..model.end());
                    }
                } else {
                    t.abort();
                }
            }
            Step::Advance(by) => clock.advance(Duration::from_millis(by)),
            Step::Flush => {
                if held {
                    d.release_writer();
                    held = false;
                }
                d.flush().unwrap();
                assert_eq!(d.checkpoint(), model.end(), "step {i}");
                assert_eq!(d.stats().pending, 0);
            }
            Step::Hold => {
                if !held {
                    d.hold_writer();
                    held = true;
                }
            }
            Step::Restart { crash, reindex_all } => {
                if crash {
                    d.crash();
                } else {
                    if held {
                        d.release_writer();
                    }
                    drop(d);
                }
                held = false;
                d = reopen(&path, &clock, &model, reindex_all);
            }
        }
    }
    if held {
        d.release_writer();
    }
    // Finally every id the model holds within the window must be a duplicate.
    let now = ms(clock.now());
    let ids: Vec<u8> = (0..40).collect();
    let keys: Vec<Key> = ids.iter().map(|&id| key(id)).collect();
    let t = rt.block_on(d.begin(&keys)).unwrap();
    assert_eq!(
        t.verdicts(),
        model.verdicts(&ids, now).as_slice(),
        "final sweep"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn dedup_matches_the_model(steps in prop::collection::vec(step(), 1..40)) {
        run_case(steps);
    }
}

/// A fixed scenario that crosses every kind of step, so a regression shows
/// up even with proptest's shrinking turned off.
#[test]
fn fixed_scenario() {
    let r = |ids: &[u8], ok| Step::Request {
        ids: ids.to_vec(),
        append_ok: ok,
        unkeyed: true,
    };
    run_case(vec![
        r(&[1, 2, 2, 3], true),
        Step::Hold,
        r(&[3, 4, 5], true),
        r(&[6], false),
        Step::Restart {
            crash: true,
            reindex_all: false,
        },
        r(&[4, 5, 6], true),
        Step::Advance(WINDOW_MS - 1),
        r(&[1, 7], true),
        Step::Advance(1),
        r(&[1, 2, 7], true),
        Step::Flush,
        Step::Restart {
            crash: false,
            reindex_all: true,
        },
        Step::Advance(WINDOW_MS),
        r(&[1, 2, 3, 4, 5, 6, 7], true),
    ]);
}
