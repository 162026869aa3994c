//! The event endpoints: read and authenticate the request, validate every
//! event, append them all in one atomic group, answer 200 once durable.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::batch::Batch;
use super::error::IngestError;
use super::intake::{Intake, Shape};
use super::normalise::{Envelope, EventType};
use super::{body, AppState};
use crate::dedup::{Dedup, DedupError};
use crate::metrics::{EventLabels, SourceLabels};

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
    let dedup = state.dedup();
    let intake = Intake {
        sources: &state.inner.sources,
        headers: &headers,
        shape,
        received_at,
        max_event: limits.max_event_bytes,
        dedup: dedup.is_some(),
    };
    let (batch, source) = match intake.direct(&bytes, early.as_ref()) {
        Some(direct) => direct,
        None => intake.reference(&bytes, early)?,
    };
    let count = store_batch(&state, dedup, batch, &source).await?;
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
    let max_event = state.limits().max_event_bytes;
    let batch = Batch::normalise(max_event, items, forced, envelope, source, dedup.is_some())?;
    store_batch(state, dedup, batch, source).await
}

/// Appends a request's records as one atomic group, after dropping the
/// events dedup finds already stored; answers how many events the request
/// had.
async fn store_batch(
    state: &AppState,
    dedup: Option<Result<Dedup, DedupError>>,
    mut batch: Batch,
    source: &Arc<str>,
) -> Result<usize, IngestError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_key() {
        assert_eq!(
            query_write_key(Some("a=1&writeKey=k%3D")).as_deref(),
            Some("k=")
        );
        assert_eq!(query_write_key(Some("a=1")), None);
        assert_eq!(query_write_key(None), None);
    }
}
