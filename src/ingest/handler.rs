//! The event endpoints: read and authenticate the request, validate every
//! event, append them all in one atomic group, answer 200 once durable.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use base64::Engine;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use super::error::IngestError;
use super::normalise::{self, Envelope, EventType};
use super::{body, timestamp, AppState};
use crate::dedup::{Key, Verdict};
use crate::metrics::{EventLabels, SourceLabels};
use crate::stored_event;

/// How the events of a request are laid out in its body.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    /// The body is one event whose type is given by the path.
    Single(EventType),
    /// `{"batch": [...]}`, each item with its own `type`.
    Batch,
}

/// The handler of every event endpoint; `shape` comes from the route.
pub(crate) async fn handle(
    shape: Shape,
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Json<Value>, IngestError> {
    let received_at = OffsetDateTime::now_utc();
    refuse_if_failed(&state)?;
    let query_key = query_write_key(query.as_deref());
    // Authenticate before reading the body when the key is outside it.
    let early = match state
        .inner
        .sources
        .authenticate(&headers, query_key.as_deref(), None)
    {
        Ok(source) => Some(source),
        Err(IngestError::MissingWriteKey) => None,
        Err(e) => return Err(e),
    };
    let limits = state.limits();
    let bytes = body::read(
        body,
        &headers,
        limits.max_request_bytes,
        state.body_timeout(),
    )
    .await?;
    let value: Value = serde_json::from_slice(&bytes)
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
            state.inner.sources.authenticate(&headers, None, body_key)?
        }
    };
    let mut envelope = Envelope {
        received_at: Some(received_at),
        sent_at: header_time(&headers, "sentat")?,
        anonymous_id: anonymous_id_header(&headers),
        ..Envelope::default()
    };
    let (items, forced) = match shape {
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
    let count = store(&state, items, forced, &envelope, &source).await?;
    Ok(Json(json!({ "success": true, "count": count })))
}

/// Validates, normalises and appends `items` as one atomic group. Nothing
/// is stored unless every item is valid.
pub(crate) async fn store(
    state: &AppState,
    items: Vec<Value>,
    forced: Option<EventType>,
    envelope: &Envelope,
    source: &Arc<str>,
) -> Result<usize, IngestError> {
    let dedup = state.dedup();
    let mut batch = Batch::normalise(state, items, forced, envelope, source, dedup.is_some())?;
    let count = batch.records.len();
    let retry_after = state.limits().retry_after_secs;
    // Dedup: drop events whose (source, messageId) is already durable; a
    // copy still being appended by another request is waited for. The ticket
    // holds the new ids until the append's outcome is known.
    let ticket = match dedup {
        None => None,
        Some(dedup) => {
            let dedup = dedup.map_err(|e| IngestError::from_dedup(e, retry_after))?;
            let ticket = dedup
                .begin(&batch.keys)
                .await
                .map_err(|e| IngestError::from_dedup(e, retry_after))?;
            let duplicates = batch.drop_duplicates(ticket.verdicts());
            if duplicates > 0 {
                let labels = SourceLabels {
                    source: source.to_string(),
                };
                state
                    .metrics()
                    .duplicates
                    .get_or_create(&labels)
                    .inc_by(duplicates);
            }
            Some(ticket)
        }
    };
    if batch.records.is_empty() {
        // Every event was a duplicate: answered exactly like a success.
        return Ok(count);
    }
    // The append and the ticket's outcome run in a task of their own: when
    // the client goes away mid-append, the handler is dropped, but the
    // append still becomes durable, so its ids must still be committed (or
    // a retry of the request would store them again).
    let log = state.log().clone();
    let records = std::mem::take(&mut batch.records);
    let appended = tokio::spawn(async move {
        let result = log.append(records).await;
        match (&result, ticket) {
            (Ok(offsets), Some(ticket)) => ticket.commit(offsets.clone()),
            // Dropping the ticket releases the ids: a retry stores them.
            (_, ticket) => drop(ticket),
        }
        result
    });
    let result = appended.await.expect("the append task does not panic");
    match result {
        Ok(_) => {
            state.set_full(false);
            count_events(state, source, &batch.types);
            Ok(count)
        }
        Err(e) => {
            let err = IngestError::from_log(e, retry_after);
            if matches!(err, IngestError::StorageFull { .. }) {
                state.set_full(true);
            }
            Err(err)
        }
    }
}

/// A request's events, normalised and encoded as log records.
struct Batch {
    /// One record per event, in request order.
    records: Vec<Vec<u8>>,
    /// Each record's event type.
    types: Vec<Option<EventType>>,
    /// The dedup keys of the events that have a client messageId.
    keys: Vec<Key>,
    /// The index in `records` of the event each key belongs to.
    keyed: Vec<usize>,
}

impl Batch {
    /// Checks each event's size, normalises it and encodes it; with `dedup`,
    /// also hashes the dedup keys. Any bad event refuses the whole request.
    fn normalise(
        state: &AppState,
        items: Vec<Value>,
        forced: Option<EventType>,
        envelope: &Envelope,
        source: &Arc<str>,
        dedup: bool,
    ) -> Result<Batch, IngestError> {
        let max_event = state.limits().max_event_bytes;
        let received_at = envelope.received_at.unwrap_or_else(OffsetDateTime::now_utc);
        let received_ms =
            u64::try_from(received_at.unix_timestamp_nanos() / 1_000_000).unwrap_or_default();
        // Dedup keys are hashed as the events are normalised: no copy of the
        // message ids is kept, and nothing is hashed when dedup is off. Only
        // client ids are keys: an id ferry generates is a fresh random UUID
        // that no later request can repeat, so holding it would only take
        // capacity.
        let keyed_capacity = if dedup { items.len() } else { 0 };
        let mut batch = Batch {
            records: Vec::with_capacity(items.len()),
            types: Vec::with_capacity(items.len()),
            keys: Vec::with_capacity(keyed_capacity),
            keyed: Vec::with_capacity(keyed_capacity),
        };
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
            batch
                .types
                .push(normalised["type"].as_str().and_then(EventType::parse));
            if dedup && stored_event::has_client_id(&normalised) {
                let id = normalised["messageId"].as_str().unwrap_or_default();
                batch.keys.push(Key::new(source, id));
                batch.keyed.push(index);
            }
            let record = stored_event::encode(&normalised, received_ms).map_err(|e| {
                IngestError::InvalidEvent {
                    index,
                    reason: e.to_string(),
                }
            })?;
            batch.records.push(record);
        }
        Ok(batch)
    }

    /// Drops the events whose key the index answered as not new (one
    /// verdict per key); returns how many were dropped.
    fn drop_duplicates(&mut self, verdicts: &[Verdict]) -> u64 {
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

/// Adds a request's stored events to the per-type counters: one counter
/// update per type present, not one label set (two strings) per event.
fn count_events(state: &AppState, source: &str, types: &[Option<EventType>]) {
    let mut counts = [0u64; EventType::ALL.len()];
    for t in types.iter().flatten() {
        counts[*t as usize] += 1;
    }
    for (kind, n) in EventType::ALL.iter().zip(counts) {
        if n > 0 {
            let labels = EventLabels {
                source: source.to_owned(),
                r#type: kind.as_str().to_owned(),
            };
            state.metrics().events.get_or_create(&labels).inc_by(n);
        }
    }
}

/// `/v1/m`: analytics.js's own telemetry. Answered 200, stored nowhere.
pub(crate) async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, IngestError> {
    body::read(
        body,
        &headers,
        state.limits().max_request_bytes,
        state.body_timeout(),
    )
    .await?;
    Ok(Json(json!({ "success": true })))
}

/// 503 before reading anything once the log has stopped after a failure.
pub(crate) fn refuse_if_failed(state: &AppState) -> Result<(), IngestError> {
    match state.log().failure() {
        Some(reason) => Err(IngestError::StorageUnavailable {
            reason,
            retry_after: state.limits().retry_after_secs,
        }),
        None => Ok(()),
    }
}

/// `writeKey` from the query string, if any.
pub(crate) fn query_write_key(query: Option<&str>) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query?).ok()?;
    pairs
        .into_iter()
        .find(|(k, _)| k == "writeKey")
        .map(|(_, v)| v)
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
    fn compact_size_ignores_whitespace() {
        let v: Value = serde_json::from_str("{ \"a\" : [1, 2] }").unwrap();
        assert_eq!(compact_size(&v), "{\"a\":[1,2]}".len());
    }

    #[test]
    fn query_key() {
        assert_eq!(
            query_write_key(Some("a=1&writeKey=k%3D")).as_deref(),
            Some("k=")
        );
        assert_eq!(query_write_key(Some("a=1")), None);
        assert_eq!(query_write_key(None), None);
    }

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
}
