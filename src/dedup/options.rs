//! Settings of the dedup index, each with its default.

use super::error::DedupError;
use std::time::Duration;

/// Settings of the dedup index.
#[derive(Debug, Clone)]
pub struct DedupOptions {
    /// How long an id is remembered after its event was stored. Default: 24 h
    /// (Segment's look-back).
    pub window: Duration,
    /// Distinct ids the window is guaranteed to hold; beyond it the oldest
    /// age out early (the effective window shrinks, with a warning). Sizes
    /// the bloom filters and bounds the redb file. Default: 10,000,000.
    pub capacity: u64,
    /// Target chance that a new id needs a redb look-up. Default: 0.0015,
    /// the lowest whose filters fit the 32 MiB goal at the default capacity
    /// (31.8 MiB). Look-ups are a blocking index read each: at 1 % they cost
    /// about 5 points of ingest throughput with a full index.
    pub false_positive_rate: f64,
    /// Generations the window is split into: ids age out (and memory is
    /// freed) one generation at a time, so an id is held between `window`
    /// and `window × (1 + 1/generations)`, and up to `capacity × (1 +
    /// 1/generations)` ids are held. Default: 4.
    pub generations: u32,
    /// Longest time between durable (fsynced) index commits; bounds the WAL
    /// tail re-indexed after a crash. Default: 1 s.
    pub sync_interval: Duration,
    /// How long the writer gathers commits into one redb transaction (unless
    /// a flush waits, or half of `max_pending` is reached): fewer, larger
    /// transactions, and batches large enough to be written once instead of
    /// merged into larger runs. Ids wait in the pending set meanwhile,
    /// answered as duplicates. Default: 500 ms.
    pub write_interval: Duration,
    /// Ids committed but not yet written to redb above which `begin` waits
    /// for the writer (back-pressure); at half of it the writer is woken
    /// before its interval ends. Default: 524,288 (`ferry serve` sizes it
    /// from `memory.budget`: 98,304 at the default budget).
    pub max_pending: usize,
    /// Largest sorted run a merge may produce. Each writer batch is one run;
    /// runs no larger than the newest are merged into it, so an id is
    /// rewritten about log₂(this / batch size) times, and a bloom hit probes
    /// one chunk per run of the hit generation (about capacity /
    /// (generations × this) + log₂ of it). Default: 262,144.
    pub max_run_ids: u64,
    /// redb page cache. Default: 64 MiB (`ferry serve` sizes it from
    /// `memory.budget`: 4 MiB at the default budget).
    pub cache_bytes: usize,
    /// Ids a new generation's filter is first sized for, unless the
    /// generation before it took more: a box that sees few ids keeps small
    /// filters. A filter that fills is rebuilt from the index at four times
    /// its size, up to `capacity / generations` (the full size, which the
    /// interleaved filters hold). Default: 65,536 (170 KiB at the defaults).
    pub min_filter_ids: u64,
}

impl Default for DedupOptions {
    fn default() -> Self {
        DedupOptions {
            window: Duration::from_secs(24 * 3600),
            capacity: 10_000_000,
            false_positive_rate: 0.0015,
            generations: 4,
            sync_interval: Duration::from_secs(1),
            write_interval: Duration::from_millis(500),
            max_pending: 524_288,
            max_run_ids: 1 << 18,
            cache_bytes: 64 << 20,
            min_filter_ids: 1 << 16,
        }
    }
}

/// Most memory the bloom filters may take. A larger capacity would be
/// refused by the allocator (or overcommitted and killed later); refusing
/// it up front gives a sentence instead.
pub const MAX_BLOOM_BYTES: u64 = 16 << 30;

impl DedupOptions {
    /// Memory the bloom filters take at most: `generations` full filters
    /// and the active one, each sized as `Generations` sizes them.
    pub fn max_bloom_bytes(&self) -> u64 {
        let (per_gen, fp) =
            super::generations::sizing(self.capacity, self.false_positive_rate, self.generations);
        let filters = u64::from(self.generations.max(1)) + 1;
        super::bloom::bytes_for(per_gen, fp).saturating_mul(filters)
    }
}

/// Rejects options that cannot work.
pub(crate) fn validate(o: &DedupOptions) -> Result<(), DedupError> {
    let bad = |m: &str| Err(DedupError::InvalidOptions(m.into()));
    if o.window.as_millis() == 0 {
        return bad("window must be positive");
    }
    if o.capacity == 0 {
        return bad("capacity must be positive");
    }
    if !(o.false_positive_rate > 0.0 && o.false_positive_rate < 1.0) {
        return bad("false_positive_rate must be between 0 and 1");
    }
    if o.max_run_ids == 0 {
        return bad("max_run_ids must be positive");
    }
    if o.min_filter_ids == 0 {
        return bad("min_filter_ids must be positive");
    }
    if o.generations == 0 || o.generations > 63 {
        return bad("generations must be between 1 and 63");
    }
    if o.max_bloom_bytes() > MAX_BLOOM_BYTES {
        return bad(&bloom_too_large(o));
    }
    Ok(())
}

/// Why a capacity is refused: the filters it needs against the limit.
pub fn bloom_too_large(o: &DedupOptions) -> String {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    format!(
        "a capacity of {} ids at a false-positive rate of {} needs {:.1} GiB of bloom filters in memory; at most {:.0} GiB is allowed",
        o.capacity,
        o.false_positive_rate,
        gib(o.max_bloom_bytes()),
        gib(MAX_BLOOM_BYTES)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_filters_take_the_documented_memory() {
        // docs/dedup.md: 31.8 MiB at most at the defaults (five filters of
        // 2.5M ids at 0.03 %), within the 32 MiB goal.
        let mib = DedupOptions::default().max_bloom_bytes() as f64 / (1 << 20) as f64;
        assert!((31.5..32.0).contains(&mib), "{mib} MiB");
    }
}
