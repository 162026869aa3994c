//! A validating walk over one segment: counts its records, finds where the
//! valid data ends, and tells a torn tail (an unsynced commit group cut by a
//! crash) apart from corruption of synced data.
//!
//! The rule: each record names the first offset of its commit group (one
//! write + one fdatasync). A group is written only after the previous one was
//! synced, so a valid record of a *later* group behind a bad spot proves the
//! bad spot was synced: corruption. Valid records of the same group behind it
//! are just the unsynced group torn by the crash.

use super::segment::{self, SEGMENT_HEADER_LEN};
use super::segment_reader::{Decoded, SegmentReader};
use super::storage::StorageFile;
use std::io;
use std::sync::Arc;

/// What kind of problem ends a segment's valid data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// Bytes after the last complete append that a crash left behind.
    TornTail,
    /// A segment whose header was never completely written (crash while
    /// creating it); it holds no data.
    TornHeader,
    /// Invalid bytes inside synced data.
    Corruption,
}

/// The first problem found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Byte position inside the segment file.
    pub position: u64,
    /// Torn tail or corruption.
    pub kind: ProblemKind,
    /// What was wrong, in words.
    pub reason: String,
}

/// The result of walking a segment.
#[derive(Debug, Clone)]
pub struct SegmentScan {
    /// Offset of the segment's first record (from its name).
    pub base: u64,
    /// File length in bytes.
    pub file_len: u64,
    /// Valid records up to `valid_end`.
    pub records: u64,
    /// Offset after the last valid record (`base` when there is none).
    pub next_offset: u64,
    /// Byte position after the last complete append.
    pub valid_end: u64,
    /// The first problem, if any.
    pub problem: Option<Problem>,
}

/// Walks the segment in `file` whose name says `base`.
pub(crate) fn scan_segment(file: Arc<dyn StorageFile>, base: u64) -> io::Result<SegmentScan> {
    let file_len = file.size()?;
    let mut reader = SegmentReader::new(file);
    let mut scan = SegmentScan {
        base,
        file_len,
        records: 0,
        next_offset: base,
        valid_end: SEGMENT_HEADER_LEN.min(file_len),
        problem: None,
    };
    let header = reader.bytes(0, SEGMENT_HEADER_LEN as usize, file_len)?;
    if let Err(e) = segment::decode_segment_header(header, base) {
        let kind = if file_len <= SEGMENT_HEADER_LEN {
            ProblemKind::TornHeader
        } else {
            ProblemKind::Corruption
        };
        scan.valid_end = 0;
        scan.problem = Some(Problem {
            position: 0,
            kind,
            reason: e.to_string(),
        });
        return Ok(scan);
    }

    let mut pos = SEGMENT_HEADER_LEN;
    let mut expected = base;
    // Records still due in the append being walked, when inside one.
    let mut batch_due: Option<u32> = None;
    loop {
        let bad = match reader.record_at(pos, file_len)? {
            Decoded::End => break,
            Decoded::Bad(e) => e.to_string(),
            Decoded::Record(h, _) if h.offset != expected => {
                format!(
                    "record has offset {} where {} was expected",
                    h.offset, expected
                )
            }
            // `due` ≥ 1 here; `batch_remaining + 1` overflowed on a record
            // claiming u32::MAX followers (found by tests/fuzz_log.rs).
            Decoded::Record(h, _) if batch_due.is_some_and(|due| h.batch_remaining != due - 1) => {
                format!("record at offset {} breaks its append's sequence", h.offset)
            }
            Decoded::Record(h, _) => {
                pos += h.record_len();
                expected += 1;
                if h.batch_remaining == 0 {
                    batch_due = None;
                    scan.valid_end = pos;
                    scan.next_offset = expected;
                    scan.records = expected - base;
                } else {
                    batch_due = Some(h.batch_remaining);
                }
                continue;
            }
        };
        scan.problem = Some(classify(&mut reader, file_len, pos, scan.next_offset, bad)?);
        return Ok(scan);
    }
    if batch_due.is_some() {
        scan.problem = Some(Problem {
            position: scan.valid_end,
            kind: ProblemKind::TornTail,
            reason: "the last append is incomplete".into(),
        });
    }
    debug_assert!(batch_due.is_some() || pos == scan.valid_end);
    Ok(scan)
}

/// Decides whether a bad record at `bad_pos` is a torn tail or corruption
/// by looking for valid records behind it. `first_unsure` is the offset of
/// the first record of the incomplete (or bad) append.
fn classify(
    reader: &mut SegmentReader,
    file_len: u64,
    bad_pos: u64,
    first_unsure: u64,
    reason: String,
) -> io::Result<Problem> {
    // The bad spot itself may hold a well-formed record out of sequence.
    let mut p = bad_pos;
    while p < file_len {
        if let Decoded::Record(h, _) = reader.record_at(p, file_len)? {
            if h.offset < first_unsure || h.group_base() > first_unsure {
                return Ok(Problem {
                    position: bad_pos,
                    kind: ProblemKind::Corruption,
                    reason: format!(
                        "{reason}; a valid record of a later commit (offset {}) follows at byte {p}",
                        h.offset
                    ),
                });
            }
            p += h.record_len();
        } else {
            p += 1;
        }
    }
    Ok(Problem {
        position: bad_pos,
        kind: ProblemKind::TornTail,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::crash_storage::CrashStorage;
    use crate::log::record::{encode_record, RecordHeader};
    use crate::log::segment::encode_segment_header;
    use crate::log::storage::Storage;
    use std::path::Path;

    /// Segment bytes holding `groups`, each a list of appends (record counts).
    fn segment(base: u64, groups: &[&[u32]]) -> (Vec<u8>, Vec<u64>) {
        let mut out = encode_segment_header(base).to_vec();
        let mut starts = Vec::new();
        let mut offset = base;
        for group in groups {
            let group_base = offset;
            for &n in *group {
                for i in 0..n {
                    starts.push(out.len() as u64);
                    let h = RecordHeader {
                        len: 5,
                        offset,
                        group_delta: (offset - group_base) as u32,
                        batch_remaining: n - 1 - i,
                    };
                    encode_record(&mut out, &h, b"hello");
                    offset += 1;
                }
            }
        }
        (out, starts)
    }

    fn scan_bytes(base: u64, bytes: Vec<u8>) -> SegmentScan {
        let s = CrashStorage::new();
        let dir = Path::new("/s");
        s.create_dir_all(dir).unwrap();
        let p = dir.join("seg");
        s.write_file(&p, bytes);
        scan_segment(s.open_read(&p).unwrap(), base).unwrap()
    }

    #[test]
    fn clean_segment() {
        let (bytes, _) = segment(10, &[&[2, 1], &[3]]);
        let s = scan_bytes(10, bytes.clone());
        assert_eq!(
            (s.records, s.next_offset, s.valid_end),
            (6, 16, bytes.len() as u64)
        );
        assert!(s.problem.is_none());
    }

    #[test]
    fn damage_before_a_later_group_is_corruption() {
        let (mut bytes, starts) = segment(0, &[&[2], &[1]]);
        bytes[starts[1] as usize + 26] ^= 1;
        let s = scan_bytes(0, bytes);
        let p = s.problem.unwrap();
        assert_eq!((p.kind, p.position), (ProblemKind::Corruption, starts[1]));
    }

    #[test]
    fn damage_inside_the_last_group_is_a_torn_tail() {
        let (mut bytes, starts) = segment(0, &[&[1], &[2, 2]]);
        bytes[starts[3] as usize + 26] ^= 1;
        let s = scan_bytes(0, bytes);
        assert_eq!(s.problem.unwrap().kind, ProblemKind::TornTail);
        // Cut after the first append of the last group.
        assert_eq!((s.valid_end, s.next_offset), (starts[3], 3));
    }

    #[test]
    fn an_unfinished_append_is_cut_whole() {
        let (bytes, starts) = segment(0, &[&[1, 3]]);
        let s = scan_bytes(0, bytes[..starts[3] as usize].to_vec());
        assert_eq!(s.problem.unwrap().kind, ProblemKind::TornTail);
        assert_eq!((s.valid_end, s.records), (starts[1], 1));
    }

    #[test]
    fn a_short_header_is_a_torn_creation() {
        let (bytes, _) = segment(0, &[]);
        let s = scan_bytes(0, bytes[..20].to_vec());
        assert_eq!(s.problem.unwrap().kind, ProblemKind::TornHeader);
        let s = scan_bytes(7, bytes);
        assert_eq!(
            s.problem.unwrap().kind,
            ProblemKind::TornHeader,
            "base mismatch in a header-only file"
        );
    }
}
