//! Errors of the log layer: I/O, corruption and the log's own refusals are
//! different variants, because recovery and callers branch on the difference.

use std::io;
use std::path::PathBuf;

/// Everything the write-ahead log can fail with.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An operating-system error while touching a file of the log.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the operation was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Bytes inside sealed (fsynced) data do not validate.
    #[error("corruption in segment {segment} at byte {position}: {reason}")]
    Corruption {
        /// The segment file.
        segment: PathBuf,
        /// Byte position of the first bad byte inside that file.
        position: u64,
        /// What was wrong.
        reason: String,
    },
    /// A previous write or fsync failed; the log refuses all appends until
    /// the process restarts and recovers (an fsync is never retried).
    #[error("the log stopped after a storage failure and refuses appends until restart: {0}")]
    Failed(String),
    /// The log's disk budget or the disk's free-space reserve is exhausted;
    /// nothing of the append was written. Retry once space is freed.
    #[error("the log is full: {0}")]
    Full(String),
    /// The requested offset is no longer (or not yet) in the log.
    #[error("offset {offset} is outside the log [{start}, {end})")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// First offset still held.
        start: u64,
        /// Durable end (next offset to be written).
        end: u64,
    },
    /// A single append was larger than the log accepts.
    #[error("record of {size} bytes exceeds the maximum record size of {max} bytes")]
    RecordTooLarge {
        /// Size asked for.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The path is not a ferry log directory.
    #[error("{path} is not a ferry log: {reason}")]
    NotALog {
        /// The directory.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// Another process (or handle) has the log open for writing.
    #[error("the log in {path} is in use by another ferry process (is `ferry serve` already running on this data directory?)")]
    Locked {
        /// The log directory.
        path: PathBuf,
    },
    /// The log has been shut down.
    #[error("the log is shut down")]
    Closed,
}

impl LogError {
    /// Wraps an `io::Error` with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            path: path.into(),
            source,
        }
    }

    /// Builds a corruption error.
    pub(crate) fn corruption(
        segment: impl Into<PathBuf>,
        position: u64,
        reason: impl Into<String>,
    ) -> Self {
        LogError::Corruption {
            segment: segment.into(),
            position,
            reason: reason.into(),
        }
    }

    /// True when retrying later may succeed without a restart (back-pressure).
    pub fn is_transient(&self) -> bool {
        matches!(self, LogError::Full(_))
    }
}

/// Shorthand for results of the log layer.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
