//! Test hooks, compiled only for tests (`cfg(test)` or the `testing` feature
//! the test targets turn on): writing without an fsync, holding the writer
//! between batches, and crashing it.

use super::queue::Op;
use super::{Dedup, DedupError};
use std::sync::mpsc;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// What a test asked of the writer.
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

/// The writer's test hold, shared by the handles and the writer.
#[derive(Debug, Default)]
pub(crate) struct Hooks {
    hold: Mutex<Hold>,
    /// Signalled whenever `hold` changes.
    changed: Condvar,
}

impl Hooks {
    fn lock(&self) -> MutexGuard<'_, Hold> {
        self.hold.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, hold: Hold) {
        *self.lock() = hold;
        self.changed.notify_all();
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

impl Dedup {
    /// Tests only: waits until everything queued is written *without* an
    /// fsync (`Durability::None`), as the writer does between syncs.
    #[doc(hidden)]
    pub fn write_non_durable(&self) -> Result<(), DedupError> {
        self.write_queued(false)
    }

    /// Tests only: the writer finishes what is queued, then stops writing
    /// until [`Dedup::release_writer`] (commits queue up meanwhile, as they
    /// would while a batch is being written). Returns once the writer holds:
    /// a commit made after this call is not written until the release
    /// (blocking).
    #[doc(hidden)]
    pub fn hold_writer(&self) {
        let shared = &self.inner.shared;
        shared.hooks.set(Hold::Held);
        let (ack, held) = mpsc::sync_channel(1);
        // A send error means the writer has stopped: it writes nothing anyway.
        if shared.send_urgent(Op::Hold(ack)).is_ok() {
            let _ = held.recv();
        }
    }

    /// Tests only: undoes [`Dedup::hold_writer`].
    #[doc(hidden)]
    pub fn release_writer(&self) {
        self.inner.shared.hooks.release();
    }

    /// Tests only: stops the writer at once, dropping what it has not yet
    /// written, as a crash would; the handle is then closed without the
    /// final write. Reopen and [`Dedup::reindex`] to recover.
    #[doc(hidden)]
    pub fn crash(self) {
        let shared = &self.inner.shared;
        // Set before the op is sent: a writer that takes its batch before
        // the op arrives must not write it either.
        shared.hooks.set(Hold::Crashed);
        let _ = shared.send_urgent(Op::Crash);
        if let Some(h) = self.inner.writer.lock().unwrap().take() {
            let _ = h.join();
        }
    }
}
