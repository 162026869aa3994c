//! How fast a destination's backlog grows: the change in undelivered events
//! over the last minute, and when that is worth a warning, so an operator
//! learns that delivery falls behind before the log's disk budget runs out.

use std::collections::VecDeque;

/// The span the growth rate is measured over.
pub const SPAN_MS: u64 = 60_000;
/// One sample is kept per this many milliseconds.
const SAMPLE_MS: u64 = 1_000;
/// A warning is repeated at most this often while the backlog keeps growing.
pub const WARN_EVERY_MS: u64 = 5 * 60_000;

/// Backlog samples of one destination.
#[derive(Debug, Default)]
pub struct BacklogTrend {
    /// (time in ms, events behind), oldest first, one per [`SAMPLE_MS`],
    /// covering at most [`SPAN_MS`].
    samples: VecDeque<(u64, u64)>,
    /// When the last warning was given.
    warned_ms: Option<u64>,
}

impl BacklogTrend {
    /// Records the backlog (`lag` events behind) at `now_ms` and returns how
    /// fast it grew over the last minute, in events per second (negative
    /// while it shrinks; 0 until two samples a second apart exist).
    pub fn record(&mut self, now_ms: u64, lag: u64) -> f64 {
        if self
            .samples
            .back()
            .is_none_or(|last| now_ms >= last.0 + SAMPLE_MS)
        {
            self.samples.push_back((now_ms, lag));
        }
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| *t + SPAN_MS < now_ms)
        {
            self.samples.pop_front();
        }
        self.growth()
    }

    /// The growth rate over the samples held, in events per second.
    pub fn growth(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some(&(t0, l0)), Some(&(t1, l1))) if t1 > t0 => {
                (l1 as f64 - l0 as f64) * 1000.0 / (t1 - t0) as f64
            }
            _ => 0.0,
        }
    }

    /// True when a warning is due at `now_ms`: the samples cover most of a
    /// minute, the backlog grew over it and is above `floor` events (a
    /// backlog within one read-ahead window is a destination keeping up),
    /// and no warning was given in the last [`WARN_EVERY_MS`].
    pub fn warn_now(&mut self, now_ms: u64, floor: u64) -> bool {
        let (Some(&(t0, _)), Some(&(_, lag))) = (self.samples.front(), self.samples.back()) else {
            return false;
        };
        let covered = now_ms.saturating_sub(t0) >= SPAN_MS - 2 * SAMPLE_MS;
        let quiet = self.warned_ms.is_none_or(|t| now_ms >= t + WARN_EVERY_MS);
        if covered && quiet && lag > floor && self.growth() > 0.0 {
            self.warned_ms = Some(now_ms);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_the_change_over_the_last_minute() {
        let mut t = BacklogTrend::default();
        assert_eq!(t.record(0, 0), 0.0);
        // 1,000 events more every second for two minutes.
        for s in 1..=120u64 {
            t.record(s * 1000, s * 1000);
        }
        assert!((t.growth() - 1000.0).abs() < 1e-9, "{}", t.growth());
        // Then it shrinks by 500 a second.
        for s in 121..=240u64 {
            t.record(s * 1000, 120_000 - (s - 120) * 500);
        }
        assert!((t.growth() + 500.0).abs() < 1e-9, "{}", t.growth());
    }

    #[test]
    fn one_sample_a_second_is_kept() {
        let mut t = BacklogTrend::default();
        t.record(0, 0);
        for ms in (100..1000).step_by(100) {
            t.record(ms, 5);
        }
        assert_eq!(t.samples.len(), 1);
        assert_eq!(t.record(1000, 10), 10.0);
    }

    #[test]
    fn warns_once_a_minute_of_growth_is_seen_and_then_every_five_minutes() {
        let mut t = BacklogTrend::default();
        let floor = 10_000;
        let mut warnings = Vec::new();
        for s in 0..=700u64 {
            let now = s * 1000;
            t.record(now, 20_000 + s * 100);
            if t.warn_now(now, floor) {
                warnings.push(s);
            }
        }
        assert_eq!(warnings, [58, 358, 658]);
    }

    #[test]
    fn no_warning_below_the_floor_or_while_shrinking() {
        let mut t = BacklogTrend::default();
        for s in 0..=120u64 {
            t.record(s * 1000, s * 10); // grows, but stays under the floor
            assert!(!t.warn_now(s * 1000, 10_000));
        }
        let mut t = BacklogTrend::default();
        for s in 0..=120u64 {
            t.record(s * 1000, 1_000_000 - s * 10); // large, but shrinking
            assert!(!t.warn_now(s * 1000, 10_000));
        }
    }
}
