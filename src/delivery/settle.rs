//! What a request's outcome does to its events: delivered events finish,
//! failed ones back off (or are dead-lettered once retrying would pass
//! `max_duration`), refused ones are dead-lettered, and a destination that
//! refuses its credentials pauses itself with its events undelivered. A
//! per-event outcome is applied event by event: the events of one request
//! belong to different users, so per-user order holds. Also the log lines
//! that tell an operator when a destination starts failing and recovers.

use super::backoff::{next_delay, Outcome};
use super::destination::{Clock, DeliveryError, DestinationLoop, Halted, LoopState};
use super::event::LoggedEvent;
use super::order_window::Attempts;
use crate::store::DeadLetter;
use tokio::time::Instant;

impl DestinationLoop {
    /// Applies the outcome of one request to its events.
    pub(super) async fn settle(
        &self,
        st: &mut LoopState,
        events: Vec<(LoggedEvent, Attempts)>,
        sent_ms: u64,
        outcome: Outcome,
        clock: &Clock,
        rng: &mut impl rand::Rng,
    ) -> Result<(), DeliveryError> {
        self.note_health(st, &outcome, clock);
        let events: Vec<LoggedEvent> = events.into_iter().map(|(e, _)| e).collect();
        match outcome {
            Outcome::PerEvent(outcomes) => {
                debug_assert_eq!(outcomes.len(), events.len());
                // The delivered ones settle together (one metrics update),
                // first, so a halt among the others still stands after.
                let mut delivered = Vec::with_capacity(events.len());
                let mut others = Vec::new();
                for (event, outcome) in events.into_iter().zip(outcomes) {
                    match outcome {
                        Outcome::Delivered => delivered.push(event),
                        Outcome::PerEvent(_) => others.push((
                            event,
                            Outcome::Retry {
                                status: None,
                                error: "the sink nested per-event outcomes".into(),
                                retry_after: None,
                            },
                        )),
                        o => others.push((event, o)),
                    }
                }
                if !delivered.is_empty() {
                    self.settle_events(st, &delivered, sent_ms, &Outcome::Delivered, clock, rng)
                        .await?;
                }
                for (event, outcome) in others {
                    let one = std::slice::from_ref(&event);
                    self.settle_events(st, one, sent_ms, &outcome, clock, rng)
                        .await?;
                }
            }
            outcome => {
                self.settle_events(st, &events, sent_ms, &outcome, clock, rng)
                    .await?
            }
        }
        Ok(())
    }

    /// Applies one outcome (not per-event) to `events`.
    async fn settle_events(
        &self,
        st: &mut LoopState,
        events: &[LoggedEvent],
        sent_ms: u64,
        outcome: &Outcome,
        clock: &Clock,
        rng: &mut impl rand::Rng,
    ) -> Result<(), DeliveryError> {
        let m = &self.metrics;
        match outcome {
            Outcome::Delivered => {
                for event in events {
                    st.disp.finish(event.offset);
                }
                m.delivered
                    .get_or_create(&self.labels)
                    .inc_by(events.len() as u64);
                if st.halt.take().is_some() {
                    tracing::info!(destination = %self.cfg.name, "destination {} accepts requests again: no longer paused", self.cfg.name);
                }
            }
            Outcome::Permanent { status, error } => {
                for event in events {
                    let attempts = st.disp.failed(event.offset, sent_ms);
                    self.dead_letter(event, &attempts, clock.now_ms(), *status, error)
                        .await?;
                    st.disp.finish(event.offset);
                }
            }
            Outcome::Halt { error, .. } => {
                // Not a failed attempt: the events wait for the fix.
                for event in events {
                    st.disp.release(event.offset);
                }
                if st.halt.is_none() {
                    tracing::warn!(destination = %self.cfg.name, "destination {} paused itself: {error}. Its events wait, undelivered; once fixed, resume it (POST /admin/destinations/{}/resume, or restart ferry). Until then one request tries again every {}", self.cfg.name, self.cfg.name, humantime::format_duration(self.cfg.retry.cap));
                }
                st.halt = Some(Halted {
                    reason: error.clone(),
                    probe_at: Some(Instant::now() + self.cfg.retry.cap),
                });
            }
            Outcome::Retry {
                status,
                error,
                retry_after,
            } => {
                for event in events {
                    let offset = event.offset;
                    let attempts = st.disp.failed(offset, sent_ms);
                    let first = attempts.first_ms.unwrap_or(sent_ms);
                    let delay =
                        next_delay(&self.cfg.retry, attempts.failures - 1, *retry_after, rng);
                    let retried_ms = clock.now_ms() + delay.as_millis() as u64 - first;
                    let give_up = self
                        .cfg
                        .give_up_after()
                        .is_some_and(|max| u128::from(retried_ms) >= max.as_millis());
                    if give_up {
                        let why = format!("gave up after {} attempts: {error}", attempts.failures);
                        self.dead_letter(event, &attempts, clock.now_ms(), *status, &why)
                            .await?;
                        st.disp.finish(offset);
                    } else {
                        tracing::debug!(destination = %self.cfg.name, offset, attempt = attempts.failures, ?delay, "retrying: {error}");
                        m.retried.get_or_create(&self.labels).inc();
                        m.backoff_seconds
                            .get_or_create(&self.labels)
                            .set(delay.as_secs_f64());
                        st.timers.insert(offset, delay);
                    }
                }
            }
            Outcome::PerEvent(_) => unreachable!("per-event outcomes are split by settle"),
        }
        Ok(())
    }

    /// Logs when the destination starts failing and when it delivers again
    /// (with how long it failed and the backlog left). For a per-event
    /// outcome, one delivered event means the destination is up.
    fn note_health(&self, st: &mut LoopState, outcome: &Outcome, clock: &Clock) {
        let outcome = match outcome {
            Outcome::PerEvent(v) => {
                let first = |f: fn(&Outcome) -> bool| v.iter().find(|o| f(o));
                let Some(o) = first(|o| *o == Outcome::Delivered)
                    .or_else(|| first(|o| matches!(o, Outcome::Halt { .. })))
                    .or_else(|| first(|o| matches!(o, Outcome::Retry { .. })))
                    .or_else(|| v.first())
                else {
                    return;
                };
                o
            }
            o => o,
        };
        match outcome {
            Outcome::Delivered if st.failing => {
                st.failing = false;
                let failed_for = st.failing_since_ms.take().map(|since| {
                    std::time::Duration::from_secs(clock.now_ms().saturating_sub(since) / 1000)
                });
                let behind = self.log.durable_end().saturating_sub(st.disp.cursor());
                tracing::info!(
                    destination = %self.cfg.name,
                    backlog_events = behind,
                    "destination {} is delivering again after failing for {}; {behind} events to catch up",
                    self.cfg.name,
                    humantime::format_duration(failed_for.unwrap_or_default())
                );
            }
            Outcome::Retry { error, .. }
            | Outcome::Permanent { error, .. }
            | Outcome::Halt { error, .. } => {
                if !st.failing && !matches!(outcome, Outcome::Halt { .. }) {
                    tracing::warn!(destination = %self.cfg.name, "destination {} is failing: {error}", self.cfg.name);
                }
                if !st.failing {
                    st.failing_since_ms = Some(clock.now_ms());
                }
                st.failing = true;
                st.last_error = Some(error.clone());
            }
            Outcome::Delivered | Outcome::PerEvent(_) => {}
        }
    }

    async fn dead_letter(
        &self,
        event: &LoggedEvent,
        attempts: &Attempts,
        now_ms: u64,
        status: Option<u16>,
        error: &str,
    ) -> Result<(), DeliveryError> {
        let dl = DeadLetter {
            destination: self.cfg.name.clone(),
            offset: event.offset,
            message_id: event.meta.message_id.clone(),
            event: String::from_utf8_lossy(&event.body).into_owned(),
            attempts: attempts.failures,
            first_attempt_ms: attempts.first_ms.unwrap_or(now_ms),
            last_attempt_ms: now_ms,
            last_status: status,
            last_error: crate::store::state_excerpt(error),
        };
        tracing::warn!(destination = %self.cfg.name, offset = event.offset, message_id = %dl.message_id, status = ?status, "dead-lettered: {}", dl.last_error);
        self.metrics.dead_lettered.get_or_create(&self.labels).inc();
        self.store_op(move |s| s.add_dead_letter(&dl)).await
    }
}
