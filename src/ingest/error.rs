//! Every way an ingest request can fail, and the JSON answer for each: SDKs
//! drop 4xx and retry 408/429/5xx, so the status decides what happens next.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::dedup::DedupError;
use crate::log::LogError;

/// An ingest request that cannot be acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// No write key in the Authorization header, the query or the body.
    #[error("missing write key: send it as the Basic auth user name, as \"writeKey\" in the body or as ?writeKey=")]
    MissingWriteKey,
    /// A write key that no source has.
    #[error("unknown write key")]
    UnknownWriteKey,
    /// The body (on the wire or decompressed) is over the request limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    RequestTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// One event is over the per-event limit.
    #[error("event {index} is {size} bytes, over the limit of {limit} bytes")]
    EventTooLarge {
        /// Position of the event in the request.
        index: usize,
        /// Its size as compact JSON.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A `Content-Encoding` other than gzip or identity.
    #[error("unsupported Content-Encoding {0:?}: only gzip is accepted")]
    UnsupportedEncoding(String),
    /// The body claimed gzip but does not decode.
    #[error("body is not valid gzip: {0}")]
    BadGzip(String),
    /// The body is not JSON, or not of the expected shape.
    #[error("invalid request body: {0}")]
    BadRequest(String),
    /// One event of the request failed validation; nothing was stored.
    #[error("event {index}: {reason}")]
    InvalidEvent {
        /// Position of the event in the request.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The client sent its body too slowly.
    #[error("timed out reading the request body")]
    BodyTimeout,
    /// Too many requests are being processed; retry after a while.
    #[error("too many requests in flight; retry later")]
    Overloaded {
        /// Seconds for `Retry-After`.
        retry_after: u64,
    },
    /// The log's disk budget or free-space reserve is exhausted, or the
    /// disk is full.
    #[error("storage is full, retry later: {reason}")]
    StorageFull {
        /// The log's explanation.
        reason: String,
        /// Seconds for `Retry-After`.
        retry_after: u64,
    },
    /// The log cannot take writes (failed or shut down).
    #[error("storage unavailable: {reason}")]
    StorageUnavailable {
        /// The log's explanation.
        reason: String,
        /// Seconds for `Retry-After`.
        retry_after: u64,
    },
    /// No such endpoint.
    #[error("no such endpoint")]
    NotFound,
    /// The endpoint exists but not for this method.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
}

impl IngestError {
    /// Maps a dedup index that cannot take the request: a full disk is
    /// `storage_full` (it resumes once space is freed), anything else
    /// `storage_unavailable`. Both are 503 with `Retry-After`.
    pub(crate) fn from_dedup(err: DedupError, retry_after: u64) -> Self {
        if err.is_no_space() {
            IngestError::StorageFull {
                reason: err.to_string(),
                retry_after,
            }
        } else {
            IngestError::StorageUnavailable {
                reason: err.to_string(),
                retry_after,
            }
        }
    }

    /// Maps a failed append. Nothing of the request was stored in any case.
    pub(crate) fn from_log(err: LogError, retry_after: u64) -> Self {
        match err {
            LogError::Full(reason) => IngestError::StorageFull {
                reason,
                retry_after,
            },
            // Only reachable when the configured caps exceed the log's own.
            LogError::RecordTooLarge { max, .. } => IngestError::RequestTooLarge { limit: max },
            other => IngestError::StorageUnavailable {
                reason: other.to_string(),
                retry_after,
            },
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        use IngestError::*;
        match self {
            MissingWriteKey | UnknownWriteKey => StatusCode::UNAUTHORIZED,
            RequestTooLarge { .. } | EventTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BadGzip(_) | BadRequest(_) | InvalidEvent { .. } => StatusCode::BAD_REQUEST,
            BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            StorageFull { .. } | StorageUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// A stable machine-readable name, for clients and tests.
    pub fn code(&self) -> &'static str {
        use IngestError::*;
        match self {
            MissingWriteKey => "missing_write_key",
            UnknownWriteKey => "unknown_write_key",
            RequestTooLarge { .. } => "request_too_large",
            EventTooLarge { .. } => "event_too_large",
            UnsupportedEncoding(_) => "unsupported_encoding",
            BadGzip(_) => "bad_gzip",
            BadRequest(_) => "bad_request",
            InvalidEvent { .. } => "invalid_event",
            BodyTimeout => "body_timeout",
            Overloaded { .. } => "overloaded",
            StorageFull { .. } => "storage_full",
            StorageUnavailable { .. } => "storage_unavailable",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            IngestError::Overloaded { retry_after }
            | IngestError::StorageFull { retry_after, .. }
            | IngestError::StorageUnavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Position of the offending event, when one event is to blame.
    fn index(&self) -> Option<usize> {
        match self {
            IngestError::InvalidEvent { index, .. } | IngestError::EventTooLarge { index, .. } => {
                Some(*index)
            }
            _ => None,
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "ingest refused");
        }
        let mut body = json!({
            "success": false,
            "code": self.code(),
            "error": self.to_string(),
        });
        if let Some(index) = self.index() {
            body["index"] = index.into();
        }
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_errors_never_become_500() {
        let full = IngestError::from_log(LogError::Full("budget".into()), 3);
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        let r = full.into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        for e in [LogError::Failed("fsync".into()), LogError::Closed] {
            let e = IngestError::from_log(e, 1);
            assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
    }

    #[test]
    fn invalid_event_names_its_index() {
        let e = IngestError::InvalidEvent {
            index: 4,
            reason: "track needs an event name".into(),
        };
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.index(), Some(4));
        assert!(e.to_string().contains("event 4"));
        assert!(e
            .into_response()
            .headers()
            .get(header::RETRY_AFTER)
            .is_none());
    }
}
