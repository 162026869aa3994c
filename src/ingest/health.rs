//! `/health` (the log's state, whether events are accepted) and `/ready`
//! (200 unless the log has failed), for operators and load balancers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;

/// 200 while the log works, 503 after a fatal storage error; the body says
/// which, and whether the last append was refused for lack of disk space.
pub(crate) async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let failure = state.log().failure();
    let full = state.is_full();
    let status = if failure.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "status": if failure.is_some() { "failed" } else { "ok" },
        "accepting": failure.is_none() && !full,
        "log": {
            "durable_end": state.log().durable_end(),
            "failure": failure,
            "full": full,
        },
        "requests_in_flight": state.requests_in_flight(),
    });
    (status, Json(body))
}

/// 200 unless the log failed. A full disk does not make the server unready:
/// appends are still tried, and the first one after space is freed succeeds.
pub(crate) async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let ready = state.log().failure().is_none();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready })))
}
