//! The dedup key: a fixed 128-bit hash of (source, messageId), so the index
//! stores 16 bytes per id whatever the length of the strings.

use siphasher::sip128::{Hasher128, SipHasher13};
use std::hash::Hasher;

/// Fixed SipHash key. It must never change: keys are persisted in the index
/// and in the write-ahead log's re-index path, and a different key would make
/// every stored id unrecognisable (duplicates would be stored again).
const SIP_KEY: (u64, u64) = (0x6665_7272_795f_6464, 0x7570_5f6b_6579_5f31);

/// A deduplication key: SipHash-1-3 (128-bit output, fixed key) of the
/// source and the messageId.
///
/// Two distinct ids collide with probability 2⁻¹²⁸; among `n` ids held at
/// once the chance that *any* two collide is about n²/2¹²⁹, i.e. ≈ 1.5·10⁻²⁵
/// at the default capacity of 10M. A collision can only turn a new event into
/// a false duplicate, so that figure is the false-drop probability the key
/// adds. The hash key is public (it is in this file): SipHash is not meant to
/// resist collision search by someone who knows the key, but generic search
/// at 128 bits costs ~2⁶⁴ hashes, and the ids a client can choose only collide
/// with ids of the same source (its own write key).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(u128);

impl Key {
    /// The key of `message_id` sent to `source`. The encoding is unambiguous:
    /// the source's length goes first, so ("ab", "c") ≠ ("a", "bc").
    pub fn new(source: &str, message_id: &str) -> Key {
        let mut h = SipHasher13::new_with_keys(SIP_KEY.0, SIP_KEY.1);
        h.write(&(source.len() as u64).to_le_bytes());
        h.write(source.as_bytes());
        h.write(message_id.as_bytes());
        Key(h.finish128().as_u128())
    }

    /// A key from its stored form.
    pub fn from_u128(v: u128) -> Key {
        Key(v)
    }

    /// The stored form (what the index holds, little-endian on disk).
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// The 64 bits fed to the bloom filters as their source hash: the key is
    /// already uniformly distributed, so no second hashing is needed.
    pub(crate) fn bloom_hash(self) -> u64 {
        (self.0 >> 64) as u64
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({:032x})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_across_builds() {
        // Pinned: changing the hash would orphan every persisted index.
        let k = Key::new("src", "msg-1");
        assert_eq!(k, Key::new("src", "msg-1"));
        assert_eq!(Key::from_u128(k.as_u128()), k);
        assert_eq!(format!("{k:?}").len(), "Key()".len() + 32);
        assert_eq!(k.as_u128(), PINNED);
    }

    const PINNED: u128 = 9_860_082_546_044_619_963_123_184_037_661_252_439;

    #[test]
    fn source_and_id_are_not_concatenated() {
        assert_ne!(Key::new("ab", "c"), Key::new("a", "bc"));
        assert_ne!(Key::new("", "abc"), Key::new("abc", ""));
        assert_ne!(Key::new("s", "m"), Key::new("t", "m"));
    }
}
