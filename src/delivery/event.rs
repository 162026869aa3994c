//! A stored event as delivery holds it: its JSON and routing facts (read
//! from the record's head, see [`crate::stored_event`]), and which
//! destinations want it.

use super::config::{DestinationConfig, EventFilter};
pub use crate::stored_event::EventMeta;
use bytes::Bytes;
use std::sync::Arc;

/// A stored event read back from the log, with its routing fields.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    /// Log offset.
    pub offset: u64,
    /// The stored JSON, as stored (sent as is, never re-encoded).
    pub body: Bytes,
    /// Routing and ordering fields (shared: an event is cloned into each
    /// request that carries it).
    pub meta: Arc<EventMeta>,
    /// When ferry received it (Unix ms), if known.
    pub received_ms: Option<u64>,
}

impl LoggedEvent {
    /// The event stored at `offset`, read from its record's payload.
    pub fn read(offset: u64, payload: Vec<u8>) -> LoggedEvent {
        let stored = crate::stored_event::StoredEvent::decode(Bytes::from(payload));
        LoggedEvent {
            offset,
            body: stored.json,
            meta: Arc::new(stored.meta),
            received_ms: stored.received_ms,
        }
    }
}

/// Which destinations want an event.
pub trait Wanted {
    /// Does `dest` receive this event?
    fn wanted_by(&self, dest: &DestinationConfig) -> bool;
}

impl Wanted for EventMeta {
    fn wanted_by(&self, dest: &DestinationConfig) -> bool {
        let source_ok = dest
            .sources
            .as_ref()
            .is_none_or(|s| s.contains(&self.source));
        source_ok && passes(self, &dest.filter)
    }
}

/// Does the event pass `filter` (types, and track event names)?
fn passes(meta: &EventMeta, filter: &EventFilter) -> bool {
    let type_ok = filter.types.as_ref().is_none_or(|t| t.contains(&meta.kind));
    let event_ok = filter.events.as_ref().is_none_or(|names| {
        meta.kind != "track" || meta.event.as_ref().is_some_and(|e| names.contains(e))
    });
    type_ok && event_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_by_source_type_and_name() {
        let dest: DestinationConfig = toml::from_str(
            "name='d'\ntype='file'\npath='/x'\nsources=['web']\n[filter]\ntypes=['track','identify']\nevents=['Buy']\n",
        )
        .unwrap();
        let m = |s: &str| EventMeta::parse(s.as_bytes());
        assert!(m(r#"{"type":"track","event":"Buy","_ferry":{"source":"web"}}"#).wanted_by(&dest));
        assert!(
            !m(r#"{"type":"track","event":"View","_ferry":{"source":"web"}}"#).wanted_by(&dest)
        );
        assert!(m(r#"{"type":"identify","_ferry":{"source":"web"}}"#).wanted_by(&dest));
        assert!(!m(r#"{"type":"page","_ferry":{"source":"web"}}"#).wanted_by(&dest));
        assert!(!m(r#"{"type":"track","event":"Buy","_ferry":{"source":"ios"}}"#).wanted_by(&dest));
    }
}
