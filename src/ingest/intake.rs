//! From a request body to log records, two ways that store the same events:
//! direct (splice.rs: no `Value` per event), taken by every plainly valid
//! request, and the reference (a `Value` per event, normalise.rs), taken by
//! anything else and giving every error answer.

use std::sync::Arc;

use axum::http::HeaderMap;
use base64::Engine;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::auth::Sources;
use super::batch::Batch;
use super::error::IngestError;
use super::normalise::{Envelope, EventType};
use super::{splice, timestamp};

/// How the events of a request are laid out in its body.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    /// The body is one event whose type is given by the path.
    Single(EventType),
    /// `{"batch": [...]}`, each item with its own `type`.
    Batch,
}

/// What both ways from a body to records need of a request.
pub(crate) struct Intake<'a> {
    /// Who may send.
    pub sources: &'a Sources,
    /// The request's headers (write key, `SentAt`, `AnonymousId`).
    pub headers: &'a HeaderMap,
    /// How the body holds its events.
    pub shape: Shape,
    /// Server clock at receipt.
    pub received_at: OffsetDateTime,
    /// `limits.max_event_bytes`.
    pub max_event: usize,
    /// Dedup is on: keep the events' keys.
    pub dedup: bool,
}

impl Intake<'_> {
    /// The direct way (splice.rs): the records and the source, or `None`
    /// when the request is not plainly valid.
    pub fn direct(&self, bytes: &[u8], early: Option<&Arc<str>>) -> Option<(Batch, Arc<str>)> {
        let body = splice::Body::read(bytes, matches!(self.shape, Shape::Batch))?;
        let source = match early {
            Some(source) => source.clone(),
            None => {
                let key = body.write_key();
                self.sources
                    .authenticate(self.headers, None, key.as_deref())
                    .ok()?
            }
        };
        let mut envelope = Envelope {
            received_at: Some(self.received_at),
            sent_at: header_time(self.headers, "sentat").ok()?,
            anonymous_id: anonymous_id_header(self.headers),
            ..Envelope::default()
        };
        let forced = match self.shape {
            Shape::Single(kind) => Some(kind),
            Shape::Batch => {
                if let Some(sent) = body.sent_at()? {
                    envelope.sent_at = Some(sent);
                }
                None
            }
        };
        let max_event = self.max_event;
        let batch = body.normalise(max_event, forced, &envelope, &source, self.dedup)?;
        Some((batch, source))
    }

    /// The reference way: the body parsed as a `Value`, each event
    /// normalised by normalise.rs. It gives every error answer.
    pub fn reference(
        &self,
        bytes: &[u8],
        early: Option<Arc<str>>,
    ) -> Result<(Batch, Arc<str>), IngestError> {
        let headers = self.headers;
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| IngestError::BadRequest(format!("not valid JSON: {e}")))?;
        let Value::Object(mut object) = value else {
            return Err(IngestError::BadRequest(
                "the body must be a JSON object".into(),
            ));
        };
        let source = match early {
            Some(source) => source,
            None => {
                let body_key = object.get("writeKey").and_then(Value::as_str);
                self.sources.authenticate(headers, None, body_key)?
            }
        };
        let mut envelope = Envelope {
            received_at: Some(self.received_at),
            sent_at: header_time(headers, "sentat")?,
            anonymous_id: anonymous_id_header(headers),
            ..Envelope::default()
        };
        let (items, forced) = match self.shape {
            Shape::Single(kind) => (vec![Value::Object(object)], Some(kind)),
            Shape::Batch => {
                let items = match object.remove("batch") {
                    Some(Value::Array(items)) if !items.is_empty() => items,
                    Some(Value::Array(_)) => {
                        return Err(IngestError::BadRequest("batch is empty".into()))
                    }
                    _ => {
                        return Err(IngestError::BadRequest(
                            "expected {\"batch\": [...]}".into(),
                        ))
                    }
                };
                if let Some(sent) = body_time(&object, "sentAt")? {
                    envelope.sent_at = Some(sent);
                }
                envelope.context = object.remove("context").filter(|v| !v.is_null());
                envelope.integrations = object.remove("integrations").filter(|v| !v.is_null());
                (items, None)
            }
        };
        let max_event = self.max_event;
        let batch = Batch::normalise(max_event, items, forced, &envelope, &source, self.dedup)?;
        Ok((batch, source))
    }
}

/// A timestamp header (`SentAt` of RudderStack's JS SDK).
fn header_time(headers: &HeaderMap, name: &str) -> Result<Option<OffsetDateTime>, IngestError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(timestamp::parse)
        .map(Some)
        .ok_or_else(|| {
            IngestError::BadRequest(format!("the {name} header is not an RFC 3339 timestamp"))
        })
}

/// A top-level timestamp field of a batch body.
fn body_time(
    object: &Map<String, Value>,
    field: &str,
) -> Result<Option<OffsetDateTime>, IngestError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => timestamp::parse(s).map(Some).ok_or_else(|| {
            IngestError::BadRequest(format!("{field} is not an RFC 3339 timestamp"))
        }),
        Some(_) => Err(IngestError::BadRequest(format!(
            "{field} must be an RFC 3339 string"
        ))),
    }
}

/// RudderStack's JS SDK sends the anonymous id base64-encoded in an
/// `AnonymousId` header; a value that is not base64 is taken as is.
fn anonymous_id_header(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get("anonymousid")?.to_str().ok()?.trim();
    if raw.is_empty() {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| !s.is_empty());
    Some(decoded.unwrap_or_else(|| raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_id_header_is_base64() {
        let mut h = HeaderMap::new();
        h.insert("anonymousid", "YW5vbi0x".parse().unwrap());
        assert_eq!(anonymous_id_header(&h).as_deref(), Some("anon-1"));
        h.insert("anonymousid", "plain id!".parse().unwrap());
        assert_eq!(anonymous_id_header(&h).as_deref(), Some("plain id!"));
    }

    #[test]
    fn sent_at_header() {
        let mut h = HeaderMap::new();
        assert!(header_time(&h, "sentat").unwrap().is_none());
        h.insert("sentat", "2024-05-01T12:00:00.000Z".parse().unwrap());
        assert!(header_time(&h, "sentat").unwrap().is_some());
        h.insert("sentat", "nope".parse().unwrap());
        assert!(header_time(&h, "sentat").is_err());
    }

    mod same_events {
        //! The direct way stores what the reference way stores, for
        //! SDK-shaped bodies with odd JSON in every field.

        use super::*;
        use crate::config::SourceConfig;
        use crate::stored_event::{StoredEvent, FERRY_FIELD};
        use bytes::Bytes;
        use proptest::prelude::*;

        /// A member's key as written in the body: plain, or with an escape.
        fn key(name: &'static str) -> impl Strategy<Value = String> {
            let escaped = format!("\\u{:04x}{}", name.as_bytes()[0], &name[1..]);
            prop_oneof![4 => Just(format!("\"{name}\"")), 1 => Just(format!("\"{escaped}\""))]
        }

        /// Values of every kind, weighted towards what fields hold.
        fn value(strings: &'static [&'static str]) -> impl Strategy<Value = String> {
            let odd = proptest::sample::select(
                &[
                    "null",
                    "\"\"",
                    "true",
                    "0",
                    "-12",
                    "1.5E2",
                    "123456789012345678901234567890",
                    "-0.0",
                    "[1, \"a\\u00e9\", {}]",
                    "{\"a\": {\"b\": [null]}, \"c\\n\": \"\\ud83d\\ude00\"}",
                    "{\"a\": 1, \"a\": 2}",
                    "\"é😀 \\\" \\\\ \\/ \\t\"",
                ][..],
            )
            .prop_map(str::to_owned);
            // Not JSON: a number out of range, a lone surrogate, a raw
            // control character.
            let broken = proptest::sample::select(&["1e400", "\"\\ud800\"", "\"x\u{1}\""][..])
                .prop_map(str::to_owned);
            let named = proptest::sample::select(strings).prop_map(|s| format!("\"{s}\""));
            let null = Just("null".to_owned());
            prop_oneof![30 => named, 6 => null, 8 => odd, 1 => broken]
        }

        const TYPES: &[&str] = &[
            "track", "page", "identify", "group", "alias", "screen", "boop",
        ];
        const IDS: &[&str] = &["u-1", "42", "a\\u00e9", "é😀"];
        const TIMES: &[&str] = &[
            "2024-05-01T12:00:00.123Z",
            "2024-05-01T14:00:00.5+02:00",
            "2024-04-30T23:59:59.999999-07:00",
            "9999-12-31T23:59:59-23:59",
            "0000-01-01T00:00:00Z",
            "soon",
        ];
        const MESSAGE_IDS: &[&str] = &[
            "m-1",
            "m-2",
            "\\u006d-1",
            "éééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé",
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        ];
        const NAMES: &[&str] = &["Product Viewed", "", "k\\\"ey"];

        /// One member `"key":value`, with odd spacing.
        fn member() -> impl Strategy<Value = String> {
            let pair = |k: &'static str, v: &'static [&'static str]| {
                (key(k), value(v)).prop_map(|(k, v)| format!("{k} :\n{v}"))
            };
            prop_oneof![
                6 => pair("type", TYPES),
                5 => pair("userId", IDS),
                3 => pair("anonymousId", IDS),
                4 => pair("event", NAMES),
                4 => pair("messageId", MESSAGE_IDS),
                2 => pair("groupId", IDS),
                2 => pair("previousId", IDS),
                2 => pair("sentAt", TIMES),
                2 => pair("originalTimestamp", TIMES),
                2 => pair("timestamp", TIMES),
                1 => pair("receivedAt", TIMES),
                2 => pair("context", &["c"]),
                1 => pair("integrations", &["i"]),
                1 => pair("_ferry", &["f"]),
                1 => pair("writeKey", &["k"]),
                3 => pair("properties", &["p"]),
            ]
        }

        /// An event: its members in any order, duplicates possible.
        fn event() -> impl Strategy<Value = String> {
            let sdk = proptest::sample::select(MESSAGE_IDS).prop_map(|id| {
                vec![
                    "\"type\":\"track\"".to_owned(),
                    "\"userId\":\"u-1\"".to_owned(),
                    "\"event\":\"Product Viewed\"".to_owned(),
                    format!("\"messageId\":\"{id}\""),
                ]
            });
            (sdk, proptest::collection::vec(member(), 0..5), 0..8).prop_map(
                |(mut members, more, bare)| {
                    // One event in eight without the SDK's own members.
                    if bare == 0 {
                        members.clear();
                    }
                    members.extend(more);
                    format!("{{ {} }}", members.join(" , "))
                },
            )
        }

        /// A body: a batch (maybe with request-level fields) or one event.
        fn body() -> impl Strategy<Value = (String, Shape)> {
            let batch_member = prop_oneof![
                (key("sentAt"), value(TIMES)).prop_map(|(k, v)| format!("{k}:{v}")),
                (key("context"), value(&["bc"])).prop_map(|(k, v)| format!("{k}:{v}")),
                (key("integrations"), value(&["bi"])).prop_map(|(k, v)| format!("{k}:{v}")),
                (key("writeKey"), value(&["k"])).prop_map(|(k, v)| format!("{k}:{v}")),
                value(&["x"]).prop_map(|v| format!("\"other\":{v}")),
            ];
            let batch = (
                prop_oneof![1 => Just(vec![]), 19 => proptest::collection::vec(event(), 1..4)],
                proptest::collection::vec(batch_member, 0..3),
            )
                .prop_map(|(events, mut members)| {
                    members.insert(0, format!("\"batch\": [{}]", events.join(",\n")));
                    (format!("{{{}}}", members.join(",")), Shape::Batch)
                });
            let single = (event(), 0..EventType::ALL.len())
                .prop_map(|(e, t)| (e, Shape::Single(EventType::ALL[t])));
            prop_oneof![4 => batch, 1 => single]
        }

        /// Headers that authenticate as source "web", maybe with `SentAt`
        /// and `AnonymousId`.
        fn headers() -> impl Strategy<Value = (HeaderMap, bool)> {
            let auth = prop_oneof![7 => Just(true), 1 => Just(false)];
            (auth, any::<bool>(), any::<bool>()).prop_map(|(auth, sent, anon)| {
                let mut h = HeaderMap::new();
                if auth {
                    h.insert("authorization", "Basic azo=".parse().unwrap());
                }
                if sent {
                    h.insert("sentat", "2024-05-01T12:00:09Z".parse().unwrap());
                }
                if anon {
                    h.insert("anonymousid", "YW5vbi0x".parse().unwrap());
                }
                (h, auth)
            })
        }

        /// A record's facts and JSON, with a generated messageId (random in
        /// each way) replaced by a fixed one.
        fn comparable(record: &[u8]) -> (crate::stored_event::EventMeta, bool, Value) {
            let stored = StoredEvent::decode(Bytes::copy_from_slice(record));
            let mut meta = stored.meta;
            let mut json: Value = serde_json::from_slice(&stored.json).unwrap();
            if stored.generated_id {
                assert_eq!(
                    uuid::Uuid::parse_str(&meta.message_id)
                        .unwrap()
                        .get_version_num(),
                    4
                );
                assert_eq!(json["messageId"], meta.message_id.as_str());
                meta.message_id = "generated".into();
                json["messageId"] = "generated".into();
            }
            assert_eq!(json[FERRY_FIELD]["source"], "web");
            (meta, stored.generated_id, json)
        }

        /// Whether a body holds an object with a duplicate key (at any depth).
        fn has_duplicate_key(text: &str) -> bool {
            let mut canon = crate::ingest::canonical::Canon::default();
            let mut d = serde_json::Deserializer::from_str(text);
            canon.value(&mut d).is_err() && serde_json::from_str::<Value>(text).is_ok()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]
            #[test]
            fn the_direct_way_stores_what_the_reference_stores(
                (text, shape) in body(),
                (headers, header_key) in headers(),
                dedup: bool,
                max_event in prop_oneof![Just(32 * 1024), 60..400usize],
            ) {
                let sources = Sources::new(&[SourceConfig { name: "web".into(), write_key: "k".into() }]);
                let intake = Intake {
                    sources: &sources,
                    headers: &headers,
                    shape,
                    received_at: time::macros::datetime!(2024-05-01 12:00:10.25 UTC),
                    max_event,
                    dedup,
                };
                let early = header_key.then(|| Arc::from("web"));
                let direct = intake.direct(text.as_bytes(), early.as_ref());
                let reference = intake.reference(text.as_bytes(), early);
                match (direct, reference) {
                    (Some((d, d_source)), Ok((r, r_source))) => {
                        prop_assert_eq!(d_source, r_source);
                        prop_assert_eq!(d.records.len(), r.records.len());
                        prop_assert_eq!(&d.types, &r.types);
                        prop_assert!(d.keys == r.keys, "dedup keys differ");
                        for (a, b) in d.records.iter().zip(&r.records) {
                            prop_assert_eq!(comparable(a), comparable(b), "{}", text);
                            // Compact: nothing a line-per-event file would split.
                            prop_assert!(!crate::stored_event::json(a).contains(&b'\n'));
                        }
                    }
                    (Some(_), Err(e)) => {
                        prop_assert!(false, "direct took a request the reference refuses ({e}): {text}");
                    }
                    // Only a duplicate key sends a valid request the reference way.
                    (None, Ok(_)) => prop_assert!(has_duplicate_key(&text), "not taken directly: {}", text),
                    (None, Err(_)) => {}
                }
            }
        }

        #[test]
        fn sdk_events_take_the_direct_way() {
            let sources = Sources::new(&[SourceConfig {
                name: "web".into(),
                write_key: "k".into(),
            }]);
            let headers = HeaderMap::new();
            let intake = Intake {
                sources: &sources,
                headers: &headers,
                shape: Shape::Batch,
                received_at: time::macros::datetime!(2024-05-01 12:00:10 UTC),
                max_event: 32 * 1024,
                dedup: true,
            };
            let body = r#"{"batch": [
                {"type": "track", "event": "Product Viewed", "userId": "u-1", "messageId": "m-1",
                 "properties": {"price": 18.99, "quantity": 1},
                 "context": {"library": {"name": "analytics.js"}}, "integrations": {},
                 "timestamp": "2024-05-01T12:00:00.000Z"},
                {"type": "page", "anonymousId": "a-1", "originalTimestamp": "2024-05-01T12:00:00Z"}
            ], "sentAt": "2024-05-01T12:00:05.000Z", "writeKey": "k", "context": {"ip": "1"}}"#;
            let (batch, source) = intake
                .direct(body.as_bytes(), None)
                .expect("taken directly");
            assert_eq!(&*source, "web");
            assert_eq!(batch.types, [Some(EventType::Track), Some(EventType::Page)]);
            assert_eq!(batch.keys.len(), 1, "the client's id only");
            let (meta, generated, json) = comparable(&batch.records[1]);
            assert!(generated);
            assert_eq!(meta.user, "a-1");
            assert_eq!(
                json,
                serde_json::json!({
                    "type": "page", "anonymousId": "a-1", "context": {"ip": "1"},
                    "messageId": "generated", "sentAt": "2024-05-01T12:00:05.000Z",
                    "receivedAt": "2024-05-01T12:00:10.000Z",
                    "originalTimestamp": "2024-05-01T12:00:00.000Z",
                    "timestamp": "2024-05-01T12:00:05.000Z",
                    "_ferry": {"source": "web", "messageIdGenerated": true}
                })
            );
            // The client's members come first, as sent, then ferry's.
            let stored = StoredEvent::decode(Bytes::from(batch.records[0].clone()));
            let text = std::str::from_utf8(&stored.json).unwrap();
            assert!(
                text.starts_with(r#"{"event":"Product Viewed","userId":"u-1","messageId":"m-1","properties":{"price":18.99,"quantity":1},"context":{"library":{"name":"analytics.js"}},"integrations":{},"type":"track","sentAt""#),
                "{text}"
            );
        }
    }
}
