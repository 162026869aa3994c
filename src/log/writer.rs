//! The group-commit writer: one dedicated thread owns the active segment.
//! Appenders queue `(records, reply)`; the thread takes everything queued,
//! writes it with one `write` and one `fdatasync`, and only then replies.
//! Any write or fsync failure is fatal: the log refuses appends until restart.

use super::error::{LogError, Result};
use super::record::{self, RecordHeader};
use super::recovery::create_segment;
use super::segment::SEGMENT_HEADER_LEN;
use super::shared::Shared;
use super::storage::StorageFile;
use crate::disk::is_no_space;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Where an append's outcome goes.
pub(crate) type Reply = oneshot::Sender<Result<Range<u64>>>;

/// One atomic append waiting for the writer.
pub(crate) struct AppendRequest {
    /// Payloads, in order.
    pub records: Vec<Vec<u8>>,
    /// Encoded size of all records.
    pub encoded_len: u64,
    /// Where the outcome goes.
    pub reply: Reply,
}

/// Limits the writer enforces.
pub(crate) struct WriterLimits {
    /// Roll to a new segment past this size.
    pub segment_bytes: u64,
    /// Refuse appends that would take the log past this size.
    pub max_log_bytes: Option<u64>,
    /// Refuse appends that would leave less free disk space than this.
    pub min_free_bytes: u64,
    /// Stop adding requests to a group past this many bytes.
    pub max_group_bytes: u64,
    /// How long a group may wait for appenders that were just answered to
    /// come back, when the previous group showed that many are active.
    pub linger: std::time::Duration,
    /// Told about each commit group.
    pub on_commit: Option<super::CommitObserver>,
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub limits: WriterLimits,
    /// The segment being appended to.
    pub active: Arc<dyn StorageFile>,
    /// Where the next byte goes in `active`.
    pub pos: u64,
    /// The next offset to assign.
    pub next: u64,
    /// Encoded records of the group being built.
    buf: Vec<u8>,
    /// Replies owed for the group being built, with their offsets.
    owed: Vec<(Reply, Range<u64>)>,
    /// Appends in the previous group: how many appenders are active.
    last_group: usize,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        limits: WriterLimits,
        active: Arc<dyn StorageFile>,
        pos: u64,
        next: u64,
    ) -> Self {
        Writer {
            shared,
            limits,
            active,
            pos,
            next,
            buf: Vec::new(),
            owed: Vec::new(),
            last_group: 0,
        }
    }

    /// Serves appends until every sender is gone.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<AppendRequest>) {
        while let Some(first) = rx.blocking_recv() {
            let mut bytes = first.encoded_len;
            let mut group = vec![first];
            self.drain(&mut rx, &mut group, &mut bytes);
            // Appenders answered by the last fsync are typically resubmitting
            // right now; waiting a moment for them doubles the group instead of
            // alternating between two half-groups. Only when several are active,
            // so a lone appender never waits.
            if self.last_group > 1 && group.len() < self.last_group {
                let deadline = std::time::Instant::now() + self.limits.linger;
                while group.len() < self.last_group
                    && bytes < self.limits.max_group_bytes
                    && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(std::time::Duration::from_micros(20));
                    self.drain(&mut rx, &mut group, &mut bytes);
                }
            }
            self.last_group = group.len();
            self.commit(group);
        }
    }

    /// Moves already queued appends into `group`, up to the group byte cap.
    fn drain(
        &self,
        rx: &mut mpsc::Receiver<AppendRequest>,
        group: &mut Vec<AppendRequest>,
        bytes: &mut u64,
    ) {
        while *bytes < self.limits.max_group_bytes {
            match rx.try_recv() {
                Ok(req) => {
                    *bytes += req.encoded_len;
                    group.push(req);
                }
                Err(_) => break,
            }
        }
    }

    /// Writes a group of appends with as few fsyncs as segment rolls allow.
    fn commit(&mut self, group: Vec<AppendRequest>) {
        let (mut room, mut why_full) = self.room();
        for req in group {
            if let Some(reason) = self.shared.failure.get() {
                let _ = req.reply.send(Err(LogError::Failed(reason.clone())));
                continue;
            }
            if req.encoded_len > room {
                let _ = req.reply.send(Err(LogError::Full(why_full.clone())));
                continue;
            }
            let tail = self.pos + self.buf.len() as u64;
            if tail > SEGMENT_HEADER_LEN && tail + req.encoded_len > self.limits.segment_bytes {
                if self.flush().is_err() || self.roll().is_err() {
                    let reason = self.shared.failure.get().cloned().unwrap_or_default();
                    let _ = req.reply.send(Err(LogError::Failed(reason)));
                    continue;
                }
                (room, why_full) = self.room();
            }
            room -= req.encoded_len;
            self.encode(req);
        }
        let _ = self.flush();
    }

    /// Bytes the log may still grow by, from the budget and the disk's
    /// reserve, and which of the two binds (the refusal message).
    fn room(&self) -> (u64, String) {
        let total = self.shared.total_bytes.load(Ordering::Relaxed);
        let budget = self
            .limits
            .max_log_bytes
            .map_or(u64::MAX, |max| max.saturating_sub(total));
        let free = self.shared.storage.available_space(&self.shared.dir);
        let reserve_room = free.map_or(u64::MAX, |f| f.saturating_sub(self.limits.min_free_bytes));
        if budget <= reserve_room {
            let max = self.limits.max_log_bytes.unwrap_or(u64::MAX);
            (
                budget,
                format!("the log holds {total} bytes of its {max}-byte budget"),
            )
        } else {
            let why = format!(
                "free disk space ({} bytes) is at the reserve of {} bytes",
                free.unwrap_or(0),
                self.limits.min_free_bytes
            );
            (reserve_room, why)
        }
    }

    fn encode(&mut self, req: AppendRequest) {
        let group_base = self.next - self.owed.iter().map(|(_, r)| r.end - r.start).sum::<u64>();
        let first = self.next;
        let n = req.records.len() as u32;
        for (i, payload) in req.records.iter().enumerate() {
            let header = RecordHeader {
                len: payload.len() as u32,
                offset: self.next,
                group_delta: (self.next - group_base) as u32,
                batch_remaining: n - 1 - i as u32,
            };
            record::encode_record(&mut self.buf, &header, payload);
            self.next += 1;
        }
        self.owed.push((req.reply, first..self.next));
    }

    /// Writes and fsyncs the group being built, then replies to its appenders.
    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = self.shared.active_path();
        let group_first = self.owed.first().map_or(self.next, |(_, r)| r.start);
        let outcome = match self.active.write_all_at(&self.buf, self.pos) {
            Err(e) if is_no_space(&e) => match self.active.set_len(self.pos) {
                // Nothing of the group stays visible: refuse it and carry on.
                Ok(()) => Err(LogError::Full(format!("the disk is full ({e})"))),
                Err(e2) => Err(self.fail(format!(
                    "write to {} failed ({e}), and cutting it back failed too ({e2})",
                    path.display()
                ))),
            },
            Err(e) => Err(self.fail(format!("write to {} failed: {e}", path.display()))),
            Ok(()) => {
                let started = std::time::Instant::now();
                match self.active.sync_data() {
                    Err(e) => {
                        Err(self.fail(format!("fdatasync of {} failed: {e}", path.display())))
                    }
                    Ok(()) => {
                        if let Some(observe) = &self.limits.on_commit {
                            (observe.0)(started.elapsed(), self.next - group_first);
                        }
                        Ok(())
                    }
                }
            }
        };
        let len = self.buf.len() as u64;
        self.buf.clear();
        let owed = std::mem::take(&mut self.owed);
        match outcome {
            Ok(()) => {
                self.pos += len;
                self.shared.total_bytes.fetch_add(len, Ordering::Relaxed);
                self.shared
                    .note_group(owed.len() as u64, self.next - group_first);
                self.shared.durable.send_replace(self.next);
                for (reply, range) in owed {
                    let _ = reply.send(Ok(range));
                }
                Ok(())
            }
            Err(e) => {
                self.next = group_first;
                for (reply, _) in owed {
                    let _ = reply.send(Err(clone_refusal(&e)));
                }
                Err(e)
            }
        }
    }

    /// Starts a new segment at the next offset.
    fn roll(&mut self) -> Result<()> {
        let base = self.next;
        match create_segment(&*self.shared.storage, &self.shared.dir, base) {
            Ok((path, file)) => {
                self.shared.segments_lock().insert(base, path);
                self.active = file;
                self.pos = SEGMENT_HEADER_LEN;
                self.shared
                    .total_bytes
                    .fetch_add(SEGMENT_HEADER_LEN, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(self.fail(format!(
                "rolling to a new segment at offset {base} failed: {e}"
            ))),
        }
    }

    /// Marks the log failed (once) and returns the refusal appenders get.
    fn fail(&self, reason: String) -> LogError {
        tracing::error!("{reason}; the log refuses appends until ferry restarts");
        let _ = self.shared.failure.set(reason);
        LogError::Failed(self.shared.failure.get().cloned().unwrap_or_default())
    }
}

/// The refusals the writer hands out are `Full` or `Failed`; both clone.
fn clone_refusal(e: &LogError) -> LogError {
    match e {
        LogError::Full(s) => LogError::Full(s.clone()),
        LogError::Failed(s) => LogError::Failed(s.clone()),
        other => LogError::Failed(other.to_string()),
    }
}
