//! A record: the 24-byte header in front of each payload, its encoding and
//! validating decoding, and the size limit (see docs/format.md). Explicit
//! little-endian; nothing here touches a file.

/// Size of a record header in bytes.
pub const RECORD_HEADER_LEN: usize = 24;
/// Largest payload a single record may carry (16 MiB).
pub const MAX_RECORD_LEN: usize = 16 * 1024 * 1024;

/// The fixed part in front of every record's payload.
///
/// Layout (24 bytes): crc32 u32 | payload length u32 | offset u64 |
/// group delta u32 | batch remaining u32. The CRC covers bytes 4..24 of the
/// header and the payload, so an all-zero header never validates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Payload length in bytes.
    pub len: u32,
    /// Global, gap-free sequence number of the record.
    pub offset: u64,
    /// `offset` minus the first offset of the commit group (one write + one
    /// fdatasync) the record was written in. Recovery uses it to tell a torn
    /// unsynced group from corruption of synced data.
    pub group_delta: u32,
    /// How many records follow this one in the same atomic append; 0 marks
    /// the last record of the append.
    pub batch_remaining: u32,
}

impl RecordHeader {
    /// First offset of the commit group this record belongs to.
    pub fn group_base(&self) -> u64 {
        self.offset - u64::from(self.group_delta)
    }

    /// Total bytes the record takes on disk.
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.len)
    }
}

/// Appends one encoded record to `out`.
pub fn encode_record(out: &mut Vec<u8>, header: &RecordHeader, payload: &[u8]) {
    debug_assert_eq!(header.len as usize, payload.len());
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&header.len.to_le_bytes());
    out.extend_from_slice(&header.offset.to_le_bytes());
    out.extend_from_slice(&header.group_delta.to_le_bytes());
    out.extend_from_slice(&header.batch_remaining.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Why bytes at some position are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// Fewer bytes than the header or the declared payload.
    Truncated,
    /// Declared length above [`MAX_RECORD_LEN`].
    TooLong(u32),
    /// Checksum mismatch.
    BadChecksum,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Truncated => write!(f, "record is truncated"),
            RecordError::TooLong(n) => {
                write!(f, "record length {n} exceeds the maximum {MAX_RECORD_LEN}")
            }
            RecordError::BadChecksum => write!(f, "record checksum mismatch"),
        }
    }
}

/// Parses just the header fields (unchecked: the CRC needs the payload).
pub fn peek_header(bytes: &[u8]) -> Option<(u32, RecordHeader)> {
    if bytes.len() < RECORD_HEADER_LEN {
        return None;
    }
    let le32 = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    let header = RecordHeader {
        len: le32(4),
        offset: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
        group_delta: le32(16),
        batch_remaining: le32(20),
    };
    Some((le32(0), header))
}

/// Decodes and checks the record at the start of `bytes`; returns its header
/// and payload slice.
pub fn decode_record(bytes: &[u8]) -> Result<(RecordHeader, &[u8]), RecordError> {
    let (crc, header) = peek_header(bytes).ok_or(RecordError::Truncated)?;
    if header.len as usize > MAX_RECORD_LEN {
        return Err(RecordError::TooLong(header.len));
    }
    let end = RECORD_HEADER_LEN + header.len as usize;
    if bytes.len() < end {
        return Err(RecordError::Truncated);
    }
    if crc32fast::hash(&bytes[4..end]) != crc {
        return Err(RecordError::BadChecksum);
    }
    if u64::from(header.group_delta) > header.offset {
        return Err(RecordError::BadChecksum);
    }
    Ok((header, &bytes[RECORD_HEADER_LEN..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let h = RecordHeader {
            len: payload.len() as u32,
            offset,
            group_delta: 0,
            batch_remaining: 0,
        };
        encode_record(&mut out, &h, payload);
        out
    }

    #[test]
    fn record_round_trips() {
        let bytes = record(42, b"hello");
        assert_eq!(bytes.len(), RECORD_HEADER_LEN + 5);
        let (h, p) = decode_record(&bytes).unwrap();
        assert_eq!(h.offset, 42);
        assert_eq!(p, b"hello");
    }

    #[test]
    fn all_zero_header_never_validates() {
        assert_eq!(decode_record(&[0u8; 64]), Err(RecordError::BadChecksum));
        assert_eq!(
            decode_record(&[0u8; RECORD_HEADER_LEN]),
            Err(RecordError::BadChecksum)
        );
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let bytes = record(7, b"payload bytes");
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(decode_record(&b).is_err(), "bit {i} flip went unnoticed");
        }
    }

    #[test]
    fn every_cut_is_truncated() {
        let bytes = record(7, b"payload bytes");
        for cut in 0..bytes.len() {
            assert_eq!(decode_record(&bytes[..cut]), Err(RecordError::Truncated));
        }
    }

    #[test]
    fn little_endian_layout_is_fixed() {
        let bytes = record(0x0102030405060708, b"x");
        assert_eq!(&bytes[4..8], &[1, 0, 0, 0]);
        assert_eq!(&bytes[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
    }
}
