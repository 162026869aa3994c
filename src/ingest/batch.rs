//! A request's events as log records, with what the handler needs beside
//! them (types, dedup keys), and the reference way to make them: each event
//! parsed as a `Value`, normalised (normalise.rs) and encoded.

use serde_json::Value;
use time::OffsetDateTime;

use super::error::IngestError;
use super::normalise::{self, Envelope, EventType};
use crate::dedup::{Key, Verdict};
use crate::stored_event;

/// A request's events, normalised and encoded as log records.
pub(crate) struct Batch {
    /// One record per event, in request order.
    pub records: Vec<Vec<u8>>,
    /// Each record's event type.
    pub types: Vec<Option<EventType>>,
    /// The dedup keys of the events that have a client messageId.
    pub keys: Vec<Key>,
    /// The index in `records` of the event each key belongs to.
    keyed: Vec<usize>,
}

impl Batch {
    /// An empty batch with room for `events`; `dedup`: keys will be kept.
    pub fn with_capacity(events: usize, dedup: bool) -> Batch {
        // Only client ids are keys: an id ferry generates is a fresh random
        // UUID that no later request can repeat, so holding it would only
        // take capacity. Nothing is hashed when dedup is off.
        let keyed = if dedup { events } else { 0 };
        Batch {
            records: Vec::with_capacity(events),
            types: Vec::with_capacity(events),
            keys: Vec::with_capacity(keyed),
            keyed: Vec::with_capacity(keyed),
        }
    }

    /// Adds an event's record; `key`: its dedup key, if it is held.
    pub fn push(&mut self, record: Vec<u8>, kind: Option<EventType>, key: Option<Key>) {
        if let Some(key) = key {
            self.keys.push(key);
            self.keyed.push(self.records.len());
        }
        self.records.push(record);
        self.types.push(kind);
    }

    /// Checks each event's size, normalises it and encodes it; with `dedup`,
    /// also hashes the dedup keys. Any bad event refuses the whole request.
    pub fn normalise(
        max_event: usize,
        items: Vec<Value>,
        forced: Option<EventType>,
        envelope: &Envelope,
        source: &str,
        dedup: bool,
    ) -> Result<Batch, IngestError> {
        let received_at = envelope.received_at.unwrap_or_else(OffsetDateTime::now_utc);
        let received_ms =
            u64::try_from(received_at.unix_timestamp_nanos() / 1_000_000).unwrap_or_default();
        let mut batch = Batch::with_capacity(items.len(), dedup);
        for (index, item) in items.into_iter().enumerate() {
            let size = compact_size(&item);
            if size > max_event {
                return Err(IngestError::EventTooLarge {
                    index,
                    size,
                    limit: max_event,
                });
            }
            let normalised = normalise::normalise(item, forced, envelope, source)
                .map_err(|reason| IngestError::InvalidEvent { index, reason })?;
            // normalise accepted the event, so its type is one of the six.
            let kind = normalised["type"].as_str().and_then(EventType::parse);
            let key = (dedup && stored_event::has_client_id(&normalised)).then(|| {
                let id = normalised["messageId"].as_str().unwrap_or_default();
                Key::new(source, id)
            });
            let record = stored_event::encode(&normalised, received_ms).map_err(|e| {
                IngestError::InvalidEvent {
                    index,
                    reason: e.to_string(),
                }
            })?;
            batch.push(record, kind, key);
        }
        Ok(batch)
    }

    /// Drops the events whose key the index answered as not new (one
    /// verdict per key); returns how many were dropped.
    pub fn drop_duplicates(&mut self, verdicts: &[Verdict]) -> u64 {
        let mut keep = vec![true; self.records.len()];
        for (&index, verdict) in self.keyed.iter().zip(verdicts) {
            keep[index] = *verdict == Verdict::New;
        }
        let before = self.records.len();
        let mut kept = keep.iter();
        self.records.retain(|_| kept.next() == Some(&true));
        let mut kept = keep.iter();
        self.types.retain(|_| kept.next() == Some(&true));
        (before - self.records.len()) as u64
    }
}

/// The size of a value as compact JSON, without allocating it.
fn compact_size(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_size_ignores_whitespace() {
        let v: Value = serde_json::from_str("{ \"a\" : [1, 2] }").unwrap();
        assert_eq!(compact_size(&v), "{\"a\":[1,2]}".len());
    }

    #[test]
    fn duplicates_are_dropped_by_their_verdicts() {
        let mut batch = Batch::with_capacity(3, true);
        batch.push(
            b"a".to_vec(),
            Some(EventType::Track),
            Some(Key::new("s", "1")),
        );
        batch.push(b"b".to_vec(), Some(EventType::Page), None);
        batch.push(b"c".to_vec(), None, Some(Key::new("s", "2")));
        assert_eq!(batch.keys.len(), 2);
        assert_eq!(
            batch.drop_duplicates(&[Verdict::New, Verdict::Duplicate]),
            1
        );
        assert_eq!(batch.records, [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(batch.types, [Some(EventType::Track), Some(EventType::Page)]);
    }
}
