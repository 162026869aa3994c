//! The admin API under `/admin/…`, for operators and for the CLI while a
//! server holds the data directory: destination status, pause and resume,
//! cursor reset, and dead letters. Every call needs
//! `Authorization: Bearer <admin_token>`; without a configured token the
//! routes do not exist.

use crate::bearer;
use crate::delivery::resolve_target;
use crate::delivery::status::{Control, DestinationHandle};
use crate::log::Log;
use crate::store::StateStore;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// What the admin API works on.
#[derive(Clone)]
pub struct AdminState {
    inner: Arc<Inner>,
}

struct Inner {
    token: String,
    destinations: Vec<Arc<DestinationHandle>>,
    store: Arc<StateStore>,
    log: Log,
}

impl AdminState {
    /// Builds the state; `token` is the configured `admin_token`.
    pub fn new(
        token: String,
        destinations: Vec<Arc<DestinationHandle>>,
        store: Arc<StateStore>,
        log: Log,
    ) -> Self {
        AdminState {
            inner: Arc::new(Inner {
                token,
                destinations,
                store,
                log,
            }),
        }
    }

    fn destination(&self, name: &str) -> Result<&Arc<DestinationHandle>, AdminError> {
        self.inner
            .destinations
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| AdminError::NotFound(format!("no destination named {name:?}")))
    }

    async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&StateStore) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, AdminError> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| AdminError::Unavailable(crate::error_text::with_causes(&e)))?
            .map_err(|e| AdminError::Unavailable(crate::error_text::with_causes(&e)))
    }
}

/// Errors of the admin API, each a JSON answer.
#[derive(Debug)]
pub enum AdminError {
    /// No or wrong bearer token.
    Unauthorized,
    /// Unknown destination or dead letter.
    NotFound(String),
    /// A bad request body or target.
    BadRequest(String),
    /// The state store or a destination loop could not do it.
    Unavailable(String),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            AdminError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: Bearer <admin_token>".to_string(),
            ),
            AdminError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            AdminError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            AdminError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
        };
        (
            status,
            Json(json!({"success": false, "error": code, "message": message})),
        )
            .into_response()
    }
}

/// The admin routes (to be merged into the server's router).
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/destinations", get(list))
        .route("/admin/destinations/{name}", get(show))
        .route("/admin/destinations/{name}/pause", post(pause))
        .route("/admin/destinations/{name}/resume", post(resume))
        .route("/admin/destinations/{name}/cursor", post(reset_cursor))
        .route(
            "/admin/destinations/{name}/dlq",
            get(dlq_list).delete(dlq_purge),
        )
        .route("/admin/destinations/{name}/dlq/replay", post(dlq_replay))
        .route("/admin/destinations/{name}/dlq/{id}", get(dlq_show))
        .route_layer(middleware::from_fn_with_state(state.clone(), bearer))
        .with_state(state)
}

async fn bearer(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    if bearer::authorizes(request.headers(), &state.inner.token) {
        next.run(request).await
    } else {
        AdminError::Unauthorized.into_response()
    }
}

async fn status_json(state: &AdminState, d: &DestinationHandle) -> Result<Value, AdminError> {
    let counts = state.store(|s| s.dead_letter_counts()).await?;
    let (dead, replaying) = counts.get(&d.name).copied().unwrap_or_default();
    let mut v = serde_json::to_value(d.status()).expect("status serializes");
    v["dead_letters"] = json!(dead);
    v["replay_queued"] = json!(replaying);
    Ok(v)
}

async fn list(State(state): State<AdminState>) -> Result<Json<Value>, AdminError> {
    let mut out = Vec::new();
    for d in &state.inner.destinations {
        out.push(status_json(&state, d).await?);
    }
    Ok(Json(json!({ "destinations": out })))
}

async fn show(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let d = state.destination(&name)?;
    Ok(Json(status_json(&state, d).await?))
}

async fn control(state: &AdminState, name: &str, c: Control) -> Result<Json<Value>, AdminError> {
    let d = state.destination(name)?;
    if !d.control(c).await {
        return Err(AdminError::Unavailable(format!(
            "destination {name} is not running"
        )));
    }
    Ok(Json(json!({"success": true})))
}

async fn pause(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, AdminError> {
    control(&state, &name, Control::Pause).await
}

async fn resume(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, AdminError> {
    control(&state, &name, Control::Resume).await
}

/// Body of a cursor reset.
#[derive(Deserialize)]
struct ResetBody {
    /// `earliest`, `latest`, an offset or an RFC 3339 time.
    to: Value,
}

async fn reset_cursor(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: Result<Json<ResetBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, AdminError> {
    let Json(body) = body.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    let to = match body.to {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(AdminError::BadRequest(
                "\"to\" must be a string or an offset".into(),
            ))
        }
    };
    let d = state.destination(&name)?.clone();
    let log = state.inner.log.clone();
    let (start, end) = (log.start_offset(), log.durable_end());
    let offset = tokio::task::spawn_blocking(move || {
        resolve_target(&to, start, end, |from| log.reader(from))
    })
    .await
    .map_err(|e| AdminError::Unavailable(crate::error_text::with_causes(&e)))?
    .map_err(AdminError::BadRequest)?;
    if !d.reset(offset).await {
        return Err(AdminError::Unavailable(format!(
            "destination {name} is not running"
        )));
    }
    Ok(Json(json!({"success": true, "cursor": offset})))
}

async fn dlq_list(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, AdminError> {
    state.destination(&name)?;
    let letters = state.store(move |s| s.dead_letters(&name)).await?;
    Ok(Json(json!({ "dead_letters": letters })))
}

async fn dlq_show(
    State(state): State<AdminState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Value>, AdminError> {
    state.destination(&name)?;
    let letters = state.store(move |s| s.dead_letters(&name)).await?;
    let found = letters
        .into_iter()
        .find(|d| d.offset.to_string() == id || d.message_id == id);
    let d = found.ok_or_else(|| AdminError::NotFound(format!("no dead letter {id:?}")))?;
    Ok(Json(
        serde_json::to_value(d).expect("dead letters serialize"),
    ))
}

/// Body of a replay: every dead letter, or the given ids (log offsets).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    #[serde(default)]
    all: bool,
    #[serde(default)]
    ids: Vec<u64>,
}

async fn dlq_replay(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: Result<Json<ReplayBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, AdminError> {
    let Json(body) = body.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    if body.all != body.ids.is_empty() {
        return Err(AdminError::BadRequest(
            "send either {\"all\": true} or {\"ids\": [...]}".into(),
        ));
    }
    state.destination(&name)?;
    let ids = (!body.all).then_some(body.ids);
    let moved = state
        .store(move |s| s.request_replay(&name, ids.as_deref()))
        .await?;
    Ok(Json(json!({"success": true, "queued": moved})))
}

async fn dlq_purge(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, AdminError> {
    state.destination(&name)?;
    let purged = state.store(move |s| s.purge(&name)).await?;
    Ok(Json(json!({"success": true, "purged": purged})))
}
