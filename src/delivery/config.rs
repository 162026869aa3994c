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
    /// `"webhook"` (HTTP POST of JSON) or `"file"` (JSON Lines). Required.
    #[serde(rename = "type")]
    pub kind: DestinationType,
    /// Webhook: the URL to POST to. Required for webhooks.
    #[serde(default)]
    pub url: Option<String>,
    /// Webhook: extra request headers. Default: none.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Webhook: when set, requests carry
    /// `X-Ferry-Signature: sha256=<hex HMAC-SHA256 of the body>`. Default: none.
    #[serde(default)]
    pub secret: Option<String>,
    /// Webhook: a PEM file of CA certificates trusted for `https` besides the
    /// built-in (Mozilla) roots, e.g. an internal CA. A relative path is
    /// relative to the working directory. Default: none.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// File: the JSON Lines file. Required for files.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// File: rotate (rename to `<path>.1`, `.2`, …) past this size. Default: 100 MiB.
    #[serde(default = "default_rotate_bytes")]
    pub rotate_bytes: u64,
    /// File: rotated files kept. Default: 5.
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// Sources whose events this destination receives. Default: all.
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    /// Which events it receives. Default: all.
    #[serde(default)]
    pub filter: EventFilter,
    /// Events per request (webhook: 1 sends one JSON object, more send
    /// `{"batch": [...]}`; file: lines per write and fsync). Default:
    /// webhook 1, file 1000; see [`DestinationConfig::batch_size`].
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Byte cap of one request's events (at least one event is sent).
    /// Default: webhook 512 KiB, file 4 MiB.
    #[serde(default)]
    pub batch_max_bytes: Option<usize>,
    /// Requests in flight at once. Default: webhook 16, file 2.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Events read ahead of the cursor (bounds memory and head-of-line
    /// waiting); when full, the destination pauses. Default: the larger of
    /// 10000 and 2 × batch_size × concurrency.
    #[serde(default)]
    pub window: Option<usize>,
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
    /// Give up (dead-letter) after retrying this long. Default: "4h".
    #[serde(
        default = "default_max_duration",
        deserialize_with = "duration",
        serialize_with = "serialize_duration"
    )]
    pub max_duration: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            base: default_base(),
            cap: default_cap(),
            max_duration: default_max_duration(),
        }
    }
}

impl DestinationConfig {
    /// Events per request, as set or this type's default.
    pub fn batch_size(&self) -> usize {
        self.batch_size.unwrap_or(match self.kind {
            DestinationType::Webhook => 1,
            DestinationType::File => 1000,
        })
    }

    /// Byte cap of one request's events, as set or this type's default.
    pub fn batch_max_bytes(&self) -> usize {
        self.batch_max_bytes.unwrap_or(match self.kind {
            DestinationType::Webhook => 512 * 1024,
            DestinationType::File => 4 * 1024 * 1024,
        })
    }

    /// Requests in flight, as set or this type's default.
    pub fn concurrency(&self) -> usize {
        self.concurrency.unwrap_or(match self.kind {
            DestinationType::Webhook => 16,
            DestinationType::File => 2,
        })
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
        ] {
            if value == Some(0) {
                return Err(format!("{} must be at least 1", at(key)));
            }
        }
        if self.retry.base.is_zero() || self.retry.cap < self.retry.base {
            return Err(format!("{} must be > 0 and ≤ retry.cap", at("retry.base")));
        }
        match self.kind {
            DestinationType::Webhook => {
                let Some(url) = &self.url else {
                    return Err(format!("{} is required for a webhook", at("url")));
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
            DestinationType::File if self.ca_file.is_some() => {
                return Err(format!("{} applies to webhooks only", at("ca_file")));
            }
            DestinationType::File => {}
        }
        Ok(())
    }
}

/// The read-ahead window when batches are small.
const DEFAULT_WINDOW: usize = 10_000;
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
fn default_max_duration() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn default_rotate_bytes() -> u64 {
    100 << 20
}
fn default_keep() -> usize {
    5
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
        assert_eq!(c.retry.max_duration, Duration::from_secs(4 * 3600));
        assert_eq!(c.filter.types.unwrap(), vec!["track"]);
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
}
