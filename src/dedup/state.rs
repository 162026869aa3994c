//! The state behind the one mutex that requests and the writer thread share:
//! the bloom generations, the ids claimed by requests in flight, and the ids
//! pending (durable in the WAL, not yet in redb) in two epochs, the one
//! filling and the one the writer took.

use super::bloom::Bloom;
use super::generations::{Change, Generations};
use super::key::Key;
use super::queue::{Inbox, Op};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use tokio::sync::watch;

/// Maps keyed by [`Key`]: foldhash with a per-process random seed, several
/// times cheaper than std's SipHash, still unpredictable to clients.
pub(crate) type KeyMap<V> = HashMap<Key, V, foldhash::fast::RandomState>;

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

/// A claim on an id by the `begin` pass `owner`, whose append has not
/// finished. The first waiter creates the channel (most ids never have
/// one); waiters subscribe and wake when it is dropped (commit or abort).
#[derive(Debug)]
pub(crate) struct Claim {
    /// The claiming pass.
    owner: u64,
    /// Dropped when the claim ends.
    waiters: Option<watch::Sender<()>>,
}

/// Entries the writer's buffers and the pending sets keep at least between
/// batches (128 KiB per buffer).
pub(crate) const MIN_KEEP: usize = 4096;

/// The mutable shared state.
pub(crate) struct State {
    /// Bloom generations: which ids may have been seen.
    pub gens: Generations,
    /// Ids claimed by requests in flight: small (the keys of requests in
    /// flight), so it stays in cache.
    claims: KeyMap<Claim>,
    /// Ids committed (durable in the WAL) since the writer last took the
    /// pending ids: id → first-seen ms.
    pending: KeyMap<u64>,
    /// The ids the writer took: being written, dropped as a whole once
    /// written. Together with `pending` bounded by `max_pending`.
    writing: KeyMap<u64>,
    /// Identifies the next `begin` pass (repeats inside a request find
    /// their own pass's claim).
    next_owner: u64,
    /// To the writer thread; sent to under this lock so that changes and
    /// inserts reach it in the order they happened.
    pub tx: Sender<Op>,
    /// Scratch: generation changes not yet sent.
    changes: Vec<Change>,
    /// Scratch: bloom hit masks of one request's keys.
    masks: Vec<u64>,
    /// Committed ids for the writer, appended in place rather than sent one
    /// message per request (an allocation, a channel send and a free on
    /// another thread each): the writer swaps the whole inbox out in
    /// [`State::take`]. Holds only ids committed after the last op sent.
    inbox: Inbox,
    /// A wake-up is queued for the writer since it last took the inbox.
    woken: bool,
    /// Pending ids at which the writer is told to write now instead of at
    /// the end of its interval (half of `max_pending`).
    urge_at: usize,
    /// The writer was told so since it last took the pending ids.
    urged: bool,
}

/// True when an id first seen at `t_ms` is still inside the window at `now_ms`.
pub(crate) fn fresh(t_ms: u64, now_ms: u64, window_ms: u64) -> bool {
    now_ms < t_ms.saturating_add(window_ms)
}

impl State {
    /// State over restored generations; the writer is urged once `urge_at`
    /// ids are pending.
    pub fn new(gens: Generations, tx: Sender<Op>, urge_at: usize) -> State {
        State {
            gens,
            claims: KeyMap::default(),
            pending: KeyMap::default(),
            writing: KeyMap::default(),
            next_owner: 0,
            tx,
            changes: Vec::new(),
            masks: Vec::new(),
            inbox: Inbox::default(),
            woken: false,
            urge_at: urge_at.max(1),
            urged: false,
        }
    }

    /// Ids claimed by requests in flight.
    pub fn in_flight(&self) -> usize {
        self.claims.len()
    }

    /// Ids durable in the WAL and not yet written to redb.
    pub fn pending(&self) -> usize {
        self.pending.len() + self.writing.len()
    }

    /// Sends queued generation changes to the writer.
    fn send_changes(&mut self) {
        for c in self.changes.drain(..) {
            let _ = self.tx.send(Op::Change(c));
        }
    }

    /// One locked pass over a request's keys. If any is claimed by another
    /// request, gives back what this pass claimed and returns that key's
    /// receiver to wait on; else every key that is not a known duplicate
    /// (pending and fresh, or a repeat inside `keys`) ends up claimed.
    /// Holding no claim while waiting is what rules out deadlock.
    pub fn claim(
        &mut self,
        keys: &[Key],
        now_ms: u64,
        window_ms: u64,
    ) -> Result<Vec<Class>, watch::Receiver<()>> {
        self.gens.maintain(now_ms, &mut self.changes);
        self.send_changes();
        let owner = self.next_owner;
        self.next_owner += 1;
        let mut masks = std::mem::take(&mut self.masks);
        self.gens.hit_masks(keys, &mut masks);
        let mut out = Vec::with_capacity(keys.len());
        for (i, (k, &mask)) in keys.iter().zip(&masks).enumerate() {
            let vacant = match self.claims.entry(*k) {
                Entry::Occupied(o) if o.get().owner == owner => {
                    out.push(Class::Duplicate);
                    continue;
                }
                Entry::Occupied(mut o) => {
                    let w = &mut o.get_mut().waiters;
                    let rx = w.get_or_insert_with(|| watch::channel(()).0).subscribe();
                    self.release_pass(&keys[..i], &out);
                    self.masks = masks;
                    return Err(rx);
                }
                Entry::Vacant(v) => v,
            };
            // A pending id is in its generation's filter, so only a filter
            // hit needs the pending sets.
            if mask != 0 {
                let t = self.pending.get(k).or_else(|| self.writing.get(k));
                if t.is_some_and(|&t| fresh(t, now_ms, window_ms)) {
                    out.push(Class::Duplicate);
                    continue;
                }
            }
            vacant.insert(Claim {
                owner,
                waiters: None,
            });
            out.push(if mask == 0 {
                Class::New
            } else {
                Class::Confirm(self.gens.ids_in(mask))
            });
        }
        self.masks = masks;
        Ok(out)
    }

    /// Gives back the claims of an unfinished pass: `keys[j]` was claimed
    /// by it when `classes[j]` is not a duplicate.
    fn release_pass(&mut self, keys: &[Key], classes: &[Class]) {
        for (k, c) in keys.iter().zip(classes) {
            if !matches!(c, Class::Duplicate) {
                self.claims.remove(k);
            }
        }
    }

    /// Gives up claims: waiters wake and look again.
    pub fn release(&mut self, keys: &[Key]) {
        for k in keys {
            self.claims.remove(k);
        }
    }

    /// Marks claimed ids durable in the WAL as seen, first seen at `t_ms`
    /// (now, except when re-indexing): into the active generation's filter and pending, claims ended
    /// (waiters wake), writer told. `offsets` completes once the writer has
    /// written them. True if the writer should be unparked now: enough ids
    /// are pending that it should not wait out its interval.
    #[must_use = "true means: unpark the writer"]
    pub fn commit(&mut self, keys: &[Key], t_ms: u64, now_ms: u64, offsets: Range<u64>) -> bool {
        let mut rest = keys;
        while !rest.is_empty() {
            let (gen, room) = self.gens.make_room(now_ms, &mut self.changes);
            if !self.changes.is_empty() {
                // Keep the writer's order: ids of a sealed generation before
                // its seal, a generation's creation before its ids.
                if !self.inbox.entries.is_empty() {
                    let _ = self.tx.send(Op::Insert(std::mem::take(&mut self.inbox)));
                }
                self.send_changes();
            }
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.gens.insert_active(now);
            self.inbox
                .entries
                .extend(now.iter().map(|&k| (gen, k, t_ms)));
            rest = later;
        }
        if !offsets.is_empty() {
            self.inbox.offsets.push(offsets);
        }
        // Each of these loops touches one random line per key; kept apart
        // so that the misses of successive keys overlap.
        self.pending.reserve(keys.len());
        for &k in keys {
            self.pending.insert(k, t_ms);
        }
        for k in keys {
            self.claims.remove(k);
        }
        if !self.woken && !self.inbox.is_empty() {
            self.woken = true;
            let _ = self.tx.send(Op::Wake);
        }
        if !self.urged && self.pending() >= self.urge_at {
            self.urged = true;
            let _ = self.tx.send(Op::Urge);
            return true;
        }
        false
    }

    /// The writer takes every op queued so far: called under this lock, so
    /// the ids of those ops are exactly the pending ones, which move to
    /// `writing` (still answered from there) until [`State::written`].
    /// The inbox goes last, as one insert (its ids were committed after
    /// every op queued); `spare` (emptied, its capacity kept) replaces it.
    pub fn take(&mut self, rx: &Receiver<Op>, batch: &mut Vec<Op>, spare: &mut Inbox) {
        loop {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    batch.push(Op::Close);
                    break;
                }
            }
        }
        if !self.inbox.is_empty() {
            std::mem::swap(&mut self.inbox, spare);
            batch.push(Op::Insert(std::mem::take(spare)));
        }
        self.woken = false;
        self.urged = false;
        if self.writing.is_empty() {
            std::mem::swap(&mut self.pending, &mut self.writing);
        } else {
            // The last write failed (dedup has stopped): keep answering
            // from both.
            self.writing.extend(self.pending.drain());
        }
    }

    /// Gives generation `id` the larger filter `bloom`, which holds the ids
    /// the index had for it when the writer last wrote: every id committed
    /// since is pending (or being written), and goes in too. Pending ids of
    /// other generations only add false positives, which the index settles.
    /// Returns the filter's new size in bits (see [`Generations::grow`]).
    pub fn grow(&mut self, id: u64, mut bloom: Bloom) -> Option<u64> {
        for k in self.pending.keys().chain(self.writing.keys()) {
            bloom.insert(k.bloom_hash());
        }
        self.gens.grow(id, bloom)
    }

    /// The ids taken by the last [`State::take`] are in redb (committed):
    /// forget them as a whole, no per-id work. Returns how many entries a
    /// batch buffer should keep: twice this batch's ids (at least
    /// [`MIN_KEEP`], at most the pending bound), so steady batches reuse
    /// their buffers while a burst's memory goes back once batches shrink.
    /// The pending sets are trimmed to it too.
    pub fn written(&mut self, max_pending: usize) -> usize {
        let keep = (2 * self.writing.len()).clamp(MIN_KEEP, max_pending.max(MIN_KEEP));
        self.writing.clear();
        if self.writing.capacity() > 2 * keep {
            self.writing.shrink_to(keep);
        }
        if self.pending.capacity() > 2 * keep.max(self.pending.len()) {
            self.pending.shrink_to(keep.max(self.pending.len()));
        }
        self.inbox_keep(keep);
        keep
    }

    /// Trims the request side's inbox buffer to `keep` entries when idle.
    fn inbox_keep(&mut self, keep: usize) {
        let entries = &mut self.inbox.entries;
        if entries.capacity() > 2 * keep.max(entries.len()) {
            entries.shrink_to(keep.max(entries.len()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_burst_the_pending_sets_and_buffers_shrink_back() {
        let gens = Generations::new(3_600_000, 1_000_000, 0.01, 4, 1 << 16, Vec::new(), 0, None);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut state = State::new(gens.unwrap(), tx, usize::MAX);
        let mut batch = Vec::new();
        let mut spare = Inbox::default();
        let mut write = |state: &mut State, n: u64, from: u64| {
            let keys: Vec<Key> = (from..from + n)
                .map(|i| Key::new("s", &i.to_string()))
                .collect();
            assert!(state.claim(&keys, 0, 3_600_000).is_ok());
            let _ = state.commit(&keys, 0, 0, from..from + n);
            batch.clear();
            state.take(&rx, &mut batch, &mut spare);
            state.written(1 << 20)
        };
        // A burst of 100,000 ids: its batch keeps room for twice that.
        assert_eq!(write(&mut state, 100_000, 0), 200_000);
        assert!(
            state.writing.capacity() >= 100_000,
            "the burst's map is kept for the next batch"
        );
        // Then small batches: the maps shrink to a few thousand entries.
        assert_eq!(write(&mut state, 10, 100_000), MIN_KEEP);
        assert_eq!(write(&mut state, 10, 100_010), MIN_KEEP);
        let caps = (state.pending.capacity(), state.writing.capacity());
        assert!(caps.0 <= 4 * MIN_KEEP && caps.1 <= 4 * MIN_KEEP, "{caps:?}");
    }

    #[test]
    fn a_grown_filter_takes_the_pending_ids_too() {
        // Ids committed after the writer's last write are only pending: the
        // filter grown from the index must get them from the pending set,
        // else they would be answered as new (a pending id is looked up only
        // on a filter hit).
        let gens = Generations::new(3_600_000, 1_000_000, 0.01, 4, 1, Vec::new(), 0, None);
        let (tx, _rx) = std::sync::mpsc::channel();
        let mut state = State::new(gens.unwrap(), tx, usize::MAX);
        let keys: Vec<Key> = (0..50).map(|i| Key::new("s", &i.to_string())).collect();
        assert!(state.claim(&keys, 0, 3_600_000).is_ok());
        let _ = state.commit(&keys, 0, 0, 0..50);
        let (id, bytes) = state.gens.growth_due().expect("50 ids fill a filter for 1");
        // The index has none of them yet: the rebuilt filter starts empty.
        assert!(state.grow(id, Bloom::with_bytes(bytes)).is_some());
        let classes = state.claim(&keys, 1, 3_600_000).unwrap();
        assert!(
            classes.iter().all(|c| matches!(c, Class::Duplicate)),
            "{classes:?}"
        );
    }
}
