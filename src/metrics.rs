//! Every Prometheus metric of ferry in one place, and their text rendering
//! for `GET /metrics`. Label values are bounded: sources and destinations come
//! from the configuration, types from the Segment spec, statuses from HTTP.

use crate::dedup::DedupStats;
use crate::log::LogStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

/// Labels of ingest request counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Source name, or `unknown` before authentication succeeded.
    pub source: String,
    /// HTTP status code.
    pub status: String,
}

/// Labels of ingested event counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// Source name.
    pub source: String,
    /// Event type.
    pub r#type: String,
}

/// Labels of per-source counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// Source name.
    pub source: String,
}

/// Labels of per-destination metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestLabels {
    /// Destination name.
    pub destination: String,
}

/// Labels of the memory budget's parts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartLabels {
    /// What the part is for (`dedup_filters`, `dedup_cache`, …).
    pub part: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// All metrics.
pub struct Metrics {
    registry: Registry,
    /// Ingest requests answered, by source and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Events stored, by source and type.
    pub events: Family<EventLabels, Counter>,
    /// Duplicate events skipped (not stored), by source.
    pub duplicates: Family<SourceLabels, Counter>,
    /// Ingest request latency.
    pub request_seconds: Histogram,
    /// Bytes of all log segments.
    pub log_bytes: Gauge,
    /// Log segment files.
    pub log_segments: Gauge,
    /// First offset held.
    pub log_first_offset: Gauge,
    /// Durable end of the log (next offset).
    pub log_end_offset: Gauge,
    /// Duration of each commit group's fdatasync.
    pub fsync_seconds: Histogram,
    /// Records covered by each fdatasync.
    pub records_per_fsync: Histogram,
    /// Events delivered, per destination.
    pub delivered: Family<DestLabels, Counter>,
    /// Requests sent (webhook requests, file writes), per destination: with
    /// `delivered`, how full the batches are.
    pub requests_sent: Family<DestLabels, Counter>,
    /// Failed attempts that will be retried, per destination.
    pub retried: Family<DestLabels, Counter>,
    /// Events dead-lettered, per destination.
    pub dead_lettered: Family<DestLabels, Counter>,
    /// Events skipped by the destination's source or event filter.
    pub filtered: Family<DestLabels, Counter>,
    /// Events in requests in flight.
    pub in_flight: Family<DestLabels, Gauge>,
    /// Events between the cursor and the durable end.
    pub lag_events: Family<DestLabels, Gauge>,
    /// Age of the oldest undelivered event (0 when caught up).
    pub lag_seconds: Family<DestLabels, FloatGauge>,
    /// How fast the backlog grew over the last minute (events/s; negative
    /// while it shrinks).
    pub backlog_growth: Family<DestLabels, FloatGauge>,
    /// Longest backoff currently being waited out.
    pub backoff_seconds: Family<DestLabels, FloatGauge>,
    /// The destination's cursor (next offset to deliver).
    pub cursor_offset: Family<DestLabels, Gauge>,
    /// 1 while the destination is paused (by an operator, or by an upstream
    /// that refused its credentials), else 0.
    pub paused: Family<DestLabels, Gauge>,
    /// Request bodies sent, in bytes on the wire (after compression), by
    /// the sinks that count them (segment).
    pub sent_bytes: Family<DestLabels, Counter>,
    /// The same request bodies as JSON, before compression.
    pub sent_json_bytes: Family<DestLabels, Counter>,
    /// Dedup gauges, refreshed while rendering (absent with dedup off).
    dedup: DedupGauges,
    /// The memory budget (`memory.budget`).
    memory_budget: Gauge,
    /// Each part's share of the memory budget.
    memory_parts: Family<PartLabels, Gauge>,
    /// Resident memory of the process (refreshed while rendering).
    resident: Gauge,
    /// Serialises rendering (log gauges are refreshed while rendering).
    render_lock: Mutex<()>,
}

/// The dedup index's figures (`ferry dedup stats`) as gauges.
#[derive(Default)]
struct DedupGauges {
    ids: Gauge,
    pending: Gauge,
    in_flight: Gauge,
    window: FloatGauge,
    effective_window: FloatGauge,
    capacity: Gauge,
    bloom_bytes: Gauge,
    false_positive: FloatGauge,
    checkpoint: Gauge,
    index_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics with its own registry.
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            events: Family::default(),
            duplicates: Family::default(),
            request_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 14)),
            log_bytes: Gauge::default(),
            log_segments: Gauge::default(),
            log_first_offset: Gauge::default(),
            log_end_offset: Gauge::default(),
            fsync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 14)),
            records_per_fsync: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            delivered: Family::default(),
            requests_sent: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            filtered: Family::default(),
            in_flight: Family::default(),
            lag_events: Family::default(),
            lag_seconds: Family::default(),
            backlog_growth: Family::default(),
            backoff_seconds: Family::default(),
            cursor_offset: Family::default(),
            paused: Family::default(),
            sent_bytes: Family::default(),
            sent_json_bytes: Family::default(),
            dedup: DedupGauges::default(),
            memory_budget: Gauge::default(),
            memory_parts: Family::default(),
            resident: Gauge::default(),
            render_lock: Mutex::new(()),
        };
        m.register_ingest();
        m.register_log();
        m.register_delivery();
        m.register_dedup();
        m.register_memory();
        m
    }

    /// Registers the memory budget, its split, and the resident size.
    fn register_memory(&mut self) {
        let r = &mut self.registry;
        r.register(
            "ferry_memory_budget_bytes",
            "The configured memory budget (memory.budget)",
            self.memory_budget.clone(),
        );
        r.register(
            "ferry_memory_budget_part_bytes",
            "The memory budget's share of each part sized from it",
            self.memory_parts.clone(),
        );
        r.register(
            "ferry_process_resident_memory_bytes",
            "Resident memory of the ferry process (RSS)",
            self.resident.clone(),
        );
    }

    /// Shows a memory budget and its split.
    pub fn set_memory(&self, split: &crate::memory::Split) {
        self.memory_budget.set(gauge_value(split.budget));
        for (part, bytes) in split.parts() {
            self.memory_parts
                .get_or_create(&PartLabels { part: part.into() })
                .set(gauge_value(bytes));
        }
    }

    /// Registers the ingest families: requests, events, duplicates, latency.
    fn register_ingest(&mut self) {
        let r = &mut self.registry;
        r.register(
            "ferry_ingest_requests",
            "Ingest requests answered, by source and HTTP status",
            self.requests.clone(),
        );
        r.register(
            "ferry_ingest_events",
            "Events stored, by source and type",
            self.events.clone(),
        );
        r.register(
            "ferry_ingest_duplicates",
            "Duplicate events skipped, by source",
            self.duplicates.clone(),
        );
        r.register(
            "ferry_ingest_request_duration_seconds",
            "Ingest request latency",
            self.request_seconds.clone(),
        );
    }

    /// Registers the log gauges (refreshed while rendering) and the
    /// histograms of its commit groups.
    fn register_log(&mut self) {
        let r = &mut self.registry;
        r.register(
            "ferry_log_size_bytes",
            "Bytes of all log segments",
            self.log_bytes.clone(),
        );
        r.register(
            "ferry_log_segments",
            "Log segment files",
            self.log_segments.clone(),
        );
        r.register(
            "ferry_log_first_offset",
            "First offset held by the log",
            self.log_first_offset.clone(),
        );
        r.register(
            "ferry_log_end_offset",
            "Durable end of the log (next offset)",
            self.log_end_offset.clone(),
        );
        r.register(
            "ferry_log_fsync_duration_seconds",
            "fdatasync duration per commit group",
            self.fsync_seconds.clone(),
        );
        r.register(
            "ferry_log_records_per_fsync",
            "Records covered by one fdatasync",
            self.records_per_fsync.clone(),
        );
    }

    /// Registers the per-destination delivery families.
    fn register_delivery(&mut self) {
        let r = &mut self.registry;
        r.register(
            "ferry_delivery_delivered",
            "Events delivered",
            self.delivered.clone(),
        );
        r.register(
            "ferry_delivery_requests_sent",
            "Requests sent (webhook requests, file writes, each fsynced)",
            self.requests_sent.clone(),
        );
        r.register(
            "ferry_delivery_retried",
            "Failed attempts that will be retried",
            self.retried.clone(),
        );
        r.register(
            "ferry_delivery_dead_lettered",
            "Events dead-lettered",
            self.dead_lettered.clone(),
        );
        r.register(
            "ferry_delivery_filtered",
            "Events skipped by the destination's filters",
            self.filtered.clone(),
        );
        r.register(
            "ferry_delivery_in_flight_events",
            "Events in requests in flight",
            self.in_flight.clone(),
        );
        r.register(
            "ferry_delivery_lag_events",
            "Events between the cursor and the log's durable end",
            self.lag_events.clone(),
        );
        r.register(
            "ferry_delivery_lag_seconds",
            "Age of the oldest undelivered event",
            self.lag_seconds.clone(),
        );
        r.register(
            "ferry_delivery_backlog_growth_events_per_second",
            "How fast the backlog grew over the last minute (negative while it shrinks)",
            self.backlog_growth.clone(),
        );
        r.register(
            "ferry_delivery_backoff_seconds",
            "Longest backoff being waited out",
            self.backoff_seconds.clone(),
        );
        r.register(
            "ferry_delivery_cursor_offset",
            "Next offset to deliver",
            self.cursor_offset.clone(),
        );
        r.register(
            "ferry_delivery_paused",
            "1 while the destination is paused (by an operator, or by an upstream refusing its credentials)",
            self.paused.clone(),
        );
        r.register(
            "ferry_delivery_sent_bytes",
            "Request bodies sent, in bytes on the wire (after compression)",
            self.sent_bytes.clone(),
        );
        r.register(
            "ferry_delivery_sent_json_bytes",
            "Request bodies sent, in bytes of JSON before compression",
            self.sent_json_bytes.clone(),
        );
    }

    /// Registers the dedup gauges (refreshed while rendering).
    fn register_dedup(&mut self) {
        let (r, d) = (&mut self.registry, &self.dedup);
        let gauges: [(&str, &str, Gauge); 6] = [
            (
                "ferry_dedup_ids",
                "Distinct ids the dedup index holds",
                d.ids.clone(),
            ),
            (
                "ferry_dedup_pending_ids",
                "Ids durable in the log, not yet written to the dedup index",
                d.pending.clone(),
            ),
            (
                "ferry_dedup_in_flight_ids",
                "Ids claimed by requests whose append is in flight",
                d.in_flight.clone(),
            ),
            (
                "ferry_dedup_capacity_ids",
                "Configured dedup capacity",
                d.capacity.clone(),
            ),
            (
                "ferry_dedup_bloom_bytes",
                "Memory of the dedup bloom filters",
                d.bloom_bytes.clone(),
            ),
            (
                "ferry_dedup_checkpoint_offset",
                "Log offset below which every record is durably indexed",
                d.checkpoint.clone(),
            ),
        ];
        for (name, help, g) in gauges {
            r.register(name, help, g);
        }
        r.register(
            "ferry_dedup_index_size_bytes",
            "Size of the dedup index file",
            d.index_bytes.clone(),
        );
        r.register(
            "ferry_dedup_window_seconds",
            "Configured dedup window",
            d.window.clone(),
        );
        r.register(
            "ferry_dedup_effective_window_seconds",
            "Dedup look-back actually held: the window, or less while capacity forces ids out early",
            d.effective_window.clone(),
        );
        r.register(
            "ferry_dedup_false_positive_ratio",
            "Estimated chance that a new id needs a dedup index look-up",
            d.false_positive.clone(),
        );
    }

    /// Records one commit group of the log (called from the writer thread).
    pub fn observe_group(&self, fsync: Duration, records: u64) {
        self.fsync_seconds.observe(fsync.as_secs_f64());
        self.records_per_fsync.observe(records as f64);
    }

    /// Labels of a destination.
    pub fn dest(name: &str) -> DestLabels {
        DestLabels {
            destination: name.to_string(),
        }
    }

    /// The Prometheus text exposition, with the log gauges taken from `log`
    /// and the dedup gauges from `dedup` (left at 0 when dedup is off).
    pub fn render(&self, log: &LogStats, dedup: Option<&DedupStats>) -> String {
        let _guard = self.render_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.log_bytes.set(log.bytes as i64);
        self.log_segments.set(log.segments as i64);
        self.log_first_offset.set(log.start_offset as i64);
        self.log_end_offset.set(log.durable_end as i64);
        if let Some(rss) = resident_bytes() {
            self.resident.set(gauge_value(rss));
        }
        if let Some(s) = dedup {
            let d = &self.dedup;
            d.ids.set(s.ids_held as i64);
            d.pending.set(s.pending as i64);
            d.in_flight.set(s.in_flight as i64);
            d.capacity.set(s.capacity as i64);
            d.bloom_bytes.set(s.bloom_bytes as i64);
            d.checkpoint.set(s.checkpoint as i64);
            d.index_bytes.set(s.file_bytes as i64);
            d.window.set(s.window.as_secs_f64());
            d.effective_window.set(s.effective_window.as_secs_f64());
            d.false_positive.set(s.false_positive_rate);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// A byte count as a gauge value.
fn gauge_value(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// The process's resident size, from `/proc/self/statm` (Linux).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_names_with_units_and_labels() {
        let m = Metrics::new();
        m.delivered.get_or_create(&Metrics::dest("hook")).inc_by(3);
        m.observe_group(Duration::from_micros(300), 5);
        let log = LogStats {
            start_offset: 0,
            durable_end: 9,
            segments: 1,
            bytes: 100,
            fsyncs: 1,
            records_synced: 5,
            appends_synced: 1,
        };
        let dedup = DedupStats {
            ids_held: 42,
            window: Duration::from_secs(86_400),
            effective_window: Duration::from_secs(3_600),
            capacity: 100,
            generations: 2,
            bloom_bytes: 1024,
            false_positive_rate: 0.005,
            duplicates: 7,
            checkpoint: 8,
            pending: 3,
            in_flight: 1,
            file_bytes: 4096,
        };
        let text = m.render(&log, Some(&dedup));
        for line in [
            "ferry_dedup_ids 42",
            "ferry_dedup_pending_ids 3",
            "ferry_dedup_effective_window_seconds 3600.0",
            "ferry_dedup_window_seconds 86400.0",
            "ferry_dedup_false_positive_ratio 0.005",
            "ferry_dedup_index_size_bytes 4096",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
        assert!(
            text.contains("ferry_delivery_delivered_total{destination=\"hook\"} 3"),
            "{text}"
        );
        assert!(text.contains("ferry_log_end_offset 9"), "{text}");
        assert!(
            text.contains("ferry_log_fsync_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE ferry_ingest_requests counter"),
            "{text}"
        );
    }

    #[test]
    fn shows_the_memory_budget_its_split_and_the_resident_size() {
        let m = Metrics::new();
        m.set_memory(&crate::memory::Split::of(64 << 20));
        let log = LogStats {
            start_offset: 0,
            durable_end: 0,
            segments: 0,
            bytes: 0,
            fsyncs: 0,
            records_synced: 0,
            appends_synced: 0,
        };
        let text = m.render(&log, None);
        for line in [
            "ferry_memory_budget_bytes 67108864",
            "ferry_memory_budget_part_bytes{part=\"dedup_filters\"} 16777216",
            "ferry_memory_budget_part_bytes{part=\"dedup_cache\"} 2097152",
            "ferry_memory_budget_part_bytes{part=\"delivery_windows\"} 8388608",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
        let rss = text
            .lines()
            .find_map(|l| l.strip_prefix("ferry_process_resident_memory_bytes "))
            .expect("the resident size is shown");
        assert!(rss.parse::<u64>().unwrap() > 0, "{rss}");
    }
}
