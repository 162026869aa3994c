//! Each destination's cursor: the next log offset it delivers. Delivery
//! commits cursors in batches, several destinations in one transaction.

use super::{StateStore, StoreError};
use redb::{ReadableTable, TableDefinition};
use std::collections::BTreeMap;

/// destination → next offset to deliver.
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");

/// Creates the table if the file is new.
pub(super) fn create_table(tx: &redb::WriteTransaction) -> Result<(), redb::Error> {
    tx.open_table(CURSORS)?;
    Ok(())
}

impl StateStore {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_persist_and_the_file_has_one_opener() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state.redb");
        {
            let s = StateStore::open(&path).unwrap();
            s.set_cursors(&[("a".into(), 5), ("b".into(), 9)]).unwrap();
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
    }
}
