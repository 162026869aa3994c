//! The bloom filters of the held generations, interleaved in one region: block
//! `b` of every generation's filter sits next to block `b` of the others, so a
//! new id is checked against all of them with the cache lines of one group
//! (160 bytes at five generations) instead of one miss per filter.
//!
//! Every filter here has the same number of blocks (the configured size); a
//! generation is a *slot*. The region is anonymous memory advised for
//! transparent huge pages, so that the random accesses of the checks do not
//! also miss the TLB (31.8 MiB at the defaults is ~8,100 small pages).
//! A filter enters or leaves as standalone bytes ([`Filters::fill`],
//! [`Filters::export_some`]), in the persisted format of [`super::bloom::Bloom`].

use super::bloom::{block_has, block_index, block_set, masks, Block, BLOCK_BYTES};
use super::key::Key;

/// Alignment of the region: a transparent huge page.
const HUGE_PAGE: usize = 2 << 20;

/// `slots` filters of `blocks` blocks each, interleaved.
pub(crate) struct Filters {
    /// Anonymous memory; the region starts `offset` bytes in (huge-page aligned).
    map: memmap2::MmapMut,
    /// Where the region starts in `map`.
    offset: usize,
    /// Blocks per filter.
    blocks: u64,
    /// Filters held.
    slots: usize,
    /// Whether a slot may hold set bits (it is cleared before reuse).
    dirty: Vec<bool>,
}

impl Filters {
    /// Room for `slots` empty filters of `bytes` each (whole blocks).
    pub fn new(bytes: u64, slots: usize) -> std::io::Result<Filters> {
        let slots = slots.max(1);
        let blocks = (bytes / BLOCK_BYTES as u64).max(1);
        let len = usize::try_from(blocks)
            .ok()
            .and_then(|b| b.checked_mul(BLOCK_BYTES * slots))
            .ok_or_else(|| std::io::Error::other("bloom filters too large"))?;
        let map = memmap2::MmapMut::map_anon(len + HUGE_PAGE)?;
        #[cfg(target_os = "linux")]
        {
            // Only advice: without huge pages the filters work the same.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        let start = map.as_ptr() as usize;
        let offset = start.next_multiple_of(HUGE_PAGE) - start;
        Ok(Filters {
            map,
            offset,
            blocks,
            slots,
            dirty: vec![false; slots],
        })
    }

    /// Bytes of one filter.
    pub fn filter_bytes(&self) -> u64 {
        self.blocks * BLOCK_BYTES as u64
    }

    /// Bytes of all slots: the memory the region takes once in use.
    pub fn bytes(&self) -> u64 {
        self.filter_bytes() * self.slots as u64
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Bytes of one group (block `b` of every slot).
    fn group(&self) -> usize {
        BLOCK_BYTES * self.slots
    }

    /// The region.
    fn region(&self) -> &[u8] {
        let len = self.blocks as usize * self.group();
        &self.map[self.offset..self.offset + len]
    }

    /// The region, writable.
    fn region_mut(&mut self) -> &mut [u8] {
        let len = self.blocks as usize * self.group();
        &mut self.map[self.offset..self.offset + len]
    }

    /// Empties `slot` for a new generation.
    pub fn clear(&mut self, slot: usize) {
        if std::mem::take(&mut self.dirty[slot]) {
            let blocks = slot_blocks(self.blocks, self.slots, slot, 0..self.blocks);
            let region = self.region_mut();
            for r in blocks {
                region[r].fill(0);
            }
        }
    }

    /// Loads persisted filter bytes (exactly [`Filters::filter_bytes`]) into `slot`.
    pub fn fill(&mut self, slot: usize, bytes: &[u8]) {
        assert_eq!(bytes.len() as u64, self.filter_bytes(), "filter size");
        self.dirty[slot] = true;
        let blocks = slot_blocks(self.blocks, self.slots, slot, 0..self.blocks);
        let region = self.region_mut();
        for (r, src) in blocks.zip(bytes.chunks_exact(BLOCK_BYTES)) {
            region[r].copy_from_slice(src);
        }
    }

    /// `slot`'s filter as standalone bytes, all at once (the tests' view;
    /// the writer copies out with [`Filters::export_some`]).
    #[cfg(test)]
    pub fn export(&self, slot: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.filter_bytes() as usize);
        self.export_some(slot, &mut out, u64::MAX);
        out
    }

    /// Appends up to `max` more blocks of `slot`'s standalone bytes to
    /// `out`, which holds the ones before; true once `out` holds them all.
    pub fn export_some(&self, slot: usize, out: &mut Vec<u8>, max: u64) -> bool {
        let from = (out.len() / BLOCK_BYTES) as u64;
        let to = from.saturating_add(max).min(self.blocks);
        let region = self.region();
        for r in slot_blocks(self.blocks, self.slots, slot, from..to) {
            out.extend_from_slice(&region[r]);
        }
        to == self.blocks
    }

    /// Where `hash`'s group starts.
    fn group_at(&self, hash: u64) -> usize {
        block_index(hash, self.blocks) * self.group()
    }

    /// Loads every cache line of the groups `keys` map to, all misses in
    /// flight at once, ahead of checking them.
    fn warm(&self, keys: &[Key]) {
        let region = self.region();
        let group = self.group();
        let mut acc = 0u8;
        for k in keys {
            let at = self.group_at(k.bloom_hash());
            let mut line = at;
            while line < at + group {
                acc ^= region[line];
                line += 64;
            }
            acc ^= region[at + group - 1];
        }
        std::hint::black_box(acc);
    }

    /// Adds `keys` to `slot`'s filter: first one load per key of the block
    /// it sets (one cache line: blocks are 32-byte aligned), all the misses
    /// in flight at once, then the inserts.
    pub fn insert(&mut self, slot: usize, keys: &[Key]) {
        self.dirty[slot] = true;
        let group = self.group();
        let blocks = self.blocks;
        let block_at = |h: u64| block_index(h, blocks) * group + slot * BLOCK_BYTES;
        let region = self.region_mut();
        let mut acc = 0u8;
        for k in keys {
            acc ^= region[block_at(k.bloom_hash())];
        }
        std::hint::black_box(acc);
        for k in keys {
            let h = k.bloom_hash();
            let at = block_at(h);
            let block: &mut Block = (&mut region[at..at + BLOCK_BYTES]).try_into().unwrap();
            block_set(block, &masks(h));
        }
    }

    /// For each key, ORs bit `bit` into its mask when slot `slot`'s filter
    /// may hold it, for every (bit, slot) of `slots`.
    pub fn hit_masks(&self, keys: &[Key], slots: &[(u32, usize)], out: &mut [u64]) {
        self.warm(keys);
        let region = self.region();
        for (m, k) in out.iter_mut().zip(keys) {
            let h = k.bloom_hash();
            let at = self.group_at(h);
            let bits = masks(h);
            for &(bit, slot) in slots {
                let b = at + slot * BLOCK_BYTES;
                let block: &Block = region[b..b + BLOCK_BYTES].try_into().unwrap();
                *m |= u64::from(block_has(block, &bits)) << bit;
            }
        }
    }
}

/// The byte ranges of blocks `range` of `slot` in a region of `slots`
/// filters of `blocks` blocks, in block order.
fn slot_blocks(
    blocks: u64,
    slots: usize,
    slot: usize,
    range: std::ops::Range<u64>,
) -> impl Iterator<Item = std::ops::Range<usize>> {
    let group = BLOCK_BYTES * slots;
    let range = range.start.min(blocks) as usize..range.end.min(blocks) as usize;
    range.map(move |b| {
        let at = b * group + slot * BLOCK_BYTES;
        at..at + BLOCK_BYTES
    })
}

impl std::fmt::Debug for Filters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filters")
            .field("filter_bytes", &self.filter_bytes())
            .field("slots", &self.slots)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::bloom::Bloom;
    use super::*;

    fn key(i: u64) -> Key {
        Key::new("s", &i.to_string())
    }

    #[test]
    fn each_slot_behaves_as_its_own_standalone_filter() {
        // Five slots filled with different ids must answer, and export,
        // exactly what five standalone filters of the same size do.
        let bytes = 64 * BLOCK_BYTES as u64;
        let mut f = Filters::new(bytes, 5).unwrap();
        let mut alone: Vec<Bloom> = (0..5).map(|_| Bloom::with_bytes(bytes)).collect();
        for s in 0..5u64 {
            let keys: Vec<Key> = (s * 300..s * 300 + 300).map(key).collect();
            f.insert(s as usize, &keys);
            for k in &keys {
                alone[s as usize].insert(k.bloom_hash());
            }
        }
        for (s, b) in alone.iter().enumerate() {
            assert_eq!(f.export(s), b.as_bytes());
        }
        let probe: Vec<Key> = (0..3000).map(key).collect();
        let order: Vec<(u32, usize)> = (0..5).map(|s| (4 - s as u32, s)).collect();
        let mut masks = vec![0; probe.len()];
        f.hit_masks(&probe, &order, &mut masks);
        for (k, m) in probe.iter().zip(&masks) {
            for (bit, s) in &order {
                assert_eq!(m >> bit & 1 == 1, alone[*s].contains(k.bloom_hash()));
            }
        }
        // Every inserted id hits its own slot.
        assert!(probe[..1500]
            .iter()
            .zip(&masks)
            .enumerate()
            .all(|(i, (_, m))| m >> (4 - i / 300) & 1 == 1));
    }

    #[test]
    fn an_export_in_slices_is_the_whole_export() {
        // The writer copies a sealed filter out a few blocks per lock hold:
        // the slices must add up to exactly that slot's bytes.
        let bytes = 50 * BLOCK_BYTES as u64;
        let mut f = Filters::new(bytes, 3).unwrap();
        let keys: Vec<Key> = (0..400).map(key).collect();
        f.insert(0, &keys);
        f.insert(1, &keys[..200]);
        let mut out = Vec::new();
        let mut slices = 1;
        while !f.export_some(1, &mut out, 7) {
            slices += 1;
        }
        assert_eq!(slices, 8, "50 blocks in slices of 7");
        assert_eq!(out, f.export(1));
        assert_ne!(out, f.export(0));
    }

    #[test]
    fn clear_fill_and_export_touch_only_their_slot() {
        let bytes = 32 * BLOCK_BYTES as u64;
        let mut f = Filters::new(bytes, 3).unwrap();
        let keys: Vec<Key> = (0..200).map(key).collect();
        f.insert(0, &keys);
        f.insert(2, &keys);
        let two = f.export(2);
        f.clear(2);
        assert!(f.export(2).iter().all(|&b| b == 0));
        assert_eq!(f.export(0), two, "slot 0 kept its bits");
        f.fill(1, &two);
        assert_eq!(f.export(1), two);
        let mut m = vec![0; keys.len()];
        f.hit_masks(&keys, &[(0, 1), (1, 2)], &mut m);
        assert!(m.iter().all(|&m| m == 1));
        assert_eq!(f.bytes(), 3 * bytes);
    }
}
