//! Durable delivery state in redb (`<data_dir>/state.redb`): each
//! destination's cursor, its dead letters, and dead letters queued for
//! replay. One file, opened by one process at a time (redb locks it).

mod state;

pub use state::{excerpt as state_excerpt, DeadLetter, StateStore, StoreError};

use std::path::Path;

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
    use super::create_or_undo;

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
