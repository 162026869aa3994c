//! The checkpoint: the WAL offset below which every record is indexed,
//! advanced as contiguous offset ranges complete (commits finish out of order).

use std::collections::BTreeMap;
use std::ops::Range;

/// Completed ranges past a gap are merged; past this many separate ranges the
/// oldest gap is given up on (see [`Progress::complete`]).
const MAX_RANGES: usize = 4096;

/// Which offsets are indexed: all below `next`, plus the ranges in `done`.
#[derive(Debug)]
pub(crate) struct Progress {
    /// Every offset below this is indexed: the checkpoint.
    next: u64,
    /// Indexed ranges above `next` (start → end), merged when adjacent.
    done: BTreeMap<u64, u64>,
}

impl Progress {
    /// Progress starting at a persisted checkpoint.
    pub fn new(checkpoint: u64) -> Progress {
        Progress {
            next: checkpoint,
            done: BTreeMap::new(),
        }
    }

    /// The checkpoint.
    pub fn checkpoint(&self) -> u64 {
        self.next
    }

    /// Marks `r` indexed. Memory stays bounded by the number of gaps, which
    /// is the number of appends in flight; a gap that never fills (an offset
    /// nobody reported) would pin the checkpoint, so past [`MAX_RANGES`] the
    /// oldest gap is skipped with a warning. Skipping can only make a restart
    /// re-index less, i.e. possibly store a duplicate, never drop an event.
    pub fn complete(&mut self, r: Range<u64>) {
        let start = r.start.max(self.next);
        if start >= r.end {
            return;
        }
        let mut start = start;
        let mut end = r.end;
        if let Some((&s, &e)) = self.done.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.done.remove(&s);
            }
        }
        while let Some((&s, &e)) = self.done.range(start..).next() {
            if s > end {
                break;
            }
            end = end.max(e);
            self.done.remove(&s);
        }
        self.done.insert(start, end);
        if self.done.len() > MAX_RANGES {
            let (&s, _) = self.done.iter().next().unwrap();
            tracing::warn!(
                from = self.next,
                to = s,
                "dedup checkpoint skips offsets never reported as indexed"
            );
            self.next = s;
        }
        if let Some((&s, &e)) = self.done.iter().next() {
            if s <= self.next {
                self.next = self.next.max(e);
                self.done.remove(&s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_only_over_contiguous_ranges() {
        let mut p = Progress::new(10);
        p.complete(20..30);
        assert_eq!(p.checkpoint(), 10);
        p.complete(12..20);
        assert_eq!(p.checkpoint(), 10);
        p.complete(10..12);
        assert_eq!(p.checkpoint(), 30);
        p.complete(5..8); // below the checkpoint: ignored
        p.complete(30..30); // empty
        assert_eq!(p.checkpoint(), 30);
        p.complete(28..35);
        assert_eq!(p.checkpoint(), 35);
        assert!(p.done.is_empty());
    }

    #[test]
    fn out_of_order_ranges_merge() {
        let mut p = Progress::new(0);
        for i in (1..100u64).rev() {
            p.complete(i..i + 1);
            assert_eq!(p.done.len(), 1);
        }
        p.complete(0..1);
        assert_eq!(p.checkpoint(), 100);
    }

    #[test]
    fn a_gap_that_never_fills_is_eventually_skipped() {
        let mut p = Progress::new(0);
        for i in 0..=MAX_RANGES as u64 {
            p.complete(2 * i + 1..2 * i + 2);
        }
        assert!(p.checkpoint() > 0);
        assert!(p.done.len() <= MAX_RANGES);
    }
}
