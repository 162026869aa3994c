//! What delivery needs to know about a stored event: its routing fields
//! (source, type, name), its user key for ordering, and its messageId.
//! Parsed once per event when it is read from the log.

use super::config::{DestinationConfig, EventFilter};
use serde::Deserialize;
use std::sync::Arc;

/// A stored event read back from the log, with its routing fields.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    /// Log offset.
    pub offset: u64,
    /// The stored JSON, as stored (sent as is, minus nothing).
    pub payload: Arc<[u8]>,
    /// Routing and ordering fields.
    pub meta: EventMeta,
}

/// Routing and ordering fields of an event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventMeta {
    /// Source name ingestion recorded.
    pub source: String,
    /// Event type.
    pub kind: String,
    /// Track event name.
    pub event: Option<String>,
    /// Ordering key: `userId`, else `anonymousId` (empty when neither).
    pub user: String,
    /// The event's messageId.
    pub message_id: String,
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "_ferry", default)]
    ferry: Option<Tag>,
    #[serde(rename = "type", default, borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    event: Option<serde_json::Value>,
    #[serde(rename = "userId", default)]
    user_id: Option<serde_json::Value>,
    #[serde(rename = "anonymousId", default)]
    anonymous_id: Option<serde_json::Value>,
    #[serde(rename = "messageId", default)]
    message_id: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Tag {
    #[serde(default)]
    source: String,
}

/// A user id as a string: strings as they are, numbers as written, nothing else.
fn id_string(v: Option<serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl EventMeta {
    /// Reads the routing fields of a stored event. A payload that is not a
    /// JSON object gets empty fields (it is still delivered, in one shared
    /// ordering lane).
    pub fn parse(payload: &[u8]) -> EventMeta {
        let Ok(f) = serde_json::from_slice::<Fields>(payload) else {
            return EventMeta::default();
        };
        let user = id_string(f.user_id)
            .or_else(|| id_string(f.anonymous_id))
            .unwrap_or_default();
        EventMeta {
            source: f.ferry.map(|t| t.source).unwrap_or_default(),
            kind: f.kind.map(|k| k.into_owned()).unwrap_or_default(),
            event: f.event.and_then(|e| e.as_str().map(str::to_owned)),
            user,
            message_id: id_string(f.message_id).unwrap_or_default(),
        }
    }

    /// `receivedAt` of a stored event in Unix milliseconds, if present.
    pub fn received_ms(payload: &[u8]) -> Option<u64> {
        #[derive(Deserialize)]
        struct Received<'a> {
            #[serde(rename = "receivedAt", borrow)]
            received_at: Option<std::borrow::Cow<'a, str>>,
        }
        let r: Received = serde_json::from_slice(payload).ok()?;
        let t = time::OffsetDateTime::parse(
            &r.received_at?,
            &time::format_description::well_known::Rfc3339,
        )
        .ok()?;
        u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
    }

    /// Does `dest` receive this event?
    pub fn wanted_by(&self, dest: &DestinationConfig) -> bool {
        let source_ok = dest
            .sources
            .as_ref()
            .is_none_or(|s| s.contains(&self.source));
        source_ok && self.passes(&dest.filter)
    }

    fn passes(&self, filter: &EventFilter) -> bool {
        let type_ok = filter.types.as_ref().is_none_or(|t| t.contains(&self.kind));
        let event_ok = filter.events.as_ref().is_none_or(|names| {
            self.kind != "track" || self.event.as_ref().is_some_and(|e| names.contains(e))
        });
        type_ok && event_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_routing_fields() {
        let m = EventMeta::parse(
            br#"{"type":"track","event":"Buy","userId":null,"anonymousId":"a1","messageId":"m","_ferry":{"source":"web"}}"#,
        );
        assert_eq!(m.kind, "track");
        assert_eq!(m.event.as_deref(), Some("Buy"));
        assert_eq!(m.user, "a1");
        assert_eq!(m.source, "web");
        assert_eq!(m.message_id, "m");
        assert_eq!(EventMeta::parse(br#"{"userId":42}"#).user, "42");
        assert_eq!(EventMeta::parse(b"not json"), EventMeta::default());
    }

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
