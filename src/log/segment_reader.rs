//! Buffered positioned reads of one segment file: records are decoded from a
//! window of the file kept in memory, refilled as the walk moves on, so a
//! scan costs a few large reads instead of two small ones per record.

use super::record::{self, RecordError, RecordHeader, RECORD_HEADER_LEN};
use super::storage::StorageFile;
use std::io;
use std::sync::Arc;

/// Smallest read issued against the file.
const READ_AHEAD: usize = 256 * 1024;

/// Outcome of decoding the record at a position.
pub(crate) enum Decoded<'a> {
    /// A valid record and its payload.
    Record(RecordHeader, &'a [u8]),
    /// Bytes present but not a valid record.
    Bad(RecordError),
    /// The position is exactly the end of the readable range.
    End,
}

/// A read window over one segment file.
pub(crate) struct SegmentReader {
    file: Arc<dyn StorageFile>,
    /// Bytes of the file starting at `start`.
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    start: u64,
}

impl SegmentReader {
    pub(crate) fn new(file: Arc<dyn StorageFile>) -> Self {
        SegmentReader {
            file,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Returns up to `need` bytes at `pos`, fewer only when the file (or
    /// `limit`, a byte bound) ends first.
    pub(crate) fn bytes(&mut self, pos: u64, need: usize, limit: u64) -> io::Result<&[u8]> {
        let want_end = (pos + need as u64).min(limit);
        let have_end = self.start + self.buf.len() as u64;
        if pos < self.start || want_end > have_end {
            let len = ((want_end - pos) as usize).max(READ_AHEAD);
            let len = len.min(limit.saturating_sub(pos) as usize);
            self.buf.resize(len, 0);
            let mut filled = 0;
            while filled < len {
                let n = self
                    .file
                    .read_at(&mut self.buf[filled..], pos + filled as u64)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            self.buf.truncate(filled);
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        let to = ((want_end - self.start) as usize)
            .min(self.buf.len())
            .max(from);
        Ok(&self.buf[from..to])
    }

    /// Decodes the record at `pos`, reading no further than `limit`.
    pub(crate) fn record_at(&mut self, pos: u64, limit: u64) -> io::Result<Decoded<'_>> {
        let head = self.bytes(pos, RECORD_HEADER_LEN, limit)?;
        if head.is_empty() {
            return Ok(Decoded::End);
        }
        let len = match record::peek_header(head) {
            None => return Ok(Decoded::Bad(RecordError::Truncated)),
            Some((_, h)) if h.len as usize > record::MAX_RECORD_LEN => {
                return Ok(Decoded::Bad(RecordError::TooLong(h.len)))
            }
            Some((_, h)) => h.len as usize,
        };
        let bytes = self.bytes(pos, RECORD_HEADER_LEN + len, limit)?;
        Ok(match record::decode_record(bytes) {
            Ok((h, payload)) => Decoded::Record(h, payload),
            Err(e) => Decoded::Bad(e),
        })
    }
}
