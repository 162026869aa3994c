//! Destination configuration: the `[[destinations]]` tables of ferry.toml.
//! Durations are strings such as "50ms", "10s", "5m", "4h".

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// One destination.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Unique name; keys its cursor and dead letters. Required.
    pub name: String,
    /// `"webhook"` (HTTP POST of JSON), `"file"` (JSON Lines), `"segment"`
    /// (the Segment HTTP tracking API of an upstream), `"nats"` (NATS
    /// JetStream) or `"kafka"`. Required.
    #[serde(rename = "type")]
    pub kind: DestinationType,
    /// Webhook: the URL to POST to. Segment: the upstream's base URL
    /// (requests go to `<url>/v1/batch`). Required for both.
    #[serde(default)]
    pub url: Option<String>,
    /// Webhook, segment: extra request headers. Default: none.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Webhook: when set, requests carry
    /// `X-Ferry-Signature: sha256=<hex HMAC-SHA256 of the body>`. Default: none.
    #[serde(default)]
    pub secret: Option<String>,
    /// Webhook, segment: a PEM file of CA certificates trusted for `https`
    /// besides the built-in (Mozilla) roots, e.g. an internal CA. Nats,
    /// kafka: the CA certificates the broker's TLS certificate is checked
    /// against (implies TLS). A relative path is relative to the working
    /// directory. Default: none.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Segment: the upstream's write key, sent as the HTTP Basic user name.
    /// Required for segment destinations.
    #[serde(default)]
    pub write_key: Option<String>,
    /// Segment: gzip request bodies (`Content-Encoding: gzip`). Default: true.
    #[serde(default)]
    pub gzip: Option<bool>,
    /// Segment: the largest event the upstream takes, in bytes of the JSON
    /// sent; a larger event is dead-lettered without being sent. Default:
    /// 32768 (Segment's 32 KB).
    #[serde(default)]
    pub max_event_bytes: Option<usize>,
    /// Nats: the subject each event is published to (one message per
    /// event); may contain `{source}` and `{type}`, and a JetStream stream
    /// must capture it. Required for nats.
    #[serde(default)]
    pub subject: Option<String>,
    /// Kafka: the bootstrap brokers, as `host:port`. Required for kafka.
    #[serde(default)]
    pub brokers: Option<Vec<String>>,
    /// Kafka: the topic each event is produced to (one record per event,
    /// keyed by user); may contain `{source}` and `{type}`. Required for kafka.
    #[serde(default)]
    pub topic: Option<String>,
    /// Nats: the user name (with `password`). Kafka: the SASL user name.
    /// Default: none.
    #[serde(default)]
    pub user: Option<String>,
    /// Nats: the password of `user`. Kafka: the SASL password. Default: none.
    #[serde(default)]
    pub password: Option<String>,
    /// Nats: an authentication token. Default: none.
    #[serde(default)]
    pub token: Option<String>,
    /// Nats: a credentials file (a user JWT and its NKey seed, `.creds`).
    /// Default: none.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Kafka: the SASL mechanism, `PLAIN`, `SCRAM-SHA-256` or
    /// `SCRAM-SHA-512`. Default: `PLAIN` when `user` is set.
    #[serde(default)]
    pub sasl_mechanism: Option<String>,
    /// Nats, kafka: connect with TLS. Default: false, but true with
    /// `ca_file` or a client certificate (nats: also for `tls://` URLs).
    #[serde(default)]
    pub tls: Option<bool>,
    /// Nats, kafka: a client certificate (PEM) for mutual TLS, with
    /// `tls_key_file`. Default: none.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// Nats, kafka: the private key (PEM) of `tls_cert_file`. Default: none.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Kafka: `none`, `gzip`, `snappy`, `lz4` or `zstd`. Default: `none`.
    #[serde(default)]
    pub compression: Option<String>,
    /// Kafka: further librdkafka client properties, passed as they are
    /// (e.g. `"linger.ms" = "20"`). Properties that ferry's guarantees
    /// depend on are refused. Default: none.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// File: the JSON Lines file. Required for files.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// File: rotate (rename to `<path>.1`, `.2`, …) past this size. Default: 100 MiB.
    #[serde(default)]
    pub rotate_bytes: Option<u64>,
    /// File: rotated files kept. Default: 5.
    #[serde(default)]
    pub keep: Option<usize>,
    /// Sources whose events this destination receives. Default: all.
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    /// Which events it receives. Default: all.
    #[serde(default)]
    pub filter: EventFilter,
    /// Events per request (webhook: 1 sends one JSON object, more send
    /// `{"batch": [...]}`; file: lines per write and fsync; segment: events
    /// per `/v1/batch`; nats, kafka: messages published before their
    /// acknowledgements are awaited). Default: webhook 1, file 1000, segment
    /// 500, nats and kafka 25; see [`DestinationConfig::batch_size`].
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Byte cap of one request's events (at least one event is sent).
    /// Default: webhook 512 KiB, file, nats and kafka 4 MiB, segment 480 KiB
    /// (a request stays within Segment's 500 KB).
    #[serde(default)]
    pub batch_max_bytes: Option<usize>,
    /// Requests in flight at once. Default: webhook 16, file 2, segment 4,
    /// nats and kafka 64.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Most events sent per second (a token bucket holding one second's
    /// worth), so a link that comes back is not saturated by the backlog.
    /// Default: none (unlimited).
    #[serde(default)]
    pub rate_limit: Option<u32>,
    /// Events read ahead of the cursor (bounds memory and head-of-line
    /// waiting); when full, the destination pauses. Default: the larger of
    /// 10000 and 2 × batch_size × concurrency.
    #[serde(default)]
    pub window: Option<usize>,
    /// Bytes of events read ahead of the cursor (their JSON and ~256 bytes
    /// of bookkeeping each); whichever of `window` and this is reached
    /// first pauses reading. Default: the `memory.budget`'s share for
    /// windows (an eighth) divided equally among the destinations, and at
    /// least 2 × batch_max_bytes × concurrency.
    #[serde(default)]
    pub window_bytes: Option<usize>,
    /// Where a destination seen for the first time starts. Default: earliest.
    #[serde(default)]
    pub start: StartAt,
    /// Per-request timeout. Default: "10s".
    #[serde(
        default = "default_timeout",
        deserialize_with = "duration",
        serialize_with = "serialize_duration"
    )]
    pub timeout: Duration,
    /// Retry policy.
    #[serde(default)]
    pub retry: RetryConfig,
}

/// The kinds of destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationType {
    /// HTTP POST of JSON to `url`.
    Webhook,
    /// JSON Lines appended to `path`.
    File,
    /// The Segment HTTP tracking API (`POST <url>/v1/batch`) of Segment, a
    /// RudderStack data plane or another ferry.
    Segment,
    /// One JetStream message per event, to `subject`.
    Nats,
    /// One Kafka record per event, to `topic`, keyed by user.
    Kafka,
}

impl DestinationType {
    /// The name used in the configuration and the status.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationType::Webhook => "webhook",
            DestinationType::File => "file",
            DestinationType::Segment => "segment",
            DestinationType::Nats => "nats",
            DestinationType::Kafka => "kafka",
        }
    }
}

/// Which events a destination receives.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventFilter {
    /// Event types (track, identify, page, screen, group, alias). Default: all.
    #[serde(default)]
    pub types: Option<Vec<String>>,
    /// Track event names. Default: all.
    #[serde(default)]
    pub events: Option<Vec<String>>,
}

/// Where a new destination starts reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// The oldest event still in the log.
    #[default]
    Earliest,
    /// Only events arriving from now on.
    Latest,
}

/// Retry policy: full-jitter exponential backoff.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First backoff ceiling. Default: "1s".
    #[serde(
        default = "default_base",
        deserialize_with = "duration",
        serialize_with = "serialize_duration"
    )]
    pub base: Duration,
    /// Largest backoff. Default: "5m".
    #[serde(
        default = "default_cap",
        deserialize_with = "duration",
        serialize_with = "serialize_duration"
    )]
    pub cap: Duration,
    /// Give up (dead-letter) after retrying an event this long, or
    /// `"never"`. Default: webhook and file "4h", segment "never"; see
    /// [`DestinationConfig::give_up_after`].
    #[serde(default)]
    pub max_duration: Option<GiveUp>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            base: default_base(),
            cap: default_cap(),
            max_duration: None,
        }
    }
}

/// When retrying an event stops: after a time, or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// Retry for as long as it takes (the log's disk budget is the limit).
    Never,
    /// Dead-letter once retrying would take longer than this.
    After(Duration),
}

impl<'de> Deserialize<'de> for GiveUp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim() == "never" {
            return Ok(GiveUp::Never);
        }
        let after = parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("{e}, or \"never\"")))?;
        Ok(GiveUp::After(after))
    }
}

impl Serialize for GiveUp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            GiveUp::Never => s.serialize_str("never"),
            GiveUp::After(d) => serialize_duration(d, s),
        }
    }
}

impl DestinationConfig {
    /// Events per request, as set or this type's default.
    pub fn batch_size(&self) -> usize {
        self.batch_size.unwrap_or(match self.kind {
            DestinationType::Webhook => 1,
            DestinationType::File => 1000,
            DestinationType::Segment => 500,
            // Small requests, many in flight: a request's events settle
            // together, so smaller ones keep more acknowledgements in flight.
            DestinationType::Nats | DestinationType::Kafka => 25,
        })
    }

    /// Byte cap of one request's events, as set or this type's default.
    pub fn batch_max_bytes(&self) -> usize {
        self.batch_max_bytes.unwrap_or(match self.kind {
            DestinationType::Webhook => 512 * 1024,
            DestinationType::File | DestinationType::Nats | DestinationType::Kafka => {
                4 * 1024 * 1024
            }
            DestinationType::Segment => 480 * 1024,
        })
    }

    /// Requests in flight, as set or this type's default.
    pub fn concurrency(&self) -> usize {
        self.concurrency.unwrap_or(match self.kind {
            DestinationType::Webhook => 16,
            DestinationType::File => 2,
            DestinationType::Segment => 4,
            DestinationType::Nats | DestinationType::Kafka => 64,
        })
    }

    /// How long an event is retried before it is dead-lettered (`None`:
    /// forever), as set or this type's default: an upstream pipeline or a
    /// broker may be out of reach for days, so segment, nats and kafka
    /// destinations never give up (the log's disk budget is the limit).
    pub fn give_up_after(&self) -> Option<Duration> {
        match self.retry.max_duration {
            Some(GiveUp::Never) => None,
            Some(GiveUp::After(d)) => Some(d),
            None => match self.kind {
                DestinationType::Segment | DestinationType::Nats | DestinationType::Kafka => None,
                DestinationType::Webhook | DestinationType::File => Some(DEFAULT_MAX_DURATION),
            },
        }
    }

    /// File: the size past which the file is rotated.
    pub fn rotate_bytes(&self) -> u64 {
        self.rotate_bytes.unwrap_or(100 << 20)
    }

    /// File: rotated files kept.
    pub fn keep(&self) -> usize {
        self.keep.unwrap_or(5)
    }

    /// Segment: gzip request bodies.
    pub fn gzip(&self) -> bool {
        self.gzip.unwrap_or(true)
    }

    /// Segment: the largest event sent, in bytes of JSON.
    pub fn max_event_bytes(&self) -> usize {
        self.max_event_bytes.unwrap_or(32 * 1024)
    }

    /// Events read ahead of the cursor: as set, or derived from the batch
    /// size and concurrency so every request in flight can be full.
    pub fn window(&self) -> usize {
        self.window.unwrap_or_else(|| {
            let full = self
                .batch_size()
                .saturating_mul(self.concurrency())
                .saturating_mul(2);
            full.clamp(DEFAULT_WINDOW, MAX_DERIVED_WINDOW)
        })
    }

    /// Bytes of events read ahead of the cursor: as set, or the default
    /// budget's share (the server sets the share of its own budget).
    pub fn window_bytes(&self) -> usize {
        self.window_bytes
            .unwrap_or_else(|| self.default_window_bytes(DEFAULT_WINDOW_BYTES))
    }

    /// The read-ahead bytes when none are set, given this destination's
    /// share of the memory budget: at least enough for every request in
    /// flight to be full twice over, as the event window.
    pub fn default_window_bytes(&self, share: usize) -> usize {
        let full = self
            .batch_max_bytes()
            .saturating_mul(self.concurrency())
            .saturating_mul(2);
        share.max(full)
    }

    /// Checks values serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let at = |key: &str| format!("destinations[{}].{key}", self.name);
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "destinations.name {:?} must be non-empty letters, digits, '-' or '_'",
                self.name
            ));
        }
        for (key, value) in [
            ("batch_size", self.batch_size),
            ("batch_max_bytes", self.batch_max_bytes),
            ("concurrency", self.concurrency),
            ("window", self.window),
            ("window_bytes", self.window_bytes),
            ("max_event_bytes", self.max_event_bytes),
            ("rate_limit", self.rate_limit.map(|r| r as usize)),
        ] {
            if value == Some(0) {
                return Err(format!("{} must be at least 1", at(key)));
            }
        }
        if self.retry.base.is_zero() || self.retry.cap < self.retry.base {
            return Err(format!("{} must be > 0 and ≤ retry.cap", at("retry.base")));
        }
        self.validate_keys_of_type()?;
        match self.kind {
            DestinationType::Webhook | DestinationType::Segment => {
                let Some(url) = &self.url else {
                    return Err(format!(
                        "{} is required for a {} destination",
                        at("url"),
                        self.kind.as_str()
                    ));
                };
                let ok =
                    reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
                if !ok {
                    return Err(format!("{} {url:?} is not an http(s) URL", at("url")));
                }
            }
            DestinationType::File if self.path.is_none() => {
                return Err(format!("{} is required for a file destination", at("path")));
            }
            DestinationType::File => {}
            DestinationType::Nats => self.validate_nats(at)?,
            DestinationType::Kafka => self.validate_kafka(at)?,
        }
        if self.kind == DestinationType::Segment {
            match self.write_key.as_deref().map(str::trim) {
                None | Some("") => {
                    return Err(format!(
                        "{} is required for a segment destination",
                        at("write_key")
                    ))
                }
                Some(k) if k.contains(':') => {
                    return Err(format!(
                        "{} must not contain ':' (it is sent as a Basic auth user name)",
                        at("write_key")
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Refuses a key that the destination's type does not use, naming it.
    fn validate_keys_of_type(&self) -> Result<(), String> {
        use DestinationType::{File, Kafka, Nats, Segment, Webhook};
        let keys: [(&str, bool, &[DestinationType]); 23] = [
            ("url", self.url.is_some(), &[Webhook, Segment, Nats]),
            ("headers", !self.headers.is_empty(), &[Webhook, Segment]),
            (
                "ca_file",
                self.ca_file.is_some(),
                &[Webhook, Segment, Nats, Kafka],
            ),
            ("subject", self.subject.is_some(), &[Nats]),
            ("brokers", self.brokers.is_some(), &[Kafka]),
            ("topic", self.topic.is_some(), &[Kafka]),
            ("user", self.user.is_some(), &[Nats, Kafka]),
            ("password", self.password.is_some(), &[Nats, Kafka]),
            ("token", self.token.is_some(), &[Nats]),
            ("credentials_file", self.credentials_file.is_some(), &[Nats]),
            ("sasl_mechanism", self.sasl_mechanism.is_some(), &[Kafka]),
            ("tls", self.tls.is_some(), &[Nats, Kafka]),
            (
                "tls_cert_file",
                self.tls_cert_file.is_some(),
                &[Nats, Kafka],
            ),
            ("tls_key_file", self.tls_key_file.is_some(), &[Nats, Kafka]),
            ("compression", self.compression.is_some(), &[Kafka]),
            ("properties", !self.properties.is_empty(), &[Kafka]),
            ("secret", self.secret.is_some(), &[Webhook]),
            ("write_key", self.write_key.is_some(), &[Segment]),
            ("gzip", self.gzip.is_some(), &[Segment]),
            (
                "max_event_bytes",
                self.max_event_bytes.is_some(),
                &[Segment],
            ),
            ("path", self.path.is_some(), &[File]),
            ("rotate_bytes", self.rotate_bytes.is_some(), &[File]),
            ("keep", self.keep.is_some(), &[File]),
        ];
        for (key, set, types) in keys {
            if set && !types.contains(&self.kind) {
                let names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
                return Err(format!(
                    "destinations[{}].{key} does not apply to a {} destination (only to: {})",
                    self.name,
                    self.kind.as_str(),
                    names.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// How long webhook and file destinations retry an event by default.
const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(4 * 3600);

/// The read-ahead window when batches are small.
const DEFAULT_WINDOW: usize = 10_000;
/// The read-ahead bytes of one destination under the default memory budget.
const DEFAULT_WINDOW_BYTES: usize = (crate::memory::DEFAULT_BUDGET / 8) as usize;
/// The largest window derived from the batch size and concurrency (an
/// explicit `window` may be larger).
const MAX_DERIVED_WINDOW: usize = 1_000_000;

/// Parses "50ms", "10s", "5m", "4h" (and combinations like "1h 30m").
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| {
        format!("invalid duration {s:?}: {e} (write e.g. \"50ms\", \"10s\", \"5m\", \"4h\")")
    })
}

/// Deserializes a duration string such as "10s" (for `#[serde(deserialize_with)]`).
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// Serializes a duration as a string such as "10s".
pub fn serialize_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// Serializes an optional duration as a string like "4h".
pub fn serialize_optional_duration<S: Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => serialize_duration(d, s),
        None => s.serialize_none(),
    }
}

/// Deserializes an optional duration string (for `#[serde(deserialize_with)]`).
pub fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom))
        .transpose()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_base() -> Duration {
    Duration::from_secs(1)
}
fn default_cap() -> Duration {
    Duration::from_secs(300)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<DestinationConfig, String> {
        let c: DestinationConfig = toml::from_str(s).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn webhook_with_defaults() {
        let c =
            parse("name = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\n").unwrap();
        assert_eq!(c.batch_size(), 1);
        assert_eq!(c.concurrency(), 16);
        assert_eq!(c.window(), 10_000);
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.retry.cap, Duration::from_secs(300));
        assert_eq!(c.start, StartAt::Earliest);
    }

    #[test]
    fn a_file_destination_batches_by_default() {
        let c = parse("name = \"f\"\ntype = \"file\"\npath = \"/tmp/x.jsonl\"\n").unwrap();
        assert_eq!(c.batch_size(), 1000);
        assert_eq!(c.batch_max_bytes(), 4 * 1024 * 1024);
        assert_eq!(c.concurrency(), 2);
        assert!(c.window() >= c.batch_size() * c.concurrency());
    }

    #[test]
    fn the_window_bytes_are_the_share_but_fit_the_requests_in_flight() {
        let small = "name = \"h\"\ntype = \"webhook\"\nurl = \"http://x\"\nbatch_max_bytes = 1000\nconcurrency = 2\n";
        let c = parse(small).unwrap();
        assert_eq!(c.default_window_bytes(1 << 20), 1 << 20, "the share");
        assert_eq!(c.default_window_bytes(10), 4000, "2 × 1000 × 2");
        let set = parse(&format!("{small}window_bytes = 77\n")).unwrap();
        assert_eq!(set.window_bytes(), 77, "a value set is kept");
        assert!(parse(&format!("{small}window_bytes = 0\n"))
            .unwrap_err()
            .contains("window_bytes"));
    }

    #[test]
    fn any_batch_size_and_concurrency_start_and_the_window_follows() {
        for batch in [1, 7, 500, 1000, 5000, 100_000] {
            for concurrency in [1, 4, 16, 64] {
                let text = format!(
                    "name = \"h\"\ntype = \"webhook\"\nurl = \"http://x\"\nbatch_size = {batch}\nconcurrency = {concurrency}\n"
                );
                let c = parse(&text).unwrap_or_else(|e| panic!("{batch}×{concurrency}: {e}"));
                assert!(
                    c.window() >= (batch * concurrency).min(500_000),
                    "{batch}×{concurrency}"
                );
            }
        }
        // An explicit window is taken as it is, even below a batch.
        let c = parse("name = \"h\"\ntype = \"webhook\"\nurl = \"http://x\"\nbatch_size = 1000\nwindow = 10\n").unwrap();
        assert_eq!(c.window(), 10);
    }

    #[test]
    fn durations_and_tables() {
        let c = parse(
            "name = \"f\"\ntype = \"file\"\npath = \"/tmp/x.jsonl\"\ntimeout = \"50ms\"\nstart = \"latest\"\n[retry]\nbase = \"10ms\"\ncap = \"5m\"\nmax_duration = \"4h\"\n[filter]\ntypes = [\"track\"]\n",
        )
        .unwrap();
        assert_eq!(c.timeout, Duration::from_millis(50));
        assert_eq!(
            c.retry.max_duration,
            Some(GiveUp::After(Duration::from_secs(4 * 3600)))
        );
        assert_eq!(c.give_up_after(), Some(Duration::from_secs(4 * 3600)));
        assert_eq!(c.filter.types.unwrap(), vec!["track"]);
    }

    #[test]
    fn a_segment_destination_batches_gzips_and_never_gives_up_by_default() {
        let c = parse(
            "name = \"central\"\ntype = \"segment\"\nurl = \"https://api.segment.io\"\nwrite_key = \"wk\"\n",
        )
        .unwrap();
        assert_eq!(c.kind.as_str(), "segment");
        assert_eq!(c.batch_size(), 500);
        assert_eq!(c.batch_max_bytes(), 480 * 1024);
        assert_eq!(c.concurrency(), 4);
        assert_eq!(c.max_event_bytes(), 32 * 1024);
        assert!(c.gzip());
        assert_eq!(c.give_up_after(), None, "retried for as long as it takes");
        assert_eq!(c.rate_limit, None);
        let c = parse(
            "name = \"c\"\ntype = \"segment\"\nurl = \"http://x\"\nwrite_key = \"wk\"\ngzip = false\nrate_limit = 500\n[retry]\nmax_duration = \"48h\"\n",
        )
        .unwrap();
        assert!(!c.gzip());
        assert_eq!(c.rate_limit, Some(500));
        assert_eq!(c.give_up_after(), Some(Duration::from_secs(48 * 3600)));
        // Webhooks keep 4 h unless told to retry forever.
        let w = parse("name = \"h\"\ntype = \"webhook\"\nurl = \"http://x\"\n").unwrap();
        assert_eq!(w.give_up_after(), Some(Duration::from_secs(4 * 3600)));
        let w = parse(
            "name = \"h\"\ntype = \"webhook\"\nurl = \"http://x\"\n[retry]\nmax_duration = \"never\"\n",
        )
        .unwrap();
        assert_eq!(w.give_up_after(), None);
    }

    #[test]
    fn keys_of_another_type_and_a_missing_write_key_are_named() {
        let seg = "name = \"c\"\ntype = \"segment\"\nurl = \"http://x\"\n";
        let e = parse(seg).unwrap_err();
        assert!(e.contains("destinations[c].write_key"), "{e}");
        let e = parse(&format!("{seg}write_key = \"a:b\"\n")).unwrap_err();
        assert!(e.contains("write_key") && e.contains("':'"), "{e}");
        for (extra, key) in [
            ("path = \"/x\"", "path"),
            ("secret = \"s\"", "secret"),
            ("keep = 2", "keep"),
            ("rotate_bytes = 10", "rotate_bytes"),
        ] {
            let e = parse(&format!("{seg}write_key = \"k\"\n{extra}\n")).unwrap_err();
            assert!(
                e.contains(&format!(
                    "destinations[c].{key} does not apply to a segment"
                )),
                "{e}"
            );
        }
        let e = parse("name = \"h\"\ntype = \"webhook\"\nurl = \"http://x\"\nwrite_key = \"k\"\n")
            .unwrap_err();
        assert!(
            e.contains("destinations[h].write_key does not apply to a webhook"),
            "{e}"
        );
        let e = parse("name = \"f\"\ntype = \"file\"\npath = \"/x\"\ngzip = true\n").unwrap_err();
        assert!(e.contains("destinations[f].gzip"), "{e}");
        let e = parse("name = \"f\"\ntype = \"file\"\npath = \"/x\"\nca_file = \"/ca.pem\"\n")
            .unwrap_err();
        assert!(e.contains("destinations[f].ca_file"), "{e}");
        let e = parse(&format!(
            "{seg}write_key = \"k\"\n[retry]\nmax_duration = \"soon\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("\"never\""), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = parse("name = \"h\"\ntype = \"webhook\"\nurl = \"ftp://x\"\n").unwrap_err();
        assert!(e.contains("destinations[h].url"), "{e}");
        let e = parse("name = \"h\"\ntype = \"webhook\"\nurl = \"http://x\"\ntimeout = \"soon\"\n")
            .unwrap_err();
        assert!(e.contains("invalid duration"), "{e}");
        let e = parse("name = \"h\"\ntype = \"webhook\"\nurl = \"http://x\"\nbatch_size = 0\n")
            .unwrap_err();
        assert!(e.contains("batch_size"), "{e}");
        let e =
            parse("name = \"h\"\ntype = \"webhook\"\nurl = \"http://x\"\nurls = 1\n").unwrap_err();
        assert!(e.contains("urls"), "{e}");
    }

    #[test]
    fn broker_destinations_name_what_is_missing_or_does_not_apply() {
        let nats = "name = \"bus\"\ntype = \"nats\"\n";
        let kafka = "name = \"s\"\ntype = \"kafka\"\n";
        let cases: [(String, &str); 16] = [
            (nats.into(), "destinations[bus].url is required"),
            (format!("{nats}url = \"nats://h:4222\""), "destinations[bus].subject is required"),
            (format!("{nats}url = \"http://h\"\nsubject = \"a\""), "not a NATS server address"),
            (format!("{nats}url = \"nats://h\"\nsubject = \"a.*\""), "not a NATS subject"),
            (format!("{nats}url = \"nats://h\"\nsubject = \"a..b\""), "not a NATS subject"),
            (format!("{nats}url = \"nats://h\"\nsubject = \"a.{{user}}\""), "unknown placeholder {user}"),
            (format!("{nats}url = \"nats://h\"\nsubject = \"a\"\ntopic = \"t\""), "destinations[bus].topic does not apply to a nats destination"),
            (format!("{nats}url = \"nats://h\"\nsubject = \"a\"\nuser = \"u\""), "destinations[bus].password is required"),
            (format!("{nats}url = \"nats://h\"\nsubject = \"a\"\ntoken = \"t\"\ncredentials_file = \"/c\""), "set one of user/password, token or credentials_file"),
            (format!("{nats}url = \"nats://h\"\nsubject = \"a\"\ntls_cert_file = \"/c\""), "destinations[bus].tls_key_file is required"),
            (kafka.into(), "destinations[s].brokers is required"),
            (format!("{kafka}brokers = [\"h\"]\ntopic = \"t\""), "\"h\" is not host:port"),
            (format!("{kafka}brokers = [\"h:9092\"]\ntopic = \"a b\""), "not a Kafka topic name"),
            (format!("{kafka}brokers = [\"h:9092\"]\ntopic = \"t\"\ncompression = \"brotli\""), "destinations[s].compression \"brotli\" is not one of"),
            (format!("{kafka}brokers = [\"h:9092\"]\ntopic = \"t\"\n[properties]\n\"enable.idempotence\" = \"false\""), "properties.\"enable.idempotence\" cannot be set"),
            (format!("{kafka}brokers = [\"h:9092\"]\ntopic = \"t\"\n[properties]\n\"linger.sm\" = \"5\""), "properties.\"linger.sm\""),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(want), "{text}\n→ {e}\n(wanted {want:?})");
        }
    }

    #[test]
    fn broker_destinations_with_their_keys_and_defaults() {
        let n = parse("name = \"bus\"\ntype = \"nats\"\nurl = \"nats://a:4222, tls://b:4222\"\nsubject = \"ferry.{source}.{type}\"\ntoken = \"t\"\nca_file = \"/ca.pem\"\n").unwrap();
        assert_eq!(n.kind.as_str(), "nats");
        assert_eq!(n.batch_size(), 25);
        assert_eq!(n.concurrency(), 64);
        assert_eq!(
            n.give_up_after(),
            None,
            "a broker destination never gives up by default"
        );
        let k = parse("name = \"s\"\ntype = \"kafka\"\nbrokers = [\"a:9092\", \"b:9092\"]\ntopic = \"events-{source}\"\nuser = \"u\"\npassword = \"p\"\nsasl_mechanism = \"SCRAM-SHA-512\"\ncompression = \"zstd\"\n[properties]\n\"linger.ms\" = \"20\"\n").unwrap();
        assert_eq!(k.kind.as_str(), "kafka");
        assert_eq!(k.give_up_after(), None);
        assert_eq!(k.properties["linger.ms"], "20");
    }
}
