//! The redb tables behind cursors and dead letters, and their operations.
//! Every operation is one write transaction; callers batch cursor updates.
//! A write that finds the disk full fails with [`StoreError::NoSpace`], and
//! the next operation reopens the file (redb refuses every call after an
//! I/O error until then), so the store works again once space is freed.

// The transaction closures return redb's own (large) error type; they run once
// per transaction, so its size does not matter.
#![allow(clippy::result_large_err)]

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

/// destination → next offset to deliver.
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
/// (destination, offset) → dead letter (JSON).
const DEAD: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("dead_letters");
/// (destination, offset) → dead letter waiting to be re-delivered (JSON).
const REPLAY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("replay");

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (a running `ferry serve`) holds the file.
    #[error("{0} is in use by another ferry process (is `ferry serve` running on this data directory? stop it first)")]
    Locked(PathBuf),
    /// The database failed.
    #[error("state store {path}: {message}")]
    Db {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The disk is full: nothing was written. The store reopens its file at
    /// the next operation, which succeeds once space is freed.
    #[error("state store {path}: the disk is full ({message})")]
    NoSpace {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

impl StoreError {
    /// True for [`StoreError::NoSpace`]: retry later instead of giving up.
    pub fn is_no_space(&self) -> bool {
        matches!(self, StoreError::NoSpace { .. })
    }
}

/// True for an I/O error saying the file system is full.
fn no_space(e: &redb::Error) -> bool {
    matches!(e, redb::Error::Io(io) if crate::disk::is_no_space(io))
}

/// An event a destination gave up on, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Destination name.
    pub destination: String,
    /// Log offset of the event (its id in the dead-letter queue).
    pub offset: u64,
    /// The event's messageId.
    pub message_id: String,
    /// The stored event, as JSON text.
    pub event: String,
    /// Attempts made.
    pub attempts: u32,
    /// First attempt, Unix milliseconds.
    pub first_attempt_ms: u64,
    /// Last attempt, Unix milliseconds.
    pub last_attempt_ms: u64,
    /// Last HTTP status, if there was a response.
    pub last_status: Option<u16>,
    /// Excerpt of the last response body or error (at most 1 KiB).
    pub last_error: String,
}

/// Bound on the stored error excerpt.
pub const ERROR_EXCERPT: usize = 1024;

/// Cuts `s` to at most [`ERROR_EXCERPT`] bytes on a character boundary.
pub fn excerpt(s: &str) -> String {
    let mut end = s.len().min(ERROR_EXCERPT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The open state database.
pub struct StateStore {
    /// The open file; `None` after a full disk stopped it and reopening
    /// has not yet succeeded.
    db: RwLock<Option<Database>>,
    path: PathBuf,
    /// The open database's first I/O error was a full disk: its later
    /// "previous I/O error" refusals are that too.
    full: AtomicBool,
}

impl StateStore {
    /// Opens or creates `path`.
    pub fn open(path: &Path) -> Result<StateStore, StoreError> {
        let store = StateStore {
            db: RwLock::new(None),
            path: path.to_path_buf(),
            full: AtomicBool::new(false),
        };
        store.reopen()?;
        store.write(|tx| {
            tx.open_table(CURSORS)?;
            tx.open_table(DEAD)?;
            tx.open_table(REPLAY)?;
            Ok(())
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
            let created = crate::disk::create_or_undo(&self.path, || Database::create(&self.path));
            *db = Some(created.map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(self.path.clone()),
                other => self.err(other),
            })?);
            self.full.store(false, Ordering::Release);
        }
        Ok(())
    }

    /// Maps a redb error. A full disk also closes the file: redb refuses
    /// every call after an I/O error, and the next operation reopens it.
    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        let e = e.into();
        if no_space(&e) {
            self.full.store(true, Ordering::Release);
        }
        let after_full = matches!(e, redb::Error::PreviousIo) && self.full.load(Ordering::Acquire);
        if no_space(&e) || after_full {
            return StoreError::NoSpace {
                path: self.path.clone(),
                message: e.to_string(),
            };
        }
        StoreError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
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
                    message: "closed after a full disk; reopened at the next operation".into(),
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

    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(|e| self.err(e))?;
            f(&tx).map_err(|e| self.err(e))
        })
    }

    /// Every stored cursor.
    pub fn cursors(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.read(|tx| {
            let t = tx.open_table(CURSORS)?;
            let mut out = BTreeMap::new();
            for row in t.iter()? {
                let (k, v) = row?;
                out.insert(k.value().to_string(), v.value());
            }
            Ok(out)
        })
    }

    /// Stores several cursors in one transaction.
    pub fn set_cursors(&self, cursors: &[(String, u64)]) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut t = tx.open_table(CURSORS)?;
            for (dest, offset) in cursors {
                t.insert(dest.as_str(), *offset)?;
            }
            Ok(())
        })
    }

    /// Forgets a destination's cursor.
    pub fn remove_cursor(&self, dest: &str) -> Result<bool, StoreError> {
        self.write(|tx| Ok(tx.open_table(CURSORS)?.remove(dest)?.is_some()))
    }

    /// Stores a dead letter durably.
    pub fn add_dead_letter(&self, dl: &DeadLetter) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(dl).expect("dead letters serialize");
        self.write(|tx| {
            tx.open_table(DEAD)?
                .insert((dl.destination.as_str(), dl.offset), bytes.as_slice())?;
            Ok(())
        })
    }

    fn list(
        &self,
        table: TableDefinition<(&str, u64), &[u8]>,
        dest: &str,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.read(|tx| {
            let t = tx.open_table(table)?;
            let mut out = Vec::new();
            for row in t.range((dest, 0)..=(dest, u64::MAX))? {
                let (_, v) = row?;
                if let Ok(dl) = serde_json::from_slice(v.value()) {
                    out.push(dl);
                }
            }
            Ok(out)
        })
    }

    /// A destination's dead letters in offset order.
    pub fn dead_letters(&self, dest: &str) -> Result<Vec<DeadLetter>, StoreError> {
        self.list(DEAD, dest)
    }

    /// Dead letters queued for replay, in offset order.
    pub fn replay_queue(&self, dest: &str) -> Result<Vec<DeadLetter>, StoreError> {
        self.list(REPLAY, dest)
    }

    /// Counts of dead letters and queued replays per destination.
    pub fn dead_letter_counts(&self) -> Result<BTreeMap<String, (u64, u64)>, StoreError> {
        self.read(|tx| {
            let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            for row in tx.open_table(DEAD)?.iter()? {
                out.entry(row?.0.value().0.to_string()).or_default().0 += 1;
            }
            for row in tx.open_table(REPLAY)?.iter()? {
                out.entry(row?.0.value().0.to_string()).or_default().1 += 1;
            }
            Ok(out)
        })
    }

    /// Moves dead letters (all, or those with the given offsets) to the
    /// replay queue. Returns how many moved.
    pub fn request_replay(&self, dest: &str, offsets: Option<&[u64]>) -> Result<usize, StoreError> {
        self.write(|tx| {
            let mut dead = tx.open_table(DEAD)?;
            let mut replay = tx.open_table(REPLAY)?;
            let wanted: Vec<u64> = match offsets {
                Some(o) => o.to_vec(),
                None => {
                    let mut all = Vec::new();
                    for row in dead.range((dest, 0)..=(dest, u64::MAX))? {
                        all.push(row?.0.value().1);
                    }
                    all
                }
            };
            let mut moved = 0;
            for offset in wanted {
                let bytes = dead.remove((dest, offset))?.map(|v| v.value().to_vec());
                if let Some(bytes) = bytes {
                    replay.insert((dest, offset), bytes.as_slice())?;
                    moved += 1;
                }
            }
            Ok(moved)
        })
    }

    /// A replayed dead letter is done: delivered (`None`) or dead again.
    pub fn finish_replay(
        &self,
        dest: &str,
        offset: u64,
        dead_again: Option<&DeadLetter>,
    ) -> Result<(), StoreError> {
        let bytes = dead_again.map(|dl| serde_json::to_vec(dl).expect("dead letters serialize"));
        self.write(|tx| {
            tx.open_table(REPLAY)?.remove((dest, offset))?;
            if let Some(bytes) = &bytes {
                tx.open_table(DEAD)?
                    .insert((dest, offset), bytes.as_slice())?;
            }
            Ok(())
        })
    }

    /// Deletes a destination's dead letters. Returns how many.
    pub fn purge(&self, dest: &str) -> Result<u64, StoreError> {
        self.write(|tx| {
            let mut t = tx.open_table(DEAD)?;
            let before = t.len()?;
            t.retain_in((dest, 0)..=(dest, u64::MAX), |_, _| false)?;
            Ok(before - t.len()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dl(dest: &str, offset: u64) -> DeadLetter {
        DeadLetter {
            destination: dest.into(),
            offset,
            message_id: format!("m{offset}"),
            event: "{}".into(),
            attempts: 3,
            first_attempt_ms: 1,
            last_attempt_ms: 2,
            last_status: Some(400),
            last_error: "bad".into(),
        }
    }

    #[test]
    fn cursors_and_dead_letters_persist() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state.redb");
        {
            let s = StateStore::open(&path).unwrap();
            s.set_cursors(&[("a".into(), 5), ("b".into(), 9)]).unwrap();
            for o in [3, 1, 2] {
                s.add_dead_letter(&dl("a", o)).unwrap();
            }
            s.add_dead_letter(&dl("b", 1)).unwrap();
            assert!(matches!(
                StateStore::open(&path),
                Err(StoreError::Locked(_))
            ));
        }
        let s = StateStore::open(&path).unwrap();
        assert_eq!(
            s.cursors().unwrap().into_iter().collect::<Vec<_>>(),
            vec![("a".into(), 5), ("b".into(), 9)]
        );
        let offsets: Vec<u64> = s
            .dead_letters("a")
            .unwrap()
            .iter()
            .map(|d| d.offset)
            .collect();
        assert_eq!(offsets, vec![1, 2, 3]);
        assert_eq!(s.request_replay("a", Some(&[2, 99])).unwrap(), 1);
        assert_eq!(s.replay_queue("a").unwrap()[0].offset, 2);
        assert_eq!(s.dead_letter_counts().unwrap()["a"], (2, 1));
        s.finish_replay("a", 2, None).unwrap();
        assert!(s.replay_queue("a").unwrap().is_empty());
        assert_eq!(s.purge("a").unwrap(), 2);
        assert_eq!(
            s.dead_letters("b").unwrap().len(),
            1,
            "purge is per destination"
        );
        assert_eq!(excerpt(&"é".repeat(1000)).len(), 1024);
    }
}
