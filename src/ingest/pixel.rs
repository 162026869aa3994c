//! Tracking pixels (`GET /pixel/v1/track`, `/pixel/v1/page`): event fields
//! come from the query string, and the answer is always a 1×1 GIF.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::error::IngestError;
use super::handler::{refuse_if_failed, store};
use super::normalise::{Envelope, EventType};
use super::AppState;

/// A transparent 1×1 GIF (43 bytes).
pub(crate) const GIF: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// `GET /pixel/v1/track`.
pub(crate) async fn track(state: State<AppState>, headers: HeaderMap, query: RawQuery) -> Response {
    pixel(EventType::Track, state, headers, query).await
}

/// `GET /pixel/v1/page`.
pub(crate) async fn page(state: State<AppState>, headers: HeaderMap, query: RawQuery) -> Response {
    pixel(EventType::Page, state, headers, query).await
}

/// Stores the event and answers with the GIF; the status tells whether it
/// was stored (200) or why not, for anyone who looks.
async fn pixel(
    kind: EventType,
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let status = match store_pixel(kind, &state, &headers, query.as_deref()).await {
        Ok(()) => StatusCode::OK,
        Err(e) => {
            tracing::debug!(error = %e, "pixel refused");
            e.status()
        }
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-store, max-age=0"),
        ],
        GIF.as_slice(),
    )
        .into_response()
}

async fn store_pixel(
    kind: EventType,
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(), IngestError> {
    let received_at = OffsetDateTime::now_utc();
    refuse_if_failed(state)?;
    if query.is_some_and(|q| q.len() > state.limits().max_event_bytes) {
        return Err(IngestError::RequestTooLarge {
            limit: state.limits().max_event_bytes,
        });
    }
    let (event, write_key) = query_event(query.unwrap_or(""))?;
    let source = state
        .inner
        .sources
        .authenticate(headers, write_key.as_deref(), None)?;
    let envelope = Envelope {
        received_at: Some(received_at),
        ..Envelope::default()
    };
    store(
        state,
        vec![Value::Object(event)],
        Some(kind),
        &envelope,
        &source,
    )
    .await?;
    Ok(())
}

/// Turns `a=1&properties.b=2&writeKey=k` into `{"a":"1","properties":{"b":"2"}}`
/// and the write key. Dotted names build nested objects; values are strings.
fn query_event(query: &str) -> Result<(Map<String, Value>, Option<String>), IngestError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| IngestError::BadRequest(format!("query string: {e}")))?;
    let mut event = Map::new();
    let mut write_key = None;
    for (name, value) in pairs {
        if name == "writeKey" {
            write_key = Some(value);
            continue;
        }
        let mut parts: Vec<&str> = name.split('.').collect();
        let last = parts.pop().unwrap_or_default();
        let mut map = &mut event;
        for part in parts {
            let slot = map.entry(part).or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            map = match slot {
                Value::Object(m) => m,
                _ => unreachable!("just made an object"),
            };
        }
        map.insert(last.to_owned(), Value::String(value));
    }
    Ok((event, write_key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_builds_nested_fields() {
        let (e, key) = query_event("writeKey=wk&anonymousId=a1&event=Opened&properties.subject=Hi%20there&context.page.url=x").unwrap();
        assert_eq!(key.as_deref(), Some("wk"));
        assert_eq!(
            Value::Object(e),
            json!({"anonymousId": "a1", "event": "Opened",
                   "properties": {"subject": "Hi there"}, "context": {"page": {"url": "x"}}})
        );
    }

    #[test]
    fn conflicting_names_do_not_panic() {
        let (e, _) = query_event("properties=1&properties.a=2&.=3&a..b=4").unwrap();
        assert_eq!(e["properties"], json!({"a": "2"}));
    }

    #[test]
    fn gif_is_a_gif() {
        assert_eq!(&GIF[..6], b"GIF89a");
        assert_eq!(GIF[GIF.len() - 1], 0x3b);
    }
}
