//! The webhook destination the tests deliver to: an HTTP server on
//! 127.0.0.1 that records the events it accepted, in order, and answers as
//! the test scripts it (statuses per event and try, a flaky share, delays,
//! `Retry-After`, or no answer at all). It also plays a Segment-compatible
//! upstream: `POST /v1/batch`, gzip bodies, every request recorded.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How the webhook answers one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// `None`: the request is held open and never answered (a black hole).
    status: Option<u16>,
    retry_after: Option<&'static str>,
    /// How long to wait before answering.
    delay: Duration,
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::status(200)
    }

    pub fn status(status: u16) -> Reply {
        Reply {
            status: Some(status),
            retry_after: None,
            delay: Duration::ZERO,
        }
    }

    pub fn hang() -> Reply {
        Reply {
            status: None,
            ..Reply::ok()
        }
    }

    /// With a `Retry-After` header of `value`.
    pub fn retry_after(self, value: &'static str) -> Reply {
        Reply {
            retry_after: Some(value),
            ..self
        }
    }

    /// Answered only after `delay`.
    pub fn after(self, delay: Duration) -> Reply {
        Reply { delay, ..self }
    }
}

/// The reply for an event without a scripted one left, from its messageId
/// and its try (1 for the first). `None` leaves the answer to the request's
/// other events; a request no event decides is answered 200.
pub type Rule = Box<dyn Fn(&str, u32) -> Option<Reply> + Send + Sync>;

/// Fails `share` percent of the first three tries of each event with 500,
/// chosen by a hash of messageId and try: random-looking, yet the same on
/// every run.
pub fn flaky(share: u64) -> impl Fn(&str, u32) -> Option<Reply> + Send + Sync + 'static {
    move |id, try_number| {
        let h = id.bytes().fold(u64::from(try_number), |a, b| {
            a.wrapping_mul(31).wrapping_add(u64::from(b))
        });
        (h % 100 < share && try_number < 4).then(|| Reply::status(500))
    }
}

/// MessageIds in the order they were delivered (redeliveries included), and
/// a way to wait for more. The webhook keeps one; an in-process sink may too.
#[derive(Clone)]
pub struct Deliveries(Arc<watch::Sender<Vec<String>>>);

impl Default for Deliveries {
    fn default() -> Self {
        Deliveries(Arc::new(watch::Sender::new(Vec::new())))
    }
}

impl Deliveries {
    pub fn push(&self, ids: impl IntoIterator<Item = String>) {
        self.0.send_modify(|seen| seen.extend(ids));
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.0.borrow().clone()
    }

    pub fn len(&self) -> usize {
        self.0.borrow().len()
    }

    /// A receiver that sees every delivery, for tasks that wait on their own.
    pub fn subscribe(&self) -> watch::Receiver<Vec<String>> {
        self.0.subscribe()
    }

    /// Waits until `done` holds for the deliveries; fails after a minute.
    pub async fn wait_until(&self, done: impl Fn(&[String]) -> bool) {
        self.wait_within(Duration::from_secs(60), done).await
    }

    /// Waits until `done` holds, for at most `within` (virtual time under
    /// a paused clock).
    pub async fn wait_within(&self, within: Duration, done: impl Fn(&[String]) -> bool) {
        let mut rx = self.subscribe();
        let reached = tokio::time::timeout(within, rx.wait_for(|seen| done(seen))).await;
        if reached.is_err() {
            let seen = self.snapshot();
            let tail = &seen[seen.len().saturating_sub(50)..];
            panic!(
                "not reached within {within:?}; {} deliveries, the last {}: {tail:?}",
                seen.len(),
                tail.len()
            );
        }
    }
}

/// Each id's first delivery, in delivery order.
pub fn first_deliveries(seen: &[String]) -> Vec<&String> {
    let mut once = std::collections::HashSet::new();
    seen.iter().filter(|id| once.insert(*id)).collect()
}

/// The messageIds in a webhook body: one event, or `{"batch": [...]}`.
pub fn message_ids(body: &[u8]) -> Vec<String> {
    let v: Value = serde_json::from_slice(body).expect("ferry sends JSON");
    ids_of(&v)
}

/// The messageIds in a parsed body: one event, or `{"batch": [...]}`.
pub fn ids_of(v: &Value) -> Vec<String> {
    let events = match v.get("batch") {
        Some(batch) => batch.as_array().unwrap().clone(),
        None => vec![v.clone()],
    };
    events
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().to_owned())
        .collect()
}

/// A webhook mock, set up by [`WebhookBuilder`]; clones share it. It keeps
/// the events it answered 2xx, in order, and counts every request and try.
#[derive(Clone)]
pub struct Webhook {
    addr: SocketAddr,
    hook: Arc<Hook>,
    /// Events answered 2xx, in the order of the answers.
    pub delivered: Deliveries,
}

/// One request as the webhook received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// When it arrived (tokio's clock).
    pub at: Instant,
    pub headers: HeaderMap,
    /// Body bytes as sent (compressed when `Content-Encoding: gzip`).
    pub wire_bytes: usize,
    /// The body as JSON, inflated.
    pub json_bytes: usize,
    pub body: Value,
    /// The status it was answered with (`None`: never answered).
    pub status: Option<u16>,
}

impl Received {
    /// The messageIds it carried.
    pub fn ids(&self) -> Vec<String> {
        ids_of(&self.body)
    }
}

/// What the handler reads and records.
struct Hook {
    script: Mutex<HashMap<String, VecDeque<Reply>>>,
    rule: Option<Rule>,
    /// Requests per messageId, whatever their answer.
    tries: Mutex<HashMap<String, u32>>,
    /// Requests received, whatever their answer.
    requests: AtomicUsize,
    /// The first request's headers.
    first_headers: Mutex<Option<HeaderMap>>,
    /// Every request, in order of arrival.
    received: Mutex<Vec<Received>>,
    delivered: Deliveries,
}

/// Scripts a [`Webhook`], then starts it.
#[derive(Default)]
pub struct WebhookBuilder {
    script: HashMap<String, VecDeque<Reply>>,
    rule: Option<Rule>,
}

impl WebhookBuilder {
    /// The replies to the event `id`'s next tries, one each, in order.
    pub fn script(mut self, id: &str, replies: impl IntoIterator<Item = Reply>) -> Self {
        self.script
            .entry(id.to_owned())
            .or_default()
            .extend(replies);
        self
    }

    /// How to answer events without a scripted reply left (see [`Rule`]).
    pub fn otherwise(
        mut self,
        rule: impl Fn(&str, u32) -> Option<Reply> + Send + Sync + 'static,
    ) -> Self {
        self.rule = Some(Box::new(rule));
        self
    }

    /// Listens on a free port of 127.0.0.1.
    pub async fn start(self) -> Webhook {
        self.start_on(0).await
    }

    /// Listens on 127.0.0.1:`port` (0: any free one).
    pub async fn start_on(self, port: u16) -> Webhook {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        self.serve(listener)
    }

    /// Serves on `listener`, e.g. one that speaks TLS.
    pub fn serve<L>(self, listener: L) -> Webhook
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
    {
        let addr = listener.local_addr().unwrap();
        let delivered = Deliveries::default();
        let hook = Arc::new(Hook {
            script: Mutex::new(self.script),
            rule: self.rule,
            tries: Mutex::default(),
            requests: AtomicUsize::new(0),
            first_headers: Mutex::default(),
            received: Mutex::default(),
            delivered: delivered.clone(),
        });
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(answer))
            .route("/v1/batch", axum::routing::post(answer))
            .with_state(hook.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Webhook {
            addr,
            hook,
            delivered,
        }
    }
}

impl Webhook {
    pub fn builder() -> WebhookBuilder {
        WebhookBuilder::default()
    }

    /// A webhook that answers 200 to everything.
    pub async fn start() -> Webhook {
        Webhook::builder().start().await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The destination URL: `http://{addr}/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Requests that carried the event `id`, whatever their answer.
    pub fn tries(&self, id: &str) -> u32 {
        self.hook
            .tries
            .lock()
            .unwrap()
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    /// Whether any event was sent more than once.
    pub fn retried_any(&self) -> bool {
        self.hook.tries.lock().unwrap().values().any(|n| *n > 1)
    }

    /// Requests received, answered or not.
    pub fn requests(&self) -> usize {
        self.hook.requests.load(Ordering::SeqCst)
    }

    /// The first request's headers.
    pub fn first_headers(&self) -> HeaderMap {
        let first = self.hook.first_headers.lock().unwrap().clone();
        first.expect("no request yet")
    }

    /// Every request received so far, in order of arrival.
    pub fn received(&self) -> Vec<Received> {
        self.hook.received.lock().unwrap().clone()
    }

    /// The base URL of the Segment-compatible API: `http://{addr}`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The body as sent, inflated when it is gzip.
fn inflate(headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    let gzip = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    if !gzip {
        return body.to_vec();
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("a gzip body inflates");
    out
}

async fn answer(
    State(hook): State<Arc<Hook>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let arrived = Instant::now();
    let json = inflate(&headers, &body);
    let ids = message_ids(&json);
    hook.requests.fetch_add(1, Ordering::SeqCst);
    hook.first_headers
        .lock()
        .unwrap()
        .get_or_insert(headers.clone());
    let mut reply = Reply::ok();
    for id in &ids {
        let try_number = {
            let mut tries = hook.tries.lock().unwrap();
            let n = tries.entry(id.clone()).or_default();
            *n += 1;
            *n
        };
        let scripted = hook
            .script
            .lock()
            .unwrap()
            .get_mut(id)
            .and_then(|q| q.pop_front());
        let decided = scripted.or_else(|| hook.rule.as_ref().and_then(|r| r(id, try_number)));
        if let Some(r) = decided {
            reply = r;
        }
    }
    hook.received.lock().unwrap().push(Received {
        at: arrived,
        headers,
        wire_bytes: body.len(),
        json_bytes: json.len(),
        body: serde_json::from_slice(&json).expect("ferry sends JSON"),
        status: reply.status,
    });
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let Some(status) = reply.status else {
        return std::future::pending().await;
    };
    // Recorded before the answer leaves: once ferry reads it, it may send
    // the user's next event at once.
    if status < 300 {
        hook.delivered.push(ids);
    }
    let mut response = (
        StatusCode::from_u16(status).unwrap(),
        format!("status {status}"),
    )
        .into_response();
    if let Some(after) = reply.retry_after {
        response
            .headers_mut()
            .insert("retry-after", after.parse().unwrap());
    }
    response
}
