//! The `[memory]` budget: one figure from which ferry sizes what it keeps in
//! memory (dedup filters and pending ids, the redb page caches, the delivery
//! windows), and how it is split among them (docs/configuration.md).

use serde::{Deserialize, Deserializer, Serializer};

/// `[memory]`: how much memory ferry sizes its filters, caches and windows for.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Bytes the sized parts may take together (`"128MiB"`, `"1GiB"`, or a
    /// number of bytes); see [`Split`] for the shares. The process adds its
    /// program (~8 MiB), thread stacks and the request bodies in flight
    /// (`limits.max_in_flight`). At least 16 MiB. Default: `"128MiB"`.
    #[serde(deserialize_with = "size", serialize_with = "serialize_size")]
    pub budget: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            budget: DEFAULT_BUDGET,
        }
    }
}

/// The default budget: the default dedup capacity (10M ids) fits its share.
pub const DEFAULT_BUDGET: u64 = 128 << 20;
/// The smallest budget accepted.
pub const MIN_BUDGET: u64 = 16 << 20;
/// The dedup capacity when the configuration sets none and the budget allows it.
pub const DEFAULT_DEDUP_CAPACITY: u64 = 10_000_000;

/// Bytes one id waiting for the dedup index writer may take: its entry in
/// the six reusable batch buffers (32 bytes each, docs/dedup.md "Memory")
/// and in the pending set.
pub const PENDING_ID_BYTES: u64 = 6 * 32 + 64;

/// Memory a delivery window counts per event besides the event's JSON: the
/// window's slot, the routing fields and the user's lane.
pub const WINDOW_EVENT_OVERHEAD: usize = 256;

/// The budget split into the parts ferry sizes from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// The whole budget.
    pub budget: u64,
    /// Dedup bloom filters: a quarter. The default capacity's filters
    /// (31.8 MiB) fit the default budget's quarter.
    pub dedup_filters: u64,
    /// Ids durable in the log but not yet in the dedup index (the writer's
    /// batches): three sixteenths. Sets `max_pending`; the writer writes at half
    /// of it without waiting for its interval.
    pub dedup_pending: u64,
    /// redb page cache of the dedup index: a thirty-second, at most 64 MiB.
    pub dedup_cache: u64,
    /// redb page cache of the delivery state: a sixty-fourth, at most 4 MiB.
    pub state_cache: u64,
    /// Delivery windows, shared equally by the destinations: an eighth.
    pub delivery_windows: u64,
}

impl Split {
    /// The shares of `budget`.
    pub fn of(budget: u64) -> Split {
        Split {
            budget,
            dedup_filters: budget / 4,
            dedup_pending: budget / 16 * 3,
            dedup_cache: (budget / 32).min(64 << 20),
            state_cache: (budget / 64).min(4 << 20),
            delivery_windows: budget / 8,
        }
    }

    /// The parts by name, as `/metrics` shows them.
    pub fn parts(&self) -> [(&'static str, u64); 5] {
        [
            ("dedup_filters", self.dedup_filters),
            ("dedup_pending", self.dedup_pending),
            ("dedup_cache", self.dedup_cache),
            ("state_cache", self.state_cache),
            ("delivery_windows", self.delivery_windows),
        ]
    }

    /// Ids that may wait for the dedup index writer (`max_pending`).
    pub fn max_pending_ids(&self) -> usize {
        usize::try_from(self.dedup_pending / PENDING_ID_BYTES).unwrap_or(usize::MAX)
    }

    /// Bytes each of `destinations` destinations' window may hold.
    pub fn window_bytes_each(&self, destinations: usize) -> usize {
        let each = self.delivery_windows / destinations.max(1) as u64;
        usize::try_from(each).unwrap_or(usize::MAX)
    }

    /// The dedup capacity when none is configured: the default, or less
    /// when its filters (at `false_positive_rate`) do not fit their share.
    pub fn dedup_capacity(&self, false_positive_rate: f64) -> u64 {
        let fits =
            |capacity: u64| filter_bytes(capacity, false_positive_rate) <= self.dedup_filters;
        if fits(DEFAULT_DEDUP_CAPACITY) {
            return DEFAULT_DEDUP_CAPACITY;
        }
        // The filters grow with the capacity: the largest that fits.
        let (mut lo, mut hi) = (0u64, DEFAULT_DEDUP_CAPACITY);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }
}

/// Memory the dedup filters take at most for `capacity` ids.
pub fn filter_bytes(capacity: u64, false_positive_rate: f64) -> u64 {
    crate::dedup::DedupOptions {
        capacity: capacity.max(1),
        false_positive_rate,
        ..crate::dedup::DedupOptions::default()
    }
    .max_bloom_bytes()
}

/// Checks a budget; the message says what is wrong with it.
pub fn check_budget(budget: u64) -> Result<(), String> {
    if budget < MIN_BUDGET {
        return Err(format!(
            "{} is below the smallest budget, {}",
            format_size(budget),
            format_size(MIN_BUDGET)
        ));
    }
    Ok(())
}

/// A size as written in the configuration: whole MiB or GiB when exact.
pub fn format_size(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{}GiB", bytes >> 30)
    } else if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{}MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{}KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// Parses `"128MiB"`, `"64 MB"`, `"1GiB"`, `"512KiB"` or `"1000000"`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = (&text[..split], text[split..].trim());
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        _ => return Err(bad_size(text)),
    };
    let value: f64 = number.parse().map_err(|_| bad_size(text))?;
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad_size(text));
    }
    Ok(bytes as u64)
}

fn bad_size(text: &str) -> String {
    format!("{text:?} is not a size (write e.g. \"128MiB\", \"1GiB\" or a number of bytes)")
}

/// Deserializes a size: a number of bytes, or a string [`parse_size`] reads.
fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(b) => Ok(b),
        Size::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
    }
}

fn serialize_size<S: Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_size(*bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!(parse_size("128MiB"), Ok(128 << 20));
        assert_eq!(parse_size("64 MB"), Ok(64_000_000));
        assert_eq!(parse_size("1gib"), Ok(1 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "MiB", "12 parsecs", "-1MiB", "1e999GiB"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains("is not a size"), "{bad}: {e}");
        }
        assert_eq!(format_size(128 << 20), "128MiB");
        assert_eq!(format_size(3 << 30), "3GiB");
        assert_eq!(format_size(1000), "1000 bytes");
    }

    #[test]
    fn the_default_budget_keeps_the_default_dedup_capacity() {
        let s = Split::of(DEFAULT_BUDGET);
        assert_eq!(s.dedup_capacity(0.0015), DEFAULT_DEDUP_CAPACITY);
        assert!(filter_bytes(DEFAULT_DEDUP_CAPACITY, 0.0015) <= s.dedup_filters);
        // The writer's batches: 49,152 ids at most (half of max_pending),
        // so the default 500 ms interval holds up to 98k ids/s.
        assert_eq!(s.max_pending_ids(), 98_304);
        assert_eq!(s.dedup_cache, 4 << 20);
    }

    #[test]
    fn a_small_budget_gets_the_largest_capacity_whose_filters_fit() {
        for budget in [MIN_BUDGET, 32 << 20, 64 << 20, 100 << 20] {
            let s = Split::of(budget);
            let c = s.dedup_capacity(0.0015);
            assert!(c < DEFAULT_DEDUP_CAPACITY && c > 0, "{budget}: {c}");
            assert!(
                filter_bytes(c, 0.0015) <= s.dedup_filters,
                "{budget}: {c} fits"
            );
            // One more id per generation would not fit (sizing rounds to
            // whole blocks per generation, so step by a few).
            assert!(
                filter_bytes(c + 64, 0.0015) > s.dedup_filters,
                "{budget}: {c} is the largest"
            );
        }
    }

    #[test]
    fn the_parts_stay_within_the_budget() {
        for budget in [MIN_BUDGET, DEFAULT_BUDGET, 1 << 30, 64 << 30] {
            let s = Split::of(budget);
            let sum: u64 = s.parts().iter().map(|(_, b)| b).sum();
            assert!(sum <= budget, "{budget}: {sum}");
            assert!(s.dedup_cache <= 64 << 20 && s.state_cache <= 4 << 20);
            let pending = s.max_pending_ids() as u64 * PENDING_ID_BYTES;
            assert!(pending <= s.dedup_pending);
            assert!(s.window_bytes_each(3) as u64 * 3 <= s.delivery_windows);
        }
        assert!(check_budget(MIN_BUDGET - 1).unwrap_err().contains("16MiB"));
        assert!(check_budget(MIN_BUDGET).is_ok());
    }
}
