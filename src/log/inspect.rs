//! Read-only views of a log for `ferry log inspect|dump|verify`. They never
//! write, truncate or lock, so they are safe beside a running server; a tail
//! being written at that moment shows up as a torn tail, not as corruption.

use super::error::{LogError, Result};
use super::reader::LogReader;
use super::recovery::list_segments;
use super::scan::{scan_segment, ProblemKind, SegmentScan};
use super::shared::Shared;
use super::storage::{FsStorage, Storage};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A read-only view of a log directory.
pub struct LogView {
    shared: Arc<Shared>,
}

/// One row of `ferry log inspect`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SegmentReport {
    /// The segment file.
    pub file: PathBuf,
    /// Base offset from the file name.
    pub base: u64,
    /// First and last valid offsets, if the segment holds records.
    pub first_offset: Option<u64>,
    /// Last valid offset.
    pub last_offset: Option<u64>,
    /// Valid records.
    pub records: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// `ok`, or what is wrong and where.
    pub health: String,
    /// True when the problem is corruption (not a torn tail).
    pub corrupt: bool,
}

/// One problem found by `ferry log verify`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyProblem {
    /// The segment file.
    pub segment: PathBuf,
    /// Byte position inside it.
    pub position: u64,
    /// What is wrong.
    pub reason: String,
    /// False for a torn tail of the last segment (recovery cuts it; a
    /// running server may be writing it right now).
    pub fatal: bool,
}

impl LogView {
    /// Opens the log directory `dir` read-only on the real file system.
    pub fn open(dir: &Path) -> Result<LogView> {
        Self::open_on(Arc::new(FsStorage), dir)
    }

    /// [`LogView::open`] on the given storage (a crash-simulating one in tests).
    #[cfg(any(test, feature = "testing"))]
    pub fn open_with(storage: Arc<dyn Storage>, dir: &Path) -> Result<LogView> {
        Self::open_on(storage, dir)
    }

    /// Opens `dir` read-only on `storage`.
    fn open_on(storage: Arc<dyn Storage>, dir: &Path) -> Result<LogView> {
        if !storage.exists(dir) {
            return Err(LogError::NotALog {
                path: dir.to_path_buf(),
                reason: "the directory does not exist".into(),
            });
        }
        let segments = list_segments(&*storage, dir)?;
        let Some((&last_base, last_path)) = segments.iter().next_back() else {
            return Err(LogError::NotALog {
                path: dir.to_path_buf(),
                reason: "it holds no segment files (named like 00000000000000000000.log)".into(),
            });
        };
        let file = storage
            .open_read(last_path)
            .map_err(|e| LogError::io(last_path, e))?;
        let last = scan_segment(file, last_base).map_err(|e| LogError::io(last_path, e))?;
        let shared = Shared::new(storage, dir.to_path_buf(), segments, last.next_offset, 0);
        Ok(LogView {
            shared: Arc::new(shared),
        })
    }

    /// Offset after the last valid record.
    pub fn end_offset(&self) -> u64 {
        self.shared.durable_end()
    }

    /// First offset held.
    pub fn start_offset(&self) -> u64 {
        self.shared.start_offset()
    }

    /// A reader from `from` up to the end of valid data.
    pub fn reader(&self, from: u64) -> Result<LogReader> {
        LogReader::new(self.shared.clone(), from)
    }

    /// Walks every segment fully (CRC of every record).
    pub fn scan_all(&self) -> Result<Vec<(PathBuf, SegmentScan)>> {
        let segments: Vec<(u64, PathBuf)> = self
            .shared
            .segments_lock()
            .iter()
            .map(|(b, p)| (*b, p.clone()))
            .collect();
        let mut out = Vec::with_capacity(segments.len());
        for (base, path) in segments {
            let file = self
                .shared
                .storage
                .open_read(&path)
                .map_err(|e| LogError::io(&path, e))?;
            let scan = scan_segment(file, base).map_err(|e| LogError::io(&path, e))?;
            out.push((path, scan));
        }
        Ok(out)
    }

    /// One report per segment.
    pub fn inspect(&self) -> Result<Vec<SegmentReport>> {
        let scans = self.scan_all()?;
        let n = scans.len();
        Ok(scans
            .into_iter()
            .enumerate()
            .map(|(i, (file, s))| {
                let is_last = i + 1 == n;
                let (health, corrupt) = match &s.problem {
                    None => ("ok".to_string(), false),
                    Some(p) if is_last && p.kind != ProblemKind::Corruption => (
                        format!(
                            "torn tail at byte {} ({}); cut on next open",
                            s.valid_end, p.reason
                        ),
                        false,
                    ),
                    Some(p) => (
                        format!("CORRUPT at byte {}: {}", p.position, p.reason),
                        true,
                    ),
                };
                SegmentReport {
                    file,
                    base: s.base,
                    first_offset: (s.records > 0).then_some(s.base),
                    last_offset: (s.records > 0).then(|| s.next_offset - 1),
                    records: s.records,
                    bytes: s.file_len,
                    health,
                    corrupt,
                }
            })
            .collect())
    }

    /// Every problem in the log: bad records, bad headers, and gaps or
    /// overlaps between segments.
    pub fn verify(&self) -> Result<Vec<VerifyProblem>> {
        let scans = self.scan_all()?;
        let mut problems = Vec::new();
        let n = scans.len();
        for (i, (path, s)) in scans.iter().enumerate() {
            let is_last = i + 1 == n;
            if let Some(p) = &s.problem {
                let torn = is_last && p.kind != ProblemKind::Corruption;
                problems.push(VerifyProblem {
                    segment: path.clone(),
                    position: if torn { s.valid_end } else { p.position },
                    reason: if torn {
                        format!("torn tail ({}); recovery cuts it on next open", p.reason)
                    } else {
                        p.reason.clone()
                    },
                    fatal: !torn,
                });
            }
            if let Some((next_path, next)) = scans.get(i + 1) {
                if s.problem.is_none() && next.base != s.next_offset {
                    problems.push(VerifyProblem {
                        segment: next_path.clone(),
                        position: 0,
                        reason: format!(
                            "segment starts at offset {} but the previous segment ends before offset {}",
                            next.base, s.next_offset
                        ),
                        fatal: true,
                    });
                }
            }
        }
        Ok(problems)
    }
}
