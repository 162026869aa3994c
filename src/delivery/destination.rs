//! One destination's delivery loop: follow the log from the cursor, feed the
//! ordering window, keep up to `concurrency` requests in flight, back off
//! failed heads with full jitter, dead-letter what cannot be delivered, and
//! commit the cursor in batches (every 100 ms at most, never per event).

use super::backlog::BacklogTrend;
use super::backoff::{next_delay, Outcome};
use super::config::DestinationConfig;
use super::event::{LoggedEvent, Wanted};
use super::order_window::{Attempts, OrderWindow};
use super::sink::Sink;
use super::status::{Control, DestinationHandle};
use super::CursorBoard;
use crate::log::{Log, LogError, LogReader, Record};
use crate::metrics::{DestLabels, Metrics};
use crate::store::{DeadLetter, StateStore, StoreError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

/// How often the cursor is committed at most.
pub const COMMIT_EVERY: Duration = Duration::from_millis(100);
/// Records read from the log per blocking read.
const READ_CHUNK: usize = 1024;
/// First wait before retrying a state store write that found the disk full;
/// doubled on each retry up to [`STORE_RETRY_MAX`].
const STORE_RETRY_MIN: Duration = Duration::from_millis(250);
/// Longest wait between retries of a state store write on a full disk.
const STORE_RETRY_MAX: Duration = Duration::from_secs(10);

/// Errors that stop a destination's loop.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The log failed under the reader.
    #[error("destination {dest}: reading the log failed")]
    Log {
        /// Destination name.
        dest: String,
        /// Cause.
        #[source]
        source: LogError,
    },
    /// The state store failed.
    #[error("destination {dest}: the state store failed")]
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
pub struct DestinationLoop {
    pub(crate) cfg: Arc<DestinationConfig>,
    pub(crate) log: Log,
    pub(crate) store: Arc<StateStore>,
    pub(crate) sink: Arc<dyn Sink>,
    pub(crate) board: Arc<CursorBoard>,
    pub(crate) cancel: CancellationToken,
    pub(crate) metrics: Arc<Metrics>,
    /// This destination's metric labels.
    pub(crate) labels: DestLabels,
    pub(crate) handle: Arc<DestinationHandle>,
}

/// The mutable state of one destination's loop.
struct LoopState {
    disp: OrderWindow,
    reader: Option<LogReader>,
    inflight: JoinSet<Sent>,
    /// Events in the requests of `inflight`.
    in_flight_events: usize,
    /// Heads waiting out a backoff, by offset.
    timers: DelayQueue<u64>,
    /// The last committed cursor.
    committed: u64,
    paused: bool,
    /// The last attempt failed.
    failing: bool,
    last_error: Option<String>,
    /// How the backlog moved over the last minute.
    backlog: BacklogTrend,
}

type Sent = (Vec<(LoggedEvent, Attempts)>, u64, Outcome);

impl DestinationLoop {
    fn store_err(&self, source: crate::store::StoreError) -> DeliveryError {
        DeliveryError::Store {
            dest: self.cfg.name.clone(),
            source,
        }
    }

    /// Runs a state store operation off the async threads. While the disk
    /// is full it waits and tries again (the loop makes no progress then,
    /// and its status says why), so a full disk pauses delivery instead of
    /// stopping it; any other store error is returned.
    async fn store_op<T: Send + 'static>(
        &self,
        f: impl Fn(&StateStore) -> Result<T, StoreError> + Send + Sync + 'static,
    ) -> Result<T, DeliveryError> {
        let f = Arc::new(f);
        let mut wait = STORE_RETRY_MIN;
        loop {
            let (store, op) = (self.store.clone(), f.clone());
            let result = tokio::task::spawn_blocking(move || op(&store))
                .await
                .expect("state store task panicked");
            match result {
                Err(e) if e.is_no_space() => {
                    tracing::warn!(destination = %self.cfg.name, "delivery waits for disk space: {e}");
                    let why = format!("waiting for disk space: {e}");
                    self.handle.update(|s| s.last_error = Some(why));
                    tokio::select! {
                        _ = self.cancel.cancelled() => return Err(self.store_err(e)),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(STORE_RETRY_MAX);
                }
                result => return result.map_err(|e| self.store_err(e)),
            }
        }
    }

    /// The stored cursor, or the configured start for a new destination.
    async fn start_cursor(&self) -> Result<u64, DeliveryError> {
        let name = self.cfg.name.clone();
        let stored = self
            .store_op(move |s| s.cursors().map(|c| c.get(&name).copied()))
            .await?;
        if let Some(c) = stored {
            return Ok(c);
        }
        let c = match self.cfg.start {
            super::config::StartAt::Earliest => self.log.start_offset(),
            super::config::StartAt::Latest => self.log.durable_end(),
        };
        let name = self.cfg.name.clone();
        self.store_op(move |s| s.set_cursors(&[(name.clone(), c)]))
            .await?;
        tracing::info!(destination = %self.cfg.name, cursor = c, "new destination starts at offset {c}");
        Ok(c)
    }

    /// Runs until cancelled; commits the cursor on the way out. A loop that
    /// stops on an error says so in its status.
    pub async fn run(&self, control: mpsc::Receiver<Control>) -> Result<(), DeliveryError> {
        let result = self.run_inner(control).await;
        if let Err(e) = &result {
            let why = crate::error_text::with_causes(e);
            self.handle.update(|s| s.stopped = Some(why));
        }
        result
    }

    async fn run_inner(&self, mut control: mpsc::Receiver<Control>) -> Result<(), DeliveryError> {
        let clock = Clock::new();
        let start = self.start_cursor().await?;
        self.board.set(&self.cfg.name, start);
        let mut st = LoopState {
            disp: OrderWindow::new(start, self.cfg.window()),
            reader: None,
            inflight: JoinSet::new(),
            in_flight_events: 0,
            timers: DelayQueue::new(),
            committed: start,
            paused: false,
            failing: false,
            last_error: None,
            backlog: BacklogTrend::default(),
        };
        let mut durable = self.log.subscribe();
        let mut tick = tokio::time::interval(COMMIT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
        loop {
            if !st.paused {
                if !st.disp.is_full() && st.disp.read_pos() < self.log.durable_end() {
                    let reader = st.reader.take();
                    st.reader = Some(self.fill(&mut st.disp, reader).await?);
                }
                self.launch(&mut st, &clock);
            }
            let caught_up = st.disp.read_pos() >= *durable.borrow_and_update();
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                Some(c) = control.recv() => {
                    self.obey(&mut st, c).await?;
                    self.publish(&mut st, &clock);
                }
                Some(done) = st.inflight.join_next() => {
                    let (events, sent_ms, outcome) = done.expect("send tasks do not panic");
                    st.in_flight_events -= events.len();
                    self.settle(&mut st, events, sent_ms, outcome, &clock, &mut rng).await?;
                }
                Some(expired) = std::future::poll_fn(|cx| st.timers.poll_expired(cx)), if !st.timers.is_empty() => {
                    st.disp.release(expired.into_inner());
                }
                _ = tick.tick() => {
                    st.committed = self.commit(&st.disp, st.committed).await?;
                    self.publish(&mut st, &clock);
                }
                changed = durable.changed(), if caught_up && !st.disp.is_full() && !st.paused => {
                    if changed.is_err() {
                        break; // the log was closed
                    }
                }
            }
        }
        self.drain(&mut st).await;
        self.commit(&st.disp, st.committed).await?;
        Ok(())
    }

    /// Lets in-flight requests finish (each is bounded by the timeout); only
    /// their successes count, the rest is retried after the restart.
    async fn drain(&self, st: &mut LoopState) {
        while let Some(done) = st.inflight.join_next().await {
            if let Ok((events, _, outcome)) = done {
                st.in_flight_events -= events.len();
                if outcome == Outcome::Delivered {
                    for (e, _) in events {
                        st.disp.finish(e.offset);
                        self.metrics.delivered.get_or_create(&self.labels).inc();
                    }
                }
            }
        }
    }

    /// Carries out an operator's control.
    async fn obey(&self, st: &mut LoopState, c: Control) -> Result<(), DeliveryError> {
        match c {
            Control::Pause => {
                st.paused = true;
                tracing::info!(destination = %self.cfg.name, "paused by an operator");
            }
            Control::Resume => {
                st.paused = false;
                tracing::info!(destination = %self.cfg.name, "resumed by an operator");
            }
            Control::Reset { to, done } => {
                self.drain(st).await;
                st.disp = OrderWindow::new(to, self.cfg.window());
                st.timers.clear();
                st.reader = None;
                let name = self.cfg.name.clone();
                self.store_op(move |s| s.set_cursors(&[(name.clone(), to)]))
                    .await?;
                st.committed = to;
                self.board.set(&self.cfg.name, to);
                tracing::info!(destination = %self.cfg.name, cursor = to, "cursor reset by an operator");
                let _ = done.send(());
            }
        }
        self.handle.update(|s| s.paused = st.paused);
        Ok(())
    }

    /// Updates the status and gauges (every commit tick), and warns when
    /// the backlog keeps growing.
    fn publish(&self, st: &mut LoopState, clock: &Clock) {
        let cursor = st.disp.cursor();
        let lag_events = self.log.durable_end().saturating_sub(cursor);
        let lag_seconds = match (lag_events, st.disp.oldest()) {
            (0, _) | (_, None) => 0.0,
            (_, Some(e)) => e
                .received_ms
                .map_or(0.0, |ms| clock.now_ms().saturating_sub(ms) as f64 / 1000.0),
        };
        let now_ms = clock.now_ms();
        let growth = st.backlog.record(now_ms, lag_events);
        if st.backlog.warn_now(now_ms, self.cfg.window() as u64) {
            tracing::warn!(
                destination = %self.cfg.name,
                lag_events,
                growth_per_second = growth.round(),
                "destination {} is falling behind: {lag_events} events not yet delivered, {:.0} more every second over the last minute",
                self.cfg.name,
                growth
            );
        }
        let m = &self.metrics;
        m.backlog_growth.get_or_create(&self.labels).set(growth);
        m.cursor_offset
            .get_or_create(&self.labels)
            .set(cursor as i64);
        m.lag_events
            .get_or_create(&self.labels)
            .set(lag_events as i64);
        m.lag_seconds.get_or_create(&self.labels).set(lag_seconds);
        m.in_flight
            .get_or_create(&self.labels)
            .set(st.in_flight_events as i64);
        if st.timers.is_empty() {
            m.backoff_seconds.get_or_create(&self.labels).set(0.0);
        }
        self.handle.update(|s| {
            s.cursor = cursor;
            s.committed_cursor = st.committed;
            s.lag_events = lag_events;
            s.lag_seconds = lag_seconds;
            s.backlog_growth_per_second = growth;
            s.in_flight = st.in_flight_events;
            s.retrying_users = st.timers.len();
            s.paused = st.paused;
            s.failing = st.failing;
            s.last_error.clone_from(&st.last_error);
        });
    }

    /// Reads durable records into the window until it is full or caught up.
    async fn fill(
        &self,
        disp: &mut OrderWindow,
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
        let want = (self.cfg.window() - disp.len()).min(READ_CHUNK);
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
        let mut filtered = 0;
        for r in records {
            let event = LoggedEvent::read(r.offset, r.payload);
            let wanted = event.meta.wanted_by(&self.cfg);
            filtered += u64::from(!wanted);
            disp.push(event, wanted);
        }
        if filtered > 0 {
            self.metrics
                .filtered
                .get_or_create(&self.labels)
                .inc_by(filtered);
        }
        Ok(back)
    }

    /// Starts requests for ready users, up to `concurrency` in flight.
    fn launch(&self, st: &mut LoopState, clock: &Clock) {
        let (batch_size, max_bytes) = (self.cfg.batch_size(), self.cfg.batch_max_bytes());
        while st.inflight.len() < self.cfg.concurrency() {
            let batch = st.disp.take_batch(batch_size, max_bytes);
            if batch.is_empty() {
                return;
            }
            let sink = self.sink.clone();
            let sent_ms = clock.now_ms();
            self.metrics.requests_sent.get_or_create(&self.labels).inc();
            st.in_flight_events += batch.len();
            st.inflight.spawn(async move {
                let events = batch.iter().map(|(e, _)| e.clone()).collect();
                let outcome = sink.send(events).await;
                (batch, sent_ms, outcome)
            });
        }
    }

    /// Applies the outcome of one request to its events.
    async fn settle(
        &self,
        st: &mut LoopState,
        events: Vec<(LoggedEvent, Attempts)>,
        sent_ms: u64,
        outcome: Outcome,
        clock: &Clock,
        rng: &mut impl rand::Rng,
    ) -> Result<(), DeliveryError> {
        self.note_health(st, &outcome);
        let m = &self.metrics;
        match &outcome {
            Outcome::Delivered => {
                for (event, _) in &events {
                    st.disp.finish(event.offset);
                }
                m.delivered
                    .get_or_create(&self.labels)
                    .inc_by(events.len() as u64);
            }
            Outcome::Permanent { status, error } => {
                for (event, _) in events {
                    let attempts = st.disp.failed(event.offset, sent_ms);
                    self.dead_letter(&event, &attempts, clock.now_ms(), *status, error)
                        .await?;
                    st.disp.finish(event.offset);
                }
            }
            Outcome::Retry {
                status,
                error,
                retry_after,
            } => {
                for (event, _) in &events {
                    let offset = event.offset;
                    let attempts = st.disp.failed(offset, sent_ms);
                    let first = attempts.first_ms.unwrap_or(sent_ms);
                    let delay =
                        next_delay(&self.cfg.retry, attempts.failures - 1, *retry_after, rng);
                    let give_up = clock.now_ms() + delay.as_millis() as u64 - first
                        >= self.cfg.retry.max_duration.as_millis() as u64;
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
        }
        Ok(())
    }

    /// Logs when the destination starts failing and when it recovers.
    fn note_health(&self, st: &mut LoopState, outcome: &Outcome) {
        match outcome {
            Outcome::Delivered if st.failing => {
                st.failing = false;
                tracing::info!(destination = %self.cfg.name, "destination {} is delivering again", self.cfg.name);
            }
            Outcome::Retry { error, .. } | Outcome::Permanent { error, .. } => {
                if !st.failing {
                    tracing::warn!(destination = %self.cfg.name, "destination {} is failing: {error}", self.cfg.name);
                }
                st.failing = true;
                st.last_error = Some(error.clone());
            }
            Outcome::Delivered => {}
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

    /// Stores the cursor if it moved; returns the committed value.
    async fn commit(&self, disp: &OrderWindow, committed: u64) -> Result<u64, DeliveryError> {
        let cursor = disp.cursor();
        if cursor == committed {
            return Ok(committed);
        }
        let name = self.cfg.name.clone();
        self.store_op(move |s| s.set_cursors(&[(name.clone(), cursor)]))
            .await?;
        self.board.set(&self.cfg.name, cursor);
        Ok(cursor)
    }
}
