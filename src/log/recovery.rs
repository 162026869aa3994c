//! Opening a log: find the segments, check the last one, cut a torn tail,
//! and stop (or quarantine) on corruption. Only the last segment is walked,
//! so restart time depends on the segment size, not on the log's size.

use super::error::{LogError, Result};
use super::scan::{scan_segment, ProblemKind};
use super::segment::{self, SEGMENT_HEADER_LEN};
use super::storage::{join, Storage, StorageFile};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What to do when opening finds corruption inside synced data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryMode {
    /// Refuse to open; an operator decides (default).
    #[default]
    Strict,
    /// Copy the damaged segment into `quarantine/`, cut the log at the last
    /// valid append before the damage, and carry on. Records after the
    /// damage are then only in the quarantined copy.
    Quarantine,
}

/// Name of the folder (inside the log directory) for quarantined segments.
pub const QUARANTINE_DIR: &str = "quarantine";

/// The state a writer starts from.
pub(crate) struct Recovered {
    /// Every segment, by base offset.
    pub segments: BTreeMap<u64, PathBuf>,
    /// The active (last) segment, open for writing.
    pub active: Arc<dyn StorageFile>,
    /// Where the next record goes inside the active segment.
    pub write_pos: u64,
    /// The next offset to be written.
    pub next_offset: u64,
    /// Bytes of all segment files together.
    pub total_bytes: u64,
}

/// Lists the segment files of `dir` by base offset.
pub(crate) fn list_segments(storage: &dyn Storage, dir: &Path) -> Result<BTreeMap<u64, PathBuf>> {
    let names = storage.list(dir).map_err(|e| LogError::io(dir, e))?;
    Ok(names
        .iter()
        .filter_map(|n| segment::parse_segment_file_name(n).map(|base| (base, join(dir, n))))
        .collect())
}

/// Creates a fresh segment with its header, durably (file and directory).
pub(crate) fn create_segment(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
) -> Result<(PathBuf, Arc<dyn StorageFile>)> {
    let path = join(dir, &segment::segment_file_name(base));
    let file = storage.create(&path).map_err(|e| LogError::io(&path, e))?;
    file.write_all_at(&segment::encode_segment_header(base), 0)
        .map_err(|e| LogError::io(&path, e))?;
    file.sync_data()
        .map_err(|e| LogError::io(&path, failed("fdatasync", e)))?;
    storage
        .sync_dir(dir)
        .map_err(|e| LogError::io(dir, failed("directory fsync", e)))?;
    Ok((path, file))
}

/// Names the operation in an I/O error, so a refusal says which sync failed.
fn failed(op: &str, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{op} failed: {e}"))
}

/// Opens (creating if needed) the log in `dir` and recovers its tail.
pub(crate) fn recover(storage: &dyn Storage, dir: &Path, mode: RecoveryMode) -> Result<Recovered> {
    storage
        .create_dir_all(dir)
        .map_err(|e| LogError::io(dir, e))?;
    let mut segments = list_segments(storage, dir)?;
    // Base offset for a new first segment if the log turns out empty.
    let mut fresh_base = 0;
    loop {
        let Some((&base, path)) = segments.iter().next_back() else {
            let (path, file) = create_segment(storage, dir, fresh_base)?;
            segments.insert(fresh_base, path);
            return Ok(Recovered {
                segments,
                active: file,
                write_pos: SEGMENT_HEADER_LEN,
                next_offset: fresh_base,
                total_bytes: SEGMENT_HEADER_LEN,
            });
        };
        let path = path.clone();
        let file = storage.open(&path).map_err(|e| LogError::io(&path, e))?;
        let scan = scan_segment(file.clone(), base).map_err(|e| LogError::io(&path, e))?;
        let mut cut_to = None;
        match &scan.problem {
            None => {}
            Some(p) if p.kind == ProblemKind::TornHeader => {
                tracing::warn!(segment = %path.display(), "removing segment {} whose creation was cut short by a crash ({})", path.display(), p.reason);
                remove_segment(storage, dir, &path)?;
                segments.remove(&base);
                fresh_base = base;
                continue;
            }
            Some(p) if p.kind == ProblemKind::TornTail => {
                tracing::warn!(
                    segment = %path.display(),
                    byte = scan.valid_end,
                    "truncating torn tail of segment {} at byte {} ({} bytes dropped; first bad byte {}: {})",
                    path.display(), scan.valid_end, scan.file_len - scan.valid_end, p.position, p.reason
                );
                cut_to = Some(scan.valid_end);
            }
            Some(p) => match mode {
                RecoveryMode::Strict => {
                    return Err(LogError::corruption(&path, p.position, p.reason.clone()));
                }
                RecoveryMode::Quarantine => {
                    let copy = quarantine(storage, dir, &path, &file, scan.file_len)?;
                    tracing::error!(
                        segment = %path.display(),
                        byte = p.position,
                        "corruption in segment {} at byte {}: {}; copied it to {} and cut the log at byte {}",
                        path.display(), p.position, p.reason, copy.display(), scan.valid_end
                    );
                    if scan.valid_end == 0 {
                        remove_segment(storage, dir, &path)?;
                        segments.remove(&base);
                        fresh_base = base;
                        continue;
                    }
                    cut_to = Some(scan.valid_end);
                }
            },
        }
        if let Some(len) = cut_to {
            file.set_len(len).map_err(|e| LogError::io(&path, e))?;
            file.sync_data().map_err(|e| LogError::io(&path, e))?;
        }
        let mut total_bytes = scan.valid_end;
        for other in segments.range(..base).map(|(_, p)| p) {
            let len = storage.open_read(other).and_then(|f| f.size());
            total_bytes += len.map_err(|e| LogError::io(other, e))?;
        }
        return Ok(Recovered {
            segments,
            active: file,
            write_pos: scan.valid_end,
            next_offset: scan.next_offset,
            total_bytes,
        });
    }
}

fn remove_segment(storage: &dyn Storage, dir: &Path, path: &Path) -> Result<()> {
    storage.remove(path).map_err(|e| LogError::io(path, e))?;
    storage.sync_dir(dir).map_err(|e| LogError::io(dir, e))
}

/// Copies a damaged segment into the quarantine folder, durably.
fn quarantine(
    storage: &dyn Storage,
    dir: &Path,
    path: &Path,
    file: &Arc<dyn StorageFile>,
    len: u64,
) -> Result<PathBuf> {
    let qdir = dir.join(QUARANTINE_DIR);
    storage
        .create_dir_all(&qdir)
        .map_err(|e| LogError::io(&qdir, e))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dest = qdir.join(format!("{name}.{stamp}.corrupt"));
    let out = storage.create(&dest).map_err(|e| LogError::io(&dest, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < len {
        let n = file
            .read_at(&mut buf, pos)
            .map_err(|e| LogError::io(path, e))?;
        if n == 0 {
            break;
        }
        out.write_all_at(&buf[..n], pos)
            .map_err(|e| LogError::io(&dest, e))?;
        pos += n as u64;
    }
    out.sync_data().map_err(|e| LogError::io(&dest, e))?;
    storage
        .sync_dir(&qdir)
        .map_err(|e| LogError::io(&qdir, e))?;
    storage.sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
    Ok(dest)
}
