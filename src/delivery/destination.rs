//! One destination's delivery loop: follow the log from the cursor, feed the
//! ordering window, keep up to `concurrency` requests in flight (within the
//! `rate_limit`), back off failed heads with full jitter, dead-letter what
//! cannot be delivered, pause when the destination refuses its credentials,
//! and commit the cursor in batches (every 100 ms at most, never per event).
//! What an outcome does to its events is in `settle.rs`.

use super::backlog::BacklogTrend;
use super::backoff::Outcome;
use super::config::DestinationConfig;
use super::event::{LoggedEvent, Wanted};
use super::order_window::{Attempts, OrderWindow};
use super::rate_limit::TokenBucket;
use super::sink::Sink;
use super::status::{Control, DestinationHandle};
use super::CursorBoard;
use crate::log::{Log, LogError, LogReader, Record};
use crate::metrics::{DestLabels, Metrics};
use crate::store::{StateStore, StoreError};
use std::sync::atomic::Ordering;
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
pub(super) struct LoopState {
    pub(super) disp: OrderWindow,
    reader: Option<LogReader>,
    inflight: JoinSet<Sent>,
    /// Events in the requests of `inflight`.
    in_flight_events: usize,
    /// Heads waiting out a backoff, by offset.
    pub(super) timers: DelayQueue<u64>,
    /// The last committed cursor.
    committed: u64,
    /// Paused by an operator.
    paused: bool,
    /// Paused by the destination itself: it refused the credentials.
    pub(super) halt: Option<Halted>,
    /// The last attempt failed.
    pub(super) failing: bool,
    /// Since when (Unix ms) the destination has been failing.
    pub(super) failing_since_ms: Option<u64>,
    pub(super) last_error: Option<String>,
    /// How the backlog moved over the last minute.
    backlog: BacklogTrend,
    /// The `rate_limit`, if any.
    bucket: Option<TokenBucket>,
    /// When the rate limit lets the next request go (ready heads wait).
    rate_wait: Option<Instant>,
    /// The sink's byte counts already added to the metrics.
    traffic_seen: (u64, u64),
}

/// A destination that paused itself because it refused the credentials.
pub(super) struct Halted {
    /// The destination's answer, and what to fix.
    pub(super) reason: String,
    /// When one request goes out again to see whether it was fixed; `None`
    /// while that request is out.
    pub(super) probe_at: Option<Instant>,
}

type Sent = (Vec<(LoggedEvent, Attempts)>, u64, Outcome);

/// A sleep until `at`, or one that is never polled (its `select!` branch is
/// disabled) when there is nothing to wait for.
fn sleep_until(at: Option<Instant>) -> tokio::time::Sleep {
    tokio::time::sleep_until(at.unwrap_or_else(Instant::now))
}

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
    pub(super) async fn store_op<T: Send + 'static>(
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
            disp: OrderWindow::new(start, self.cfg.window())
                .with_max_bytes(self.cfg.window_bytes()),
            reader: None,
            inflight: JoinSet::new(),
            in_flight_events: 0,
            timers: DelayQueue::new(),
            committed: start,
            paused: false,
            halt: None,
            failing: false,
            failing_since_ms: None,
            last_error: None,
            backlog: BacklogTrend::default(),
            bucket: self
                .cfg
                .rate_limit
                .map(|rate| TokenBucket::new(rate, Instant::now())),
            rate_wait: None,
            traffic_seen: (0, 0),
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
                if st.halt.as_ref().is_none_or(|h| h.probe_at.is_none()) {
                    self.launch(&mut st, &clock);
                }
            }
            let caught_up = st.disp.read_pos() >= *durable.borrow_and_update();
            let probe_at = st.halt.as_ref().and_then(|h| h.probe_at);
            let rate_wait = st.rate_wait;
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
                _ = sleep_until(probe_at), if probe_at.is_some() && !st.paused => {
                    if let Some(h) = &mut st.halt {
                        h.probe_at = None;
                        tracing::info!(destination = %self.cfg.name, "destination {} is paused: trying one request to see whether it was fixed", self.cfg.name);
                    }
                }
                _ = sleep_until(rate_wait), if rate_wait.is_some() => {
                    st.rate_wait = None;
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
                let delivered = |i: usize| match &outcome {
                    Outcome::Delivered => true,
                    Outcome::PerEvent(v) => v.get(i) == Some(&Outcome::Delivered),
                    _ => false,
                };
                for (i, (e, _)) in events.iter().enumerate() {
                    if delivered(i) {
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
                // An operator who resumes a destination that paused itself
                // says its configuration was fixed: full speed at once.
                st.halt = None;
                tracing::info!(destination = %self.cfg.name, "resumed by an operator");
            }
            Control::Reset { to, done } => {
                self.drain(st).await;
                st.disp =
                    OrderWindow::new(to, self.cfg.window()).with_max_bytes(self.cfg.window_bytes());
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
        let (paused, reason) = self.pause_state(st);
        self.handle.update(|s| {
            s.paused = paused;
            s.pause_reason = reason;
        });
        Ok(())
    }

    /// Whether the destination is paused, and why (for the status).
    fn pause_state(&self, st: &LoopState) -> (bool, Option<String>) {
        if st.paused {
            return (true, Some("paused by an operator".into()));
        }
        let Some(halt) = &st.halt else {
            return (false, None);
        };
        let why = format!(
            "{}. Events wait, undelivered. Once fixed, resume with `POST /admin/destinations/{}/resume` or a restart; until then one request tries again every {}",
            halt.reason,
            self.cfg.name,
            humantime::format_duration(self.cfg.retry.cap)
        );
        (true, Some(why))
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
        let (paused, pause_reason) = self.pause_state(st);
        m.paused.get_or_create(&self.labels).set(i64::from(paused));
        if let Some(t) = self.sink.traffic() {
            let now = (
                t.wire_bytes.load(Ordering::Relaxed),
                t.json_bytes.load(Ordering::Relaxed),
            );
            m.sent_bytes
                .get_or_create(&self.labels)
                .inc_by(now.0 - st.traffic_seen.0);
            m.sent_json_bytes
                .get_or_create(&self.labels)
                .inc_by(now.1 - st.traffic_seen.1);
            st.traffic_seen = now;
        }
        self.handle.update(|s| {
            s.cursor = cursor;
            s.committed_cursor = st.committed;
            s.lag_events = lag_events;
            s.lag_seconds = lag_seconds;
            s.backlog_growth_per_second = growth;
            s.in_flight = st.in_flight_events;
            s.retrying_users = st.timers.len();
            s.paused = paused;
            s.pause_reason = pause_reason;
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

    /// Starts requests for ready users, up to `concurrency` in flight (one
    /// while a paused destination is being tried again) and within the
    /// rate limit (when it runs out, `rate_wait` says when to go on).
    fn launch(&self, st: &mut LoopState, clock: &Clock) {
        let (batch_size, max_bytes) = (self.cfg.batch_size(), self.cfg.batch_max_bytes());
        let most = if st.halt.is_some() {
            1
        } else {
            self.cfg.concurrency()
        };
        st.rate_wait = None;
        while st.inflight.len() < most {
            let mut events = batch_size;
            if let Some(bucket) = &mut st.bucket {
                if !bucket.ready(Instant::now()) {
                    if st.disp.has_ready() {
                        st.rate_wait = Some(bucket.next_at());
                    }
                    return;
                }
                events = events.min(bucket.burst());
            }
            let batch = st.disp.take_batch(events, max_bytes);
            if batch.is_empty() {
                return;
            }
            if let Some(bucket) = &mut st.bucket {
                bucket.take(batch.len());
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
