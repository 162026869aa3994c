//! What the requests hand the writer thread: [`Op`]s over its channel, and
//! the [`Inbox`] of committed ids it takes as a whole. Sent under the state
//! lock, so the writer sees them in the order they happened.

use super::error::DedupError;
use super::generations::Change;
use super::key::Key;
use std::ops::Range;
use std::sync::mpsc::SyncSender;

/// Work for the writer, applied in the order sent.
pub(crate) enum Op {
    /// A generation started, was sealed or dropped.
    Change(Change),
    /// Ids made durable by the WAL, and the WAL offsets their appends covered.
    Insert(Inbox),
    /// Committed ids wait in the state's inbox (taken with the batch).
    Wake,
    /// Half of `max_pending` is pending: write now, without lingering.
    Urge,
    /// WAL offsets that carry no id (or hold only already-indexed ids).
    Skip(Range<u64>),
    /// Write what is queued (durably if `durable`) and answer.
    Flush {
        reply: SyncSender<Result<(), DedupError>>,
        durable: bool,
    },
    /// Tests: write what is queued, answer (so that the caller knows later
    /// commits are not in this batch), then wait until released or crashed.
    #[cfg(any(test, feature = "testing"))]
    Hold(SyncSender<()>),
    /// Last operation: persist stale filters, commit durably, stop.
    Close,
    /// Tests: stop at once without writing what is queued (a crash).
    #[cfg(any(test, feature = "testing"))]
    Crash,
}

impl Op {
    /// Someone waits for this to be processed: write without lingering.
    pub fn urgent(&self) -> bool {
        match self {
            Op::Urge | Op::Flush { .. } | Op::Close => true,
            #[cfg(any(test, feature = "testing"))]
            Op::Hold(_) | Op::Crash => true,
            Op::Change(_) | Op::Insert(_) | Op::Wake | Op::Skip(_) => false,
        }
    }
}

/// Committed ids not yet handed to the writer, and the WAL offsets they
/// complete. Commits append to it in place rather than each sending its own
/// message (an allocation, a channel send and a free on another thread
/// each); the writer swaps the whole inbox out for its emptied spare.
#[derive(Default)]
pub(crate) struct Inbox {
    /// (generation, key, first-seen ms) of each id.
    pub entries: Vec<(u64, Key, u64)>,
    /// The WAL offsets of the appends that committed them.
    pub offsets: Vec<Range<u64>>,
}

impl Inbox {
    /// True when it holds neither ids nor offsets.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.offsets.is_empty()
    }
}
