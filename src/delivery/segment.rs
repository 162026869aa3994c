//! The segment sink: forwards events to an upstream that speaks the Segment
//! HTTP tracking API (Segment, a RudderStack data plane, another ferry) as
//! `POST <url>/v1/batch`, with HTTP Basic auth (the write key as user name)
//! and gzip bodies, as the official SDKs send.
//!
//! The event sent is the client's event: same `messageId` (the upstream's
//! dedup makes a re-send harmless), ids, properties, context. Ferry's
//! `_ferry` metadata and the edge's `receivedAt` and `sentAt` stay behind;
//! the request's `sentAt` is the forwarding time and the event's `timestamp`
//! is sent as stored, so the upstream keeps the event's time instead of
//! correcting it for the hours a backlog waited.
//!
//! A batch the upstream refuses as bad data (400, 413, 422) is split in
//! halves and re-sent until the refused events are found: only those are
//! dead-lettered, with the upstream's answer. 401/403 (a wrong write key)
//! and other answers that no retry can fix halt the destination instead.

use super::backoff::{parse_retry_after, retryable_status, Outcome};
use super::config::DestinationConfig;
use super::event::LoggedEvent;
use super::http_client;
use super::sink::{SendFuture, Sink, Traffic};
use crate::store::state_excerpt;
use crate::stored_event::FERRY_FIELD;
use base64::Engine;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

/// Fields of a stored event that are not forwarded: ferry's metadata, and
/// the edge's receipt and send times (the upstream sets its own
/// `receivedAt`; the request carries the forwarding time as `sentAt`).
const NOT_FORWARDED: [&str; 3] = [FERRY_FIELD, "receivedAt", "sentAt"];

/// A segment destination.
pub struct Segment {
    inner: Arc<Upstream>,
}

/// What every request to the upstream shares.
struct Upstream {
    /// Client with its own pool; carries the Basic auth header.
    client: reqwest::Client,
    /// `<url>/v1/batch`.
    batch_url: String,
    /// Compress bodies with gzip.
    gzip: bool,
    /// Events whose forwarded JSON is larger are dead-lettered unsent.
    max_event_bytes: usize,
    /// Bytes sent, for the metrics.
    traffic: Traffic,
}

/// How the upstream answered one request.
enum Answer {
    /// 2xx: every event of the request is accepted.
    Accepted,
    /// The data was refused (400, 413, 422): a single event is dead; a
    /// batch is split to find the refused ones.
    Refused(Outcome),
    /// Retry the events later (no answer, 408, 429, 5xx).
    Retry(Outcome),
    /// Stop the destination until its configuration is fixed.
    Halt(Outcome),
}

impl Segment {
    /// Builds the sink (and its own connection pool) from a validated config.
    pub fn new(cfg: &DestinationConfig) -> Result<Segment, String> {
        let key = cfg.write_key.as_deref().unwrap_or_default();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
        let mut auth = HeaderValue::from_str(&format!("Basic {basic}"))
            .map_err(|e| format!("destinations[{}].write_key: {e}", cfg.name))?;
        auth.set_sensitive(true);
        let mut fixed = HeaderMap::new();
        fixed.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        fixed.insert(AUTHORIZATION, auth);
        let headers = http_client::headers(cfg, fixed)?;
        // A redirect would turn the POST into a GET: report it instead.
        let client = http_client::client(cfg, headers, false)?;
        let url = cfg.url.as_deref().unwrap_or_default();
        Ok(Segment {
            inner: Arc::new(Upstream {
                client,
                batch_url: format!("{}/v1/batch", url.trim_end_matches('/')),
                gzip: cfg.gzip(),
                max_event_bytes: cfg.max_event_bytes(),
                traffic: Traffic::default(),
            }),
        })
    }
}

impl Sink for Segment {
    fn send(&self, events: Vec<LoggedEvent>) -> SendFuture {
        let up = self.inner.clone();
        Box::pin(async move { up.forward(&events).await })
    }

    fn traffic(&self) -> Option<&Traffic> {
        Some(&self.inner.traffic)
    }
}

impl Upstream {
    /// Sends `events` (each of a different user), splitting a refused batch
    /// until the refused events are found; one outcome per event, or one
    /// for all when they share it.
    async fn forward(&self, events: &[LoggedEvent]) -> Outcome {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
        let mut bodies: Vec<Vec<u8>> = Vec::with_capacity(events.len());
        let mut todo = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            let json = match forwarded(&event.body) {
                Ok(json) if json.len() <= self.max_event_bytes => {
                    todo.push(i);
                    json
                }
                Ok(json) => {
                    outcomes[i] = Some(Outcome::Permanent {
                        status: None,
                        error: format!(
                            "the event is {} bytes of JSON, above this destination's max_event_bytes ({}): the upstream would refuse it",
                            json.len(),
                            self.max_event_bytes
                        ),
                    });
                    Vec::new()
                }
                Err(error) => {
                    outcomes[i] = Some(Outcome::Permanent {
                        status: None,
                        error,
                    });
                    Vec::new()
                }
            };
            bodies.push(json);
        }
        let mut groups: VecDeque<Vec<usize>> = VecDeque::new();
        if !todo.is_empty() {
            groups.push_back(todo);
        }
        while let Some(group) = groups.pop_front() {
            match self.post(group.iter().map(|&i| bodies[i].as_slice())).await {
                Answer::Accepted => {
                    for i in group {
                        outcomes[i] = Some(Outcome::Delivered);
                    }
                }
                Answer::Refused(refused) if group.len() == 1 => outcomes[group[0]] = Some(refused),
                Answer::Refused(_) => {
                    let (a, b) = group.split_at(group.len() / 2);
                    groups.push_front(b.to_vec());
                    groups.push_front(a.to_vec());
                }
                Answer::Retry(o) | Answer::Halt(o) => {
                    // The upstream went away or stopped us: the rest waits.
                    for i in group.into_iter().chain(groups.drain(..).flatten()) {
                        outcomes[i] = Some(o.clone());
                    }
                }
            }
        }
        let outcomes: Vec<Outcome> = outcomes
            .into_iter()
            .map(|o| o.expect("every event has an outcome"))
            .collect();
        if outcomes.iter().all(|o| *o == outcomes[0]) {
            return outcomes.into_iter().next().unwrap_or(Outcome::Delivered);
        }
        Outcome::PerEvent(outcomes)
    }

    /// One `/v1/batch` request carrying `events` (forwarded JSON each).
    async fn post<'a>(&self, events: impl Iterator<Item = &'a [u8]>) -> Answer {
        let json = batch_body(events, &now_rfc3339());
        let json_len = json.len() as u64;
        let mut req = self.client.post(&self.batch_url);
        let body = if self.gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
            gzip(&json)
        } else {
            json
        };
        self.traffic
            .json_bytes
            .fetch_add(json_len, Ordering::Relaxed);
        self.traffic
            .wire_bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => return Answer::Retry(http_client::no_answer(&e)),
        };
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Answer::Accepted;
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let text = resp.text().await.unwrap_or_default();
        let answer = state_excerpt(&format!("HTTP {status}: {}", text.trim()));
        classify(status, answer, retry_after)
    }
}

/// What an upstream's non-2xx answer means for the events of the request.
fn classify(status: u16, answer: String, retry_after: Option<std::time::Duration>) -> Answer {
    let status_some = Some(status);
    match status {
        400 | 413 | 422 => Answer::Refused(Outcome::Permanent {
            status: status_some,
            error: format!("refused by the upstream: {answer}"),
        }),
        s if retryable_status(s) => Answer::Retry(Outcome::Retry {
            status: status_some,
            error: answer,
            retry_after: retry_after.filter(|_| s == 429 || s == 503),
        }),
        401 | 403 => Answer::Halt(Outcome::Halt {
            status: status_some,
            error: format!("the upstream refused the write key ({answer}); check write_key"),
        }),
        _ => Answer::Halt(Outcome::Halt {
            status: status_some,
            error: format!("the upstream answered {answer}, which no retry fixes; check url"),
        }),
    }
}

/// `{"batch":[…],"sentAt":"…"}`.
fn batch_body<'a>(events: impl Iterator<Item = &'a [u8]>, sent_at: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * 1024);
    out.extend_from_slice(b"{\"batch\":[");
    for (i, e) in events.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e);
    }
    out.extend_from_slice(b"],\"sentAt\":\"");
    out.extend_from_slice(sent_at.as_bytes());
    out.extend_from_slice(b"\"}");
    out
}

/// Gzip at the fastest level: JSON of similar events compresses well even
/// so, and the CPU goes to forwarding.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    e.write_all(data).expect("writing to a Vec cannot fail");
    e.finish().expect("writing to a Vec cannot fail")
}

/// The current time as RFC 3339 with milliseconds, in UTC.
fn now_rfc3339() -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(fmt)
        .unwrap_or_default()
}

/// The JSON sent for a stored event: its fields in stored order, without
/// [`NOT_FORWARDED`]; values are copied as they are, never re-encoded.
pub fn forwarded(stored: &[u8]) -> Result<Vec<u8>, String> {
    let Fields(fields) = serde_json::from_slice(stored)
        .map_err(|e| format!("the stored event is not a JSON object: {e}"))?;
    let mut out = Vec::with_capacity(stored.len());
    out.push(b'{');
    for (key, value) in fields
        .iter()
        .filter(|(k, _)| !NOT_FORWARDED.contains(&k.as_ref()))
    {
        if out.len() > 1 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key.as_ref()).expect("a string serializes");
        out.push(b':');
        out.extend_from_slice(value.get().as_bytes());
    }
    out.push(b'}');
    Ok(out)
}

/// The top-level fields of a JSON object, values unparsed.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(Key(key)) = map.next_key()? {
                    out.push((key, map.next_value()?));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// An object key, borrowed from the input unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn the_forwarded_event_is_the_clients_event() {
        let stored = json!({
            "type": "track", "event": "Buy", "userId": "u1", "messageId": "m-1",
            "timestamp": "2026-01-02T03:04:05.678Z", "originalTimestamp": "2026-01-02T03:04:05.000Z",
            "sentAt": "2026-01-02T03:04:06.000Z", "receivedAt": "2026-01-02T03:04:07.000Z",
            "properties": {"price": 9.5, "tags": ["a", "b"], "sentAt": "kept: not top level"},
            "context": {"ip": "10.0.0.1"}, "integrations": {"All": true},
            "we\"ird": 1,
            "_ferry": {"source": "web"}
        });
        let bytes = serde_json::to_vec(&stored).unwrap();
        let out: Value = serde_json::from_slice(&forwarded(&bytes).unwrap()).unwrap();
        let mut want = stored.clone();
        for k in NOT_FORWARDED {
            want.as_object_mut().unwrap().remove(k);
        }
        assert_eq!(out, want);
        assert!(forwarded(b"[1,2]").is_err());
        assert!(forwarded(b"not json").is_err());
    }

    #[test]
    fn a_batch_body_carries_the_forwarding_time() {
        let body = batch_body(
            [&b"{\"a\":1}"[..], &b"{\"b\":2}"[..]].into_iter(),
            "2026-01-01T00:00:00.000Z",
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"batch": [{"a": 1}, {"b": 2}], "sentAt": "2026-01-01T00:00:00.000Z"})
        );
        let now = now_rfc3339();
        assert_eq!(now.len(), 24, "{now}");
        assert!(
            time::OffsetDateTime::parse(&now, &time::format_description::well_known::Rfc3339)
                .is_ok()
        );
    }

    #[test]
    fn answers_are_classified() {
        let kind = |s: u16| match classify(s, String::new(), None) {
            Answer::Accepted => "accepted",
            Answer::Refused(_) => "refused",
            Answer::Retry(_) => "retry",
            Answer::Halt(_) => "halt",
        };
        for s in [400, 413, 422] {
            assert_eq!(kind(s), "refused", "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(kind(s), "retry", "{s}");
        }
        for s in [301, 401, 403, 404, 405, 501] {
            assert_eq!(kind(s), "halt", "{s}");
        }
        let Answer::Retry(Outcome::Retry { retry_after, .. }) =
            classify(429, String::new(), Some(std::time::Duration::from_secs(3)))
        else {
            panic!("429 is retried")
        };
        assert_eq!(retry_after, Some(std::time::Duration::from_secs(3)));
    }
}
