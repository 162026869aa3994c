//! Start-up re-index: ids the WAL holds past the checkpoint go back into
//! the index before serving (a crash can fall between a WAL fsync and the
//! index write, or before a non-durable index commit was synced). The ids
//! are read from the log's stored events ([`crate::stored_event`]).

use super::clock::to_ms;
use super::error::DedupError;
use super::state::{fresh, Class};
use super::{index_file, Dedup, Key, Reopener};
use crate::log::{Log, LogError};
use crate::stored_event::DedupId;
use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why the re-index failed. The message includes the cause, so the cause
/// is not also a `source` (an error chain would print it twice).
#[derive(Debug, thiserror::Error)]
pub enum ReindexError {
    /// Reading the log failed.
    #[error("re-indexing dedup from the log: {0}")]
    Log(LogError),
    /// The index failed.
    #[error("re-indexing dedup from the log: {0}")]
    Dedup(DedupError),
}

impl From<LogError> for ReindexError {
    fn from(e: LogError) -> Self {
        ReindexError::Log(e)
    }
}

impl From<DedupError> for ReindexError {
    fn from(e: DedupError) -> Self {
        ReindexError::Dedup(e)
    }
}

impl ReindexError {
    /// True when the index found the disk full: it can be opened and
    /// re-indexed again once space is freed.
    pub fn is_no_space(&self) -> bool {
        matches!(self, ReindexError::Dedup(e) if e.is_no_space())
    }
}

/// The dedup key and receipt time of a stored event, if it has them.
pub fn stored_key(payload: &[u8]) -> Option<(Key, SystemTime)> {
    let id = DedupId::read(payload)?;
    let at = UNIX_EPOCH + Duration::from_millis(id.received_ms);
    Some((Key::new(&id.source, &id.message_id), at))
}

/// Opens the index, re-indexes the log tail past its checkpoint, and writes
/// it durably, so that a full disk shows here rather than at the first
/// request (blocking). What start-up and a reopen after a full disk do.
pub fn open_and_reindex(reopener: &Reopener, log: &Log) -> Result<Dedup, ReindexError> {
    let dedup = reopener.open()?;
    reindex_from_log(log, &dedup)?;
    dedup.flush()?;
    Ok(dedup)
}

/// Re-indexes every event from the index's checkpoint to the log's durable
/// end. Offsets no longer in the log (deleted by retention) are reported as
/// done. Blocking; returns the number of ids added.
pub fn reindex_from_log(log: &Log, dedup: &Dedup) -> Result<u64, ReindexError> {
    let checkpoint = dedup.checkpoint();
    let start = log.start_offset().max(checkpoint);
    if checkpoint < start {
        dedup.skip(checkpoint..start);
    }
    let end = log.durable_end();
    if start >= end {
        return Ok(0);
    }
    let mut reader = log.reader(start)?;
    let mut failure = None;
    let records = std::iter::from_fn(|| match reader.next_below(end) {
        Ok(Some(r)) => Some((r.offset, stored_key(&r.payload))),
        Ok(None) => None,
        Err(e) => {
            failure = Some(e);
            None
        }
    });
    let added = dedup.reindex(records)?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    tracing::info!(
        from = start,
        to = end,
        added,
        "dedup: re-indexed the log tail past the checkpoint"
    );
    Ok(added)
}

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
                let found = index_file::lookup(&self.inner.db, &self.inner.path, &[(key, gens)]);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reindex_error_chain_names_its_cause_once() {
        let e = ReindexError::from(DedupError::NoSpace("No space left on device".into()));
        assert!(e.is_no_space());
        let chain = format!("{:#}", anyhow::Error::new(e).context("cannot start"));
        assert_eq!(
            chain.matches("No space left on device").count(),
            1,
            "{chain}"
        );
    }
}
