//! Durable delivery state in redb (`<data_dir>/state.redb`): each
//! destination's cursor, its dead letters, and dead letters queued for
//! replay. One file, opened by one process at a time (redb locks it).
//!
//! [`StateStore`] runs every operation as one write (or read) transaction;
//! callers batch cursor updates. A write that finds the disk full fails with
//! [`StoreError::NoSpace`], and the next operation reopens the file (redb
//! refuses every call after an I/O error until then), so the store works
//! again once space is freed.

// The transaction closures return redb's own (large) error type; they run once
// per transaction, so its size does not matter.
#![allow(clippy::result_large_err)]

mod cursors;
mod dead_letters;
mod error;

pub use dead_letters::{excerpt as state_excerpt, DeadLetter};
pub use error::StoreError;

use redb::Database;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

/// The page cache of a state store opened without a memory budget (the
/// command line's): the file holds cursors and dead letters, kilobytes to a
/// few megabytes.
pub const DEFAULT_CACHE_BYTES: usize = 2 << 20;

/// The open state database.
pub struct StateStore {
    /// The open file; `None` after a full disk stopped it and reopening
    /// has not yet succeeded.
    db: RwLock<Option<Database>>,
    path: PathBuf,
    /// redb's page cache, in bytes (redb's own default is 1 GiB).
    cache_bytes: usize,
    /// The open database's first I/O error was a full disk: its later
    /// "previous I/O error" refusals are that too.
    full: AtomicBool,
}

impl StateStore {
    /// Opens or creates `path` with a page cache of [`DEFAULT_CACHE_BYTES`].
    pub fn open(path: &Path) -> Result<StateStore, StoreError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens or creates `path` with a page cache of `cache_bytes`.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<StateStore, StoreError> {
        let store = StateStore {
            db: RwLock::new(None),
            path: path.to_path_buf(),
            cache_bytes,
            full: AtomicBool::new(false),
        };
        store.reopen()?;
        store.write(|tx| {
            cursors::create_table(tx)?;
            dead_letters::create_tables(tx)
        })?;
        Ok(store)
    }

    /// Opens the file if it is not open (first open, or after a full disk
    /// stopped it). Every write committed durably before is there: a failed
    /// commit leaves redb's file at its last commit.
    fn reopen(&self) -> Result<(), StoreError> {
        if self
            .db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
        {
            return Ok(());
        }
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if db.is_none() {
            let created = crate::disk::create_or_undo(&self.path, || {
                Database::builder()
                    .set_cache_size(self.cache_bytes)
                    .create(&self.path)
            });
            *db = Some(created.map_err(|e| self.err(e))?);
            self.full.store(false, Ordering::Release);
        }
        Ok(())
    }

    /// Maps a redb error. A full disk also closes the file: redb refuses
    /// every call after an I/O error, and the next operation reopens it.
    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        let e = e.into();
        if matches!(&e, redb::Error::Io(io) if crate::disk::is_no_space(io)) {
            self.full.store(true, Ordering::Release);
        }
        StoreError::from_redb(&self.path, e, self.full.load(Ordering::Acquire))
    }

    /// Runs `f` on the open database, reopening it first if a full disk
    /// closed it, and closing it if `f` finds the disk full.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.reopen()?;
        let out = {
            let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
            match db.as_ref() {
                Some(db) => f(db),
                // Closed by another thread's full-disk error just now.
                None => Err(StoreError::NoSpace {
                    path: self.path.clone(),
                    source: None,
                }),
            }
        };
        if matches!(&out, Err(e) if e.is_no_space()) {
            self.db
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        }
        out
    }

    /// Runs `f` in one write transaction and commits it.
    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_write().map_err(|e| self.err(e))?;
            let out = f(&tx).map_err(|e| self.err(e))?;
            tx.commit().map_err(|e| self.err(e))?;
            Ok(out)
        })
    }

    /// Runs `f` in one read transaction.
    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(|e| self.err(e))?;
            f(&tx).map_err(|e| self.err(e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_redb_database_is_corruption() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state.redb");
        std::fs::write(&path, vec![0x5a; 4096]).unwrap();
        let e = StateStore::open(&path).err().expect("garbage is refused");
        assert!(matches!(e, StoreError::Corruption { .. }), "{e:?}");
        let chain = format!("{:#}", anyhow::Error::new(e));
        assert!(chain.contains(&path.display().to_string()), "{chain}");
    }
}
