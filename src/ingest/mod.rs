//! HTTP ingestion: the Segment/RudderStack-compatible tracking API. Each
//! request's events go into the write-ahead log in one atomic append, and
//! the 200 is sent only after that append is durable (see docs/api.md).

mod auth;
mod batch;
mod body;
mod canonical;
mod cors;
mod error;
mod handler;
mod health;
mod intake;
mod normalise;
mod pixel;
mod splice;
mod timestamp;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use tokio::sync::Semaphore;

pub use error::IngestError;
pub use normalise::{EventType, MAX_MESSAGE_ID_CHARS};

use crate::config::{Config, Limits};
use crate::dedup::{Dedup, DedupError, DedupHealth, SupervisedDedup};
use crate::log::Log;
use crate::metrics::{Metrics, RequestLabels};
use intake::Shape;

/// Shared state of all handlers; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    /// Where accepted events go.
    log: Log,
    /// Write key → source name.
    sources: auth::Sources,
    /// Size caps, timeouts and the `Retry-After` value.
    limits: Limits,
    /// One permit per request being processed; bounds memory held by bodies.
    in_flight: Arc<Semaphore>,
    /// The last append was refused for lack of space; cleared by the next
    /// success. Only for `/health`: appends are still attempted, so ingestion
    /// resumes by itself once space is freed.
    full: AtomicBool,
    /// Bearer token `/metrics` requires, if any.
    metrics_token: Option<String>,
    /// CORS settings, kept for building the router.
    cors: crate::config::Cors,
    /// Where request and event counts go (shared with delivery).
    metrics: Arc<Metrics>,
    /// Duplicate suppression by (source, messageId); `None` when disabled.
    dedup: Option<Arc<SupervisedDedup>>,
}

impl AppState {
    /// Builds the state from a validated configuration whose sources are
    /// final (see [`Config::ensure_dev_source`]), an open log, the metrics
    /// it reports into, and the dedup index every request is checked
    /// against (`None` when dedup is off).
    pub fn new(
        config: &Config,
        log: Log,
        metrics: Arc<Metrics>,
        dedup: Option<Arc<SupervisedDedup>>,
    ) -> AppState {
        AppState {
            inner: Arc::new(Shared {
                log,
                sources: auth::Sources::new(&config.sources),
                limits: config.limits.clone(),
                in_flight: Arc::new(Semaphore::new(config.limits.max_in_flight)),
                full: AtomicBool::new(false),
                metrics_token: config.metrics_token.clone(),
                cors: config.cors.clone(),
                metrics,
                dedup,
            }),
        }
    }

    fn log(&self) -> &Log {
        &self.inner.log
    }

    /// The dedup index for one request: `None` when dedup is off, an
    /// error while the index is stopped.
    fn dedup(&self) -> Option<Result<Dedup, DedupError>> {
        self.inner.dedup.as_ref().map(|slot| slot.current())
    }

    /// Whether dedup takes requests (`None` when it is off).
    fn dedup_health(&self) -> Option<DedupHealth> {
        self.inner.dedup.as_ref().map(|slot| slot.health())
    }

    /// The metrics this server reports into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.inner.limits.body_timeout_secs)
    }

    fn set_full(&self, full: bool) {
        self.inner.full.store(full, Ordering::Relaxed);
    }

    fn is_full(&self) -> bool {
        self.inner.full.load(Ordering::Relaxed)
    }

    fn requests_in_flight(&self) -> usize {
        self.inner.limits.max_in_flight - self.inner.in_flight.available_permits()
    }
}

/// All routes of the ingestion API.
pub fn router(state: AppState) -> Router {
    let mut ingest = Router::new();
    for (kind, long, short) in [
        (EventType::Track, "/v1/track", "/v1/t"),
        (EventType::Identify, "/v1/identify", "/v1/i"),
        (EventType::Page, "/v1/page", "/v1/p"),
        (EventType::Screen, "/v1/screen", "/v1/s"),
        (EventType::Group, "/v1/group", "/v1/g"),
        (EventType::Alias, "/v1/alias", "/v1/a"),
    ] {
        ingest = ingest
            .route(long, events(Shape::Single(kind)))
            .route(short, events(Shape::Single(kind)));
    }
    for path in ["/v1/batch", "/v1/import", "/v1/b", "/beacon/v1/batch"] {
        ingest = ingest.route(path, events(Shape::Batch));
    }
    let ingest = ingest
        .route("/v1/m", post(handler::metrics))
        .route("/pixel/v1/track", get(pixel::track))
        .route("/pixel/v1/page", get(pixel::page))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            limit_in_flight,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), observe));
    Router::new()
        .merge(ingest)
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { IngestError::NotFound })
        .method_not_allowed_fallback(|| async { IngestError::MethodNotAllowed })
        .layer(cors::layer(&state.inner.cors))
        .with_state(state)
}

/// The route of an event endpoint whose body has the given shape.
fn events(shape: Shape) -> MethodRouter<AppState> {
    post(
        move |state: State<AppState>, headers: HeaderMap, query: RawQuery, body: Body| {
            handler::handle(shape, state, headers, query, body)
        },
    )
}

tokio::task_local! {
    /// The source of the request being handled, once authenticated.
    static REQUEST_SOURCE: Arc<OnceLock<Arc<str>>>;
}

/// Records the authenticated source of the current request (for metrics).
pub(crate) fn note_source(source: &Arc<str>) {
    let _ = REQUEST_SOURCE.try_with(|slot| slot.set(source.clone()));
}

/// Counts every ingest request by source and status, and times it.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let slot = Arc::new(OnceLock::new());
    let started = Instant::now();
    let response = REQUEST_SOURCE.scope(slot.clone(), next.run(request)).await;
    let metrics = state.metrics();
    metrics
        .request_seconds
        .observe(started.elapsed().as_secs_f64());
    let labels = RequestLabels {
        source: slot.get().map_or("unknown", |s| s).to_string(),
        status: response.status().as_u16().to_string(),
    };
    metrics.requests.get_or_create(&labels).inc();
    response
}

/// `GET /metrics`: Prometheus text exposition; with `metrics_token`
/// configured, only for `Authorization: Bearer <metrics_token>` (401 JSON
/// otherwise).
async fn metrics_text(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.inner.metrics_token {
        if !crate::bearer::authorizes(&headers, token) {
            let body = serde_json::json!({
                "success": false,
                "code": "unauthorized",
                "error": "send Authorization: Bearer <metrics_token>",
            });
            return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        }
    }
    let dedup = state.inner.dedup.as_ref().and_then(|slot| slot.stats());
    let text = state.metrics().render(&state.log().stats(), dedup.as_ref());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Refuses a request with 429 + `Retry-After` when `max_in_flight` requests
/// are already being processed, instead of queueing without bound.
async fn limit_in_flight(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Ok(_permit) = state.inner.in_flight.clone().try_acquire_owned() else {
        return IngestError::Overloaded {
            retry_after: state.limits().retry_after_secs,
        }
        .into_response();
    };
    next.run(request).await
}
