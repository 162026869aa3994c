//! What every handle, ticket and the writer thread share: the locked
//! [`State`], the counters and positions read without the lock, the first
//! failure, and the ways to wake the writer or wait for it.

use super::clock::Clock;
use super::error::Failure;
use super::queue::Op;
use super::state::State;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::SendError;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use tokio::sync::Notify;

/// Shared by every handle, ticket and the writer.
pub(crate) struct Shared {
    /// The mutable part.
    pub state: Mutex<State>,
    /// Duplicates answered since the index was created (persisted).
    pub duplicates: AtomicU64,
    /// The checkpoint of the last durable redb commit: what a restart resumes from.
    pub durable_checkpoint: AtomicU64,
    /// Set once, by the first index write failure.
    pub failure: OnceLock<Failure>,
    /// Woken whenever the writer retires pending ids (back-pressure) or stops.
    pub drained: Notify,
    /// Where time comes from.
    pub clock: Arc<dyn Clock>,
    /// The window in ms.
    pub window_ms: u64,
    /// Pending ids above which `begin` waits for the writer.
    pub max_pending: usize,
    /// The writer thread, unparked by whoever sends it an op that waits for
    /// the write (it lingers parked, not woken by ordinary commits).
    pub writer_thread: OnceLock<std::thread::Thread>,
    /// Tests: holding or crashing the writer.
    #[cfg(any(test, feature = "testing"))]
    pub hooks: super::test_hooks::Hooks,
}

impl Shared {
    /// Locks the state; a panic elsewhere does not make it unusable (every
    /// change under the lock leaves it consistent).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the writer's linger: it writes what is queued now.
    pub fn wake_writer(&self) {
        if let Some(t) = self.writer_thread.get() {
            t.unpark();
        }
    }

    /// Sends an op someone waits for, and wakes the writer for it. Fails
    /// only once the writer has stopped.
    pub fn send_urgent(&self, op: Op) -> Result<(), SendError<Op>> {
        let sent = self.lock().tx.send(op);
        self.wake_writer();
        sent
    }

    /// Waits until `ready` gives a value, looking again whenever the writer
    /// retires pending ids or stops.
    pub async fn until<T>(&self, mut ready: impl FnMut() -> Option<T>) -> T {
        loop {
            // Registered before looking, so a wake-up in between is not lost.
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = ready() {
                return v;
            }
            notified.await;
        }
    }
}
