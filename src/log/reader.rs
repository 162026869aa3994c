//! Iterating records from any offset, across segment boundaries, while the
//! writer keeps appending. A reader never returns a record at or past the
//! limit it is given (the durable end for a live log), so it only ever sees
//! records covered by a completed fdatasync.

use super::error::{LogError, Result};
use super::record::{self, RECORD_HEADER_LEN};
use super::segment::SEGMENT_HEADER_LEN;
use super::segment_reader::{Decoded, SegmentReader};
use super::shared::Shared;
use std::path::PathBuf;
use std::sync::Arc;

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its offset.
    pub offset: u64,
    /// Its payload bytes.
    pub payload: Vec<u8>,
}

/// The segment a reader is positioned in.
struct Position {
    path: PathBuf,
    file: SegmentReader,
    /// Byte position of the record with offset `LogReader::next`.
    pos: u64,
}

/// Reads records in offset order starting from a chosen offset.
pub struct LogReader {
    shared: Arc<Shared>,
    /// Offset of the next record to return.
    next: u64,
    /// Open segment, once positioned.
    at: Option<Position>,
}

impl LogReader {
    pub(crate) fn new(shared: Arc<Shared>, from: u64) -> Result<Self> {
        let mut reader = LogReader {
            shared,
            next: from,
            at: None,
        };
        let end = reader.shared.durable_end();
        if from > end {
            return Err(reader.out_of_range(from));
        }
        reader.seek()?;
        Ok(reader)
    }

    /// Offset of the next record this reader returns.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// The next durable record, or `None` at the durable end.
    #[allow(clippy::should_implement_trait)] // fallible: Result<Option<_>>, not an Iterator
    pub fn next(&mut self) -> Result<Option<Record>> {
        let end = self.shared.durable_end();
        self.next_below(end)
    }

    /// The next record if its offset is below `limit`.
    pub fn next_below(&mut self, limit: u64) -> Result<Option<Record>> {
        if self.next >= limit {
            return Ok(None);
        }
        if self.at.is_none() {
            self.seek()?;
        }
        loop {
            let at = self.at.as_mut().expect("positioned above");
            match at
                .file
                .record_at(at.pos, u64::MAX)
                .map_err(|e| LogError::io(&at.path, e))?
            {
                Decoded::Record(h, payload) if h.offset == self.next => {
                    let record = Record {
                        offset: h.offset,
                        payload: payload.to_vec(),
                    };
                    at.pos += h.record_len();
                    self.next += 1;
                    return Ok(Some(record));
                }
                // The segment ends here; the record lives in the next one.
                Decoded::End => self.seek()?,
                Decoded::Record(h, _) => {
                    let why = format!("expected offset {} but found {}", self.next, h.offset);
                    return Err(LogError::corruption(&at.path, at.pos, why));
                }
                Decoded::Bad(e) => {
                    let why = format!("durable record {} does not validate: {e}", self.next);
                    return Err(LogError::corruption(&at.path, at.pos, why));
                }
            }
        }
    }

    fn out_of_range(&self, offset: u64) -> LogError {
        LogError::OffsetOutOfRange {
            offset,
            start: self.shared.start_offset(),
            end: self.shared.durable_end(),
        }
    }

    /// Positions the reader at `self.next`: picks the segment by base offset,
    /// then walks record headers inside that one segment (a bounded scan).
    fn seek(&mut self) -> Result<()> {
        let target = self.next;
        let found = {
            let segments = self.shared.segments_lock();
            segments
                .range(..=target)
                .next_back()
                .map(|(b, p)| (*b, p.clone()))
        };
        let Some((base, path)) = found else {
            return Err(self.out_of_range(target));
        };
        let file = match self.shared.storage.open_read(&path) {
            Ok(f) => f,
            // Deleted by retention since the lookup.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.out_of_range(target))
            }
            Err(e) => return Err(LogError::io(&path, e)),
        };
        let mut file = SegmentReader::new(file);
        let mut pos = SEGMENT_HEADER_LEN;
        let mut offset = base;
        while offset < target {
            let head = file
                .bytes(pos, RECORD_HEADER_LEN, u64::MAX)
                .map_err(|e| LogError::io(&path, e))?;
            match record::peek_header(head) {
                Some((_, h)) if h.offset == offset => {
                    pos += h.record_len();
                    offset += 1;
                }
                _ => {
                    let why = format!("record {offset} is missing while seeking to {target}");
                    return Err(LogError::corruption(&path, pos, why));
                }
            }
        }
        if let Some(prev) = &self.at {
            if prev.path == path && prev.pos == pos {
                let why = format!("record {target} is missing: the segment ends before it");
                return Err(LogError::corruption(&path, pos, why));
            }
        }
        self.at = Some(Position { path, file, pos });
        Ok(())
    }
}
