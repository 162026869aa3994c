//! Events for the tests: one builder for every ordinary event they send to
//! ferry or append to a log, and the per-user sequence ids that the
//! ordering tests read back.

use serde_json::{json, Value};

/// An event being built; `json()` gives a request body or batch item,
/// `logged()` a log record.
#[derive(Clone, Debug)]
pub struct Event(Value);

/// A track event "E" of user "u", without a messageId (ferry generates one).
pub fn track() -> Event {
    Event(json!({"type": "track", "event": "E", "userId": "u"}))
}

/// An identify call of user "u", without a messageId.
pub fn identify() -> Event {
    Event(json!({"type": "identify", "userId": "u"}))
}

/// The `seq`th event of `user`: a track "Step" with messageId
/// `{user}-{seq}`, which [`user_seq`] takes apart again.
pub fn step(user: &str, seq: u64) -> Event {
    track().id(format!("{user}-{seq}")).user(user).name("Step")
}

/// The user and sequence number in a messageId made by [`step`].
pub fn user_seq(id: &str) -> (&str, u64) {
    let (user, seq) = id
        .rsplit_once('-')
        .unwrap_or_else(|| panic!("{id} is not a step id"));
    (user, seq.parse().unwrap())
}

/// `{"batch": [...]}` holding `events`.
pub fn batch<E: Into<Value>>(events: impl IntoIterator<Item = E>) -> Value {
    json!({"batch": events.into_iter().map(Into::into).collect::<Vec<Value>>()})
}

impl From<Event> for Value {
    fn from(event: Event) -> Value {
        event.0
    }
}

impl Event {
    pub fn id(self, message_id: impl Into<String>) -> Self {
        self.with("messageId", message_id.into())
    }

    pub fn user(self, user_id: &str) -> Self {
        self.with("userId", user_id)
    }

    /// The track's event name.
    pub fn name(self, event: &str) -> Self {
        self.with("event", event)
    }

    /// `properties.pad`: `bytes` of filler, to fill segments, budgets and disks.
    pub fn pad(mut self, bytes: usize) -> Self {
        self.0["properties"]["pad"] = "x".repeat(bytes).into();
        self
    }

    /// Sets any top-level field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0[key] = value.into();
        self
    }

    /// Without `type`: the body of a single-event endpoint such as
    /// `/v1/track`, where the path gives the type.
    pub fn untyped(mut self) -> Self {
        self.0.as_object_mut().unwrap().remove("type");
        self
    }

    pub fn json(self) -> Value {
        self.0
    }

    /// The record ferry would have stored for source "web", to append to a
    /// log directly.
    pub fn logged(self) -> Vec<u8> {
        serde_json::to_vec(&self.with("_ferry", json!({"source": "web"})).0).unwrap()
    }
}
