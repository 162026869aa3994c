//! The webhook receiver of benches/e2e_load.sh: an axum server on one
//! current-thread runtime (it shares the machine's cores with ferry and the
//! load generator, so it does as little as it can). Every POST, to any path,
//! is answered `200` with an empty body once read; the events in it are
//! counted as the occurrences of `"messageId"` (a batched body
//! `{"batch":[…]}` holds one per event, a single-event body one).
//! `GET /count` answers `requests N events N bytes N` (totals since start),
//! which the script reads before and after a run to cross-check ferry's
//! `ferry_delivery_delivered_total`.
//!
//! Serves only when FERRY_SINK_LISTEN is set (`127.0.0.1:PORT`), so that
//! `cargo bench` does not hang on it; prints `webhook sink listening on
//! http://ADDR` once bound.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const NEEDLE: &str = "\"messageId\"";

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
}

/// Events in a body: occurrences of `"messageId"`. The standard library's
/// substring search runs at a few GB/s on these bodies (a byte-window scan
/// at about 0.5 GB/s would cost a visible share of a core at 200k events/s).
fn count_events(body: &[u8]) -> u64 {
    match std::str::from_utf8(body) {
        Ok(text) => text.matches(NEEDLE).count() as u64,
        Err(_) => body
            .windows(NEEDLE.len())
            .filter(|w| *w == NEEDLE.as_bytes())
            .count() as u64,
    }
}

async fn receive(State(c): State<Arc<Counts>>, body: Bytes) -> StatusCode {
    c.requests.fetch_add(1, Ordering::Relaxed);
    c.events.fetch_add(count_events(&body), Ordering::Relaxed);
    c.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    StatusCode::OK
}

async fn count(State(c): State<Arc<Counts>>) -> String {
    format!(
        "requests {} events {} bytes {}\n",
        c.requests.load(Ordering::Relaxed),
        c.events.load(Ordering::Relaxed),
        c.bytes.load(Ordering::Relaxed)
    )
}

fn main() {
    let Ok(addr) = std::env::var("FERRY_SINK_LISTEN") else {
        eprintln!("webhook_sink: set FERRY_SINK_LISTEN=127.0.0.1:PORT to serve (used by benches/e2e_load.sh)");
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("webhook_sink: cannot listen on {addr}: {e}");
                std::process::exit(2);
            }
        };
        println!(
            "webhook sink listening on http://{}",
            listener.local_addr().expect("a bound address")
        );
        let app = Router::new()
            .route("/count", get(count))
            .fallback(post(receive))
            // ferry's batches stay under batch_max_bytes (512 KiB by default,
            // configurable): take any size rather than answer 413.
            .layer(DefaultBodyLimit::disable())
            .with_state(Arc::new(Counts::default()));
        axum::serve(listener, app).await.expect("the sink serves");
    });
}
