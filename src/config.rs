//! The `ferry serve` configuration: a TOML file (or the embedded default),
//! validated at start-up with errors that name the offending key.

use std::collections::HashSet;
use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rand::distr::{Alphanumeric, SampleString};
use serde::Deserialize;

use crate::data_dir::DataDir;
use crate::delivery::config::{DestinationConfig, DestinationType};
use crate::memory::{MemoryConfig, Split};

/// Name of the source used when the configuration lists none.
pub const DEV_SOURCE_NAME: &str = "dev";

/// Everything `ferry serve` can be configured with.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP server listens on. Default: `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Directory holding the log (`<data_dir>/log`) and the development
    /// write key. Default: `./ferry-data`.
    pub data_dir: PathBuf,
    /// Sources allowed to send events, each with its own write key. When
    /// empty, one source named `dev` is used whose key is generated once and
    /// stored in `<data_dir>/dev-write-key`. Default: empty.
    pub sources: Vec<SourceConfig>,
    /// Request limits and back-pressure. Default: see [`Limits`].
    pub limits: Limits,
    /// Cross-origin settings for browser SDKs. Default: see [`Cors`].
    pub cors: Cors,
    /// Disk budget of the write-ahead log. Default: see [`LogConfig`].
    pub log: LogConfig,
    /// Duplicate suppression by (source, messageId). Default: see [`DedupConfig`].
    pub dedup: DedupConfig,
    /// The memory budget the filters, caches and windows are sized from.
    /// Default: see [`MemoryConfig`].
    pub memory: MemoryConfig,
    /// Bearer token of the admin API (`/admin/…`); without it the admin API
    /// is off. Default: none.
    pub admin_token: Option<String>,
    /// Bearer token `GET /metrics` requires; without it `/metrics` is open
    /// (it shares the port browsers and SDKs post to). Default: none.
    pub metrics_token: Option<String>,
    /// Where events are delivered (`[[destinations]]`, see
    /// docs/configuration.md). Without a config file, one file destination
    /// named `default-file` writes `<data_dir>/events.jsonl`. Default: empty.
    pub destinations: Vec<DestinationConfig>,
}

/// One sender of events, identified by its write key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Name recorded with every stored event of this source. No default.
    pub name: String,
    /// Secret the SDKs send (Basic auth user name, `writeKey` in the body
    /// or `?writeKey=`). No default.
    pub write_key: String,
}

/// Size caps and concurrency limits of the ingest endpoints.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest single event, in bytes of compact JSON. Default: 32768 (32 KiB).
    pub max_event_bytes: usize,
    /// Largest request body, both on the wire and after gzip decoding.
    /// Default: 4194304 (4 MiB).
    pub max_request_bytes: usize,
    /// Requests processed at once; further ones get 429 with `Retry-After`,
    /// which bounds memory to about this many request bodies. Default: 256.
    pub max_in_flight: usize,
    /// Seconds a client may take to send its body before getting 408.
    /// Default: 30.
    pub body_timeout_secs: u64,
    /// Value of `Retry-After` (seconds) on 429 and 503 answers. Default: 1.
    pub retry_after_secs: u64,
}

/// Cross-origin resource sharing for browser SDKs.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cors {
    /// Origins allowed to send events (`"https://shop.example"`), or `"*"`
    /// for any origin, as rudder-server does. Default: `["*"]`.
    pub allowed_origins: Vec<String>,
    /// `Access-Control-Max-Age` in seconds, so browsers cache a preflight
    /// instead of sending one per event. Default: 86400.
    pub max_age_secs: u64,
}

/// Deduplication of events by (source, messageId) before they are stored.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// Whether duplicates are dropped. Default: true.
    pub enabled: bool,
    /// How long an id is remembered. Default: "24h".
    #[serde(
        deserialize_with = "crate::delivery::config::duration",
        serialize_with = "crate::delivery::config::serialize_duration"
    )]
    pub window: std::time::Duration,
    /// Distinct ids held within the window; beyond it the oldest age out
    /// early (reported as the effective window). Its filters must fit a
    /// quarter of `memory.budget`. Default: 10000000, or the most whose
    /// filters fit that quarter of a smaller budget.
    pub capacity: Option<u64>,
    /// Bloom filter false-positive target (a hit costs one index read).
    /// Default: 0.0015.
    pub false_positive_rate: f64,
}

impl Default for DedupConfig {
    fn default() -> Self {
        let d = crate::dedup::DedupOptions::default();
        DedupConfig {
            enabled: true,
            window: d.window,
            capacity: None,
            false_positive_rate: d.false_positive_rate,
        }
    }
}

/// Limits of the write-ahead log; past them ingestion answers 503 with
/// `Retry-After` until space is freed.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Size at which a segment file is closed and a new one started.
    /// Default: the log's built-in value (128 MiB).
    pub segment_bytes: Option<u64>,
    /// Disk budget for all segments together. Default: none (unbounded).
    pub max_bytes: Option<u64>,
    /// Free space the file system must keep; appends that would go below it
    /// are refused. Default: the log's built-in reserve.
    pub min_free_bytes: Option<u64>,
    /// Keep segments at least this long after their last write, even once
    /// every destination has delivered them, so they can be replayed with
    /// `ferry cursors reset` (e.g. `"24h"`). Default: none.
    #[serde(
        default,
        deserialize_with = "crate::delivery::config::optional_duration"
    )]
    pub min_retention: Option<std::time::Duration>,
    /// What start-up does when the log's last segment holds corruption
    /// (not a torn tail): `"strict"` refuses to start, `"quarantine"` copies
    /// the segment into `log/quarantine/` and cuts the log before the damage.
    /// Default: `"strict"`.
    pub recovery: crate::log::RecoveryMode,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./ferry-data"),
            sources: Vec::new(),
            limits: Limits::default(),
            cors: Cors::default(),
            log: LogConfig::default(),
            destinations: Vec::new(),
            admin_token: None,
            metrics_token: None,
            dedup: DedupConfig::default(),
            memory: MemoryConfig::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 32 * 1024,
            max_request_bytes: 4 * 1024 * 1024,
            max_in_flight: 256,
            body_timeout_secs: 30,
            retry_after_secs: 1,
        }
    }
}

impl Default for Cors {
    fn default() -> Self {
        Cors {
            allowed_origins: vec!["*".to_owned()],
            max_age_secs: 86_400,
        }
    }
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("invalid config file {path}: key `{key}`: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Dotted path of the offending key (`limits.max_event_bytes`).
        key: String,
        /// What the parser said.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("invalid config: key `{key}`: {message}")]
    Invalid {
        /// Dotted path of the offending key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The development write key could not be created or read.
    #[error("cannot set up the development write key in {path}: {source}")]
    DevKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl Config {
    /// Reads and validates a config file, or returns the embedded default.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { key, message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                key,
                message,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            // toml's own message carries line, column and a snippet.
            let message = e.into_inner().to_string().trim_end().to_owned();
            ConfigError::Parse {
                path: PathBuf::from("<text>"),
                key: if key == "." {
                    "(top level)".to_owned()
                } else {
                    key
                },
                message,
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_sources()?;
        self.validate_limits()?;
        self.validate_dedup()?;
        if let Err(message) = crate::memory::check_budget(self.memory.budget) {
            return Err(invalid("memory.budget", &message));
        }
        for (key, token) in [
            ("admin_token", &self.admin_token),
            ("metrics_token", &self.metrics_token),
        ] {
            if token.as_ref().is_some_and(|t| t.trim().len() < 16) {
                return Err(invalid(key, "must be at least 16 characters"));
            }
        }
        let mut dest_names = HashSet::new();
        for (i, d) in self.destinations.iter().enumerate() {
            if let Err(message) = d.validate() {
                return Err(invalid(format!("destinations[{i}]"), &message));
            }
            if !dest_names.insert(d.name.as_str()) {
                return Err(invalid(
                    format!("destinations[{i}].name"),
                    "duplicate destination name",
                ));
            }
        }
        Ok(())
    }

    /// Names and write keys: present, unique, usable as a Basic auth user.
    fn validate_sources(&self) -> Result<(), ConfigError> {
        let (mut names, mut keys) = (HashSet::new(), HashSet::new());
        for (i, s) in self.sources.iter().enumerate() {
            let key = |field: &str| format!("sources[{i}].{field}");
            if s.name.trim().is_empty() {
                return Err(invalid(key("name"), "must not be empty"));
            }
            if s.write_key.trim().is_empty() {
                return Err(invalid(key("write_key"), "must not be empty"));
            }
            if s.write_key.contains(':') {
                return Err(invalid(
                    key("write_key"),
                    "must not contain ':' (it is sent as a Basic auth user name)",
                ));
            }
            if !names.insert(s.name.as_str()) {
                return Err(invalid(key("name"), "duplicate source name"));
            }
            if !keys.insert(s.write_key.as_str()) {
                return Err(invalid(key("write_key"), "duplicate write key"));
            }
        }
        Ok(())
    }

    /// Request limits, CORS origins and the log's segment size.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        for (key, value) in [
            ("limits.max_event_bytes", l.max_event_bytes as u64),
            ("limits.max_request_bytes", l.max_request_bytes as u64),
            ("limits.max_in_flight", l.max_in_flight as u64),
            ("limits.body_timeout_secs", l.body_timeout_secs),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if l.max_event_bytes > l.max_request_bytes {
            return Err(invalid(
                "limits.max_event_bytes",
                "must not exceed limits.max_request_bytes",
            ));
        }
        // Normalisation adds a few hundred bytes; stay far below the log's record cap.
        if l.max_event_bytes > crate::log::record::MAX_RECORD_LEN / 2 {
            return Err(invalid(
                "limits.max_event_bytes",
                "must not exceed 8 MiB (half the log's record size limit)",
            ));
        }
        if l.max_in_flight > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(invalid("limits.max_in_flight", "is too large"));
        }
        for (i, origin) in self.cors.allowed_origins.iter().enumerate() {
            if origin != "*" && axum::http::HeaderValue::from_str(origin).is_err() {
                return Err(invalid(
                    format!("cors.allowed_origins[{i}]"),
                    "is not a valid origin",
                ));
            }
        }
        if self.log.segment_bytes == Some(0) {
            return Err(invalid("log.segment_bytes", "must be greater than 0"));
        }
        Ok(())
    }

    /// The dedup window, capacity and false-positive rate, and the filter
    /// size they make.
    fn validate_dedup(&self) -> Result<(), ConfigError> {
        if self.dedup.window.is_zero() {
            return Err(invalid("dedup.window", "must be greater than 0"));
        }
        if self.dedup.capacity == Some(0) {
            return Err(invalid("dedup.capacity", "must be greater than 0"));
        }
        if !(self.dedup.false_positive_rate > 0.0 && self.dedup.false_positive_rate < 0.5) {
            return Err(invalid(
                "dedup.false_positive_rate",
                "must be between 0 and 0.5",
            ));
        }
        let dedup = self.dedup_options();
        if dedup.max_bloom_bytes() > crate::dedup::MAX_BLOOM_BYTES {
            return Err(invalid(
                "dedup.capacity",
                &crate::dedup::bloom_too_large(&dedup),
            ));
        }
        let split = self.memory_split();
        if self.dedup.enabled && dedup.max_bloom_bytes() > split.dedup_filters {
            let size = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
            return Err(invalid(
                "dedup.capacity",
                &format!(
                    "{} ids need {} of bloom filters, more than the quarter of memory.budget = {} they may take ({}); raise memory.budget or lower dedup.capacity",
                    dedup.capacity,
                    size(dedup.max_bloom_bytes()),
                    crate::memory::format_size(self.memory.budget),
                    size(split.dedup_filters)
                ),
            ));
        }
        Ok(())
    }

    /// How the memory budget is split among the parts sized from it.
    pub fn memory_split(&self) -> Split {
        Split::of(self.memory.budget)
    }

    /// The dedup index options: the `[dedup]` settings, with the capacity,
    /// pending ids and page cache the memory budget gives where they are
    /// not set.
    pub fn dedup_options(&self) -> crate::dedup::DedupOptions {
        let split = self.memory_split();
        let d = &self.dedup;
        crate::dedup::DedupOptions {
            window: d.window,
            capacity: d
                .capacity
                .unwrap_or_else(|| split.dedup_capacity(d.false_positive_rate)),
            false_positive_rate: d.false_positive_rate,
            max_pending: split.max_pending_ids(),
            cache_bytes: usize::try_from(split.dedup_cache).unwrap_or(usize::MAX),
            ..crate::dedup::DedupOptions::default()
        }
    }

    /// The effective configuration as JSON, each destination with the values
    /// its type defaults to where the file set none, the memory budget's
    /// split (`memory.split`, bytes by part) and the dedup capacity it
    /// gives, and every secret
    /// replaced by `"<redacted>"` (source and upstream write keys, webhook
    /// secrets and header values, broker passwords and tokens, Kafka client
    /// properties that name a password, secret or token, the admin and
    /// metrics tokens): safe to log and print.
    pub fn redacted(&self) -> serde_json::Value {
        const HIDDEN: &str = "<redacted>";
        let mut v = serde_json::to_value(self).expect("the configuration serializes");
        if let Some(sources) = v["sources"].as_array_mut() {
            for s in sources {
                s["write_key"] = HIDDEN.into();
            }
        }
        let window_bytes = self
            .memory_split()
            .window_bytes_each(self.destinations.len());
        if let Some(dests) = v["destinations"].as_array_mut() {
            for (d, cfg) in dests.iter_mut().zip(&self.destinations) {
                effective_values(d, cfg);
                d["window_bytes"] = cfg
                    .window_bytes
                    .unwrap_or_else(|| cfg.default_window_bytes(window_bytes))
                    .into();
                for key in ["secret", "write_key", "password", "token"] {
                    if !d[key].is_null() {
                        d[key] = HIDDEN.into();
                    }
                }
                if let Some(headers) = d["headers"].as_object_mut() {
                    headers.values_mut().for_each(|h| *h = HIDDEN.into());
                }
                if let Some(props) = d["properties"].as_object_mut() {
                    for (k, v) in props.iter_mut() {
                        if SECRET_PROPERTY_WORDS.iter().any(|w| k.contains(w)) {
                            *v = HIDDEN.into();
                        }
                    }
                }
            }
        }
        for key in ["admin_token", "metrics_token"] {
            if !v[key].is_null() {
                v[key] = HIDDEN.into();
            }
        }
        // What the budget sizes, in bytes, and the capacity it gives.
        let split = self.memory_split();
        v["memory"]["split"] = split
            .parts()
            .iter()
            .map(|(part, bytes)| ((*part).to_owned(), serde_json::Value::from(*bytes)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        v["dedup"]["capacity"] = self.dedup_options().capacity.into();
        v
    }

    /// The embedded default's destination: JSON Lines in
    /// `<data_dir>/events.jsonl`, so a newcomer sees events flow.
    pub fn default_destination(&self) -> DestinationConfig {
        let text = "name = \"default-file\"\ntype = \"file\"\n";
        let mut d: DestinationConfig =
            toml::from_str(text).expect("the embedded destination parses");
        debug_assert_eq!(d.kind, DestinationType::File);
        d.path = Some(DataDir::new(&self.data_dir).default_events());
        d
    }

    /// When no source is configured, adds the development source, creating
    /// its write key in the data directory on first use. Returns the key and
    /// its file when the development source is in use.
    pub fn ensure_dev_source(&mut self) -> Result<Option<DevSource>, ConfigError> {
        if !self.sources.is_empty() {
            return Ok(None);
        }
        let path = DataDir::new(&self.data_dir).dev_write_key();
        let write_key = load_or_create_dev_key(&path).map_err(|source| ConfigError::DevKey {
            path: path.clone(),
            source,
        })?;
        self.sources.push(SourceConfig {
            name: DEV_SOURCE_NAME.to_owned(),
            write_key: write_key.clone(),
        });
        Ok(Some(DevSource { write_key, path }))
    }
}

/// Words that mark a Kafka client property as a secret (e.g.
/// `ssl.key.password`, `sasl.oauthbearer.client.secret`).
const SECRET_PROPERTY_WORDS: [&str; 4] = ["password", "secret", "token", "jaas"];

/// Writes the values a destination runs with where its file left the
/// type's default (`null` in the serialized form).
fn effective_values(d: &mut serde_json::Value, cfg: &DestinationConfig) {
    d["batch_size"] = cfg.batch_size().into();
    d["batch_max_bytes"] = cfg.batch_max_bytes().into();
    d["concurrency"] = cfg.concurrency().into();
    d["window"] = cfg.window().into();
    d["retry"]["max_duration"] = match cfg.give_up_after() {
        None => "never".into(),
        Some(after) => humantime::format_duration(after).to_string().into(),
    };
    match cfg.kind {
        DestinationType::File => {
            d["rotate_bytes"] = cfg.rotate_bytes().into();
            d["keep"] = cfg.keep().into();
        }
        DestinationType::Segment => {
            d["gzip"] = cfg.gzip().into();
            d["max_event_bytes"] = cfg.max_event_bytes().into();
        }
        DestinationType::Kafka => {
            d["compression"] = cfg.compression.as_deref().unwrap_or("none").into();
        }
        DestinationType::Webhook | DestinationType::Nats => {}
    }
}

/// The development source's key and where it is stored.
#[derive(Debug, Clone)]
pub struct DevSource {
    /// The write key.
    pub write_key: String,
    /// The file it is kept in.
    pub path: PathBuf,
}

impl fmt::Display for DevSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "development source \"{DEV_SOURCE_NAME}\": write key {} (stored in {})",
            self.write_key,
            self.path.display()
        )
    }
}

/// Reads the key file, or creates it durably (temp file, fsync, rename,
/// directory fsync) so a crash never leaves an empty key behind.
fn load_or_create_dev_key(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let key = format!("dev_{}", Alphanumeric.sample_string(&mut rand::rng(), 32));
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    writeln!(file, "{key}")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(key)
}

/// A refused value: the key that holds it and what is wrong.
fn invalid(key: impl Into<String>, message: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn empty_file_is_the_default() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./ferry-data"));
        assert_eq!(c.limits.max_event_bytes, 32 * 1024);
        assert_eq!(c.limits.max_request_bytes, 4 * 1024 * 1024);
        assert_eq!(c.cors.allowed_origins, vec!["*"]);
    }

    #[test]
    fn full_file_parses() {
        let c = Config::parse(
            r#"
            listen = "0.0.0.0:9000"
            data_dir = "/var/lib/ferry"
            [[sources]]
            name = "web"
            write_key = "wk1"
            [[sources]]
            name = "backend"
            write_key = "wk2"
            [limits]
            max_event_bytes = 1000
            max_request_bytes = 2000
            max_in_flight = 8
            [cors]
            allowed_origins = ["https://shop.example"]
            [log]
            max_bytes = 1000000
            [[destinations]]
            name = "hook"
            type = "webhook"
            url = "https://hooks.example/ferry"
            batch_size = 50
            [destinations.retry]
            base = "500ms"
            [[destinations]]
            name = "archive"
            type = "file"
            path = "/var/lib/ferry/archive.jsonl"
            "#,
        )
        .unwrap();
        assert_eq!(c.destinations.len(), 2);
        assert_eq!(
            c.destinations[0].retry.base,
            std::time::Duration::from_millis(500)
        );
        assert_eq!(c.sources.len(), 2);
        assert_eq!(c.sources[1].name, "backend");
        assert_eq!(c.limits.max_in_flight, 8);
        assert_eq!(c.log.max_bytes, Some(1_000_000));
    }

    /// The TOML blocks of a Markdown file.
    fn toml_blocks(md: &str) -> Vec<String> {
        md.split("```toml\n")
            .skip(1)
            .map(|b| b.split("```").next().unwrap().to_string())
            .collect()
    }

    #[test]
    fn documented_examples_parse() {
        let docs = toml_blocks(include_str!("../docs/configuration.md"));
        let readme = toml_blocks(include_str!("../README.md"));
        assert_eq!((docs.len(), readme.len()), (1, 1));
        for text in docs.iter().chain(&readme) {
            let c = Config::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert!(!c.destinations.is_empty() && !c.sources.is_empty());
        }
    }

    #[test]
    fn redaction_hides_every_secret() {
        let c = Config::parse(
            "admin_token = \"0123456789abcdef-admin\"\nmetrics_token = \"0123456789abcdef-metrics\"\n[[sources]]\nname = \"web\"\nwrite_key = \"wk_secret\"\n[[destinations]]\nname = \"h\"\ntype = \"webhook\"\nurl = \"http://x/\"\nsecret = \"hmac_secret\"\nheaders = { Authorization = \"Bearer tok_secret\" }\n[[destinations]]\nname = \"central\"\ntype = \"segment\"\nurl = \"https://api.segment.io\"\nwrite_key = \"wk_upstream_secret\"\n[[destinations]]\nname = \"bus\"\ntype = \"nats\"\nurl = \"nats://h:4222\"\nsubject = \"s\"\ntoken = \"nats_token_secret\"\n[[destinations]]\nname = \"k\"\ntype = \"kafka\"\nbrokers = [\"h:9092\"]\ntopic = \"t\"\nuser = \"u\"\npassword = \"sasl_secret\"\n[destinations.properties]\n\"ssl.key.password\" = \"key_secret\"\n\"linger.ms\" = \"7\"\n",
        )
        .unwrap();
        let text = c.redacted().to_string();
        assert!(
            text.contains("\"linger.ms\":\"7\""),
            "other properties stay: {text}"
        );
        for secret in [
            "nats_token_secret",
            "sasl_secret",
            "key_secret",
            "wk_secret",
            "hmac_secret",
            "tok_secret",
            "wk_upstream_secret",
            "0123456789abcdef-admin",
            "0123456789abcdef-metrics",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("\"timeout\":\"10s\""), "{text}");
        // The values destinations run with, where the file left the default.
        let v = c.redacted();
        let central = &v["destinations"][1];
        assert_eq!(central["batch_size"], 500);
        assert_eq!(central["gzip"], true);
        assert_eq!(central["retry"]["max_duration"], "never");
        assert_eq!(v["destinations"][0]["retry"]["max_duration"], "4h");
        assert!(text.contains("\"name\":\"web\""));
    }

    #[test]
    fn short_tokens_are_refused_by_name() {
        let e = err("metrics_token = \"short\"\n");
        assert!(
            e.contains("metrics_token") && e.contains("16 characters"),
            "{e}"
        );
        let e = err("admin_token = \"short\"\n");
        assert!(
            e.contains("admin_token") && e.contains("16 characters"),
            "{e}"
        );
    }

    #[test]
    fn destination_errors_are_named() {
        let e = err("[[destinations]]\nname = \"a\"\ntype = \"webhook\"\nurl = \"http://x\"\ntimeout = \"later\"\n");
        assert!(e.contains("destinations[0].timeout"), "{e}");
        let e = err("[[destinations]]\nname = \"a\"\ntype = \"webhook\"\n");
        assert!(e.contains("destinations[a].url"), "{e}");
        let two = "[[destinations]]\nname = \"a\"\ntype = \"file\"\npath = \"/x\"\n";
        let e = err(&format!("{two}{two}"));
        assert!(e.contains("duplicate destination name"), "{e}");
        let d = Config::default().default_destination();
        assert_eq!(
            d.path.unwrap(),
            Config::default().data_dir.join("events.jsonl")
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        assert!(
            err("lisen = \"x\"").contains("lisen"),
            "{}",
            err("lisen = \"x\"")
        );
        let e = err("[limits]\nmax_events = 3");
        assert!(e.contains("max_events"), "{e}");
        let e = err("[[sources]]\nname = \"a\"\nwrite_key = \"b\"\ncolour = 1");
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn a_capacity_whose_filters_do_not_fit_is_refused() {
        let e = err("[dedup]\ncapacity = 10000000000");
        assert!(e.contains("dedup.capacity"), "{e}");
        assert!(e.contains("GiB of bloom filters"), "{e}");
        // The default and a generous capacity with a budget to match pass.
        assert!(
            Config::parse("[dedup]\ncapacity = 1000000000\n[memory]\nbudget = \"16GiB\"").is_ok()
        );
    }

    #[test]
    fn the_memory_budget_is_checked_by_name() {
        let e = err("[memory]\nbudget = \"8MiB\"");
        assert!(
            e.contains("memory.budget") && e.contains("below the smallest budget"),
            "{e}"
        );
        let e = err("[memory]\nbudget = \"lots\"");
        assert!(
            e.contains("memory.budget") && e.contains("is not a size"),
            "{e}"
        );
        let e = err("[memory]\nbudget = -5");
        assert!(e.contains("memory.budget"), "{e}");
        // A capacity whose filters exceed the budget's quarter names both keys.
        let e = err("[dedup]\ncapacity = 10000000\n[memory]\nbudget = \"64MiB\"");
        assert!(
            e.contains("dedup.capacity") && e.contains("memory.budget = 64MiB"),
            "{e}"
        );
        assert!(
            e.contains("raise memory.budget or lower dedup.capacity"),
            "{e}"
        );
        // ... unless dedup is off.
        assert!(Config::parse(
            "[dedup]\nenabled = false\ncapacity = 10000000\n[memory]\nbudget = \"64MiB\""
        )
        .is_ok());
    }

    #[test]
    fn the_budget_sizes_the_dedup_index() {
        let default = Config::default().dedup_options();
        assert_eq!(default.capacity, crate::memory::DEFAULT_DEDUP_CAPACITY);
        assert_eq!(default.cache_bytes, 4 << 20);
        let small = Config::parse("[memory]\nbudget = \"32MiB\"").unwrap();
        let o = small.dedup_options();
        let split = small.memory_split();
        assert!(o.capacity < default.capacity);
        assert!(o.max_bloom_bytes() <= split.dedup_filters);
        assert!(o.max_pending as u64 * crate::memory::PENDING_ID_BYTES <= split.dedup_pending);
        assert!(o.cache_bytes as u64 <= split.dedup_cache);
        // An explicit capacity is kept.
        let set = Config::parse("[dedup]\ncapacity = 1000\n[memory]\nbudget = \"32MiB\"").unwrap();
        assert_eq!(set.dedup_options().capacity, 1000);
    }

    #[test]
    fn invalid_values_are_named() {
        let e = err("listen = \"not an address\"");
        assert!(e.contains("`listen`"), "{e}");
        let e = err("[limits]\nmax_event_bytes = \"big\"");
        assert!(e.contains("limits.max_event_bytes"), "{e}");
        let e = err("[limits]\nmax_in_flight = 0");
        assert!(e.contains("limits.max_in_flight"), "{e}");
        let e = err("[limits]\nmax_event_bytes = 10\nmax_request_bytes = 5");
        assert!(e.contains("limits.max_event_bytes"), "{e}");
        let e = err("[[sources]]\nname = \"a\"\nwrite_key = \"k\"\n[[sources]]\nname = \"b\"\nwrite_key = \"k\"");
        assert!(e.contains("sources[1].write_key"), "{e}");
        let e = err("[[sources]]\nname = \"a\"\nwrite_key = \"\"");
        assert!(e.contains("sources[0].write_key"), "{e}");
    }

    #[test]
    fn dev_key_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        let mut b = a.clone();
        let first = a.ensure_dev_source().unwrap().unwrap();
        let second = b.ensure_dev_source().unwrap().unwrap();
        assert_eq!(first.write_key, second.write_key);
        assert!(first.write_key.len() > 16);
        assert_eq!(a.sources[0].name, DEV_SOURCE_NAME);
        let on_disk =
            std::fs::read_to_string(DataDir::new(dir.path().join("data")).dev_write_key()).unwrap();
        assert_eq!(on_disk.trim(), first.write_key);
    }

    #[test]
    fn configured_sources_need_no_dev_key() {
        let mut c = Config::parse("[[sources]]\nname = \"a\"\nwrite_key = \"k\"").unwrap();
        assert!(c.ensure_dev_source().unwrap().is_none());
        assert_eq!(c.sources.len(), 1);
    }
}
