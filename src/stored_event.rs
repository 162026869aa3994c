//! The stored-event format: what ingestion writes into a log record and what
//! the dedup re-index and delivery read back. A record's payload is a short
//! binary head holding the routing facts (type, source, user key, event
//! name, messageId, receipt time), then the normalised event as JSON, with
//! ferry's own metadata under [`FERRY_FIELD`]. Delivery routes and orders by
//! the head and passes the JSON through untouched, so it never parses an
//! event. A payload that starts with `{` is a bare JSON event (no head) and
//! reads the same way, its facts taken from the JSON. docs/format.md has
//! the byte layout.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// First byte of a payload with a head (ASCII record separator: never the
/// first byte of a JSON document).
const HEAD_MAGIC: u8 = 0x1E;
/// Version of the head's layout.
const HEAD_VERSION: u8 = 1;
/// Head flag: ferry generated the event's messageId.
const FLAG_GENERATED_ID: u8 = 1;
/// Bytes of the head before its strings: magic, version, flags, type code,
/// receipt time (u64 LE).
const HEAD_FIXED: usize = 12;

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
/// The Segment spec's event types, by their code in the head (0: unknown).
const TYPES: [&str; 6] = ["track", "identify", "page", "screen", "group", "alias"];

/// The routing facts a payload's head holds.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The event's `type` (a code of 0 in the head when not one of the six).
    pub kind: &'a str,
    /// The source the event came from.
    pub source: &'a str,
    /// Ordering key: `userId`, else `anonymousId`.
    pub user: &'a str,
    /// Track event name (empty when none).
    pub name: &'a str,
    /// The event's messageId.
    pub message_id: &'a str,
    /// Ferry generated the messageId.
    pub generated_id: bool,
    /// `receivedAt` in Unix milliseconds.
    pub received_ms: u64,
}

impl Facts<'_> {
    /// Bytes of the head these facts make.
    pub fn head_len(&self) -> usize {
        HEAD_FIXED + self.strings().iter().map(|s| 4 + s.len()).sum::<usize>()
    }

    /// Appends the head to `out`; the event's JSON goes right after it.
    pub fn write_head(&self, out: &mut Vec<u8>) {
        let code = TYPES
            .iter()
            .position(|t| *t == self.kind)
            .map_or(0, |i| i as u8 + 1);
        let flags = if self.generated_id {
            FLAG_GENERATED_ID
        } else {
            0
        };
        out.extend_from_slice(&[HEAD_MAGIC, HEAD_VERSION, flags, code]);
        out.extend_from_slice(&self.received_ms.to_le_bytes());
        for s in self.strings() {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }

    fn strings(&self) -> [&str; 4] {
        [self.source, self.user, self.name, self.message_id]
    }
}

/// Encodes a normalised event (as ingestion made it, see
/// [`ferry_tag`]) received at `received_ms` (Unix milliseconds) as a log
/// record's payload.
pub fn encode(event: &Map<String, Value>, received_ms: u64) -> Result<Vec<u8>, serde_json::Error> {
    let tag = event.get(FERRY_FIELD);
    let source = tag
        .and_then(|t| t.get(SOURCE_FIELD))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let user = id_str(event.get("userId")).or_else(|| id_str(event.get("anonymousId")));
    let name = event
        .get("event")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let message_id = id_str(event.get("messageId")).unwrap_or_default();
    let user = user.unwrap_or_default();
    let facts = Facts {
        kind,
        source,
        user: &user,
        name,
        message_id: &message_id,
        generated_id: !has_client_id(event),
        received_ms,
    };
    let mut out = Vec::with_capacity(facts.head_len() + 512);
    facts.write_head(&mut out);
    serde_json::to_writer(&mut out, event)?;
    Ok(out)
}

/// An identifier as text: strings as they are (non-empty), numbers as
/// written, nothing else.
fn id_str(v: Option<&Value>) -> Option<Cow<'_, str>> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// A stored event's routing facts and its JSON, read from a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Routing and ordering facts.
    pub meta: EventMeta,
    /// `receivedAt` in Unix milliseconds, when known.
    pub received_ms: Option<u64>,
    /// Ferry generated the messageId (it is not held by dedup).
    pub generated_id: bool,
    /// The event as JSON, as stored.
    pub json: Bytes,
}

impl StoredEvent {
    /// Reads a payload without copying its JSON. A payload with a damaged
    /// head, or that is not JSON, gets empty facts and is passed on as it is
    /// (it is still delivered, in one shared ordering lane).
    pub fn decode(payload: Bytes) -> StoredEvent {
        if let Some((head, json_at)) = Head::read(&payload) {
            return StoredEvent {
                meta: head.meta(),
                received_ms: Some(head.received_ms),
                generated_id: head.flags & FLAG_GENERATED_ID != 0,
                json: payload.slice(json_at..),
            };
        }
        let facts = JsonFacts::read(&payload);
        StoredEvent {
            meta: facts.meta,
            received_ms: facts.received_ms,
            generated_id: facts.generated_id,
            json: payload,
        }
    }
}

/// The JSON part of a payload (the whole payload when it has no head).
pub fn json(payload: &[u8]) -> &[u8] {
    Head::read(payload).map_or(payload, |(_, at)| &payload[at..])
}

/// The head of a payload, borrowed.
struct Head<'a> {
    flags: u8,
    code: u8,
    received_ms: u64,
    source: &'a str,
    user: &'a str,
    name: &'a str,
    message_id: &'a str,
}

impl<'a> Head<'a> {
    /// The head and where the JSON starts, if the payload has a valid head.
    fn read(p: &'a [u8]) -> Option<(Head<'a>, usize)> {
        if p.len() < HEAD_FIXED || p[0] != HEAD_MAGIC || p[1] != HEAD_VERSION {
            return None;
        }
        let received_ms = u64::from_le_bytes(p[4..12].try_into().ok()?);
        let mut at = HEAD_FIXED;
        let mut next = || -> Option<&'a str> {
            let len = u32::from_le_bytes(p.get(at..at + 4)?.try_into().ok()?) as usize;
            let s = std::str::from_utf8(p.get(at + 4..at + 4 + len)?).ok()?;
            at += 4 + len;
            Some(s)
        };
        let (source, user, name, message_id) = (next()?, next()?, next()?, next()?);
        let head = Head {
            flags: p[2],
            code: p[3],
            received_ms,
            source,
            user,
            name,
            message_id,
        };
        Some((head, at))
    }

    fn meta(&self) -> EventMeta {
        let kind = match self.code {
            1..=6 => TYPES[self.code as usize - 1].to_owned(),
            _ => String::new(),
        };
        EventMeta {
            source: self.source.to_owned(),
            kind,
            event: (!self.name.is_empty()).then(|| self.name.to_owned()),
            user: self.user.to_owned(),
            message_id: self.message_id.to_owned(),
        }
    }
}

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

/// The routing facts of a bare JSON event (a payload without a head).
struct JsonFacts {
    meta: EventMeta,
    received_ms: Option<u64>,
    generated_id: bool,
}

impl JsonFacts {
    fn read(payload: &[u8]) -> JsonFacts {
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
            #[serde(rename = "receivedAt", default, borrow)]
            received_at: Option<Cow<'a, str>>,
        }
        let Ok(f) = serde_json::from_slice::<Fields>(payload) else {
            return JsonFacts {
                meta: EventMeta::default(),
                received_ms: None,
                generated_id: false,
            };
        };
        let user = id_str(f.user_id.as_ref())
            .or_else(|| id_str(f.anonymous_id.as_ref()))
            .map(Cow::into_owned)
            .unwrap_or_default();
        let generated_id = f.ferry.as_ref().is_some_and(|t| t.generated);
        JsonFacts {
            meta: EventMeta {
                source: f.ferry.map(|t| t.source.into_owned()).unwrap_or_default(),
                kind: f.kind.map(Cow::into_owned).unwrap_or_default(),
                event: f.event.and_then(|e| e.as_str().map(str::to_owned)),
                user,
                message_id: id_str(f.message_id.as_ref())
                    .map(Cow::into_owned)
                    .unwrap_or_default(),
            },
            received_ms: f.received_at.as_deref().and_then(rfc3339_ms),
            generated_id,
        }
    }
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
        if let Some((head, _)) = Head::read(payload) {
            if head.flags & FLAG_GENERATED_ID != 0 || head.message_id.is_empty() {
                return None;
            }
            return Some(DedupId {
                source: head.source.to_owned(),
                message_id: head.message_id.to_owned(),
                received_ms: head.received_ms,
            });
        }
        let facts = JsonFacts::read(payload);
        if facts.generated_id || facts.meta.message_id.is_empty() {
            return None;
        }
        Some(DedupId {
            source: facts.meta.source,
            message_id: facts.meta.message_id,
            received_ms: facts.received_ms?,
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
    /// Reads the routing fields of a stored event. A payload that is neither
    /// headed nor a JSON object gets empty fields.
    pub fn parse(payload: &[u8]) -> EventMeta {
        match Head::read(payload) {
            Some((head, _)) => head.meta(),
            None => JsonFacts::read(payload).meta,
        }
    }
}

/// `receivedAt` of a stored event in Unix milliseconds, if present.
pub fn received_ms(payload: &[u8]) -> Option<u64> {
    match Head::read(payload) {
        Some((head, _)) => Some(head.received_ms),
        None => JsonFacts::read(payload).received_ms,
    }
}

/// An RFC 3339 time in Unix milliseconds (`None` before 1970 or unparsable).
fn rfc3339_ms(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn normalised(generated: bool) -> Map<String, Value> {
        let mut event = json!({
            "type": "track", "event": "Buy", "userId": null, "anonymousId": "a1",
            "messageId": "m-1", "receivedAt": "2024-05-01T12:00:10.000Z",
            "properties": {"price": 9.5}
        });
        event[FERRY_FIELD] = ferry_tag("web", generated);
        event.as_object().unwrap().clone()
    }

    #[test]
    fn a_headed_payload_reads_back_its_facts_and_its_json_untouched() {
        for generated in [false, true] {
            let event = normalised(generated);
            assert_eq!(has_client_id(&event), !generated);
            let payload = encode(&event, 1_714_564_810_000).unwrap();
            let stored = StoredEvent::decode(Bytes::from(payload.clone()));
            let meta = EventMeta {
                source: "web".into(),
                kind: "track".into(),
                event: Some("Buy".into()),
                user: "a1".into(),
                message_id: "m-1".into(),
            };
            assert_eq!(stored.meta, meta);
            assert_eq!(EventMeta::parse(&payload), meta);
            assert_eq!(stored.received_ms, Some(1_714_564_810_000));
            assert_eq!(received_ms(&payload), Some(1_714_564_810_000));
            assert_eq!(stored.generated_id, generated);
            let back: Value = serde_json::from_slice(&stored.json).unwrap();
            assert_eq!(back, Value::Object(event.clone()));
            assert_eq!(json(&payload), &stored.json[..]);
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
    }

    #[test]
    fn a_bare_json_payload_reads_the_same_facts() {
        for generated in [false, true] {
            let event = normalised(generated);
            let headed = encode(&event, 1_714_564_810_000).unwrap();
            let bare = serde_json::to_vec(&event).unwrap();
            let (a, b) = (
                StoredEvent::decode(Bytes::from(headed.clone())),
                StoredEvent::decode(Bytes::from(bare.clone())),
            );
            assert_eq!(a.meta, b.meta);
            assert_eq!(a.received_ms, b.received_ms);
            assert_eq!(a.generated_id, b.generated_id);
            assert_eq!(DedupId::read(&headed), DedupId::read(&bare));
            assert_eq!(json(&bare), &bare[..]);
        }
        assert_eq!(EventMeta::parse(br#"{"userId":42}"#).user, "42");
        assert_eq!(EventMeta::parse(b"not json"), EventMeta::default());
    }

    #[test]
    fn a_damaged_head_is_passed_on_whole() {
        let payload = encode(&normalised(false), 7).unwrap();
        // A string length pointing past the end.
        let mut bad = payload[..HEAD_FIXED].to_vec();
        bad.extend_from_slice(&u32::MAX.to_le_bytes());
        let stored = StoredEvent::decode(Bytes::from(bad.clone()));
        assert_eq!(stored.meta, EventMeta::default());
        assert_eq!(&stored.json[..], &bad[..]);
        assert_eq!(DedupId::read(&bad), None);
    }

    #[test]
    fn the_tag_ingestion_writes() {
        assert_eq!(ferry_tag("web", false), json!({"source": "web"}));
        assert_eq!(
            ferry_tag("web", true),
            json!({"source": "web", GENERATED_ID_FIELD: true})
        );
    }
}
