//! The byte-exact on-disk format of segments and records (see docs/format.md).
//! Everything is explicit little-endian; nothing here touches a file.

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"FERRYLOG";
/// Format version written into every segment header.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the segment header in bytes.
pub const SEGMENT_HEADER_LEN: u64 = 32;
/// Size of a record header in bytes.
pub const RECORD_HEADER_LEN: usize = 24;
/// Largest payload a single record may carry (16 MiB).
pub const MAX_RECORD_LEN: usize = 16 * 1024 * 1024;
/// Suffix of segment file names.
pub const SEGMENT_SUFFIX: &str = ".log";

/// File name of the segment whose first record has offset `base`.
pub fn segment_file_name(base: u64) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

/// Parses a segment file name back into its base offset.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Encodes the 32-byte segment header.
///
/// Layout: magic (8) | version u32 | reserved u32 (0) | base offset u64 |
/// crc32 of the previous 24 bytes u32 | reserved u32 (0).
pub fn encode_segment_header(base: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&base.to_le_bytes());
    let crc = crc32fast::hash(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a segment header was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than 32 bytes.
    Short,
    /// The magic is not `FERRYLOG`.
    BadMagic,
    /// Written by a format version this build does not read.
    UnsupportedVersion(u32),
    /// The header checksum does not match.
    BadChecksum,
    /// The base offset inside differs from the file name.
    BaseMismatch { in_header: u64, in_name: u64 },
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Short => write!(f, "segment header is truncated"),
            HeaderError::BadMagic => {
                write!(f, "segment header has a wrong magic (not a ferry segment)")
            }
            HeaderError::UnsupportedVersion(v) => write!(
                f,
                "segment format version {v} is not supported (this build reads {FORMAT_VERSION})"
            ),
            HeaderError::BadChecksum => write!(f, "segment header checksum mismatch"),
            HeaderError::BaseMismatch { in_header, in_name } => {
                write!(
                    f,
                    "segment header says base offset {in_header} but the file name says {in_name}"
                )
            }
        }
    }
}

/// Decodes and checks a segment header against the base offset from its name.
pub fn decode_segment_header(bytes: &[u8], expected_base: u64) -> Result<(), HeaderError> {
    if bytes.len() < SEGMENT_HEADER_LEN as usize {
        return Err(HeaderError::Short);
    }
    if bytes[0..8] != SEGMENT_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let crc = u32::from_le_bytes(bytes[24..28].try_into().expect("4 bytes"));
    if crc != crc32fast::hash(&bytes[0..24]) {
        return Err(HeaderError::BadChecksum);
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    let base = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    if base != expected_base {
        return Err(HeaderError::BaseMismatch {
            in_header: base,
            in_name: expected_base,
        });
    }
    Ok(())
}

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

    #[test]
    fn segment_header_checks() {
        let h = encode_segment_header(99);
        assert_eq!(decode_segment_header(&h, 99), Ok(()));
        assert_eq!(
            decode_segment_header(&h, 98),
            Err(HeaderError::BaseMismatch {
                in_header: 99,
                in_name: 98
            })
        );
        assert_eq!(decode_segment_header(&h[..10], 99), Err(HeaderError::Short));
        assert_eq!(
            decode_segment_header(&[0u8; 32], 0),
            Err(HeaderError::BadMagic)
        );
        let mut bad = h;
        bad[20] ^= 1;
        assert_eq!(
            decode_segment_header(&bad, 99),
            Err(HeaderError::BadChecksum)
        );
    }

    #[test]
    fn file_names() {
        assert_eq!(segment_file_name(5), "00000000000000000005.log");
        assert_eq!(parse_segment_file_name("00000000000000000005.log"), Some(5));
        assert_eq!(parse_segment_file_name("5.log"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000x.log"), None);
        assert_eq!(parse_segment_file_name("00000000000000000005.tmp"), None);
    }
}
