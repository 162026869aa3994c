//! What every handle, ticket and the writer thread share: the locked
//! [`State`], the counters and positions read without the lock, the first
//! failure, and the ways to wake the writer or wait for it (and, in tests,
//! to hold or crash it).

use super::clock::Clock;
use super::error::Failure;
use super::queue::Op;
use super::state::State;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::SendError;
#[cfg(any(test, feature = "testing"))]
use std::sync::Condvar;
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
    pub hooks: Hooks,
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

/// Tests: what a test asked of the writer.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Hold {
    /// Writing as usual.
    #[default]
    Off,
    /// Stopped between two batches until released.
    Held,
    /// Stopped for good, writing nothing more (a crash).
    Crashed,
}

/// Tests: the writer's hold (see `Dedup::hold_writer` and `Dedup::crash`).
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Default)]
pub(crate) struct Hooks {
    hold: Mutex<Hold>,
    /// Signalled whenever `hold` changes.
    changed: Condvar,
}

#[cfg(any(test, feature = "testing"))]
impl Hooks {
    fn lock(&self) -> MutexGuard<'_, Hold> {
        self.hold.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, hold: Hold) {
        *self.lock() = hold;
        self.changed.notify_all();
    }

    /// The writer stops between two batches until released.
    pub fn hold(&self) {
        self.set(Hold::Held);
    }

    /// The writer stops for good, writing nothing more.
    pub fn crash(&self) {
        self.set(Hold::Crashed);
    }

    /// Ends a hold (not a crash).
    pub fn release(&self) {
        let mut hold = self.lock();
        if *hold == Hold::Held {
            *hold = Hold::Off;
            self.changed.notify_all();
        }
    }

    /// True once the writer must stop without writing anything more.
    pub fn crashed(&self) -> bool {
        *self.lock() == Hold::Crashed
    }

    /// The writer, between two batches: waits while it is held.
    pub fn wait_while_held(&self) {
        let mut hold = self.lock();
        while *hold == Hold::Held {
            hold = self
                .changed
                .wait(hold)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}
