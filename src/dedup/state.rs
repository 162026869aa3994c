//! The state shared by the handle, tickets and the writer thread: ids in
//! flight (claimed, append not finished), ids pending (durable in the WAL,
//! not yet written to redb) and the bloom generations, behind one mutex.

use super::clock::Clock;
use super::generations::{Change, Generations};
use super::key::Key;
use super::writer::Op;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use tokio::sync::{watch, Notify};

/// Maps keyed by [`Key`]: foldhash with a per-process random seed, several
/// times cheaper than std's SipHash, still unpredictable to clients.
pub(crate) type KeyMap<V> = HashMap<Key, V, foldhash::fast::RandomState>;

/// Shared by every handle, ticket and the writer.
pub(crate) struct Shared {
    /// The mutable part.
    pub state: Mutex<State>,
    /// Duplicates answered since the index was created (persisted).
    pub duplicates: AtomicU64,
    /// The checkpoint of the last durable redb commit: what a restart resumes from.
    pub durable_checkpoint: AtomicU64,
    /// Set once, by the first index write failure.
    pub failure: OnceLock<String>,
    /// Woken whenever the writer retires pending ids (back-pressure).
    pub drained: Notify,
    /// Where time comes from.
    pub clock: Arc<dyn Clock>,
    /// The window in ms.
    pub window_ms: u64,
    /// Pending ids above which `begin` waits for the writer.
    pub max_pending: usize,
    /// Tests: the writer must stop at once, writing nothing more (a crash).
    pub halted: AtomicBool,
    /// Tests: true while the writer is held (see `Dedup::hold_writer`).
    pub hold: Mutex<bool>,
    /// Signalled when `hold` is released or `halted` is set.
    pub hold_cv: Condvar,
}

impl Shared {
    /// Locks the state; a panic elsewhere does not make it unusable (every
    /// change under the lock leaves it consistent).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks the test hold flag.
    pub fn lock_hold(&self) -> MutexGuard<'_, bool> {
        self.hold.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What one key of a request turned out to be in the locked pass.
#[derive(Debug)]
pub(crate) enum Class {
    /// Not seen, claimed by this request.
    New,
    /// Seen (durable, within the window), or a repeat inside the request.
    Duplicate,
    /// Claimed, but these generations' filters hit: confirm in redb.
    Confirm(Vec<u64>),
}

/// The mutable shared state.
pub(crate) struct State {
    /// Bloom generations: which ids may have been seen.
    pub gens: Generations,
    /// Ids claimed by a request whose append has not finished. The first
    /// waiter creates the channel (most ids never have one); waiters
    /// subscribe and wake when it is dropped (commit or abort). Bounded by
    /// the keys of requests in flight.
    pub in_flight: KeyMap<Option<watch::Sender<()>>>,
    /// Ids durable in the WAL, not yet written to redb: id → first-seen ms.
    /// Bounded by `max_pending` (requests wait beyond it).
    pub pending: KeyMap<u64>,
    /// To the writer thread; sent to under this lock so that changes and
    /// inserts reach it in the order they happened.
    pub tx: Sender<Op>,
    /// Scratch: generation changes not yet sent.
    changes: Vec<Change>,
    /// Scratch: bloom hits of one key.
    hits: Vec<u64>,
}

/// True when an id first seen at `t_ms` is still inside the window at `now_ms`.
pub(crate) fn fresh(t_ms: u64, now_ms: u64, window_ms: u64) -> bool {
    now_ms < t_ms.saturating_add(window_ms)
}

impl State {
    /// State over restored generations.
    pub fn new(gens: Generations, tx: Sender<Op>) -> State {
        State {
            gens,
            in_flight: KeyMap::default(),
            pending: KeyMap::default(),
            tx,
            changes: Vec::new(),
            hits: Vec::new(),
        }
    }

    /// Sends queued generation changes to the writer.
    fn send_changes(&mut self) {
        for c in self.changes.drain(..) {
            let _ = self.tx.send(Op::Change(c));
        }
    }

    /// One locked pass over a request's keys (`first[i]`: the first
    /// occurrence of that key in the request). If any is claimed by another
    /// request, claims nothing and returns that key's receiver to wait on;
    /// else claims every key that is not a known duplicate. Taking all claims
    /// in one pass, only after all waiting is over, is what rules out
    /// deadlock: a request never holds a claim while it waits.
    pub fn claim(
        &mut self,
        keys: &[Key],
        first: &[bool],
        now_ms: u64,
        window_ms: u64,
    ) -> Result<Vec<Class>, watch::Receiver<()>> {
        self.gens.maintain(now_ms, &mut self.changes);
        self.send_changes();
        for (k, _) in keys.iter().zip(first).filter(|(_, f)| **f) {
            if let Some(s) = self.in_flight.get_mut(k) {
                return Err(s.get_or_insert_with(|| watch::channel(()).0).subscribe());
            }
        }
        let mut out = Vec::with_capacity(keys.len());
        for (k, f) in keys.iter().zip(first) {
            if !f
                || self
                    .pending
                    .get(k)
                    .is_some_and(|&t| fresh(t, now_ms, window_ms))
            {
                out.push(Class::Duplicate);
                continue;
            }
            self.gens.hits(*k, &mut self.hits);
            self.in_flight.insert(*k, None);
            out.push(if self.hits.is_empty() {
                Class::New
            } else {
                Class::Confirm(self.hits.clone())
            });
        }
        Ok(out)
    }

    /// Gives up claims: waiters wake and look again.
    pub fn release(&mut self, keys: &[Key]) {
        for k in keys {
            self.in_flight.remove(k);
        }
    }

    /// Marks ids durable in the WAL as seen: into the active generation's
    /// filter and the pending set, claims released, writer told. `offsets`
    /// completes once the writer has written them.
    pub fn commit(&mut self, entries: &[(Key, u64)], now_ms: u64, offsets: Range<u64>) {
        let mut batch = Vec::with_capacity(entries.len());
        for &(k, t) in entries {
            let gen = self.gens.insert(k, now_ms, &mut self.changes);
            if !self.changes.is_empty() {
                // Keep the writer's order: ids of a sealed generation before
                // its seal, a generation's creation before its ids.
                let _ = self.tx.send(Op::Insert {
                    entries: std::mem::take(&mut batch),
                    offsets: 0..0,
                });
                self.send_changes();
            }
            batch.push((gen, k, t));
            self.pending.insert(k, t);
            self.in_flight.remove(&k);
        }
        let _ = self.tx.send(Op::Insert {
            entries: batch,
            offsets,
        });
    }
}
