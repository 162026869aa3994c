//! What the broker destinations (NATS JetStream, Kafka) share: the
//! subject or topic template with `{source}` and `{type}`, the stable id a
//! broker deduplicates ferry's re-sends by, and the headers naming an event.

use crate::stored_event::EventMeta;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// A subject or topic that may name the event's source and type.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
    /// Characters allowed in a rendered placeholder; others become `_`.
    allowed: fn(char) -> bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Source,
    Type,
}

impl Template {
    /// Parses `text`; `{source}` and `{type}` are the only placeholders.
    /// `allowed` says which characters a rendered value may keep.
    pub fn parse(text: &str, allowed: fn(char) -> bool) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("{text:?} has a '{{' without '}}'"));
            };
            parts.push(match &rest[open + 1..open + close] {
                "source" => Part::Source,
                "type" => Part::Type,
                other => {
                    return Err(format!(
                        "{text:?} has the unknown placeholder {{{other}}} (only {{source}} and {{type}})"
                    ))
                }
            });
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("{text:?} has a '}}' without '{{'"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if parts.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Template { parts, allowed })
    }

    /// The text itself when it has no placeholder.
    pub fn fixed(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// The literal text around the placeholders, for checking it.
    pub(super) fn literal(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Text(t) => Some(t.as_str()),
            _ => None,
        })
    }

    /// The subject or topic of an event. A placeholder's characters that
    /// the broker does not allow become `_`; an empty value becomes `_`.
    pub fn render<'a>(&'a self, meta: &EventMeta) -> Cow<'a, str> {
        if let Some(fixed) = self.fixed() {
            return Cow::Borrowed(fixed);
        }
        let mut out = String::new();
        for part in &self.parts {
            let value = match part {
                Part::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Part::Source => &meta.source,
                Part::Type => &meta.kind,
            };
            if value.is_empty() {
                out.push('_');
            }
            out.extend(
                value
                    .chars()
                    .map(|c| if (self.allowed)(c) { c } else { '_' }),
            );
        }
        Cow::Owned(out)
    }
}

/// Characters a NATS subject token may hold (no separator, wildcard or space).
pub fn nats_token_char(c: char) -> bool {
    !(c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>'))
}

/// Characters a Kafka topic name may hold.
pub fn kafka_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// The id a broker deduplicates by: 32 hex digits of SHA-256 over the
/// source and the messageId, so ferry's re-sends of one event (after a
/// retry, a crash or a restart) carry the same id and the same messageId
/// from two sources does not collide.
pub fn broker_message_id(meta: &EventMeta) -> String {
    let mut h = Sha256::new();
    h.update(meta.source.as_bytes());
    h.update([0]);
    h.update(meta.message_id.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// The headers naming an event, beside its body: `(name, value)` pairs,
/// leaving out a value a header cannot carry (control characters).
pub fn event_headers(meta: &EventMeta) -> impl Iterator<Item = (&'static str, &str)> {
    [
        ("ferry-message-id", meta.message_id.as_str()),
        ("ferry-source", meta.source.as_str()),
        ("ferry-type", meta.kind.as_str()),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty() && !v.chars().any(char::is_control))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(source: &str, kind: &str, message_id: &str) -> EventMeta {
        EventMeta {
            source: source.into(),
            kind: kind.into(),
            event: None,
            user: "u".into(),
            message_id: message_id.into(),
        }
    }

    #[test]
    fn templates_render_source_and_type_in_the_brokers_alphabet() {
        let t = Template::parse("ferry.{source}.{type}", nats_token_char).unwrap();
        assert_eq!(t.render(&meta("web", "track", "m")), "ferry.web.track");
        assert_eq!(
            t.render(&meta("my app.v2", "page", "m")),
            "ferry.my_app_v2.page"
        );
        assert_eq!(t.render(&meta("", "page", "m")), "ferry._.page");
        let k = Template::parse("events-{source}", kafka_topic_char).unwrap();
        assert_eq!(k.render(&meta("ios/app", "track", "m")), "events-ios_app");
        assert_eq!(
            Template::parse("fixed", kafka_topic_char).unwrap().fixed(),
            Some("fixed")
        );
        for bad in ["a.{user}", "a.{source", "a}", ""] {
            assert!(Template::parse(bad, nats_token_char).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_broker_id_is_stable_and_depends_on_source_and_message_id() {
        let a = broker_message_id(&meta("web", "track", "m1"));
        assert_eq!(a, broker_message_id(&meta("web", "page", "m1")));
        assert_eq!(a.len(), 32);
        assert_ne!(a, broker_message_id(&meta("ios", "track", "m1")));
        assert_ne!(a, broker_message_id(&meta("web", "track", "m2")));
        // No separator ambiguity: ("a", "b\0c") and ("a\0b", "c") differ.
        assert_ne!(
            broker_message_id(&meta("ab", "t", "c")),
            broker_message_id(&meta("a", "t", "bc"))
        );
    }

    #[test]
    fn headers_leave_out_values_a_header_cannot_carry() {
        let m = meta("web", "track", "id\r\nx");
        let h: Vec<_> = event_headers(&m).collect();
        assert_eq!(h, vec![("ferry-source", "web"), ("ferry-type", "track")]);
    }
}
