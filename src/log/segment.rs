//! A segment file: its name (the base offset, zero-padded) and its 32-byte
//! header (see docs/format.md). Explicit little-endian; nothing here touches a file.

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"FERRYLOG";
/// Format version written into every segment header.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the segment header in bytes.
pub const SEGMENT_HEADER_LEN: u64 = 32;
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

#[cfg(test)]
mod tests {
    use super::*;

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
