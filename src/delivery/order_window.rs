//! Per-destination ordering window: events read from the log wait here
//! until delivered or dead-lettered. Each user key has a FIFO and only its
//! head may be in flight or backing off, so event N+1 of a user is sent only
//! once event N has its final outcome, while other users keep flowing; a
//! request carries the heads of many users. The cursor is the lowest offset
//! not yet finished; the window is bounded, and when it is full the
//! destination stops reading (pauses) instead of reordering or dropping.

use super::event::LoggedEvent;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// Delivery attempt bookkeeping of one event.
#[derive(Debug, Clone)]
pub struct Attempts {
    /// Failed attempts so far.
    pub failures: u32,
    /// When the first attempt started (Unix ms).
    pub first_ms: Option<u64>,
}

/// An event in the window.
struct Slot {
    /// What it counts against the window's byte limit.
    bytes: usize,
    event: LoggedEvent,
    user: Arc<str>,
    attempts: Attempts,
}

/// One user's queue.
#[derive(Default)]
struct Lane {
    /// Offsets of this user's events in the window, oldest first.
    queue: VecDeque<u64>,
    /// The head is in flight or waiting out a backoff.
    busy: bool,
    /// The user is in the ready queue.
    queued: bool,
}

/// The ordering window of one destination.
pub struct OrderWindow {
    limit: usize,
    /// Most bytes of held events (see [`OrderWindow::with_max_bytes`]).
    max_bytes: usize,
    /// Bytes of held events: their JSON and a fixed overhead each.
    bytes: usize,
    slots: BTreeMap<u64, Slot>,
    lanes: HashMap<Arc<str>, Lane, foldhash::fast::RandomState>,
    /// Users whose head may be sent now, in the order they became ready.
    ready: VecDeque<Arc<str>>,
    /// Next offset to read from the log.
    read_pos: u64,
}

impl OrderWindow {
    /// An empty window that starts reading at `cursor`, holding at most
    /// `limit` unfinished events.
    pub fn new(cursor: u64, limit: usize) -> Self {
        OrderWindow {
            limit: limit.max(1),
            max_bytes: usize::MAX,
            bytes: 0,
            slots: BTreeMap::new(),
            lanes: HashMap::default(),
            ready: VecDeque::new(),
            read_pos: cursor,
        }
    }

    /// Also bounds the window by the bytes of the events it holds (their
    /// JSON and [`crate::memory::WINDOW_EVENT_OVERHEAD`] each). It is full
    /// once they reach `max_bytes`; one event is always admitted.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes.max(1);
        self
    }

    /// Bytes of the events held, as counted against the byte limit.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The next offset to read from the log.
    pub fn read_pos(&self) -> u64 {
        self.read_pos
    }

    /// Everything below this offset is finished: the durable cursor value.
    pub fn cursor(&self) -> u64 {
        self.slots.keys().next().copied().unwrap_or(self.read_pos)
    }

    /// The oldest unfinished event held.
    pub fn oldest(&self) -> Option<&LoggedEvent> {
        self.slots.values().next().map(|s| &s.event)
    }

    /// Unfinished events held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// True when no more events may be read in.
    pub fn is_full(&self) -> bool {
        self.slots.len() >= self.limit || self.bytes >= self.max_bytes
    }

    /// True when some user's head may be sent now.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Users with an event waiting behind a busy head.
    pub fn blocked_users(&self) -> usize {
        self.lanes
            .values()
            .filter(|l| l.busy && l.queue.len() > 1)
            .count()
    }

    /// Puts `user` in the ready queue if its head is free and it is not
    /// there yet.
    fn wake(&mut self, user: Arc<str>) {
        if let Some(lane) = self.lanes.get_mut(&user) {
            if !lane.busy && !lane.queued && !lane.queue.is_empty() {
                lane.queued = true;
                self.ready.push_back(user);
            }
        }
    }

    /// Takes in the next event read from the log. `wanted == false` (filtered
    /// out) finishes it at once.
    pub fn push(&mut self, event: LoggedEvent, wanted: bool) {
        assert_eq!(
            event.offset, self.read_pos,
            "events must be pushed in log order"
        );
        self.read_pos += 1;
        if !wanted {
            return;
        }
        // One allocation per user in the window, not per event.
        let user: Arc<str> = match self.lanes.get_key_value(event.meta.user.as_str()) {
            Some((user, _)) => user.clone(),
            None => Arc::from(event.meta.user.as_str()),
        };
        let lane = self.lanes.entry(user.clone()).or_default();
        lane.queue.push_back(event.offset);
        let attempts = Attempts {
            failures: 0,
            first_ms: None,
        };
        let bytes = event.body.len() + crate::memory::WINDOW_EVENT_OVERHEAD;
        self.bytes += bytes;
        self.slots.insert(
            event.offset,
            Slot {
                bytes,
                event,
                user: user.clone(),
                attempts,
            },
        );
        self.wake(user);
    }

    /// Skips offsets that are no longer in the log (deleted by retention
    /// while the destination was behind); only allowed when nothing is held.
    pub fn skip_to(&mut self, offset: u64) {
        assert!(self.slots.is_empty() && offset >= self.read_pos);
        self.read_pos = offset;
    }

    /// One request's events, marked in flight: the heads of ready users, in
    /// the order they became ready, until `max_events` or `max_bytes` of
    /// payload (at least one event). Each belongs to a different user.
    pub fn take_batch(
        &mut self,
        max_events: usize,
        max_bytes: usize,
    ) -> Vec<(LoggedEvent, Attempts)> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while out.len() < max_events {
            let Some(user) = self.ready.pop_front() else {
                break;
            };
            let lane = self.lanes.get_mut(&user).expect("ready users have lanes");
            let head = *lane.queue.front().expect("ready lanes are not empty");
            let slot = &self.slots[&head];
            let size = slot.event.body.len() + 1;
            if !out.is_empty() && bytes + size > max_bytes {
                // It does not fit: it stays first in line.
                self.ready.push_front(user);
                break;
            }
            lane.queued = false;
            lane.busy = true;
            bytes += size;
            out.push((slot.event.clone(), slot.attempts.clone()));
        }
        out
    }

    /// The event at `offset` (a head in flight) is finished: delivered or
    /// dead-lettered. Its user's next event becomes ready.
    pub fn finish(&mut self, offset: u64) {
        let slot = self
            .slots
            .remove(&offset)
            .expect("finished events are held");
        self.bytes -= slot.bytes;
        let lane = self
            .lanes
            .get_mut(&slot.user)
            .expect("held events have lanes");
        debug_assert_eq!(lane.queue.front(), Some(&offset), "only heads finish");
        lane.queue.pop_front();
        lane.busy = false;
        if lane.queue.is_empty() {
            self.lanes.remove(&slot.user);
        } else {
            self.wake(slot.user);
        }
    }

    /// The head at `offset` failed and will be retried later: it stays the
    /// head (its user's later events keep waiting); record the attempt.
    pub fn failed(&mut self, offset: u64, first_ms: u64) -> Attempts {
        let slot = self.slots.get_mut(&offset).expect("failed events are held");
        slot.attempts.failures += 1;
        slot.attempts.first_ms.get_or_insert(first_ms);
        slot.attempts.clone()
    }

    /// The backoff of the head at `offset` is over: it may be sent again.
    pub fn release(&mut self, offset: u64) {
        let user = self.slots[&offset].user.clone();
        let lane = self.lanes.get_mut(&user).expect("held events have lanes");
        lane.busy = false;
        self.wake(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::event::EventMeta;
    use proptest::prelude::*;

    fn ev(offset: u64, user: &str) -> LoggedEvent {
        LoggedEvent {
            offset,
            body: bytes::Bytes::from_static(b"{}"),
            meta: Arc::new(EventMeta {
                user: user.into(),
                ..EventMeta::default()
            }),
            received_ms: None,
        }
    }

    fn offsets(batch: &[(LoggedEvent, Attempts)]) -> Vec<u64> {
        batch.iter().map(|(e, _)| e.offset).collect()
    }

    #[test]
    fn the_byte_limit_fills_the_window_and_finishing_frees_it() {
        // Events of 2 bytes ("{}") count 2 + the overhead each: a limit of
        // three events' worth is full at the third, whatever the count limit.
        let each = 2 + crate::memory::WINDOW_EVENT_OVERHEAD;
        let mut d = OrderWindow::new(0, 100).with_max_bytes(3 * each);
        for o in 0..2 {
            d.push(ev(o, &format!("u{o}")), true);
        }
        assert!(!d.is_full());
        d.push(ev(2, "u2"), true);
        assert!(d.is_full());
        assert_eq!(d.bytes(), 3 * each);
        let batch = d.take_batch(10, usize::MAX);
        d.finish(batch[0].0.offset);
        assert!(!d.is_full(), "a finished event frees its bytes");
        assert_eq!(d.bytes(), 2 * each);
        // Filtered events are never held, so they count nothing.
        d.push(ev(3, "u3"), false);
        assert_eq!(d.bytes(), 2 * each);
        // One event is always admitted, however small the limit.
        let mut tiny = OrderWindow::new(0, 100).with_max_bytes(1);
        assert!(!tiny.is_full());
        tiny.push(ev(0, "u"), true);
        assert!(tiny.is_full());
    }

    #[test]
    fn one_user_is_strictly_sequential() {
        let mut d = OrderWindow::new(0, 100);
        for o in 0..3 {
            d.push(ev(o, "u"), true);
        }
        assert_eq!(offsets(&d.take_batch(10, usize::MAX)), [0]);
        assert!(
            d.take_batch(10, usize::MAX).is_empty(),
            "the next event waits for the head"
        );
        d.failed(0, 5);
        assert!(
            d.take_batch(10, usize::MAX).is_empty(),
            "a backing-off head still blocks its user"
        );
        d.release(0);
        assert_eq!(d.take_batch(10, usize::MAX)[0].1.failures, 1);
        d.finish(0);
        assert_eq!(offsets(&d.take_batch(10, usize::MAX)), [1]);
        assert_eq!(d.cursor(), 1);
    }

    #[test]
    fn a_request_carries_the_heads_of_many_users_up_to_its_caps() {
        let mut d = OrderWindow::new(0, 100);
        for (o, u) in [(0, "a"), (1, "b"), (2, "a"), (3, "c"), (4, "d")] {
            d.push(ev(o, u), true);
        }
        assert_eq!(offsets(&d.take_batch(3, usize::MAX)), [0, 1, 3]);
        assert_eq!(offsets(&d.take_batch(3, usize::MAX)), [4], "a's next waits");
        d.finish(0);
        assert_eq!(offsets(&d.take_batch(3, usize::MAX)), [2]);
        // A byte cap: at least one event, then only what fits (3 bytes each).
        let mut d = OrderWindow::new(0, 100);
        for o in 0..3 {
            d.push(ev(o, &format!("u{o}")), true);
        }
        assert_eq!(offsets(&d.take_batch(10, 1)), [0]);
        assert_eq!(offsets(&d.take_batch(10, 6)), [1, 2]);
    }

    #[test]
    fn other_users_flow_while_one_retries() {
        let mut d = OrderWindow::new(0, 100);
        d.push(ev(0, "slow"), true);
        d.push(ev(1, "slow"), true);
        d.push(ev(2, "a"), true);
        d.push(ev(3, "b"), true);
        assert_eq!(offsets(&d.take_batch(10, usize::MAX)), [0, 2, 3]);
        d.failed(0, 1);
        d.finish(2);
        d.finish(3);
        assert_eq!(
            d.cursor(),
            0,
            "the cursor waits for the lowest unfinished event"
        );
        assert_eq!(d.blocked_users(), 1);
        d.release(0);
        d.take_batch(10, usize::MAX);
        d.finish(0);
        assert_eq!(d.cursor(), 1);
        d.take_batch(10, usize::MAX);
        d.finish(1);
        assert_eq!(d.cursor(), 4);
        assert!(d.is_empty());
    }

    #[test]
    fn filtered_events_finish_at_once_and_the_window_bounds_reading() {
        let mut d = OrderWindow::new(10, 2);
        d.push(ev(10, "a"), false);
        assert_eq!(d.cursor(), 11);
        d.push(ev(11, "a"), true);
        d.push(ev(12, "b"), true);
        assert!(d.is_full());
        assert_eq!(d.read_pos(), 13);
    }

    proptest! {
        /// Random finish/fail/release schedules over requests of random
        /// size: per-user order holds over first sends, a request carries
        /// one event per user, and the cursor never passes an unfinished
        /// event.
        #[test]
        fn order_and_cursor_hold(
            users in prop::collection::vec(0u8..5, 1..80),
            script in prop::collection::vec((0u8..4, 1usize..5), 1..400),
        ) {
            let mut d = OrderWindow::new(0, 16);
            let mut next = 0usize;
            let mut in_flight: Vec<u64> = Vec::new();
            let mut waiting: Vec<u64> = Vec::new();
            let mut done: std::collections::BTreeSet<u64> = Default::default();
            let mut last_sent: HashMap<u8, u64> = HashMap::new();
            for (step, size) in script {
                while !d.is_full() && next < users.len() {
                    d.push(ev(next as u64, &users[next].to_string()), true);
                    next += 1;
                }
                let batch = offsets(&d.take_batch(size, usize::MAX));
                let distinct: std::collections::HashSet<u8> =
                    batch.iter().map(|o| users[*o as usize]).collect();
                prop_assert_eq!(distinct.len(), batch.len(), "two events of one user in a request");
                for o in batch {
                    let u = users[o as usize];
                    if let Some(prev) = last_sent.get(&u) {
                        prop_assert!(*prev <= o, "user {} out of order", u);
                        prop_assert!(done.contains(prev) || *prev == o);
                    }
                    last_sent.insert(u, o);
                    in_flight.push(o);
                }
                match step {
                    0 | 1 if !in_flight.is_empty() => { let o = in_flight.remove(0); d.finish(o); done.insert(o); }
                    2 if !in_flight.is_empty() => { let o = in_flight.remove(0); d.failed(o, 0); waiting.push(o); }
                    _ if !waiting.is_empty() => { let o = waiting.remove(0); d.release(o); }
                    _ => {}
                }
                let cursor = d.cursor();
                prop_assert!((0..cursor).all(|o| done.contains(&o)), "cursor {} passed an unfinished event", cursor);
            }
        }
    }
}
