//! A destination's `rate_limit`: a token bucket of events per second,
//! holding at most one second's worth, on tokio's clock (so tests can run
//! it in paused time). A link that comes back after an outage then carries
//! the backlog at this rate instead of all it can take.
//!
//! A request may take more events than the bucket holds (up to one
//! second's worth): the bucket goes into debt and the next request waits
//! until it is paid back. So requests stay full batches, and the average
//! rate still holds.

use std::time::Duration;
use tokio::time::Instant;

/// At most `rate` events a second, bursts of one second's worth.
#[derive(Debug)]
pub struct TokenBucket {
    /// Events per second.
    rate: f64,
    /// Most tokens held (one second's worth, at least one event).
    burst: f64,
    /// Tokens held at `at`; negative while in debt.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate` events a second.
    pub fn new(rate: u32, now: Instant) -> TokenBucket {
        let rate = f64::from(rate.max(1));
        TokenBucket {
            rate,
            burst: rate,
            tokens: rate,
            at: now,
        }
    }

    /// The most events one request may take: one second's worth.
    pub fn burst(&self) -> usize {
        self.burst as usize
    }

    /// Whether a request may go at `now` (the bucket holds a whole event).
    pub fn ready(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
        self.tokens >= 1.0
    }

    /// Spends `n` events; the bucket may go into debt.
    pub fn take(&mut self, n: usize) {
        self.tokens -= n as f64;
    }

    /// When the next request may go.
    pub fn next_at(&self) -> Instant {
        if self.tokens >= 1.0 {
            return self.at;
        }
        self.at + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends requests of up to `batch` events whenever the bucket allows,
    /// for `secs` seconds in 1 ms steps; returns the events sent.
    fn run(b: &mut TokenBucket, t0: Instant, batch: usize, secs: u64) -> usize {
        let mut sent = 0;
        for ms in 0..secs * 1000 {
            let now = t0 + Duration::from_millis(ms);
            if b.ready(now) {
                let n = batch.min(b.burst());
                b.take(n);
                sent += n;
            }
        }
        sent
    }

    #[test]
    fn the_rate_holds_over_time_whatever_the_batch() {
        for batch in [1, 7, 100, 500] {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(100, t0);
            let sent = run(&mut b, t0, batch, 20);
            // One second's burst, then 100 a second.
            let most = 100 + 20 * 100 + batch.min(100);
            assert!(
                (2000..=most).contains(&sent),
                "batch {batch}: {sent} events in 20 s"
            );
        }
    }

    #[test]
    fn debt_is_paid_back_before_the_next_request() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        assert!(b.ready(t0));
        b.take(10);
        assert!(!b.ready(t0));
        assert_eq!(b.next_at(), t0 + Duration::from_millis(100));
        assert!(b.ready(t0 + Duration::from_millis(100)));
        b.take(10); // nine in debt
        assert_eq!(b.next_at(), t0 + Duration::from_millis(1100));
        // Idle for a minute: the bucket holds one second's worth, not sixty.
        assert!(b.ready(t0 + Duration::from_secs(70)));
        b.take(10);
        assert!(!b.ready(t0 + Duration::from_secs(70)));
    }
}
