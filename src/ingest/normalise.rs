//! Validation and normalisation of one event: Segment's required fields,
//! `messageId`, timestamps, the `_ferry` source tag; unknown fields are kept.

use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::timestamp::{self, ClientTimes};
use crate::stored_event::{ferry_tag, FERRY_FIELD};

/// Longest client `messageId` accepted, in characters.
pub const MAX_MESSAGE_ID_CHARS: usize = 100;

/// The Segment spec's event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Who the user is.
    Identify,
    /// Something the user did.
    Track,
    /// A web page view.
    Page,
    /// A mobile screen view.
    Screen,
    /// The user's company or account.
    Group,
    /// Merges two user identities.
    Alias,
}

impl EventType {
    /// Every type, each at the index of its discriminant (`t as usize`).
    pub const ALL: [EventType; 6] = [
        EventType::Identify,
        EventType::Track,
        EventType::Page,
        EventType::Screen,
        EventType::Group,
        EventType::Alias,
    ];

    /// Parses the `type` field.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "identify" => EventType::Identify,
            "track" => EventType::Track,
            "page" => EventType::Page,
            "screen" => EventType::Screen,
            "group" => EventType::Group,
            "alias" => EventType::Alias,
            _ => return None,
        })
    }

    /// The value stored in `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Identify => "identify",
            EventType::Track => "track",
            EventType::Page => "page",
            EventType::Screen => "screen",
            EventType::Group => "group",
            EventType::Alias => "alias",
        }
    }
}

/// What one request contributes to each of its events.
#[derive(Debug, Default)]
pub(crate) struct Envelope {
    /// Server clock at receipt; the same for all events of a request.
    pub received_at: Option<OffsetDateTime>,
    /// Request-level `sentAt` (batch body, or the `SentAt` header).
    pub sent_at: Option<OffsetDateTime>,
    /// Batch-level `context`, for items that have none.
    pub context: Option<Value>,
    /// Batch-level `integrations`, for items that have none.
    pub integrations: Option<Value>,
    /// The `AnonymousId` header of RudderStack's JS SDK, for items without one.
    pub anonymous_id: Option<String>,
}

/// Validates `event` and returns it normalised, tagged with its source.
/// `forced` is the type given by a single-event path (`/v1/track`), which
/// overrides any `type` in the body. Errors are human-readable reasons.
pub(crate) fn normalise(
    event: Value,
    forced: Option<EventType>,
    env: &Envelope,
    source: &str,
) -> Result<Map<String, Value>, String> {
    let Value::Object(mut e) = event else {
        return Err("an event must be a JSON object".into());
    };
    let kind = match forced {
        Some(kind) => kind,
        None => match e.get("type") {
            Some(Value::String(t)) => {
                EventType::parse(t).ok_or_else(|| format!("unknown type {t:?}"))?
            }
            None | Some(Value::Null) => return Err("missing type".into()),
            Some(_) => return Err("type must be a string".into()),
        },
    };
    e.insert("type".into(), kind.as_str().into());
    e.remove("writeKey");

    for (field, default) in [
        ("context", &env.context),
        ("integrations", &env.integrations),
    ] {
        if let (None | Some(Value::Null), Some(d)) = (e.get(field), default) {
            e.insert(field.into(), d.clone());
        }
    }
    for field in ["userId", "anonymousId"] {
        if e.get(field).is_some_and(|v| v.is_null() || v == "") {
            e.remove(field);
        }
    }
    if let (None, Some(anon)) = (e.get("anonymousId"), &env.anonymous_id) {
        e.insert("anonymousId".into(), anon.clone().into());
    }
    check_id(&e, "userId", false)?;
    check_id(&e, "anonymousId", false)?;
    if !e.contains_key("userId") && !e.contains_key("anonymousId") {
        return Err("needs a non-empty userId or anonymousId".into());
    }
    match kind {
        EventType::Track => match e.get("event") {
            Some(Value::String(name)) if !name.is_empty() => {}
            _ => return Err("track needs a non-empty string \"event\"".into()),
        },
        EventType::Group => check_id(&e, "groupId", true)?,
        EventType::Alias => {
            check_id(&e, "userId", true)?;
            check_id(&e, "previousId", true)?;
        }
        EventType::Identify | EventType::Page | EventType::Screen => {}
    }

    let mut generated = false;
    match e.get("messageId") {
        None | Some(Value::Null) => {
            // A v4 UUID from the thread's CSPRNG: `Uuid::new_v4` makes a
            // getrandom system call per id, which showed up in profiles.
            let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
            e.insert("messageId".into(), id.to_string().into());
            generated = true;
        }
        Some(Value::String(id)) if !id.is_empty() && id.chars().count() <= MAX_MESSAGE_ID_CHARS => {
        }
        Some(_) => {
            return Err(format!(
                "messageId must be a non-empty string of at most {MAX_MESSAGE_ID_CHARS} characters"
            ))
        }
    }

    set_timestamps(&mut e, env)?;

    e.insert(FERRY_FIELD.into(), ferry_tag(source, generated));
    Ok(e)
}

/// An identifier must be a non-empty string or a number when present
/// (`required`: and it must be present).
fn check_id(e: &Map<String, Value>, field: &str, required: bool) -> Result<(), String> {
    match e.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(()),
        Some(Value::Number(_)) => Ok(()),
        None if !required => Ok(()),
        None | Some(Value::Null) => Err(format!("needs a non-empty {field}")),
        Some(_) => Err(format!("{field} must be a non-empty string or a number")),
    }
}

/// Reads an optional timestamp field (`null` means absent).
fn time_field(e: &Map<String, Value>, field: &str) -> Result<Option<OffsetDateTime>, String> {
    match e.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => timestamp::parse(s)
            .map(Some)
            .ok_or_else(|| format!("{field} is not an RFC 3339 timestamp: {s:?}")),
        Some(_) => Err(format!("{field} must be an RFC 3339 string")),
    }
}

/// Writes `receivedAt`, `sentAt`, `originalTimestamp` and `timestamp`.
fn set_timestamps(e: &mut Map<String, Value>, env: &Envelope) -> Result<(), String> {
    let received_at = env.received_at.unwrap_or_else(OffsetDateTime::now_utc);
    let client = ClientTimes {
        sent_at: time_field(e, "sentAt")?.or(env.sent_at),
        original: time_field(e, "originalTimestamp")?,
        timestamp: time_field(e, "timestamp")?,
    };
    let resolved = timestamp::resolve(received_at, client);
    let fmt = |t: OffsetDateTime| timestamp::format(t);
    let (Some(resolved), Some(received)) = (resolved, fmt(received_at)) else {
        return Err("timestamps are out of range".into());
    };
    let (Some(original), Some(ts)) = (fmt(resolved.original), fmt(resolved.timestamp)) else {
        return Err("timestamps are out of range".into());
    };
    if let Some(sent_at) = client.sent_at {
        let sent = fmt(sent_at).ok_or("sentAt is out of range")?;
        e.insert("sentAt".into(), sent.into());
    }
    e.insert("receivedAt".into(), received.into());
    e.insert("originalTimestamp".into(), original.into());
    e.insert("timestamp".into(), ts.into());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stored_event::GENERATED_ID_FIELD;
    use serde_json::json;
    use time::macros::datetime;

    #[test]
    fn every_type_sits_at_its_own_index() {
        for (i, t) in EventType::ALL.iter().enumerate() {
            assert_eq!(*t as usize, i, "{t:?}");
            assert_eq!(EventType::parse(t.as_str()), Some(*t));
        }
    }

    fn env() -> Envelope {
        Envelope {
            received_at: Some(datetime!(2024-05-01 12:00:10 UTC)),
            ..Envelope::default()
        }
    }

    fn ok(v: Value, forced: Option<EventType>) -> Map<String, Value> {
        normalise(v, forced, &env(), "web").unwrap()
    }

    fn err(v: Value) -> String {
        normalise(v, None, &env(), "web").unwrap_err()
    }

    #[test]
    fn required_fields_per_type() {
        assert!(err(json!({"type": "track", "userId": "u"})).contains("event"));
        assert!(err(json!({"type": "track", "userId": "u", "event": 5})).contains("event"));
        assert!(err(json!({"type": "group", "userId": "u"})).contains("groupId"));
        assert!(err(json!({"type": "alias", "userId": "u"})).contains("previousId"));
        assert!(
            err(json!({"type": "alias", "previousId": "p", "anonymousId": "a"})).contains("userId")
        );
        assert!(err(json!({"type": "boop", "userId": "u"})).contains("unknown type"));
        assert!(err(json!({"userId": "u"})).contains("missing type"));
        assert!(err(json!([1])).contains("object"));
        ok(json!({"type": "group", "userId": "u", "groupId": 7}), None);
        ok(
            json!({"type": "alias", "userId": "u", "previousId": "p"}),
            None,
        );
    }

    #[test]
    fn identity_rules() {
        assert!(err(json!({"type": "identify"})).contains("userId or anonymousId"));
        assert!(
            err(json!({"type": "identify", "anonymousId": null, "userId": ""}))
                .contains("anonymousId")
        );
        assert!(err(json!({"type": "identify", "userId": {"a": 1}})).contains("userId"));
        let e = ok(
            json!({"type": "identify", "userId": "u", "anonymousId": null}),
            None,
        );
        assert!(!e.contains_key("anonymousId"));
        let with_header = Envelope {
            anonymous_id: Some("anon-h".into()),
            ..env()
        };
        let e = normalise(json!({"type": "page"}), None, &with_header, "web").unwrap();
        assert_eq!(e["anonymousId"], "anon-h");
    }

    #[test]
    fn path_type_wins_and_unknown_fields_stay() {
        let e = ok(
            json!({"type": "identify", "event": "Bought", "userId": "u", "writeKey": "secret",
                   "properties": {"price": 3}, "custom": [1, 2]}),
            Some(EventType::Track),
        );
        assert_eq!(e["type"], "track");
        assert_eq!(e["custom"], json!([1, 2]));
        assert_eq!(e["properties"]["price"], 3);
        assert_eq!(e[FERRY_FIELD]["source"], "web");
        assert!(!e.contains_key("writeKey"));
    }

    #[test]
    fn message_id_kept_or_generated() {
        let e = ok(
            json!({"type": "page", "userId": "u", "messageId": "m-1"}),
            None,
        );
        assert_eq!(e["messageId"], "m-1");
        assert_eq!(e[FERRY_FIELD], json!({"source": "web"}));
        for generated in [
            ok(json!({"type": "page", "userId": "u"}), None),
            ok(
                json!({"type": "page", "userId": "u", "messageId": null}),
                None,
            ),
        ] {
            let id = uuid::Uuid::parse_str(generated["messageId"].as_str().unwrap()).unwrap();
            assert_eq!(id.get_version_num(), 4);
            assert_eq!(
                generated[FERRY_FIELD],
                json!({"source": "web", GENERATED_ID_FIELD: true})
            );
        }
        // A client cannot claim its id was generated: `_ferry` is replaced.
        let forged = ok(
            json!({"type": "page", "userId": "u", "messageId": "m-2",
                   "_ferry": {"source": "x", GENERATED_ID_FIELD: true}}),
            None,
        );
        assert_eq!(forged[FERRY_FIELD], json!({"source": "web"}));
        ok(
            json!({"type": "page", "userId": "u", "messageId": "é".repeat(100)}),
            None,
        );
        assert!(
            err(json!({"type": "page", "userId": "u", "messageId": "x".repeat(101)}))
                .contains("messageId")
        );
        assert!(err(json!({"type": "page", "userId": "u", "messageId": 12})).contains("messageId"));
    }

    #[test]
    fn batch_defaults_apply_to_items_without_them() {
        let env = Envelope {
            context: Some(json!({"library": {"name": "x"}})),
            integrations: Some(json!({"All": false})),
            ..env()
        };
        let e = normalise(
            json!({"type": "page", "userId": "u", "context": {"ip": "1"}}),
            None,
            &env,
            "s",
        )
        .unwrap();
        assert_eq!(e["context"], json!({"ip": "1"}));
        assert_eq!(e["integrations"], json!({"All": false}));
    }

    #[test]
    fn timestamps_are_corrected_and_formatted() {
        let e = ok(
            json!({"type": "track", "event": "e", "userId": "u",
                   "sentAt": "2024-05-01T13:00:05Z", "originalTimestamp": "2024-05-01T13:00:00.5+00:00"}),
            None,
        );
        assert_eq!(e["receivedAt"], "2024-05-01T12:00:10.000Z");
        assert_eq!(e["timestamp"], "2024-05-01T12:00:05.500Z");
        assert_eq!(e["originalTimestamp"], "2024-05-01T13:00:00.500Z");
        assert_eq!(e["sentAt"], "2024-05-01T13:00:05.000Z");
        assert!(
            err(json!({"type": "page", "userId": "u", "timestamp": "soon"})).contains("timestamp")
        );
        assert!(err(json!({"type": "page", "userId": "u", "sentAt": 17})).contains("sentAt"));
    }
}
