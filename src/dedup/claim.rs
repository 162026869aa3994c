//! [`Ticket`]: a request's claim on its new ids, from `begin` until the
//! append's outcome: commit (the events are durable in the WAL) or abort
//! (they are not).

use super::clock::to_ms;
use super::key::Key;
use super::Dedup;
use std::ops::Range;

/// What to do with one event of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen within the window: append it.
    New,
    /// Seen (durably stored earlier, or earlier in this request): answer
    /// success without appending.
    Duplicate,
}

/// The outcome of [`Dedup::begin`]: a verdict per key, and a claim on the
/// new ones that other requests wait on until [`Ticket::commit`] or
/// [`Ticket::abort`] (dropping the ticket aborts).
#[must_use = "a ticket must be committed after the WAL append, or aborted"]
pub struct Ticket {
    /// The index the claims are in.
    pub(crate) dedup: Dedup,
    /// One verdict per key of the request, in order.
    pub(crate) verdicts: Vec<Verdict>,
    /// The new keys, in request order; claimed until commit or abort.
    pub(crate) owned: Vec<Key>,
}

impl Ticket {
    /// One verdict per key passed to `begin`, in the same order.
    pub fn verdicts(&self) -> &[Verdict] {
        &self.verdicts
    }

    /// The keys judged new, in request order (those to append).
    pub fn new_keys(&self) -> &[Key] {
        &self.owned
    }

    /// The request's events were appended at `offsets` (every event of the
    /// append: the new keys' and any without a key, such as events whose id
    /// ferry generated) and that append is durable (its fsync completed).
    /// Call it only then: an id counts as seen from here on. Their ids enter
    /// the filter and the pending set now and redb with the writer's next
    /// batch; the checkpoint passes `offsets` once that batch is written.
    ///
    /// # Panics
    /// If `offsets` holds fewer offsets than there are new keys.
    pub fn commit(mut self, offsets: Range<u64>) {
        let owned = std::mem::take(&mut self.owned);
        assert!(
            offsets.end.saturating_sub(offsets.start) >= owned.len() as u64,
            "commit needs a WAL offset per new key"
        );
        if owned.is_empty() && offsets.is_empty() {
            return;
        }
        let shared = &self.dedup.inner.shared;
        let now = to_ms(shared.clock.now());
        if shared.lock().commit(&owned, now, now, offsets) {
            shared.wake_writer();
        }
    }

    /// The append failed (or will not happen): release the keys, so waiting
    /// requests and retries treat them as new.
    pub fn abort(self) {
        drop(self)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.owned.is_empty() {
            let mut state = self.dedup.inner.shared.lock();
            state.release(&self.owned);
        }
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("verdicts", &self.verdicts)
            .field("new", &self.owned.len())
            .finish()
    }
}
