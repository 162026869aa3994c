//! Concurrency of dedup: many tasks racing on the same ids store each id
//! exactly once; a waiter takes over an id whose owner's append failed, and
//! exactly one waiter does; crossing requests ([a, b] vs [b, a]) never
//! deadlock.

use ferry::dedup::{Dedup, DedupOptions, Key, SystemClock, Verdict};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn open(dir: &std::path::Path) -> Dedup {
    Dedup::open(
        &dir.join("dedup.redb"),
        DedupOptions::default(),
        Arc::new(SystemClock),
    )
    .unwrap()
}

fn k(i: u64) -> Key {
    Key::new("race", &format!("id-{i}"))
}

/// Guards against a deadlock turning into a hung test run.
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn racing_tasks_store_each_id_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let offsets = Arc::new(AtomicU64::new(0));
    let stored: Arc<Mutex<HashMap<Key, u32>>> = Arc::default();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for task in 0..32u64 {
            let (d, offsets, stored) = (d.clone(), offsets.clone(), stored.clone());
            tasks.push(tokio::spawn(async move {
                for round in 0..20u64 {
                    // Overlapping, differently ordered requests of 10 ids from 0..50.
                    let keys: Vec<Key> = (0..10)
                        .map(|j| k((task * 7 + round * 3 + j * 5) % 50))
                        .collect();
                    let t = d.begin(&keys).await.unwrap();
                    let new: Vec<Key> = t.new_keys().to_vec();
                    tokio::task::yield_now().await; // the "append"
                                                    // One in five appends fails: those ids must be taken over.
                    if (task + round) % 5 == 0 {
                        t.abort();
                        continue;
                    }
                    let start = offsets.fetch_add(new.len() as u64, Ordering::SeqCst);
                    {
                        let mut s = stored.lock().unwrap();
                        for key in &new {
                            *s.entry(*key).or_default() += 1;
                        }
                    }
                    t.commit(start..start + new.len() as u64);
                }
            }));
        }
        for t in tasks {
            tokio::time::timeout(LIMIT, t)
                .await
                .expect("deadlock")
                .unwrap();
        }
    });
    let stored = stored.lock().unwrap();
    assert!(!stored.is_empty());
    for (key, n) in stored.iter() {
        assert_eq!(*n, 1, "{key:?} stored {n} times");
    }
    // Every id that was stored is now a duplicate for everyone.
    let keys: Vec<Key> = stored.keys().copied().collect();
    let t = rt.block_on(d.begin(&keys)).unwrap();
    assert!(t.verdicts().iter().all(|v| *v == Verdict::Duplicate));
}

#[test]
fn when_the_owner_aborts_exactly_one_waiter_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    // One thread: spawned tasks run only when this one yields, so all
    // waiters are parked on the owner before it aborts.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let x = k(1);
        let owner = d.begin(&[x]).await.unwrap();
        assert_eq!(owner.verdicts(), [Verdict::New]);
        // Each waiter that becomes the owner fails its append too, until
        // three have failed; the fourth commits.
        let failures_left = Arc::new(AtomicU64::new(3));
        let mut waiters = Vec::new();
        for _ in 0..16 {
            let (d, failures_left) = (d.clone(), failures_left.clone());
            waiters.push(tokio::spawn(async move {
                let t = d.begin(&[x]).await.unwrap();
                let v = t.verdicts()[0];
                if v == Verdict::New {
                    tokio::task::yield_now().await; // others are still waiting
                    if failures_left.fetch_sub(1, Ordering::SeqCst) > 0 {
                        t.abort();
                        return (v, false);
                    }
                    t.commit(0..1);
                    return (v, true);
                }
                (v, false)
            }));
        }
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        assert_eq!(d.stats().in_flight, 1);
        owner.abort();
        let mut news = 0;
        let mut commits = 0;
        for w in waiters {
            let (v, committed) = tokio::time::timeout(LIMIT, w)
                .await
                .expect("deadlock")
                .unwrap();
            news += usize::from(v == Verdict::New);
            commits += usize::from(committed);
        }
        assert_eq!(
            (news, commits),
            (4, 1),
            "3 aborting owners, then one that commits"
        );
        assert_eq!(
            d.begin(&[x]).await.unwrap().verdicts(),
            [Verdict::Duplicate]
        );
    });
}

#[test]
fn crossing_requests_do_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let offsets = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let mut tasks = Vec::new();
        for task in 0..16u64 {
            let (d, offsets) = (d.clone(), offsets.clone());
            tasks.push(tokio::spawn(async move {
                for round in 0..50u64 {
                    let (a, b) = (k(1000 + round), k(2000 + round));
                    let keys = if task % 2 == 0 { [a, b] } else { [b, a] };
                    let t = d.begin(&keys).await.unwrap();
                    tokio::task::yield_now().await;
                    let n = t.new_keys().len() as u64;
                    if task % 3 == 0 {
                        t.abort();
                    } else {
                        let s = offsets.fetch_add(n, Ordering::SeqCst);
                        t.commit(s..s + n);
                    }
                }
            }));
        }
        for t in tasks {
            tokio::time::timeout(LIMIT, t)
                .await
                .expect("deadlock")
                .unwrap();
        }
    });
    assert_eq!(d.stats().in_flight, 0);
}
