//! The set of ids durable in the WAL but not yet in redb (id → first-seen
//! ms): an open-addressing table built for its one hot operation, adding a
//! request's ids after its append.
//!
//! The set holds up to a writer batch of ids (megabytes), so each add is a
//! cache miss. A std `HashMap` takes its two misses (control byte, then
//! bucket) one id after the other; here a request's ids are added in two
//! passes, the first only loading each id's slot, so that their misses are
//! all in flight at once, as the bloom filters' warm-up does. Look-ups are
//! rare (only after a bloom hit).

use super::key::Key;
use std::hash::BuildHasher;

/// One slot: a key and its first-seen ms plus one (0: empty).
#[derive(Clone, Copy, Default)]
struct Slot {
    key: u128,
    t1: u64,
}

/// Slots of an empty set's first table.
const MIN_SLOTS: usize = 1024;

/// Ids committed and not yet written to redb.
#[derive(Default)]
pub(crate) struct PendingSet {
    /// A power of two long, at most half full: probe chains stay short.
    slots: Vec<Slot>,
    /// Ids held.
    len: usize,
    /// Seeded per process, so that clients cannot choose ids that collide
    /// in the table (the key hash itself is public).
    hasher: foldhash::fast::RandomState,
}

impl PendingSet {
    /// Ids held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no id is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where `key`'s probe chain starts.
    fn home(&self, key: u128) -> usize {
        self.hasher.hash_one(key) as usize & (self.slots.len() - 1)
    }

    /// The first-seen ms of `key`, if held.
    pub fn get(&self, key: Key) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        let key = key.as_u128();
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let s = self.slots[i];
            if s.t1 == 0 {
                return None;
            }
            if s.key == key {
                return Some(s.t1 - 1);
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `keys`, first seen at `t_ms`; a key already held takes the new
    /// time (it was new again, so its earlier sighting had aged out).
    pub fn insert_all(&mut self, keys: &[Key], t_ms: u64) {
        self.reserve(keys.len());
        // Warm-up: one plain load per key brings its home slot into cache,
        // every miss in flight at once; the inserts then mostly hit.
        let mut acc = 0u64;
        for k in keys {
            acc ^= self.slots[self.home(k.as_u128())].t1;
        }
        std::hint::black_box(acc);
        let t1 = t_ms.saturating_add(1);
        for k in keys {
            self.put(k.as_u128(), t1);
        }
    }

    /// Inserts or updates one key (room is reserved).
    fn put(&mut self, key: u128, t1: u64) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let s = &mut self.slots[i];
            if s.t1 == 0 {
                *s = Slot { key, t1 };
                self.len += 1;
                return;
            }
            if s.key == key {
                s.t1 = t1;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Makes room for `more` ids at most half full, doubling (and
    /// re-placing every id) as needed.
    fn reserve(&mut self, more: usize) {
        let need = (self.len + more).saturating_mul(2).max(MIN_SLOTS);
        if need <= self.slots.len() {
            return;
        }
        let old = std::mem::replace(
            &mut self.slots,
            vec![Slot::default(); need.next_power_of_two()],
        );
        self.len = 0;
        for s in old.into_iter().filter(|s| s.t1 != 0) {
            self.put(s.key, s.t1);
        }
    }

    /// Moves every id of `other` in (keeping the later time of a key in
    /// both); `other` is left empty.
    pub fn absorb(&mut self, other: &mut PendingSet) {
        self.reserve(other.len);
        for i in 0..other.slots.len() {
            let s = other.slots[i];
            if s.t1 != 0 && self.get(Key::from_u128(s.key)).is_none_or(|t| t < s.t1 - 1) {
                self.put(s.key, s.t1);
            }
        }
        other.clear();
    }

    /// Forgets every id, keeping the table (its size is the next batch's).
    pub fn clear(&mut self) {
        if self.len > 0 {
            self.slots.fill(Slot::default());
            self.len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn k(i: u64) -> Key {
        Key::new("s", &i.to_string())
    }

    #[test]
    fn holds_what_was_added_and_nothing_else() {
        let mut p = PendingSet::default();
        assert_eq!(p.get(k(1)), None);
        let keys: Vec<Key> = (0..5000).map(k).collect();
        // Added in requests of 100, across several doublings.
        for (i, chunk) in keys.chunks(100).enumerate() {
            p.insert_all(chunk, 1000 + i as u64);
        }
        assert_eq!(p.len(), 5000);
        assert!(p.slots.len() >= 10_000, "at most half full");
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(p.get(*key), Some(1000 + i as u64 / 100));
        }
        assert_eq!(p.get(k(5000)), None);
        // Time 0 is a time, not an empty slot.
        p.insert_all(&[k(7000)], 0);
        assert_eq!(p.get(k(7000)), Some(0));
        p.clear();
        assert_eq!((p.len(), p.get(k(3)), p.get(k(7000))), (0, None, None));
    }

    proptest! {
        /// Against a HashMap model: adds (re-adding a key updates its
        /// time), absorbs and clears.
        #[test]
        fn behaves_like_a_map(
            ops in prop::collection::vec((0u8..10, prop::collection::vec(0u64..300, 0..40), 0u64..50), 1..60)
        ) {
            let (mut a, mut b) = (PendingSet::default(), PendingSet::default());
            let (mut ma, mut mb) = (HashMap::new(), HashMap::new());
            for (op, ids, t) in ops {
                let keys: Vec<Key> = ids.iter().map(|&i| k(i)).collect();
                match op {
                    0..=5 => {
                        a.insert_all(&keys, t);
                        for key in &keys { ma.insert(*key, t); }
                    }
                    6..=7 => {
                        b.insert_all(&keys, t);
                        for key in &keys { mb.insert(*key, t); }
                    }
                    8 => {
                        a.absorb(&mut b);
                        for (key, t) in mb.drain() {
                            let e = ma.entry(key).or_insert(t);
                            *e = (*e).max(t);
                        }
                    }
                    _ => {
                        a.clear();
                        ma.clear();
                    }
                }
                prop_assert_eq!(a.len(), ma.len());
                prop_assert_eq!(b.len(), mb.len());
                for i in 0..300 {
                    prop_assert_eq!(a.get(k(i)), ma.get(&k(i)).copied());
                    prop_assert_eq!(b.get(k(i)), mb.get(&k(i)).copied());
                }
            }
        }
    }
}
