//! Test hooks, compiled only for tests (`cfg(test)` or the `testing` feature
//! the test targets turn on): writing without an fsync, holding the writer
//! between batches, and crashing it.

use super::queue::Op;
use super::{Dedup, DedupError};
use std::sync::mpsc;

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
        shared.hooks.hold();
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
        shared.hooks.crash();
        let _ = shared.send_urgent(Op::Crash);
        if let Some(h) = self.inner.writer.lock().unwrap().take() {
            let _ = h.join();
        }
    }
}
