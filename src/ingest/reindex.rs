//! Start-up re-index of the dedup index from the log: the ids of events
//! stored past the index's checkpoint (a crash can fall between a WAL fsync
//! and the index write) go back in before the server takes requests. This
//! file knows how ingestion stores events; the dedup index does not.

use crate::dedup::{Dedup, DedupError, Key, Reopener};
use crate::log::{Log, LogError};
use serde::Deserialize;
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

/// The fields of a stored event that make its dedup key.
#[derive(Deserialize)]
struct Stored<'a> {
    #[serde(rename = "_ferry")]
    ferry: Option<Tag<'a>>,
    #[serde(rename = "messageId", borrow)]
    message_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "receivedAt", borrow)]
    received_at: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Tag<'a> {
    #[serde(borrow)]
    source: std::borrow::Cow<'a, str>,
    /// [`crate::ingest::GENERATED_ID_FIELD`]: ferry made the id up.
    #[serde(rename = "messageIdGenerated", default)]
    generated: bool,
}

/// The dedup key and receipt time of a stored event, if it has them. An
/// event whose id ferry generated has none: ingestion does not index it.
pub fn stored_key(payload: &[u8]) -> Option<(Key, SystemTime)> {
    let s: Stored = serde_json::from_slice(payload).ok()?;
    let tag = s.ferry.filter(|tag| !tag.generated)?;
    let key = Key::new(&tag.source, &s.message_id?);
    let at = time::OffsetDateTime::parse(
        &s.received_at?,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()?;
    let ms = u64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()?;
    Some((key, UNIX_EPOCH + Duration::from_millis(ms)))
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
