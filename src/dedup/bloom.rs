//! The split block bloom filter (the Parquet layout): each id sets 8 bits in
//! one 256-bit block, one bit in each 32-bit word, so an insert or a look-up
//! touches one 32-byte block instead of one cache line per hash function.
//! Here: the block arithmetic, the sizing, and [`Bloom`], one standalone
//! filter (loaded, rebuilt or persisted); the held generations' filters live
//! interleaved in [`super::filters::Filters`].
//!
//! For the same false-positive rate a block filter needs more bits than a
//! classic one (about 19 bits per id instead of 16 at 0.05 %), and pays it
//! back in time: a classic filter's insert costs ~11 cache misses. The
//! persisted bytes are the Parquet (and `sbbf-rs`) format: blocks of eight
//! little-endian words, a hash's block chosen by its high 32 bits.

/// Bits of one block.
const BLOCK_BITS: f64 = 256.0;
/// Bytes of one block: filters are whole blocks.
pub(crate) const BLOCK_BYTES: usize = 32;
/// Bits each id sets (one per 32-bit word of its block).
pub(crate) const BITS_PER_ID: u32 = 8;

/// One block's bytes.
pub(crate) type Block = [u8; BLOCK_BYTES];

/// The Parquet salts: word i of a block gets bit `(low32 × SALT[i]) >> 27`.
const SALT: [u32; 8] = [
    0x47b6_137b,
    0x4497_4d91,
    0x8824_ad5b,
    0xa2b7_289d,
    0x7054_95c7,
    0x2df1_424b,
    0x9efc_4947,
    0x5c6b_fb31,
];

/// The block of a filter of `blocks` blocks that `hash` maps to: the high 32
/// bits of the hash scaled to the number of blocks.
#[inline]
pub(crate) fn block_index(hash: u64, blocks: u64) -> usize {
    (((hash >> 32) * blocks) >> 32) as usize
}

/// The bit `hash` sets in each word of its block.
#[inline]
pub(crate) fn masks(hash: u64) -> [u32; 8] {
    let low = hash as u32;
    SALT.map(|s| 1u32 << (low.wrapping_mul(s) >> 27))
}

/// Word `i` of a block.
#[inline]
fn word(block: &Block, i: usize) -> u32 {
    u32::from_le_bytes([
        block[4 * i],
        block[4 * i + 1],
        block[4 * i + 2],
        block[4 * i + 3],
    ])
}

/// True when every bit of `m` is set in `block`.
#[inline]
pub(crate) fn block_has(block: &Block, m: &[u32; 8]) -> bool {
    let mut missing = 0u32;
    for (i, m) in m.iter().enumerate() {
        missing |= !word(block, i) & m;
    }
    missing == 0
}

/// Sets the bits of `m` in `block`.
#[inline]
pub(crate) fn block_set(block: &mut Block, m: &[u32; 8]) {
    for (i, m) in m.iter().enumerate() {
        let w = (word(block, i) | m).to_le_bytes();
        block[4 * i..4 * i + 4].copy_from_slice(&w);
    }
}

/// One standalone filter over 64-bit hashes.
pub(crate) struct Bloom {
    bytes: Vec<u8>,
}

impl Bloom {
    /// An empty filter sized so that `items` ids give at most a
    /// false-positive rate of `fp`.
    #[cfg(test)]
    pub fn for_items(items: u64, fp: f64) -> Bloom {
        Bloom::with_bytes(bytes_for(items.max(1), fp))
    }

    /// An empty filter of `bytes` (rounded up to whole blocks).
    pub fn with_bytes(bytes: u64) -> Bloom {
        let bytes = bytes
            .max(BLOCK_BYTES as u64)
            .next_multiple_of(BLOCK_BYTES as u64);
        Bloom {
            bytes: vec![0; bytes as usize],
        }
    }

    /// A filter from its persisted bytes; `None` unless they are whole blocks.
    pub fn from_bytes(bytes: &[u8]) -> Option<Bloom> {
        (!bytes.is_empty() && bytes.len().is_multiple_of(BLOCK_BYTES)).then(|| Bloom {
            bytes: bytes.to_vec(),
        })
    }

    /// Its bytes, to persist.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Size in bits.
    pub fn num_bits(&self) -> u64 {
        self.bytes.len() as u64 * 8
    }

    /// The block `hash` maps to.
    fn block(&self, hash: u64) -> usize {
        block_index(hash, (self.bytes.len() / BLOCK_BYTES) as u64) * BLOCK_BYTES
    }

    /// Adds a hash.
    pub fn insert(&mut self, hash: u64) {
        let at = self.block(hash);
        let block: &mut Block = (&mut self.bytes[at..at + BLOCK_BYTES]).try_into().unwrap();
        block_set(block, &masks(hash));
    }

    /// False only if `hash` was never inserted.
    pub fn contains(&self, hash: u64) -> bool {
        let at = self.block(hash);
        let block: &Block = self.bytes[at..at + BLOCK_BYTES].try_into().unwrap();
        block_has(block, &masks(hash))
    }
}

impl std::fmt::Debug for Bloom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bloom")
            .field("bits", &self.num_bits())
            .finish()
    }
}

/// Expected false-positive rate of a filter of `bits` holding `items` ids.
///
/// A block holds a Poisson-distributed number x of ids (mean λ = items ×
/// 256 / bits); a fresh id hits when each of its 8 bits is set, each with
/// probability 1 − (31/32)^x.
pub(crate) fn false_positive_rate(bits: u64, items: u64) -> f64 {
    if items == 0 {
        return 0.0;
    }
    let lambda = items as f64 * BLOCK_BITS / bits.max(1) as f64;
    let miss_one = 31.0_f64 / 32.0;
    let mut sum = 0.0;
    let mut term = (-lambda).exp(); // P(x = 0)
    let mut log_term = -lambda;
    let last = (lambda * 4.0 + 60.0) as u64;
    for x in 0..=last {
        if x > 0 {
            // P(x) from P(x − 1), in log space so a large λ does not
            // underflow the first terms to zero.
            log_term += lambda.ln() - (x as f64).ln();
            term = log_term.exp();
        }
        sum += term * (1.0 - miss_one.powi(x as i32)).powi(BITS_PER_ID as i32);
    }
    sum.min(1.0)
}

/// Estimated false-positive rate of several filters with (bits, ids) each:
/// the chance that a fresh id hits at least one.
pub(crate) fn union_false_positive_rate(filters: impl Iterator<Item = (u64, u64)>) -> f64 {
    // 1 − Π(1 − pᵢ), computed in log space so tiny rates do not round to 0.
    let log_miss: f64 = filters
        .map(|(bits, n)| (-false_positive_rate(bits, n)).ln_1p())
        .sum();
    -log_miss.exp_m1()
}

/// Bytes (whole blocks) a filter needs for `items` ids at rate `fp`.
pub(crate) fn bytes_for(items: u64, fp: f64) -> u64 {
    let fp = fp.clamp(1e-9, 0.5);
    // The rate falls as bits per id grow: bisect bits per id in [1, 64].
    let (mut lo, mut hi) = (1.0_f64, 64.0_f64);
    for _ in 0..50 {
        let mid = (lo + hi) / 2.0;
        let bits = (mid * items as f64).ceil() as u64;
        if false_positive_rate(bits, items) <= fp {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let bits = (hi * items as f64).ceil() as u64;
    bits.div_ceil(8).next_multiple_of(BLOCK_BYTES as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A well-mixed 64-bit sequence (splitmix64).
    fn hashes(seed: u64) -> impl Iterator<Item = u64> {
        let mut s = seed;
        std::iter::repeat_with(move || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
    }

    #[test]
    fn inserted_hashes_are_always_found() {
        let mut b = Bloom::for_items(10_000, 0.001);
        let ins: Vec<u64> = hashes(1).take(10_000).collect();
        for &h in &ins {
            b.insert(h);
        }
        assert!(ins.iter().all(|&h| b.contains(h)));
    }

    #[test]
    fn measured_false_positives_match_the_sizing() {
        for fp in [0.01, 0.0005] {
            let n = 200_000;
            let mut b = Bloom::for_items(n, fp);
            for h in hashes(2).take(n as usize) {
                b.insert(h);
            }
            let probes = 2_000_000;
            let hits = hashes(3).take(probes).filter(|&h| b.contains(h)).count();
            let measured = hits as f64 / probes as f64;
            let predicted = false_positive_rate(b.num_bits(), n);
            assert!(predicted <= fp, "sized for {fp}, predicts {predicted}");
            assert!(
                measured < fp * 1.25 && measured > predicted * 0.75,
                "fp {fp}: measured {measured}, predicted {predicted}"
            );
        }
    }

    #[test]
    fn sizing_is_about_nineteen_bits_per_id_at_five_in_ten_thousand() {
        let bits = bytes_for(1_000_000, 0.0005) * 8;
        let per_id = bits as f64 / 1e6;
        assert!((18.5..20.0).contains(&per_id), "{per_id} bits per id");
        // Fewer bits would miss the target.
        assert!(false_positive_rate(bits - 64 * 8 * 1000, 1_000_000) > 0.0005);
    }

    #[test]
    fn bytes_are_the_parquet_format_of_sbbf_rs() {
        // Indexes written before ferry had its own filter hold sbbf-rs
        // bytes: the same hashes must set the same bits.
        for (blocks, n) in [(1usize, 3usize), (64, 500), (1000, 20_000)] {
            let mut ours = Bloom::with_bytes((blocks * BLOCK_BYTES) as u64);
            let mut theirs = sbbf_rs_safe::Filter::new(8, blocks * BLOCK_BYTES);
            for h in hashes(blocks as u64).take(n) {
                ours.insert(h);
                theirs.insert_hash(h);
            }
            assert_eq!(ours.as_bytes(), theirs.as_bytes(), "{blocks} blocks");
            let loaded = Bloom::from_bytes(theirs.as_bytes()).unwrap();
            for h in hashes(99).take(5000) {
                assert_eq!(loaded.contains(h), theirs.contains_hash(h));
            }
        }
    }

    #[test]
    fn bytes_round_trip() {
        let mut b = Bloom::for_items(1000, 0.01);
        for h in hashes(4).take(1000) {
            b.insert(h);
        }
        let c = Bloom::from_bytes(b.as_bytes()).unwrap();
        assert_eq!(c.as_bytes(), b.as_bytes());
        assert!(hashes(4).take(1000).all(|h| c.contains(h)));
        assert!(Bloom::from_bytes(&[0; 33]).is_none());
        assert!(Bloom::from_bytes(&[]).is_none());
    }
}
