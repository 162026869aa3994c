//! One destination's delivery loop: follow the log from the cursor, feed the
//! ordering window, keep up to `concurrency` requests in flight, back off
//! failed heads with full jitter, dead-letter what cannot be delivered, and
//! commit the cursor in batches (every 100 ms at most, never per event).

use super::backoff::{next_delay, Outcome};
use super::config::DestinationConfig;
use super::dispatcher::{Attempts, Dispatcher};
use super::event::{EventMeta, LoggedEvent};
use super::sink::Sink;
use super::CursorBoard;
use crate::log::{Log, LogError, LogReader, Record};
use crate::store::{DeadLetter, StateStore};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

/// How often the cursor is committed at most.
pub const COMMIT_EVERY: Duration = Duration::from_millis(100);
/// Records read from the log per blocking read.
const READ_CHUNK: usize = 1024;

/// Errors that stop a destination's loop.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The log failed under the reader.
    #[error("destination {dest}: reading the log failed: {source}")]
    Log {
        /// Destination name.
        dest: String,
        /// Cause.
        #[source]
        source: LogError,
    },
    /// The state store failed.
    #[error("destination {dest}: {source}")]
    Store {
        /// Destination name.
        dest: String,
        /// Cause.
        #[source]
        source: crate::store::StoreError,
    },
}

/// Wall-clock milliseconds that advance with tokio's clock (so paused-time
/// tests see consistent attempt times).
#[derive(Clone, Copy)]
pub(crate) struct Clock {
    start: Instant,
    wall_ms: u64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Clock {
            start: Instant::now(),
            wall_ms,
        }
    }
    pub(crate) fn now_ms(&self) -> u64 {
        self.wall_ms + self.start.elapsed().as_millis() as u64
    }
}

/// Everything a destination loop needs.
pub struct Worker {
    pub(crate) cfg: Arc<DestinationConfig>,
    pub(crate) log: Log,
    pub(crate) store: Arc<StateStore>,
    pub(crate) sink: Arc<dyn Sink>,
    pub(crate) board: Arc<CursorBoard>,
    pub(crate) cancel: CancellationToken,
}

type Sent = (Vec<(LoggedEvent, Attempts)>, u64, Outcome);

impl Worker {
    fn store_err(&self, source: crate::store::StoreError) -> DeliveryError {
        DeliveryError::Store {
            dest: self.cfg.name.clone(),
            source,
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&StateStore) -> T + Send + 'static,
    ) -> T {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .expect("state store task panicked")
    }

    /// The stored cursor, or the configured start for a new destination.
    async fn start_cursor(&self) -> Result<u64, DeliveryError> {
        let name = self.cfg.name.clone();
        let stored = self
            .blocking(move |s| s.cursors().map(|c| c.get(&name).copied()))
            .await;
        if let Some(c) = stored.map_err(|e| self.store_err(e))? {
            return Ok(c);
        }
        let c = match self.cfg.start {
            super::config::StartAt::Earliest => self.log.start_offset(),
            super::config::StartAt::Latest => self.log.durable_end(),
        };
        let name = self.cfg.name.clone();
        self.blocking(move |s| s.set_cursors(&[(name, c)]))
            .await
            .map_err(|e| self.store_err(e))?;
        tracing::info!(destination = %self.cfg.name, cursor = c, "new destination starts at offset {c}");
        Ok(c)
    }

    /// Runs until cancelled; commits the cursor on the way out.
    pub async fn run(self) -> Result<(), DeliveryError> {
        let clock = Clock::new();
        let start = self.start_cursor().await?;
        self.board.set(&self.cfg.name, start);
        let mut disp = Dispatcher::new(start, self.cfg.window);
        let mut reader: Option<LogReader> = None;
        let mut durable = self.log.subscribe();
        let mut inflight: JoinSet<Sent> = JoinSet::new();
        let mut timers: DelayQueue<u64> = DelayQueue::new();
        let mut committed = start;
        let mut tick = tokio::time::interval(COMMIT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
        loop {
            if !disp.is_full() && disp.read_pos() < self.log.durable_end() {
                reader = Some(self.fill(&mut disp, reader.take()).await?);
            }
            self.launch(&mut disp, &mut inflight, &clock);
            let caught_up = disp.read_pos() >= *durable.borrow_and_update();
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                Some(done) = inflight.join_next() => {
                    let (events, sent_ms, outcome) = done.expect("send tasks do not panic");
                    self.settle(&mut disp, &mut timers, events, sent_ms, outcome, &clock, &mut rng).await?;
                }
                Some(expired) = std::future::poll_fn(|cx| timers.poll_expired(cx)), if !timers.is_empty() => {
                    disp.release(expired.into_inner());
                }
                _ = tick.tick() => {
                    committed = self.commit(&disp, committed).await?;
                }
                changed = durable.changed(), if caught_up && !disp.is_full() => {
                    if changed.is_err() {
                        break; // the log was closed
                    }
                }
            }
        }
        // Let in-flight requests finish (each is bounded by the timeout).
        while let Some(done) = inflight.join_next().await {
            if let Ok((events, _, Outcome::Delivered)) = done {
                for (e, _) in events {
                    disp.finish(e.offset);
                }
            }
        }
        self.commit(&disp, committed).await?;
        Ok(())
    }

    /// Reads durable records into the window until it is full or caught up.
    async fn fill(
        &self,
        disp: &mut Dispatcher,
        reader: Option<LogReader>,
    ) -> Result<LogReader, DeliveryError> {
        let pos = disp.read_pos();
        let mut reader = match reader {
            Some(r) if r.next_offset() == pos => r,
            _ => match self.log.reader(pos) {
                Ok(r) => r,
                Err(LogError::OffsetOutOfRange { start, .. }) if pos < start && disp.is_empty() => {
                    tracing::warn!(destination = %self.cfg.name, "events {pos}..{start} were deleted before this destination got them; skipping to {start}");
                    disp.skip_to(start);
                    self.log
                        .reader(start)
                        .map_err(|source| DeliveryError::Log {
                            dest: self.cfg.name.clone(),
                            source,
                        })?
                }
                Err(source) => {
                    return Err(DeliveryError::Log {
                        dest: self.cfg.name.clone(),
                        source,
                    })
                }
            },
        };
        let want = (self.cfg.window - disp.len()).min(READ_CHUNK);
        let end = self.log.durable_end();
        let (back, records) = tokio::task::spawn_blocking(move || {
            let mut out: Vec<Record> = Vec::with_capacity(want);
            while out.len() < want {
                match reader.next_below(end) {
                    Ok(Some(r)) => out.push(r),
                    Ok(None) => break,
                    Err(e) => return (reader, Err(e)),
                }
            }
            (reader, Ok(out))
        })
        .await
        .expect("log reader task panicked");
        let records = records.map_err(|source| DeliveryError::Log {
            dest: self.cfg.name.clone(),
            source,
        })?;
        for r in records {
            let meta = EventMeta::parse(&r.payload);
            let wanted = meta.wanted_by(&self.cfg);
            disp.push(
                LoggedEvent {
                    offset: r.offset,
                    payload: Arc::from(r.payload),
                    meta,
                },
                wanted,
            );
        }
        Ok(back)
    }

    /// Starts requests for ready heads, up to `concurrency` in flight.
    fn launch(&self, disp: &mut Dispatcher, inflight: &mut JoinSet<Sent>, clock: &Clock) {
        while inflight.len() < self.cfg.concurrency {
            let mut batch = Vec::new();
            let mut bytes = 0;
            while batch.len() < self.cfg.batch_size {
                let Some(next) = disp.take_ready(1).pop() else {
                    break;
                };
                bytes += next.0.payload.len() + 1;
                batch.push(next);
                if bytes >= self.cfg.batch_max_bytes {
                    break;
                }
            }
            if batch.is_empty() {
                return;
            }
            let sink = self.sink.clone();
            let sent_ms = clock.now_ms();
            inflight.spawn(async move {
                let events = batch.iter().map(|(e, _)| e.clone()).collect();
                let outcome = sink.send(events).await;
                (batch, sent_ms, outcome)
            });
        }
    }

    /// Applies the outcome of one request to its events.
    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &self,
        disp: &mut Dispatcher,
        timers: &mut DelayQueue<u64>,
        events: Vec<(LoggedEvent, Attempts)>,
        sent_ms: u64,
        outcome: Outcome,
        clock: &Clock,
        rng: &mut impl rand::Rng,
    ) -> Result<(), DeliveryError> {
        for (event, _) in events {
            let offset = event.offset;
            match &outcome {
                Outcome::Delivered => disp.finish(offset),
                Outcome::Permanent { status, error } => {
                    let attempts = disp.failed(offset, sent_ms);
                    self.dead_letter(&event, &attempts, clock.now_ms(), *status, error)
                        .await?;
                    disp.finish(offset);
                }
                Outcome::Retry {
                    status,
                    error,
                    retry_after,
                } => {
                    let attempts = disp.failed(offset, sent_ms);
                    let first = attempts.first_ms.unwrap_or(sent_ms);
                    let delay =
                        next_delay(&self.cfg.retry, attempts.failures - 1, *retry_after, rng);
                    let give_up = clock.now_ms() + delay.as_millis() as u64 - first
                        >= self.cfg.retry.max_duration.as_millis() as u64;
                    if give_up {
                        let why = format!("gave up after {} attempts: {error}", attempts.failures);
                        self.dead_letter(&event, &attempts, clock.now_ms(), *status, &why)
                            .await?;
                        disp.finish(offset);
                    } else {
                        tracing::debug!(destination = %self.cfg.name, offset, attempt = attempts.failures, ?delay, "retrying: {error}");
                        timers.insert(offset, delay);
                    }
                }
            }
        }
        Ok(())
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
            event: String::from_utf8_lossy(&event.payload).into_owned(),
            attempts: attempts.failures,
            first_attempt_ms: attempts.first_ms.unwrap_or(now_ms),
            last_attempt_ms: now_ms,
            last_status: status,
            last_error: crate::store::state_excerpt(error),
        };
        tracing::warn!(destination = %self.cfg.name, offset = event.offset, message_id = %dl.message_id, status = ?status, "dead-lettered: {}", dl.last_error);
        self.blocking(move |s| s.add_dead_letter(&dl))
            .await
            .map_err(|e| self.store_err(e))
    }

    /// Stores the cursor if it moved; returns the committed value.
    async fn commit(&self, disp: &Dispatcher, committed: u64) -> Result<u64, DeliveryError> {
        let cursor = disp.cursor();
        if cursor == committed {
            return Ok(committed);
        }
        let name = self.cfg.name.clone();
        self.blocking(move |s| s.set_cursors(&[(name, cursor)]))
            .await
            .map_err(|e| self.store_err(e))?;
        self.board.set(&self.cfg.name, cursor);
        Ok(cursor)
    }
}
