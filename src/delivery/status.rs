//! A running destination as operators see it: its live status (admin API,
//! metrics) and the controls it obeys (pause, resume, cursor reset).

use serde::Serialize;
use std::sync::Mutex;
use tokio::sync::{mpsc, oneshot};

/// What an operator can ask a running destination to do.
#[derive(Debug)]
pub enum Control {
    /// Stop starting requests (those in flight finish).
    Pause,
    /// Start requests again.
    Resume,
    /// Finish what is in flight, forget the window, and continue from `to`.
    Reset {
        /// The new cursor.
        to: u64,
        /// Answered once the new cursor is committed.
        done: oneshot::Sender<()>,
    },
}

/// Live status of one destination.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DestinationStatus {
    /// Destination name.
    pub name: String,
    /// `webhook`, `file`, `segment`, `nats` or `kafka`.
    pub kind: String,
    /// Next offset to deliver (in memory; committed at most 100 ms later).
    pub cursor: u64,
    /// Last committed cursor.
    pub committed_cursor: u64,
    /// Events between the cursor and the log's durable end.
    pub lag_events: u64,
    /// Age in seconds of the oldest undelivered event (0 when caught up).
    pub lag_seconds: f64,
    /// How fast the backlog grew over the last minute, in events per second
    /// (negative while it shrinks).
    pub backlog_growth_per_second: f64,
    /// Events in requests in flight.
    pub in_flight: usize,
    /// Users whose head event is waiting out a backoff.
    pub retrying_users: usize,
    /// Paused: by an operator, or by itself when the destination refused its
    /// credentials (see `pause_reason`). Events wait, undelivered.
    pub paused: bool,
    /// Why it is paused, and how to resume.
    pub pause_reason: Option<String>,
    /// The last attempt failed.
    pub failing: bool,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Set when the loop stopped on an error it cannot get past.
    pub stopped: Option<String>,
}

/// Shared between a destination's loop and the admin API.
pub struct DestinationHandle {
    /// Destination name.
    pub name: String,
    status: Mutex<DestinationStatus>,
    control: mpsc::Sender<Control>,
}

impl DestinationHandle {
    pub(crate) fn new(name: &str, kind: &str) -> (DestinationHandle, mpsc::Receiver<Control>) {
        let (tx, rx) = mpsc::channel(8);
        let status = DestinationStatus {
            name: name.to_string(),
            kind: kind.to_string(),
            ..DestinationStatus::default()
        };
        (
            DestinationHandle {
                name: name.to_string(),
                status: Mutex::new(status),
                control: tx,
            },
            rx,
        )
    }

    /// A snapshot of the status.
    pub fn status(&self) -> DestinationStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut DestinationStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Sends a control; false when the destination's loop is gone.
    pub async fn control(&self, c: Control) -> bool {
        self.control.send(c).await.is_ok()
    }

    /// Resets the cursor and waits until the new cursor is committed.
    pub async fn reset(&self, to: u64) -> bool {
        let (done, rx) = oneshot::channel();
        self.control(Control::Reset { to, done }).await && rx.await.is_ok()
    }
}
