//! The direct way from a request body to log records: the body is read once
//! into canonical member text (canonical.rs), and each stored event is the
//! client's members with ferry's fields spliced in. Only a request that is
//! valid throughout and has no duplicate key takes this way; for anything
//! else it answers `None` and the `Value` way (batch.rs, normalise.rs)
//! decides, so both store the same events and refuse the same requests.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use time::OffsetDateTime;

use super::batch::Batch;
use super::canonical::{self, Any, Canon};
use super::normalise::{Envelope, EventType, MAX_MESSAGE_ID_CHARS};
use super::timestamp::{self, ClientTimes};
use crate::dedup::Key;
use crate::stored_event::{self, Facts};

/// Room for the members ferry adds to an event (type, the four
/// timestamps, messageId, `_ferry` with a source name), beside a batch's
/// context and integrations.
const MEMBERS_ADDED: usize = 320;

/// One top-level member of an event: where its key and value lie in the
/// canonical text.
#[derive(Debug, Clone)]
struct Member {
    key: Range<usize>,
    value: Range<usize>,
}

/// One event of the body.
#[derive(Debug)]
struct Event {
    /// The event object's canonical text.
    text: Range<usize>,
    /// Its members, in `Body::members`.
    members: Range<usize>,
}

/// A request body read into canonical text.
#[derive(Default)]
pub(crate) struct Body {
    /// The canonical text of every part kept below.
    canon: Canon,
    /// The top-level members of all events, event after event.
    members: Vec<Member>,
    /// The events, in request order.
    events: Vec<Event>,
    /// A batch's own fields (for a single event: its `writeKey` only).
    write_key: Option<Range<usize>>,
    sent_at: Option<Range<usize>>,
    context: Option<Range<usize>>,
    integrations: Option<Range<usize>>,
}

impl Body {
    /// Reads a batch body (`batch` = true: `{"batch": [...], ...}`) or a
    /// single-event body; `None` when it is not one this way takes.
    pub fn read(bytes: &[u8], batch: bool) -> Option<Body> {
        let mut body = Body {
            canon: Canon::with_capacity(bytes.len()),
            ..Body::default()
        };
        // A JSON document is UTF-8 throughout: checked here once for the
        // whole body instead of string by string while parsing.
        let text = std::str::from_utf8(bytes).ok()?;
        let mut d = serde_json::Deserializer::from_str(text);
        if batch {
            de::Deserializer::deserialize_map(&mut d, BatchBody(&mut body)).ok()?;
        } else {
            body.event(&mut d).ok()?;
            let members = &body.members;
            let key = members
                .iter()
                .find(|m| body.canon.out[m.key.clone()] == *b"\"writeKey\"");
            body.write_key = key.map(|m| m.value.clone());
        }
        d.end().ok()?;
        Some(body)
    }

    /// Reads one event object (anything else is refused).
    fn event<'de, D: de::Deserializer<'de>>(&mut self, d: D) -> Result<(), D::Error> {
        let first = self.members.len();
        let members = &mut self.members;
        let text = self
            .canon
            .object(d, |key, value| members.push(Member { key, value }))?;
        self.events.push(Event {
            text,
            members: first..self.members.len(),
        });
        Ok(())
    }

    /// The body's `writeKey` when it is a string (a single event's own).
    pub fn write_key(&self) -> Option<Cow<'_, str>> {
        canonical::string(self.json(self.write_key.as_ref()?))
    }

    /// A batch's `sentAt`: `Some(None)` when absent or null, `None` when it
    /// is not a valid timestamp.
    pub fn sent_at(&self) -> Option<Option<OffsetDateTime>> {
        time(self.sent_at.as_ref().map(|r| self.json(r)))
    }

    fn json(&self, range: &Range<usize>) -> &[u8] {
        &self.canon.out[range.clone()]
    }

    /// Normalises every event and encodes it as a log record, as
    /// `Batch::normalise` does for the same request; `None` as soon as one
    /// event is not plainly valid.
    pub fn normalise(
        &self,
        max_event: usize,
        forced: Option<EventType>,
        envelope: &Envelope,
        source: &str,
        dedup: bool,
    ) -> Option<Batch> {
        let received_at = envelope.received_at.unwrap_or_else(OffsetDateTime::now_utc);
        let request = Request {
            forced,
            envelope,
            source,
            dedup,
            received_at,
            received_ms: u64::try_from(received_at.unix_timestamp_nanos() / 1_000_000)
                .unwrap_or_default(),
            received: timestamp::format(received_at)?,
            tags: [false, true].map(|generated| {
                serde_json::to_vec(&stored_event::ferry_tag(source, generated)).unwrap_or_default()
            }),
        };
        let mut batch = Batch::with_capacity(self.events.len(), dedup);
        for event in &self.events {
            if event.text.len() > max_event {
                return None;
            }
            self.normalise_event(event, &request, &mut batch)?;
        }
        Some(batch)
    }

    fn normalise_event(&self, event: &Event, req: &Request, batch: &mut Batch) -> Option<()> {
        let text = &self.canon.out;
        let members = &self.members[event.members.clone()];
        let mut at = Fields::default();
        for (i, m) in members.iter().enumerate() {
            at.note(&text[m.key.clone()], i);
        }
        let json = |i: Option<usize>| i.map(|i| &text[members[i].value.clone()]);
        let kind = match req.forced {
            Some(kind) => kind,
            None => EventType::parse(&canonical::string(json(at.kind)?)?)?,
        };
        let env = req.envelope;
        // `null` and `""` identities count as absent and are removed.
        let given =
            |i: Option<usize>| i.filter(|&i| !matches!(json(Some(i)), Some(b"null" | b"\"\"")));
        let user_id = given(at.user_id);
        let anonymous_id = given(at.anonymous_id);
        let header_id = match anonymous_id {
            None => env.anonymous_id.as_deref(),
            Some(_) => None,
        };
        if !is_id(json(user_id)) || !is_id(json(anonymous_id)) {
            return None;
        }
        if user_id.is_none() && anonymous_id.is_none() && header_id.is_none() {
            return None;
        }
        let name = json(at.event).and_then(canonical::string);
        match kind {
            EventType::Track if name.as_deref().is_some_and(|n| !n.is_empty()) => {}
            EventType::Track => return None,
            EventType::Group if at.group_id.is_some() && is_id(json(at.group_id)) => {}
            EventType::Group => return None,
            EventType::Alias
                if user_id.is_some() && at.previous_id.is_some() && is_id(json(at.previous_id)) => {
            }
            EventType::Alias => return None,
            EventType::Identify | EventType::Page | EventType::Screen => {}
        }
        let mut uuid = uuid::Uuid::encode_buffer();
        let (message_id, generated) = match json(at.message_id) {
            None | Some(b"null") => {
                // As normalise.rs makes it: a v4 UUID from the thread's CSPRNG.
                let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
                (
                    Cow::Borrowed(&*id.hyphenated().encode_lower(&mut uuid)),
                    true,
                )
            }
            Some(v) => {
                let id = canonical::string(v)?;
                if id.is_empty() || id.chars().count() > MAX_MESSAGE_ID_CHARS {
                    return None;
                }
                (id, false)
            }
        };
        let client = ClientTimes {
            sent_at: time(json(at.sent_at))?.or(env.sent_at),
            original: time(json(at.original))?,
            timestamp: time(json(at.timestamp))?,
        };
        let resolved = timestamp::resolve(req.received_at, client)?;
        let original = timestamp::format(resolved.original)?;
        let ts = timestamp::format(resolved.timestamp)?;
        let sent = match client.sent_at {
            Some(t) => Some(timestamp::format(t)?),
            None => None,
        };
        let context = self.default_for(json(at.context), self.context.as_ref());
        let integrations = self.default_for(json(at.integrations), self.integrations.as_ref());

        // The members dropped from the client's text: replaced, or removed.
        let when = |drop: bool, i: Option<usize>| i.filter(|_| drop);
        let dropped = [
            at.kind,
            at.write_key,
            at.received_at,
            at.ferry,
            at.original,
            at.timestamp,
            when(sent.is_some(), at.sent_at),
            when(generated, at.message_id),
            when(user_id.is_none(), at.user_id),
            when(anonymous_id.is_none(), at.anonymous_id),
            when(context.is_some(), at.context),
            when(integrations.is_some(), at.integrations),
        ];
        let user = match (user_id, anonymous_id) {
            (Some(i), _) | (None, Some(i)) => id_text(json(Some(i))?)?,
            (None, None) => Cow::Borrowed(header_id.unwrap_or_default()),
        };
        let facts = Facts {
            kind: kind.as_str(),
            source: req.source,
            user: &user,
            name: name.as_deref().unwrap_or_default(),
            message_id: &message_id,
            generated_id: generated,
            received_ms: req.received_ms,
        };
        let added = context.map_or(0, <[u8]>::len) + integrations.map_or(0, <[u8]>::len);
        let capacity = facts.head_len() + event.text.len() + added + MEMBERS_ADDED;
        let mut out = Vec::with_capacity(capacity);
        facts.write_head(&mut out);
        out.push(b'{');
        let mut record = Record { out, first: true };
        // The kept members, copied in runs of neighbours.
        let mut run: Option<Range<usize>> = None;
        for (i, m) in members.iter().enumerate() {
            if dropped.contains(&Some(i)) {
                if let Some(r) = run.take() {
                    record.raw(&text[r]);
                }
                continue;
            }
            run = Some(match run {
                Some(r) => r.start..m.value.end,
                None => m.key.start..m.value.end,
            });
        }
        if let Some(r) = run {
            record.raw(&text[r]);
        }
        record.member("type", |o| quoted(o, kind.as_str()));
        if let Some(id) = header_id {
            record.member("anonymousId", |o| canonical::write_str(o, id));
        }
        if let Some(c) = context {
            record.member("context", |o| o.extend_from_slice(c));
        }
        if let Some(i) = integrations {
            record.member("integrations", |o| o.extend_from_slice(i));
        }
        if generated {
            record.member("messageId", |o| quoted(o, &message_id));
        }
        if let Some(sent) = &sent {
            record.member("sentAt", |o| quoted(o, sent));
        }
        record.member("receivedAt", |o| quoted(o, &req.received));
        record.member("originalTimestamp", |o| quoted(o, &original));
        record.member("timestamp", |o| quoted(o, &ts));
        record.member(stored_event::FERRY_FIELD, |o| {
            o.extend_from_slice(&req.tags[usize::from(generated)])
        });
        let mut out = record.out;
        out.push(b'}');
        let key = (req.dedup && !generated).then(|| Key::new(req.source, &message_id));
        batch.push(out, Some(kind), key);
        Some(())
    }

    /// The batch's value of `context` or `integrations` for an event whose
    /// own is `own`: only when the event has none (absent or null).
    fn default_for(&self, own: Option<&[u8]>, batch: Option<&Range<usize>>) -> Option<&[u8]> {
        match own {
            None | Some(b"null") => batch.map(|r| self.json(r)),
            Some(_) => None,
        }
    }
}

/// What every event of a request shares.
struct Request<'a> {
    forced: Option<EventType>,
    envelope: &'a Envelope,
    source: &'a str,
    dedup: bool,
    received_at: OffsetDateTime,
    received_ms: u64,
    /// `receivedAt` as stored.
    received: String,
    /// The `_ferry` tag as stored, for a client id and for a generated one.
    tags: [Vec<u8>; 2],
}

/// Where the members normalisation reads or replaces lie in an event.
#[derive(Default)]
struct Fields {
    kind: Option<usize>,
    write_key: Option<usize>,
    user_id: Option<usize>,
    anonymous_id: Option<usize>,
    event: Option<usize>,
    group_id: Option<usize>,
    previous_id: Option<usize>,
    message_id: Option<usize>,
    sent_at: Option<usize>,
    original: Option<usize>,
    timestamp: Option<usize>,
    received_at: Option<usize>,
    context: Option<usize>,
    integrations: Option<usize>,
    ferry: Option<usize>,
}

impl Fields {
    /// Notes member `i` with the canonical key `key`.
    fn note(&mut self, key: &[u8], i: usize) {
        let slot = match key {
            b"\"type\"" => &mut self.kind,
            b"\"writeKey\"" => &mut self.write_key,
            b"\"userId\"" => &mut self.user_id,
            b"\"anonymousId\"" => &mut self.anonymous_id,
            b"\"event\"" => &mut self.event,
            b"\"groupId\"" => &mut self.group_id,
            b"\"previousId\"" => &mut self.previous_id,
            b"\"messageId\"" => &mut self.message_id,
            b"\"sentAt\"" => &mut self.sent_at,
            b"\"originalTimestamp\"" => &mut self.original,
            b"\"timestamp\"" => &mut self.timestamp,
            b"\"receivedAt\"" => &mut self.received_at,
            b"\"context\"" => &mut self.context,
            b"\"integrations\"" => &mut self.integrations,
            b"\"_ferry\"" => &mut self.ferry,
            _ => return,
        };
        *slot = Some(i);
    }
}

/// A record's JSON being written, member by member.
struct Record {
    out: Vec<u8>,
    first: bool,
}

impl Record {
    /// Appends members as canonical text (`"k":v,"k2":v2`).
    fn raw(&mut self, members: &[u8]) {
        if !self.first {
            self.out.push(b',');
        }
        self.out.extend_from_slice(members);
        self.first = false;
    }

    /// Appends the member `key` (plain ASCII), its value written by `value`.
    fn member(&mut self, key: &str, value: impl FnOnce(&mut Vec<u8>)) {
        if !self.first {
            self.out.push(b',');
        }
        quoted(&mut self.out, key);
        self.out.push(b':');
        value(&mut self.out);
        self.first = false;
    }
}

/// Writes `s`, which needs no escaping, as a JSON string.
fn quoted(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// An identifier member is absent, a non-empty string or a number.
fn is_id(json: Option<&[u8]>) -> bool {
    match json {
        None => true,
        Some(v) => (v.len() > 2 && v[0] == b'"') || v[0] == b'-' || v[0].is_ascii_digit(),
    }
}

/// An identifier as text: a string unescaped, a number as written.
fn id_text(json: &[u8]) -> Option<Cow<'_, str>> {
    if json.first() == Some(&b'"') {
        canonical::string(json)
    } else {
        std::str::from_utf8(json).ok().map(Cow::Borrowed)
    }
}

/// A timestamp member: `Some(None)` when absent or null, `None` when it is
/// not an RFC 3339 string.
fn time(json: Option<&[u8]>) -> Option<Option<OffsetDateTime>> {
    match json {
        None | Some(b"null") => Some(None),
        Some(v) => timestamp::parse(&canonical::string(v)?).map(Some),
    }
}

/// Reads `{"batch": [...], "sentAt": …, "context": …, "integrations": …,
/// "writeKey": …}`; other members are read (they must be valid) and dropped.
struct BatchBody<'b>(&'b mut Body);

impl<'de> Visitor<'de> for BatchBody<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a batch object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let body = self.0;
        let mut batch = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let slot = match &*key {
                "batch" if !batch => {
                    batch = true;
                    map.next_value_seed(Events(&mut *body))?;
                    continue;
                }
                "batch" => return Err(de::Error::custom("batch twice")),
                "writeKey" => &mut body.write_key,
                "sentAt" => &mut body.sent_at,
                "context" => &mut body.context,
                "integrations" => &mut body.integrations,
                _ => {
                    // Read for validity, then dropped.
                    let start = body.canon.out.len();
                    map.next_value_seed(Any(&mut body.canon))?;
                    body.canon.out.truncate(start);
                    continue;
                }
            };
            // As in a `Value`, the last copy of a member counts.
            *slot = Some(map.next_value_seed(Any(&mut body.canon))?);
        }
        if !batch || body.events.is_empty() {
            return Err(de::Error::custom("no events"));
        }
        // A null context or integrations is no default.
        for slot in [&mut body.context, &mut body.integrations] {
            if slot
                .as_ref()
                .is_some_and(|r| body.canon.out[r.clone()] == *b"null")
            {
                *slot = None;
            }
        }
        Ok(())
    }
}

/// The `batch` array: each item an event object.
struct Events<'b>(&'b mut Body);

impl<'de> DeserializeSeed<'de> for Events<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Events<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(OneEvent(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// One event object.
struct OneEvent<'b>(&'b mut Body);

impl<'de> DeserializeSeed<'de> for OneEvent<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.0.event(d)
    }
}
