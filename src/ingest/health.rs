//! `/health` (the log's and the dedup index's state, whether events are
//! accepted) and `/ready` (200 unless one of them has failed for good), for
//! operators and load balancers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::dedup::DedupHealth;

/// 200 while the log and the dedup index work, 503 after a fatal storage
/// error in either; the body says which, and whether requests are refused
/// for lack of disk space (the log's last append, or the dedup index
/// waiting to be reopened).
pub(crate) async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let failure = state.log().failure();
    let full = state.is_full();
    let dedup = state.dedup_health();
    let dedup_failed = matches!(dedup, Some(DedupHealth::Failed(_)));
    let dedup_full = matches!(dedup, Some(DedupHealth::Full(_)));
    let failed = failure.is_some() || dedup_failed;
    let status = if failed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let dedup = dedup.map(|d| match d {
        DedupHealth::Ok => json!({"state": "ok", "failure": null}),
        DedupHealth::Full(reason) => json!({"state": "full", "failure": reason}),
        DedupHealth::Failed(reason) => json!({"state": "failed", "failure": reason}),
    });
    let body = json!({
        "status": if failed { "failed" } else { "ok" },
        "accepting": !failed && !full && !dedup_full,
        "log": {
            "durable_end": state.log().durable_end(),
            "failure": failure,
            "full": full,
        },
        "dedup": dedup,
        "requests_in_flight": state.requests_in_flight(),
    });
    (status, Json(body))
}

/// 200 unless the log or the dedup index failed for good. A full disk does
/// not make the server unready: appends are still tried, the dedup index is
/// reopened, and requests succeed again once space is freed.
pub(crate) async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let ready = state.log().failure().is_none()
        && !matches!(state.dedup_health(), Some(DedupHealth::Failed(_)));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready })))
}
