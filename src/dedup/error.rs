//! Errors of the dedup layer. The index being unusable is its own variant so
//! the ingest layer can answer 503 (retry later) instead of guessing; damaged
//! data (ferry's own checks or redb's) is [`DedupError::Corruption`], apart
//! from I/O and the other errors of redb ([`DedupError::Index`]).

use std::path::{Path, PathBuf};

/// Everything the dedup index can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    /// redb reported an error other than corruption (I/O, storage, a
    /// transaction or table error).
    #[error("dedup index {path}: {source}")]
    Index {
        /// The index file.
        path: PathBuf,
        /// The underlying error (boxed: redb's error type is large).
        #[source]
        source: Box<redb::Error>,
    },
    /// Another process (usually a running server) holds the index open.
    #[error("dedup index {0} is in use by another process (a running server?)")]
    InUse(PathBuf),
    /// The index was not closed cleanly and needs recovery, which a read-only
    /// open does not perform: start the server (it recovers on open).
    #[error("dedup index {0} needs recovery after an unclean shutdown; open it read-write (start the server) first")]
    NeedsRecovery(PathBuf),
    /// The index holds data ferry (or redb) cannot interpret.
    #[error("dedup index {path} is corrupt: {reason}")]
    Corruption {
        /// The index file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A previous index write failed; dedup refuses new requests until the
    /// process restarts and re-indexes from the write-ahead log.
    #[error("the dedup index stopped after a write failure; restart to recover: {0}")]
    Failed(String),
    /// A previous index write found the disk full; dedup refuses new
    /// requests until the index is reopened and re-indexed from the
    /// write-ahead log, which the server does once space is freed.
    #[error("the dedup index stopped: the disk is full ({0})")]
    NoSpace(String),
    /// Opening the index could not get what it runs on: memory for the
    /// bloom filters, or its writer thread.
    #[error("{what}: {source}")]
    Start {
        /// What failed.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The options are unusable.
    #[error("invalid dedup options: {0}")]
    InvalidOptions(String),
}

impl DedupError {
    /// True when the error is the file system being full (ENOSPC): the
    /// index file is intact at its last commit, and reopening it once space
    /// is freed recovers it, as a restart would.
    pub fn is_no_space(&self) -> bool {
        match self {
            DedupError::NoSpace(_) => true,
            DedupError::Index { source, .. } => {
                matches!(source.as_ref(), redb::Error::Io(e) if crate::disk::is_no_space(e))
            }
            _ => false,
        }
    }

    /// Wraps any redb error with the index path.
    pub(crate) fn index(path: &Path, e: impl Into<redb::Error>) -> DedupError {
        let source: redb::Error = e.into();
        match source {
            redb::Error::DatabaseAlreadyOpen => DedupError::InUse(path.to_path_buf()),
            redb::Error::RepairAborted => DedupError::NeedsRecovery(path.to_path_buf()),
            // redb's corruption is a sentence, no source to keep.
            redb::Error::Corrupted(reason) => DedupError::Corruption {
                path: path.to_path_buf(),
                reason,
            },
            source => DedupError::Index {
                path: path.to_path_buf(),
                source: Box::new(source),
            },
        }
    }
}

/// Names the index file on an error of redb (or of the runs' layout):
/// `tx.open_table(META).at(path)?`.
pub(crate) trait AtPath<T> {
    /// The result, its error about the index at `path`.
    fn at(self, path: &Path) -> Result<T, DedupError>;
}

impl<T, E: Into<redb::Error>> AtPath<T> for Result<T, E> {
    fn at(self, path: &Path) -> Result<T, DedupError> {
        self.map_err(|e| DedupError::index(path, e))
    }
}

/// Why the writer stopped: after its first failed write, the index takes no
/// more requests (the handle must be reopened). The error itself is logged
/// when it happens; what is kept is its sentence, which every later request
/// gets back as [`DedupError::NoSpace`] or [`DedupError::Failed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The error, as a sentence.
    pub reason: String,
    /// The disk was full: reopening the index once space is freed recovers
    /// it. Any other failure needs a restart (and maybe an operator).
    pub no_space: bool,
}

impl Failure {
    /// The failure of `e`.
    pub(crate) fn of(e: &DedupError) -> Failure {
        Failure {
            // A stopped index's own error keeps its reason, not nested.
            reason: match e {
                DedupError::Failed(reason) | DedupError::NoSpace(reason) => reason.clone(),
                e => e.to_string(),
            },
            no_space: e.is_no_space(),
        }
    }

    /// The error requests get while the index is stopped.
    pub(crate) fn to_error(&self) -> DedupError {
        if self.no_space {
            DedupError::NoSpace(self.reason.clone())
        } else {
            DedupError::Failed(self.reason.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_full_disk_counts_as_no_space() {
        let path = std::path::Path::new("/d/dedup.redb");
        let io = |e: std::io::Error| DedupError::index(path, redb::Error::Io(e));
        assert!(io(std::io::Error::from_raw_os_error(28)).is_no_space());
        assert!(io(std::io::ErrorKind::StorageFull.into()).is_no_space());
        assert!(DedupError::NoSpace("full".into()).is_no_space());
        assert!(!io(std::io::Error::from_raw_os_error(5)).is_no_space());
        assert!(!DedupError::Failed("EIO".into()).is_no_space());
        assert!(!DedupError::index(path, redb::Error::Corrupted("x".into())).is_no_space());
    }

    #[test]
    fn corruption_is_told_from_io_and_io_keeps_its_source() {
        use std::error::Error;
        let path = std::path::Path::new("/d/dedup.redb");
        let corrupt = DedupError::index(path, redb::StorageError::Corrupted("bad page".into()));
        assert!(matches!(&corrupt, DedupError::Corruption { reason, .. } if reason == "bad page"));
        let eio = || redb::Error::Io(std::io::Error::from_raw_os_error(5));
        let io = DedupError::index(path, eio());
        assert!(matches!(io, DedupError::Index { .. }));
        let source = io.source().map(|s| s.to_string());
        assert_eq!(source, Some(eio().to_string()));
    }
}
