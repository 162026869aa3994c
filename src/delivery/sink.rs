//! Where a destination's requests go: the `Sink` trait (one request carrying
//! one or more events → one outcome), so the delivery loop can be tested
//! against scripted sinks without a network.

use super::backoff::Outcome;
use super::event::LoggedEvent;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;

/// A boxed future of an outcome.
pub type SendFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// One destination's transport.
pub trait Sink: Send + Sync + 'static {
    /// Delivers `events` in one request (one event when `batch_size` is 1).
    /// The events belong to different users, so a sink may answer each on
    /// its own ([`Outcome::PerEvent`]).
    fn send(&self, events: Vec<LoggedEvent>) -> SendFuture;

    /// The bytes this sink has sent, when it counts them.
    fn traffic(&self) -> Option<&Traffic> {
        None
    }
}

/// Bytes a sink has sent, for the metrics.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Request bodies as JSON, before any compression.
    pub json_bytes: AtomicU64,
    /// Request bodies as sent (after compression).
    pub wire_bytes: AtomicU64,
}

/// The request body for `events`: the event itself when there is one and
/// the destination is unbatched, else `{"batch": [...]}`.
pub fn body(events: &[LoggedEvent], batched: bool) -> Vec<u8> {
    if !batched && events.len() == 1 {
        return events[0].body.to_vec();
    }
    let mut out = Vec::with_capacity(events.iter().map(|e| e.body.len() + 1).sum::<usize>() + 16);
    out.extend_from_slice(b"{\"batch\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&e.body);
    }
    out.extend_from_slice(b"]}");
    out
}
