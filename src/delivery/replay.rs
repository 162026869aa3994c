//! Re-delivery of dead letters an operator queued with `ferry dlq replay`:
//! one at a time per destination, in original log order, with the
//! destination's retry policy; what fails again goes back to the dead letters.

use super::backoff::{next_delay, Outcome};
use super::destination::{Clock, DestinationLoop};
use super::event::LoggedEvent;
use crate::store::{state_excerpt, DeadLetter};
use std::sync::Arc;
use std::time::Duration;

/// How often the replay queue is looked at.
pub const REPLAY_POLL: Duration = Duration::from_secs(1);

impl DestinationLoop {
    /// Runs the replay lane until cancelled.
    pub async fn run_replays(self: Arc<Self>) {
        let clock = Clock::new();
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
        let mut poll = tokio::time::interval(REPLAY_POLL);
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = poll.tick() => {}
            }
            let dest = self.cfg.name.clone();
            let store = self.store.clone();
            let queue = match tokio::task::spawn_blocking(move || store.replay_queue(&dest)).await {
                Ok(Ok(q)) => q,
                Ok(Err(e)) => {
                    tracing::error!(destination = %self.cfg.name, "reading the replay queue failed: {}", crate::error_text::with_causes(&e));
                    continue;
                }
                Err(_) => continue,
            };
            for dl in queue {
                let Some(result) = self.replay_one(&dl, &clock, &mut rng).await else {
                    return;
                };
                let dest = self.cfg.name.clone();
                let store = self.store.clone();
                let offset = dl.offset;
                let done = tokio::task::spawn_blocking(move || {
                    store.finish_replay(&dest, offset, result.as_ref())
                })
                .await;
                if !matches!(done, Ok(Ok(()))) {
                    tracing::error!(destination = %self.cfg.name, offset, "recording a replay outcome failed");
                }
            }
        }
    }

    /// Delivers one dead letter with retries. `None` when cancelled;
    /// `Some(None)` when delivered; `Some(Some(dl))` when dead again.
    async fn replay_one(
        &self,
        dl: &DeadLetter,
        clock: &Clock,
        rng: &mut impl rand::Rng,
    ) -> Option<Option<DeadLetter>> {
        let event = LoggedEvent::read(dl.offset, dl.event.clone().into_bytes());
        let first_ms = clock.now_ms();
        let mut failures = 0u32;
        loop {
            if self.cancel.is_cancelled() {
                return None;
            }
            // A request already sent is let finish (bounded by the timeout), as at shutdown.
            let outcome = self.sink.send(vec![event.clone()]).await.single();
            let (status, error, retry_after, permanent) = match outcome {
                Outcome::Delivered => {
                    tracing::info!(destination = %self.cfg.name, offset = dl.offset, "replayed dead letter delivered");
                    return Some(None);
                }
                // A destination that refuses the credentials keeps the dead
                // letter; it can be replayed again once fixed.
                Outcome::Permanent { status, error } | Outcome::Halt { status, error } => {
                    (status, error, None, true)
                }
                Outcome::Retry {
                    status,
                    error,
                    retry_after,
                } => (status, error, retry_after, false),
                Outcome::PerEvent(_) => (None, "several outcomes for one event".into(), None, true),
            };
            failures += 1;
            let delay = next_delay(&self.cfg.retry, failures - 1, retry_after, rng);
            let spent = Duration::from_millis(clock.now_ms() - first_ms) + delay;
            if permanent || self.cfg.give_up_after().is_some_and(|max| spent >= max) {
                let mut again = dl.clone();
                again.attempts += failures;
                again.last_attempt_ms = clock.now_ms();
                again.last_status = status;
                again.last_error = state_excerpt(&error);
                return Some(Some(again));
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}
