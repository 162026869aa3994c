//! How a delivery attempt ended (`Outcome`, per request or per event) and
//! retry decisions: which responses are retried, full-jitter exponential
//! backoff (`sleep = uniform(0, min(cap, base·2^attempt))`), and the
//! `Retry-After` header (seconds or an HTTP date).

use super::config::RetryConfig;
use rand::Rng;
use std::time::{Duration, SystemTime};

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted (2xx, or written to a file).
    Delivered,
    /// Worth another try; the server may have said when.
    Retry {
        /// HTTP status, if any.
        status: Option<u16>,
        /// What went wrong, bounded.
        error: String,
        /// From `Retry-After`, if the server sent one.
        retry_after: Option<Duration>,
    },
    /// Will never succeed as it is: dead-letter at once.
    Permanent {
        /// HTTP status, if any.
        status: Option<u16>,
        /// What went wrong, bounded.
        error: String,
    },
    /// The destination refuses every request until someone fixes its
    /// configuration (a wrong write key: 401/403): the destination pauses
    /// itself, and the events stay undelivered (neither failed nor dead).
    Halt {
        /// HTTP status, if any.
        status: Option<u16>,
        /// What went wrong, bounded.
        error: String,
    },
    /// One outcome per event of the request, in the request's order (a sink
    /// that learns which events of a batch were refused). Never nested.
    PerEvent(Vec<Outcome>),
}

impl Outcome {
    /// The outcome of a request that carried one event.
    pub fn single(self) -> Outcome {
        match self {
            Outcome::PerEvent(mut v) if v.len() == 1 => v.pop().expect("one outcome"),
            o => o,
        }
    }
}

/// Is an HTTP status worth retrying? 408, 429 and 5xx except 501 and 505.
pub fn retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status) && status != 501 && status != 505
}

/// The ceiling of the backoff before attempt number `attempt` (0-based
/// count of failures so far): `min(cap, base·2^attempt)`.
pub fn ceiling(policy: &RetryConfig, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.min(31));
    policy.base.saturating_mul(factor).min(policy.cap)
}

/// Full jitter: uniform in `[0, ceiling]`.
pub fn full_jitter(policy: &RetryConfig, attempt: u32, rng: &mut impl Rng) -> Duration {
    let ceil = ceiling(policy, attempt);
    let nanos = ceil.as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(rng.random_range(0..=nanos))
}

/// The wait before the next attempt: the server's `Retry-After` when given
/// (bounded by `cap`), else full jitter.
pub fn next_delay(
    policy: &RetryConfig,
    attempt: u32,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Duration {
    match retry_after {
        Some(d) => d.min(policy.cap),
        None => full_jitter(policy, attempt, rng),
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn policy() -> RetryConfig {
        RetryConfig {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
            max_duration: None,
        }
    }

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let p = policy();
        let got: Vec<u64> = (0..12).map(|a| ceiling(&p, a).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(ceiling(&p, 1000), Duration::from_secs(300));
    }

    #[test]
    fn jitter_stays_within_the_ceiling_and_spreads() {
        let p = policy();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for attempt in 0..10 {
            let ceil = ceiling(&p, attempt);
            let draws: Vec<Duration> = (0..200)
                .map(|_| full_jitter(&p, attempt, &mut rng))
                .collect();
            assert!(draws.iter().all(|d| *d <= ceil));
            let below_half = draws.iter().filter(|d| **d < ceil / 2).count();
            assert!(
                (60..140).contains(&below_half),
                "attempt {attempt}: {below_half}/200 below half"
            );
        }
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let p = policy();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(
            next_delay(&p, 0, Some(Duration::from_secs(7)), &mut rng),
            Duration::from_secs(7)
        );
        assert_eq!(
            next_delay(&p, 0, Some(Duration::from_secs(7200)), &mut rng),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn retry_after_formats() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn retry_classes() {
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 413, 422, 501, 505] {
            assert!(!retryable_status(s), "{s}");
        }
    }
}
