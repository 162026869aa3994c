//! The stored-event format: what ingestion writes into a log record and what
//! the dedup re-index and delivery read back. A record's payload is the
//! normalised event as JSON, with ferry's own metadata under [`FERRY_FIELD`].
//! docs/api.md ("Stored record format") describes it for users.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Top-level field ferry adds to every stored event (`{"source": name}`, and
/// [`GENERATED_ID_FIELD`] when the id is ferry's); a client-sent value of it
/// is replaced.
pub const FERRY_FIELD: &str = "_ferry";
/// Key in the [`FERRY_FIELD`] tag, `true` when ferry generated the event's
/// `messageId` (the client sent none). Such an id cannot repeat, so it is not
/// held in the dedup index.
pub const GENERATED_ID_FIELD: &str = "messageIdGenerated";
/// Key in the [`FERRY_FIELD`] tag naming the source the event came from.
const SOURCE_FIELD: &str = "source";

/// The [`FERRY_FIELD`] value ingestion stores with an event from `source`.
pub fn ferry_tag(source: &str, generated_id: bool) -> Value {
    let mut tag = Map::new();
    tag.insert(SOURCE_FIELD.into(), source.into());
    if generated_id {
        tag.insert(GENERATED_ID_FIELD.into(), true.into());
    }
    Value::Object(tag)
}

/// True when a normalised event carries a client-sent `messageId` (one the
/// dedup index holds), false when ferry generated it.
pub fn has_client_id(event: &Map<String, Value>) -> bool {
    event
        .get(FERRY_FIELD)
        .and_then(|tag| tag.get(GENERATED_ID_FIELD))
        != Some(&Value::Bool(true))
}

/// The [`FERRY_FIELD`] tag as stored.
#[derive(Deserialize)]
struct Tag<'a> {
    #[serde(default, borrow)]
    source: Cow<'a, str>,
    #[serde(rename = "messageIdGenerated", default)]
    generated: bool,
}

/// The identity dedup holds for a stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupId {
    /// The source the event came from.
    pub source: String,
    /// The client's `messageId`.
    pub message_id: String,
    /// `receivedAt`, in Unix milliseconds.
    pub received_ms: u64,
}

impl DedupId {
    /// The dedup identity of a stored event, if it has one. An event whose
    /// id ferry generated has none: ingestion does not index it.
    pub fn read(payload: &[u8]) -> Option<DedupId> {
        #[derive(Deserialize)]
        struct Stored<'a> {
            #[serde(rename = "_ferry", borrow)]
            ferry: Option<Tag<'a>>,
            #[serde(rename = "messageId", borrow)]
            message_id: Option<Cow<'a, str>>,
            #[serde(rename = "receivedAt", borrow)]
            received_at: Option<Cow<'a, str>>,
        }
        let s: Stored = serde_json::from_slice(payload).ok()?;
        let tag = s.ferry.filter(|tag| !tag.generated)?;
        Some(DedupId {
            source: tag.source.into_owned(),
            message_id: s.message_id?.into_owned(),
            received_ms: rfc3339_ms(&s.received_at?)?,
        })
    }
}

/// Routing and ordering fields of a stored event.
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

impl EventMeta {
    /// Reads the routing fields of a stored event. A payload that is not a
    /// JSON object gets empty fields (it is still delivered, in one shared
    /// ordering lane).
    pub fn parse(payload: &[u8]) -> EventMeta {
        #[derive(Deserialize)]
        struct Fields<'a> {
            #[serde(rename = "_ferry", default, borrow)]
            ferry: Option<Tag<'a>>,
            #[serde(rename = "type", default, borrow)]
            kind: Option<Cow<'a, str>>,
            #[serde(default)]
            event: Option<Value>,
            #[serde(rename = "userId", default)]
            user_id: Option<Value>,
            #[serde(rename = "anonymousId", default)]
            anonymous_id: Option<Value>,
            #[serde(rename = "messageId", default)]
            message_id: Option<Value>,
        }
        let Ok(f) = serde_json::from_slice::<Fields>(payload) else {
            return EventMeta::default();
        };
        let user = id_string(f.user_id)
            .or_else(|| id_string(f.anonymous_id))
            .unwrap_or_default();
        EventMeta {
            source: f.ferry.map(|t| t.source.into_owned()).unwrap_or_default(),
            kind: f.kind.map(Cow::into_owned).unwrap_or_default(),
            event: f.event.and_then(|e| e.as_str().map(str::to_owned)),
            user,
            message_id: id_string(f.message_id).unwrap_or_default(),
        }
    }
}

/// `receivedAt` of a stored event in Unix milliseconds, if present.
pub fn received_ms(payload: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Received<'a> {
        #[serde(rename = "receivedAt", borrow)]
        received_at: Option<Cow<'a, str>>,
    }
    let r: Received = serde_json::from_slice(payload).ok()?;
    rfc3339_ms(&r.received_at?)
}

/// An RFC 3339 time in Unix milliseconds (`None` before 1970 or unparsable).
fn rfc3339_ms(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A user id as a string: strings as they are, numbers as written, nothing else.
fn id_string(v: Option<Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn what_ingestion_writes_the_readers_read_back() {
        for generated in [false, true] {
            let mut event = Map::new();
            event.insert("messageId".into(), "m-1".into());
            event.insert("receivedAt".into(), "2024-05-01T12:00:10.000Z".into());
            event.insert(FERRY_FIELD.into(), ferry_tag("web", generated));
            assert_eq!(has_client_id(&event), !generated);
            let payload = serde_json::to_vec(&event).unwrap();
            assert_eq!(EventMeta::parse(&payload).source, "web");
            assert_eq!(received_ms(&payload), Some(1_714_564_810_000));
            let id = DedupId::read(&payload);
            if generated {
                assert_eq!(id, None, "a generated id is not indexed");
            } else {
                assert_eq!(
                    id,
                    Some(DedupId {
                        source: "web".into(),
                        message_id: "m-1".into(),
                        received_ms: 1_714_564_810_000,
                    })
                );
            }
        }
        assert_eq!(ferry_tag("web", false), json!({"source": "web"}));
        assert_eq!(
            ferry_tag("web", true),
            json!({"source": "web", GENERATED_ID_FIELD: true})
        );
    }
}
