//! The data directory's layout: every file and folder ferry keeps in it,
//! named in one place (`ferry serve` creates them; the inspection commands
//! read them).

use std::io;
use std::path::{Path, PathBuf};

/// The write-ahead log's segments.
const LOG: &str = "log";
/// Delivery state: cursors, dead letters, the replay queue (redb).
const STATE: &str = "state.redb";
/// The dedup index (redb).
const DEDUP_INDEX: &str = "dedup.redb";
/// The generated write key of the development source.
const DEV_WRITE_KEY: &str = "dev-write-key";
/// The embedded default's file destination.
const DEFAULT_EVENTS: &str = "events.jsonl";
/// Where a running server's admin API is (removed at shutdown).
const SERVER: &str = "server.json";

/// A ferry data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

/// Why a directory cannot be used as a data directory.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The path exists and is not a directory.
    #[error("data directory {0} is not a directory")]
    NotADirectory(PathBuf),
    /// The directory holds other things than ferry's.
    #[error(
        "{0} is not empty and is not a ferry data directory (no log/ or state.redb in it); point --data-dir at an empty or a ferry directory"
    )]
    Foreign(PathBuf),
    /// Creating, listing or writing into it failed.
    #[error("data directory {path}: cannot {what}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: io::Error,
    },
}

impl DataDir {
    /// The data directory at `root` (nothing is touched).
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The write-ahead log's directory.
    pub fn log(&self) -> PathBuf {
        self.root.join(LOG)
    }

    /// The delivery state file.
    pub fn state(&self) -> PathBuf {
        self.root.join(STATE)
    }

    /// The dedup index file.
    pub fn dedup_index(&self) -> PathBuf {
        self.root.join(DEDUP_INDEX)
    }

    /// The development source's write key.
    pub fn dev_write_key(&self) -> PathBuf {
        self.root.join(DEV_WRITE_KEY)
    }

    /// The embedded default's JSON Lines file.
    pub fn default_events(&self) -> PathBuf {
        self.root.join(DEFAULT_EVENTS)
    }

    /// The file naming a running server's admin API.
    pub fn server_file(&self) -> PathBuf {
        self.root.join(SERVER)
    }

    /// Creates the directory if needed, and refuses one that holds other
    /// things than ferry's (a typo in `--data-dir` must not scatter files
    /// into, say, a home directory) or that cannot be written.
    pub fn prepare(&self) -> Result<(), DataDirError> {
        let dir = &self.root;
        let io = |what| {
            move |source| DataDirError::Io {
                path: dir.clone(),
                what,
                source,
            }
        };
        if dir.exists() && !dir.is_dir() {
            return Err(DataDirError::NotADirectory(dir.clone()));
        }
        if dir.is_dir() {
            let ours = [
                LOG,
                STATE,
                DEDUP_INDEX,
                DEV_WRITE_KEY,
                DEFAULT_EVENTS,
                SERVER,
            ];
            let entries: Vec<String> = std::fs::read_dir(dir)
                .map_err(io("read it"))?
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect();
            if !entries.is_empty() && !entries.iter().any(|e| ours.contains(&e.as_str())) {
                return Err(DataDirError::Foreign(dir.clone()));
            }
        }
        std::fs::create_dir_all(dir).map_err(io("create it"))?;
        let probe = dir.join(".ferry-write-test");
        std::fs::write(&probe, b"").map_err(io("write into it"))?;
        let _ = std::fs::remove_file(probe);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_creates_a_new_directory_and_accepts_a_ferry_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("new"));
        dir.prepare().unwrap();
        assert!(dir.root().is_dir());
        std::fs::create_dir(dir.log()).unwrap();
        dir.prepare().unwrap();
    }

    #[test]
    fn prepare_refuses_a_foreign_directory_and_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("notes.txt"), b"mine").unwrap();
        let e = DataDir::new(tmp.path()).prepare().unwrap_err();
        assert!(matches!(e, DataDirError::Foreign(_)), "{e}");
        let file = DataDir::new(tmp.path().join("notes.txt"));
        let e = file.prepare().unwrap_err();
        assert!(matches!(e, DataDirError::NotADirectory(_)), "{e}");
    }
}
