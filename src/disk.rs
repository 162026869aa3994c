//! What every layer that writes to disk shares: telling a full disk from
//! other I/O errors, and creating a redb file so that a failed creation
//! does not block the next attempt.

use std::io;
use std::path::Path;

/// True when an I/O error says the file system is full (ENOSPC): a refusal
/// to retry once space is freed, unlike other I/O errors. The log, the dedup
/// index and the delivery state store all decide by this.
pub fn is_no_space(e: &io::Error) -> bool {
    e.raw_os_error() == Some(28) || e.kind() == io::ErrorKind::StorageFull
}

/// Runs `create`, redb's creation of a database at `path`. When there was
/// no database there before (no file, or an empty one) and `create` fails,
/// as on a full disk half-way through writing the new file's header, the
/// file is emptied again: redb starts a new database in an empty file, but
/// refuses a partial one as invalid, which would block every later attempt.
pub(crate) fn create_or_undo<T, E>(
    path: &Path,
    create: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let new = std::fs::metadata(path).map_or(true, |m| m.len() == 0);
    let result = create();
    if new && result.is_err() {
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) {
            let _ = f.set_len(0);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::{create_or_undo, is_no_space};
    use std::io;

    #[test]
    fn no_space_is_enospc_or_storage_full_and_nothing_else() {
        assert!(is_no_space(&io::Error::from_raw_os_error(28)));
        assert!(is_no_space(&io::ErrorKind::StorageFull.into()));
        assert!(!is_no_space(&io::Error::from_raw_os_error(5)));
    }

    #[test]
    fn a_failed_creation_leaves_an_empty_file_and_never_touches_an_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.redb");
        let failed: Result<(), &str> = create_or_undo(&new, || {
            std::fs::write(&new, b"half a header").unwrap();
            Err("no space")
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::metadata(&new).unwrap().len(), 0);

        let old = dir.path().join("old.redb");
        std::fs::write(&old, b"a database").unwrap();
        let failed: Result<(), &str> = create_or_undo(&old, || Err("locked"));
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&old).unwrap(), b"a database");
    }
}
