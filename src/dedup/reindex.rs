//! Start-up re-index: ids the WAL holds past the checkpoint go back into
//! the index before serving (a crash can fall between a WAL fsync and the
//! index write, or before a non-durable index commit was synced).

use super::clock::to_ms;
use super::error::DedupError;
use super::state::{fresh, Class};
use super::{store, Dedup, Key};
use std::ops::Range;
use std::time::SystemTime;

impl Dedup {
    /// Re-indexes the records the WAL holds from [`Dedup::checkpoint`] on
    /// (a crash can fall between a WAL fsync and the index write). Call it
    /// before serving, with every record from the checkpoint to the durable
    /// end: `(offset, Some((key, time first seen)))` for events, `None` for
    /// records without a key. Returns how many ids were added. Blocking.
    pub fn reindex(
        &self,
        records: impl Iterator<Item = (u64, Option<(Key, SystemTime)>)>,
    ) -> Result<u64, DedupError> {
        let shared = &self.inner.shared;
        let mut added = 0u64;
        let mut chunk: Option<Range<u64>> = None;
        for (offset, record) in records {
            let now = to_ms(shared.clock.now());
            if let Some((key, t)) = record {
                let t = to_ms(t);
                if fresh(t, now, shared.window_ms) && self.reindex_one(key, t, now)? {
                    added += 1;
                }
            }
            let c = chunk.get_or_insert(offset..offset);
            c.end = c.end.max(offset + 1);
            if c.end - c.start >= 4096 {
                self.skip(chunk.take().unwrap());
            }
            if shared.lock().pending() >= shared.max_pending / 2 {
                self.flush()?;
            }
        }
        if let Some(c) = chunk {
            self.skip(c);
        }
        self.flush()?;
        Ok(added)
    }

    /// Adds one re-indexed id unless it is already held; true if added.
    fn reindex_one(&self, key: Key, t: u64, now: u64) -> Result<bool, DedupError> {
        let shared = &self.inner.shared;
        let class = shared.lock().claim(&[key], now, shared.window_ms);
        let Ok(mut class) = class else {
            return Ok(false); // claimed by a live request: it is being stored now
        };
        let new = match class.pop() {
            Some(Class::New) => true,
            Some(Class::Confirm(gens)) => {
                let found = store::lookup(&self.inner.db, &self.inner.path, &[(key, gens)]);
                let found = found.inspect_err(|_| shared.lock().release(&[key]))?;
                !found[0].is_some_and(|seen| fresh(to_ms(seen), now, shared.window_ms))
            }
            _ => false,
        };
        let mut state = shared.lock();
        if new {
            // Re-indexing flushes at half of `max_pending` itself.
            let _ = state.commit(&[key], t, now, 0..0);
        } else {
            state.release(&[key]);
        }
        Ok(new)
    }
}
