//! Dead letters — events a destination gave up on, with why — and the
//! replay queue: dead letters an operator asked to re-deliver, moved there
//! and back (or deleted) in one transaction each.

use super::{StateStore, StoreError};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// (destination, offset) → dead letter (JSON).
const DEAD: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("dead_letters");
/// (destination, offset) → dead letter waiting to be re-delivered (JSON).
const REPLAY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("replay");

/// Creates the tables if the file is new.
pub(super) fn create_tables(tx: &redb::WriteTransaction) -> Result<(), redb::Error> {
    tx.open_table(DEAD)?;
    tx.open_table(REPLAY)?;
    Ok(())
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

impl StateStore {
    /// Stores a dead letter durably.
    pub fn add_dead_letter(&self, dl: &DeadLetter) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(dl).expect("dead letters serialize");
        self.write(|tx| {
            tx.open_table(DEAD)?
                .insert((dl.destination.as_str(), dl.offset), bytes.as_slice())?;
            Ok(())
        })
    }

    /// `dest`'s rows of `table` in offset order; a row that does not
    /// parse is skipped.
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
    fn dead_letters_persist_and_replay() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state.redb");
        {
            let s = StateStore::open(&path).unwrap();
            for o in [3, 1, 2] {
                s.add_dead_letter(&dl("a", o)).unwrap();
            }
            s.add_dead_letter(&dl("b", 1)).unwrap();
        }
        let s = StateStore::open(&path).unwrap();
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
