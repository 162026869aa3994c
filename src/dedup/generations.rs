//! Rotating bloom-filter generations: which ids may have been seen, in memory,
//! bounded by the window and the capacity (one filter per generation).
//!
//! A generation takes new ids until it is `window / generations` old or holds
//! `capacity / generations` ids; then a new one starts. A generation is dropped
//! once every id in it is older than the window (its successor started more than
//! a window ago), or early, oldest first, when more than `generations + 1` exist:
//! that is the capacity bound, and it shrinks the effective window.
//!
//! A filter is sized for the ids its generation is expected to take: the
//! first for `min_ids`, the next for about twice what the one before took,
//! the full `capacity / generations` once a generation filled. A filter that
//! fills is rebuilt larger by the index writer, also after its generation
//! was sealed ([`Generations::growth_due`], [`Generations::grow`]); until
//! then it only answers "maybe" more often, which the index settles. So the
//! memory of the filters follows the ids a box sees, and only full-size
//! filters take a slot of the interleaved region.

use super::bloom::{self, Bloom};
use super::filters::Filters;
use super::key::Key;
use std::collections::VecDeque;

/// One generation: the ids first seen during one stretch of time.
#[derive(Debug)]
pub(crate) struct Generation {
    /// Identifier, increasing; also names its redb table.
    pub id: u64,
    /// When it started taking ids (ms since the epoch). Every id of the
    /// previous generation was inserted before this instant.
    pub start_ms: u64,
    /// Ids inserted.
    pub count: u64,
    /// Its filter: every id inserted is in it.
    pub filter: Filter,
}

/// Where a generation's filter is.
#[derive(Debug)]
pub(crate) enum Filter {
    /// A slot of the interleaved [`Filters`] (every generation created by
    /// this process, and those loaded at the configured size).
    Slot(usize),
    /// Standalone: loaded from an index written with another filter size
    /// (or more generations than are configured now), until it ages out.
    Own(Bloom),
}

/// A change the index file must follow, in this order.
#[derive(Debug)]
pub(crate) enum Change {
    /// A generation started.
    Created {
        /// Its id.
        id: u64,
        /// Its start (ms since the epoch).
        start_ms: u64,
        /// Filter size in bits.
        num_bits: u64,
    },
    /// A generation stopped taking ids: persist its filter once (the
    /// writer copies it out with [`Generations::export_some`]; it no longer
    /// changes).
    Sealed {
        /// Its id.
        id: u64,
    },
    /// A generation aged out (or was evicted early): forget its ids.
    Dropped {
        /// Its id.
        id: u64,
        /// The early-eviction boundary after this drop (see
        /// [`Generations::early_boundary_ms`]).
        early_boundary_ms: Option<u64>,
    },
}

/// The generations held, oldest first; the last takes new ids.
#[derive(Debug)]
pub(crate) struct Generations {
    /// Held generations, oldest first.
    gens: VecDeque<Generation>,
    /// The dedup window in ms.
    window_ms: u64,
    /// Longest time a generation takes ids, in ms.
    span_ms: u64,
    /// Ids a generation takes before the next starts.
    per_gen: u64,
    /// The false-positive rate each filter is sized for.
    fp_per_gen: f64,
    /// Ids a new generation's filter is sized for at least.
    min_ids: u64,
    /// Filter bits per id at `fp_per_gen`.
    bits_per_id: f64,
    /// Most generations held at once (`generations + 1`).
    max_gens: usize,
    /// Id of the next generation.
    pub next_id: u64,
    /// The filters of the generations in slots, interleaved.
    filters: Filters,
    /// Slots no generation uses.
    free: Vec<usize>,
    /// (mask bit, slot) of each generation in a slot, bit i being the i-th
    /// newest generation; rebuilt whenever the held set changes.
    slot_bits: Vec<(u32, usize)>,
    /// Whether any held generation has its own filter.
    any_own: bool,
    /// After an early drop: the start of the oldest generation kept, i.e. the
    /// oldest instant whose ids are all still held (ms since the epoch).
    pub early_boundary_ms: Option<u64>,
}

impl Generations {
    /// Generations for a window, a capacity, a false-positive rate and a
    /// generation count, restored from `held` (oldest first); a new
    /// generation's filter is sized for `min_ids` ids at least. Fails only
    /// if the filters' memory cannot be mapped.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        window_ms: u64,
        capacity: u64,
        fp: f64,
        generations: u32,
        min_ids: u64,
        held: Vec<Generation>,
        next_id: u64,
        early_boundary_ms: Option<u64>,
    ) -> std::io::Result<Generations> {
        let g = u64::from(generations.max(1));
        let (per_gen, fp_per_gen) = sizing(capacity, fp, generations);
        let max_gens = g as usize + 1;
        let filters = Filters::new(bloom::bytes_for(per_gen, fp_per_gen), max_gens)?;
        let mut gens = Generations {
            gens: VecDeque::with_capacity(held.len() + 1),
            window_ms,
            span_ms: (window_ms / g).max(1),
            per_gen,
            fp_per_gen,
            min_ids: min_ids.max(1),
            bits_per_id: bloom::bytes_for(1 << 20, fp_per_gen) as f64 * 8.0 / (1 << 20) as f64,
            max_gens,
            next_id,
            early_boundary_ms,
            free: (0..filters.slots()).rev().collect(),
            filters,
            slot_bits: Vec::new(),
            any_own: false,
        };
        for mut g in held {
            // Into a slot when it fits one; else it keeps its own filter.
            if let Filter::Own(b) = &g.filter {
                if b.num_bits() / 8 == gens.filters.filter_bytes() {
                    if let Some(slot) = gens.free.pop() {
                        gens.filters.fill(slot, b.as_bytes());
                        g.filter = Filter::Slot(slot);
                    }
                }
            }
            gens.gens.push_back(g);
        }
        gens.held_changed();
        Ok(gens)
    }

    /// Recomputes what the checks go by after generations came or went.
    fn held_changed(&mut self) {
        self.slot_bits.clear();
        self.any_own = false;
        for (i, g) in self.gens.iter().rev().enumerate() {
            match g.filter {
                Filter::Slot(s) => self.slot_bits.push((i as u32, s)),
                Filter::Own(_) => self.any_own = true,
            }
        }
    }

    /// Forgets the oldest generation, freeing its slot.
    fn pop_oldest(&mut self) -> Generation {
        let g = self.gens.pop_front().unwrap();
        if let Filter::Slot(s) = g.filter {
            self.free.push(s);
        }
        self.held_changed();
        g
    }

    /// Ages generations out and starts a new one when the active one is too
    /// old (or none exists). Called before every classification.
    pub fn maintain(&mut self, now_ms: u64, changes: &mut Vec<Change>) {
        // A generation is dead once its successor started a window ago: all
        // its ids were inserted before that start.
        while self.gens.len() >= 2 && self.gens[1].start_ms.saturating_add(self.window_ms) <= now_ms
        {
            let g = self.pop_oldest();
            changes.push(Change::Dropped {
                id: g.id,
                early_boundary_ms: self.early_boundary_ms,
            });
        }
        let stale = match self.gens.back() {
            None => true,
            Some(g) => now_ms >= g.start_ms.saturating_add(self.span_ms),
        };
        if stale {
            self.rotate(now_ms, changes);
        }
    }

    /// Ages generations out and starts a new one if the active one is full;
    /// returns the active generation's id and how many ids it still takes
    /// (at least one).
    pub fn make_room(&mut self, now_ms: u64, changes: &mut Vec<Change>) -> (u64, usize) {
        self.maintain(now_ms, changes);
        if self.gens.back().unwrap().count >= self.per_gen {
            self.rotate(now_ms, changes);
        }
        let g = self.gens.back().unwrap();
        let room = self.per_gen - g.count;
        (g.id, usize::try_from(room).unwrap_or(usize::MAX))
    }

    /// Records `keys` as seen in the active generation, which must have
    /// room for them (see [`Generations::make_room`]). One tight loop, so
    /// that the filter's cache misses overlap.
    pub fn insert_active(&mut self, keys: &[Key]) {
        let g = self.gens.back_mut().unwrap();
        g.count += keys.len() as u64;
        match &mut g.filter {
            Filter::Slot(s) => self.filters.insert(*s, keys),
            Filter::Own(b) => {
                for k in keys {
                    b.insert(k.bloom_hash());
                }
            }
        }
    }

    /// For each key, the held generations whose filter may hold it, as a
    /// mask (bit i: the i-th newest; at most 64 are held). The slots in
    /// one pass over the interleaved filters, then any standalone filter.
    pub fn hit_masks(&self, keys: &[Key], out: &mut Vec<u64>) {
        out.clear();
        out.resize(keys.len(), 0);
        self.filters.hit_masks(keys, &self.slot_bits, out);
        if self.any_own {
            for (i, g) in self.gens.iter().rev().enumerate() {
                if let Filter::Own(b) = &g.filter {
                    for (m, k) in out.iter_mut().zip(keys) {
                        *m |= u64::from(b.contains(k.bloom_hash())) << i;
                    }
                }
            }
        }
    }

    /// The ids of the generations in a mask from [`Generations::hit_masks`],
    /// newest first.
    pub fn ids_in(&self, mask: u64) -> Vec<u64> {
        self.gens
            .iter()
            .rev()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, g)| g.id)
            .collect()
    }

    /// Starts a new generation, sealing the active one and evicting the
    /// oldest when more than the capacity allows would be held.
    fn rotate(&mut self, now_ms: u64, changes: &mut Vec<Change>) {
        // Every request waits for a rotation (it runs under the state lock):
        // its time is logged at debug level.
        let started = std::time::Instant::now();
        let previous_count = self.gens.back().map(|g| g.count);
        if let Some(g) = self.gens.back() {
            changes.push(Change::Sealed { id: g.id });
        }
        // The oldest go first, so that the new generation finds a free slot
        // (at most `max_gens` are held, and there are as many slots).
        while self.gens.len() >= self.max_gens {
            let g = self.pop_oldest();
            let boundary = self.gens[0].start_ms;
            self.early_boundary_ms = Some(boundary);
            changes.push(Change::Dropped {
                id: g.id,
                early_boundary_ms: self.early_boundary_ms,
            });
            if boundary.saturating_add(self.window_ms) > now_ms {
                tracing::warn!(
                    dropped_ids = g.count,
                    effective_window_s = (now_ms - boundary.min(now_ms)) / 1000,
                    window_s = self.window_ms / 1000,
                    "dedup capacity reached: the oldest ids aged out before the window; raise dedup capacity"
                );
            }
        }
        let filter = match self.new_filter_bytes(previous_count) {
            None => {
                let slot = self.free.pop().expect("a slot is free after the evictions");
                self.filters.clear(slot);
                Filter::Slot(slot)
            }
            Some(bytes) => Filter::Own(Bloom::with_bytes(bytes)),
        };
        let id = self.next_id;
        self.next_id += 1;
        let g = Generation {
            id,
            start_ms: now_ms,
            count: 0,
            filter,
        };
        changes.push(Change::Created {
            id,
            start_ms: now_ms,
            num_bits: self.num_bits(&g),
        });
        self.gens.push_back(g);
        self.held_changed();
        tracing::debug!(
            generation = id,
            micros = started.elapsed().as_micros() as u64,
            "dedup: rotated to a new generation"
        );
    }

    /// The filter of generation `id` as standalone bytes, if it is held
    /// (all at once: [`Generations::export_some`] without a slice limit).
    pub fn filter_bytes(&self, id: u64) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.export_some(id, &mut out, u64::MAX)?;
        Some(out)
    }

    /// Appends up to `max_blocks` more blocks of sealed generation `id`'s
    /// filter bytes to `out` (which holds the ones before): `Some(true)`
    /// once complete, `None` if the generation is no longer held (its slot
    /// may have been reused). For copying a filter out in slices, each
    /// under the state lock, rather than all at once under it.
    pub fn export_some(&self, id: u64, out: &mut Vec<u8>, max_blocks: u64) -> Option<bool> {
        let g = self.gens.iter().find(|g| g.id == id)?;
        Some(match &g.filter {
            Filter::Slot(s) => self.filters.export_some(*s, out, max_blocks),
            Filter::Own(b) => {
                out.clear();
                out.extend_from_slice(b.as_bytes());
                true
            }
        })
    }

    /// Bytes of held generation `id`'s filter, as standalone bytes.
    pub fn filter_len(&self, id: u64) -> Option<usize> {
        let g = self.gens.iter().find(|g| g.id == id)?;
        usize::try_from(self.num_bits(g) / 8).ok()
    }

    /// Ids a filter of `bytes` is sized for (at the configured rate).
    fn ids_for(&self, bytes: u64) -> u64 {
        (bytes as f64 * 8.0 / self.bits_per_id) as u64
    }

    /// The bytes of a filter for `ids` ids; `None` for the full size (a
    /// slot), from `capacity / generations` ids on.
    fn bytes_for_ids(&self, ids: u64) -> Option<u64> {
        (ids < self.per_gen).then(|| bloom::bytes_for(ids, self.fp_per_gen))
    }

    /// The filter size of a new generation after one that took
    /// `previous_count` ids (`None`: the first): room for twice that,
    /// `min_ids` at least; `None` for the full size.
    fn new_filter_bytes(&self, previous_count: Option<u64>) -> Option<u64> {
        let expected = previous_count.map_or(0, |c| c.saturating_mul(2));
        self.bytes_for_ids(expected.max(self.min_ids))
    }

    /// A held generation whose filter holds as many ids as it was sized
    /// for and is smaller than the full size, the newest first (usually the
    /// active one; a generation sealed before the writer grew it still
    /// grows): its id and the bytes of the filter to rebuild it into (four
    /// times its room, or the full size).
    pub fn growth_due(&self) -> Option<(u64, u64)> {
        let full = self.filters.filter_bytes();
        self.gens.iter().rev().find_map(|g| {
            let Filter::Own(b) = &g.filter else {
                return None;
            };
            let room = self.ids_for(b.num_bits() / 8);
            if g.count < room || b.num_bits() / 8 >= full {
                return None;
            }
            let ids = room.saturating_mul(4).max(g.count.saturating_mul(2));
            Some((g.id, self.bytes_for_ids(ids).unwrap_or(full)))
        })
    }

    /// Replaces generation `id`'s filter with `bloom`, which must hold every
    /// id the generation took (see [`super::state::State::grow`]); a filter
    /// of the full size moves into a free slot. Returns the new size in
    /// bits, or `None` if the generation is gone or its filter is not
    /// smaller.
    pub fn grow(&mut self, id: u64, bloom: Bloom) -> Option<u64> {
        let full = self.filters.filter_bytes();
        let i = self.gens.iter().position(|g| g.id == id)?;
        if self.num_bits(&self.gens[i]) >= bloom.num_bits() {
            return None;
        }
        let filter = match self.free.pop() {
            Some(slot) if bloom.num_bits() / 8 == full => {
                self.filters.fill(slot, bloom.as_bytes());
                Filter::Slot(slot)
            }
            slot => {
                self.free.extend(slot);
                Filter::Own(bloom)
            }
        };
        self.gens[i].filter = filter;
        self.held_changed();
        Some(self.num_bits(&self.gens[i]))
    }

    /// Size of a generation's filter in bits.
    fn num_bits(&self, g: &Generation) -> u64 {
        match &g.filter {
            Filter::Slot(_) => self.filters.filter_bytes() * 8,
            Filter::Own(b) => b.num_bits(),
        }
    }

    /// The look-back actually guaranteed now: the window, or less while ids
    /// younger than the window have been evicted for capacity.
    pub fn effective_window_ms(&self, now_ms: u64) -> u64 {
        effective_window_ms(self.window_ms, self.early_boundary_ms, now_ms)
    }

    /// Ids held (inserted into a held generation).
    pub fn ids_held(&self) -> u64 {
        self.gens.iter().map(|g| g.count).sum()
    }

    /// Memory of all filters in bytes: every slot once any generation holds
    /// one (the region is then in use as a whole: a slot's blocks are spread
    /// over all of it), and every standalone filter.
    pub fn bloom_bytes(&self) -> u64 {
        let slots = if self.free.len() < self.filters.slots() {
            self.filters.bytes()
        } else {
            0
        };
        let own: u64 = self
            .gens
            .iter()
            .filter_map(|g| match &g.filter {
                Filter::Own(b) => Some(b.num_bits() / 8),
                Filter::Slot(_) => None,
            })
            .sum();
        slots + own
    }

    /// Estimated chance that an id never seen hits at least one filter.
    pub fn false_positive_rate(&self) -> f64 {
        bloom::union_false_positive_rate(self.gens.iter().map(|g| (self.num_bits(g), g.count)))
    }

    /// The held generations, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Generation> {
        self.gens.iter()
    }
}

/// See [`Generations::effective_window_ms`]; shared with the read-only stats.
pub(crate) fn effective_window_ms(window_ms: u64, early: Option<u64>, now_ms: u64) -> u64 {
    match early {
        Some(b) if b.saturating_add(window_ms) > now_ms => now_ms.saturating_sub(b),
        _ => window_ms,
    }
}

/// What each generation's filter is sized for: `capacity / generations`
/// ids, at `fp / (generations + 1)` (up to `generations + 1` filters are
/// held, and their rates add up).
pub(crate) fn sizing(capacity: u64, fp: f64, generations: u32) -> (u64, f64) {
    let g = u64::from(generations.max(1));
    (capacity.div_ceil(g).max(1), fp / (g + 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::bloom::union_false_positive_rate;

    impl Generations {
        /// Records `key` as seen in the active generation; returns its id.
        fn insert(&mut self, key: Key, now_ms: u64, changes: &mut Vec<Change>) -> u64 {
            let (id, _) = self.make_room(now_ms, changes);
            self.insert_active(&[key]);
            id
        }

        /// Ids of the generations whose filter may hold `key`.
        fn hits(&self, key: Key) -> Vec<u64> {
            let mut m = Vec::new();
            self.hit_masks(&[key], &mut m);
            self.ids_in(m[0])
        }

        /// Held generations with a standalone filter.
        pub(crate) fn standalone(&self) -> usize {
            self.gens
                .iter()
                .filter(|g| matches!(g.filter, Filter::Own(_)))
                .count()
        }
    }

    const H: u64 = 3_600_000;

    fn gens(capacity: u64) -> Generations {
        Generations::new(24 * H, capacity, 0.01, 4, 1 << 16, Vec::new(), 0, None).unwrap()
    }

    fn key(i: u64) -> Key {
        Key::new("s", &i.to_string())
    }

    #[test]
    fn filters_start_small_and_grow_with_the_ids_taken() {
        // 400,000 ids per generation at the full size; new ones start at 64.
        let mut g = Generations::new(24 * H, 1_600_000, 0.01, 4, 64, Vec::new(), 0, None).unwrap();
        let full = g.filters.filter_bytes();
        let mut ch = Vec::new();
        let first = g.insert(key(0), 0, &mut ch);
        assert_eq!(g.standalone(), 1, "a new generation starts standalone");
        let small = g.bloom_bytes();
        assert!(small < 1024, "{small} bytes for 64 ids");
        assert!(matches!(ch[0], Change::Created { num_bits, .. } if num_bits == small * 8));
        // Grow it whenever it is due, as the writer does, with a filter
        // rebuilt from every id taken so far.
        let mut sizes = vec![small];
        for i in 1..300_000u64 {
            g.insert(key(i), 0, &mut ch);
            if let Some((id, bytes)) = g.growth_due() {
                assert_eq!(id, first);
                assert!(bytes > *sizes.last().unwrap());
                let mut b = Bloom::with_bytes(bytes);
                for j in 0..=i {
                    b.insert(key(j).bloom_hash());
                }
                assert_eq!(g.grow(id, b), Some(bytes * 8));
                sizes.push(g.bloom_bytes());
            }
        }
        // Four times larger each time (64 ids, then ~300, ~1,200, …), then
        // the full size: a slot, and the region in use.
        assert!(sizes.windows(2).all(|w| w[1] >= 4 * w[0]), "{sizes:?}");
        assert_eq!(sizes.len(), 8, "{sizes:?}");
        assert_eq!(*sizes.last().unwrap(), g.filters.bytes(), "{sizes:?}");
        assert_eq!(g.standalone(), 0);
        assert_eq!(g.growth_due(), None, "a full-size filter does not grow");
        for i in (0..300_000u64).step_by(997) {
            assert_eq!(g.hits(key(i)), [first], "id {i}");
        }
        // A generation after one that filled starts at the full size; one
        // after a quiet one at twice what that one took.
        g.insert(key(1), 7 * H, &mut ch);
        assert_eq!(g.num_bits(g.gens.back().unwrap()), full * 8);
        for i in 0..1000 {
            g.insert(key(i), 7 * H, &mut ch);
        }
        g.insert(key(1), 14 * H, &mut ch);
        let quiet = g.num_bits(g.gens.back().unwrap()) / 8;
        assert_eq!(quiet, bloom::bytes_for(2002, g.fp_per_gen), "2 × 1,001 ids");
        // A generation sealed while its filter was full still grows.
        let quiet_id = g.gens.back().unwrap().id;
        for i in 0..3000 {
            g.insert(key(10_000 + i), 14 * H, &mut ch);
        }
        g.insert(key(1), 21 * H, &mut ch);
        assert_ne!(g.gens.back().unwrap().id, quiet_id, "sealed by time");
        let (due, bytes) = g.growth_due().expect("the sealed, full filter is due");
        assert_eq!(due, quiet_id);
        assert!(g.grow(due, Bloom::with_bytes(bytes)).is_some());
        // A filter replaced by one no larger is left as it is.
        let active = g.gens.back().unwrap().id;
        assert_eq!(g.grow(active, Bloom::with_bytes(quiet)), None);
        assert_eq!(g.grow(999, Bloom::with_bytes(full)), None, "not held");
    }

    #[test]
    fn rotates_by_time_and_drops_after_the_window() {
        let mut g = gens(1000);
        let mut ch = Vec::new();
        g.insert(key(1), 0, &mut ch);
        assert!(matches!(
            ch[0],
            Change::Created {
                id: 0,
                start_ms: 0,
                ..
            }
        ));
        for hour in 1..=30 {
            g.maintain(hour * H, &mut ch);
        }
        // Span 6 h: generations started at 0, 6, 12, 18, 24, 30 h; the one of
        // hour 0 dies once the one of hour 6 is a window old (hour 30).
        let starts: Vec<u64> = g.iter().map(|x| x.start_ms / H).collect();
        assert_eq!(starts, vec![6, 12, 18, 24, 30]);
        assert!(ch
            .iter()
            .any(|c| matches!(c, Change::Dropped { id: 0, .. })));
        assert!(g.hits(key(1)).is_empty());
        assert_eq!(g.effective_window_ms(30 * H), 24 * H);
        assert_eq!(g.early_boundary_ms, None);
    }

    #[test]
    fn a_sealed_filter_is_copied_out_in_slices() {
        // The writer copies a sealed filter out a few blocks per lock hold:
        // the slices add up to the filter, and a dropped generation (whose
        // slot may hold another generation by then) gives nothing.
        let mut g = gens(1000);
        let mut ch = Vec::new();
        for hour in 0..=30 {
            g.insert(key(100 + hour), hour * H, &mut ch);
        }
        let held: Vec<u64> = g.iter().map(|x| x.id).collect();
        let sealed = held[held.len() - 2];
        let mut out = Vec::new();
        let mut holds = 1;
        while !g.export_some(sealed, &mut out, 3).unwrap() {
            holds += 1;
        }
        assert!(holds > 1, "copied out in more than one slice");
        assert_eq!(Some(out.len()), g.filter_len(sealed));
        assert_eq!(Some(out), g.filter_bytes(sealed));
        assert!(!held.contains(&0));
        assert_eq!(g.export_some(0, &mut Vec::new(), 3), None);
    }

    #[test]
    fn ids_are_found_in_their_generation() {
        let mut g = gens(1000);
        let mut ch = Vec::new();
        let a = g.insert(key(1), 0, &mut ch);
        let b = g.insert(key(2), 7 * H, &mut ch);
        assert_ne!(a, b);
        assert!(g.hits(key(1)).contains(&a));
        assert!(g.hits(key(2)).contains(&b));
        assert_eq!(g.ids_held(), 2);
    }

    #[test]
    fn capacity_evicts_the_oldest_early_and_shrinks_the_window() {
        let mut g = gens(100); // 25 per generation, at most 5 generations
        let mut ch = Vec::new();
        for i in 0..125 {
            g.insert(key(i), i * 60_000, &mut ch);
        }
        assert_eq!(g.iter().count(), 5);
        assert_eq!(g.early_boundary_ms, None);
        g.insert(key(125), 125 * 60_000, &mut ch);
        assert_eq!(g.iter().count(), 5);
        assert_eq!(g.ids_held(), 101);
        // The oldest kept generation started at id 25 (minute 25).
        assert_eq!(g.early_boundary_ms, Some(25 * 60_000));
        assert_eq!(g.effective_window_ms(125 * 60_000), 100 * 60_000);
        // A window later the full window is back.
        assert_eq!(g.effective_window_ms(25 * 60_000 + 24 * H), 24 * H);
        assert!(g.bloom_bytes() > 0);
    }

    #[test]
    fn estimated_false_positive_rate_meets_the_target_at_capacity() {
        let mut g = gens(20_000);
        let mut ch = Vec::new();
        for i in 0..20_000 {
            g.insert(key(i), 0, &mut ch);
        }
        let est = g.false_positive_rate();
        assert!(est > 0.0 && est <= 0.0101, "{est}");
        let fp = (100_000..200_000u64)
            .filter(|&i| !g.hits(key(i)).is_empty())
            .count();
        let measured = fp as f64 / 100_000.0;
        assert!(measured < 0.015, "measured {measured}, estimated {est}");
        let one = &g.gens[0];
        let single = bloom::false_positive_rate(g.num_bits(one), one.count);
        let alone = union_false_positive_rate(std::iter::once((g.num_bits(one), one.count)));
        assert!((alone - single).abs() < 1e-12);
        // Few ids: tiny but not rounded to zero.
        let sparse = union_false_positive_rate(std::iter::once((1 << 20, 100)));
        assert!(sparse > 0.0 && sparse < 1e-9, "{sparse}");
    }
}
