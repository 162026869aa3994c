//! Errors of the state store. A full disk, other I/O, corruption and other
//! database errors are different variants, because callers branch on the
//! difference (a full disk is waited out); each names the file, and keeps
//! redb's error as its source.

use std::io;
use std::path::{Path, PathBuf};

/// Everything the state store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (a running `ferry serve`) holds the file.
    #[error("{0} is in use by another ferry process (is `ferry serve` running on this data directory? stop it first)")]
    Locked(PathBuf),
    /// The disk is full: nothing was written. The store reopens its file at
    /// the next operation, which succeeds once space is freed.
    #[error("the disk holding state store {path} is full")]
    NoSpace {
        /// The file.
        path: PathBuf,
        /// The write that found the disk full; none when an earlier one did
        /// and the file is still closed because of it.
        #[source]
        source: Option<io::Error>,
    },
    /// An I/O error other than a full disk. redb refuses every later call
    /// on the file until ferry restarts.
    #[error("I/O error on state store {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file's bytes do not validate: it is damaged, or not a redb file.
    #[error("state store {path} is corrupt or not a redb file")]
    Corruption {
        /// The file.
        path: PathBuf,
        /// What redb found wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Any other database error.
    #[error("state store {path} failed")]
    Db {
        /// The file.
        path: PathBuf,
        /// The underlying error (boxed: redb's error type is large).
        #[source]
        source: Box<redb::Error>,
    },
}

impl StoreError {
    /// True for [`StoreError::NoSpace`]: retry later instead of giving up.
    pub fn is_no_space(&self) -> bool {
        matches!(self, StoreError::NoSpace { .. })
    }

    /// Sorts a redb error on the file at `path` by its cause. `after_full`:
    /// the open file's first I/O error was a full disk, so its later
    /// "previous I/O error" refusals are a full disk too.
    pub(crate) fn from_redb(path: &Path, e: redb::Error, after_full: bool) -> StoreError {
        let path = path.to_path_buf();
        match e {
            redb::Error::DatabaseAlreadyOpen => StoreError::Locked(path),
            redb::Error::Io(source) if crate::disk::is_no_space(&source) => StoreError::NoSpace {
                path,
                source: Some(source),
            },
            redb::Error::PreviousIo if after_full => StoreError::NoSpace { path, source: None },
            // redb's answer to a file whose magic number is wrong.
            redb::Error::Io(source) if source.kind() == io::ErrorKind::InvalidData => {
                StoreError::Corruption {
                    path,
                    source: Box::new(source),
                }
            }
            redb::Error::Io(source) => StoreError::Io { path, source },
            e @ redb::Error::Corrupted(_) => StoreError::Corruption {
                path,
                source: Box::new(e),
            },
            e => StoreError::Db {
                path,
                source: Box::new(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sort(e: redb::Error, after_full: bool) -> StoreError {
        StoreError::from_redb(Path::new("/d/state.redb"), e, after_full)
    }

    #[test]
    fn causes_are_told_apart() {
        let io = |e: io::Error| sort(redb::Error::Io(e), false);
        assert!(io(io::Error::from_raw_os_error(28)).is_no_space());
        assert!(io(io::ErrorKind::StorageFull.into()).is_no_space());
        assert!(matches!(
            io(io::Error::from_raw_os_error(5)),
            StoreError::Io { .. }
        ));
        assert!(matches!(
            io(io::ErrorKind::InvalidData.into()),
            StoreError::Corruption { .. }
        ));
        assert!(matches!(
            sort(redb::Error::Corrupted("bad page".into()), false),
            StoreError::Corruption { .. }
        ));
        assert!(sort(redb::Error::PreviousIo, true).is_no_space());
        assert!(matches!(
            sort(redb::Error::PreviousIo, false),
            StoreError::Db { .. }
        ));
        assert!(matches!(
            sort(redb::Error::DatabaseAlreadyOpen, false),
            StoreError::Locked(_)
        ));
        assert!(matches!(
            sort(redb::Error::ValueTooLarge(1 << 40), false),
            StoreError::Db { .. }
        ));
    }

    #[test]
    fn a_chain_names_the_file_and_the_cause_once() {
        let errors = [
            sort(redb::Error::Io(io::Error::from_raw_os_error(28)), false),
            sort(redb::Error::Io(io::Error::from_raw_os_error(5)), false),
            sort(redb::Error::Corrupted("bad page".into()), false),
            sort(redb::Error::ValueTooLarge(1 << 40), false),
        ];
        for (e, cause) in errors.into_iter().zip([
            "os error 28",
            "os error 5",
            "bad page",
            "exceeds the maximum",
        ]) {
            let chain = format!("{:#}", anyhow::Error::new(e).context("cannot start"));
            assert_eq!(chain.matches("/d/state.redb").count(), 1, "{chain}");
            assert_eq!(chain.matches(cause).count(), 1, "{chain}");
        }
    }
}
