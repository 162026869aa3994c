//! The kafka sink: one record per event, keyed by `userId` (else
//! `anonymousId`) and partitioned with murmur2 as Java clients do, so
//! ferry's records of a user land in the partition that user's records
//! from any other producer land in. The producer is idempotent with
//! `acks=all`; an event counts as delivered only once its delivery report
//! says the broker holds it. Headers carry the message id, source and type.
//!
//! Errors: a record the broker or client refuses for its content (too
//! large, invalid) is dead-lettered; an unknown topic or a refused login or
//! authorisation pauses the destination (every event would fail the same
//! way); anything else (timeouts, brokers down) is retried. A producer that
//! hits a fatal error is replaced before the next request.

use super::backoff::Outcome;
use super::broker::{event_headers, kafka_topic_char, Template};
use super::config::DestinationConfig;
use super::event::LoggedEvent;
use super::sink::{SendFuture, Sink, Traffic};
use crate::store::state_excerpt;
use futures_util::future::join_all;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A kafka destination.
pub struct Kafka {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    topic: Template,
    /// How long a record may wait for room in the client's queue.
    timeout: Duration,
    producer: Mutex<Arc<FutureProducer<Noted>>>,
    /// Set when the producer's identity was lost (fenced, or its sequence
    /// broken): the next request gets a new producer.
    replace: AtomicBool,
    /// The context every producer of this destination reports into.
    noted: Noted,
    traffic: Traffic,
}

/// The client's context: keeps the last error librdkafka reported (a
/// refused login or brokers out of reach show up there first) and passes
/// its log lines to ferry's log.
#[derive(Default, Clone)]
struct Noted {
    last_error: Arc<Mutex<Option<String>>>,
}

impl ClientContext for Noted {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::warn!(facility = fac, "kafka client: {message}"),
            _ => tracing::debug!(facility = fac, "kafka client: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!("kafka client error: {error}: {reason}");
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(format!("{error}: {reason}"));
    }
}

impl Kafka {
    /// Builds the sink and its producer from a validated config (the
    /// producer connects in the background).
    pub fn new(cfg: &DestinationConfig) -> Result<Kafka, String> {
        cfg.check_files()?;
        let config = client_config(cfg);
        let topic = Template::parse(cfg.topic.as_deref().unwrap_or_default(), kafka_topic_char)?;
        let noted = Noted::default();
        let producer = create(&config, &noted)?;
        Ok(Kafka {
            inner: Arc::new(Inner {
                config,
                topic,
                timeout: cfg.timeout,
                producer: Mutex::new(Arc::new(producer)),
                replace: AtomicBool::new(false),
                noted,
                traffic: Traffic::default(),
            }),
        })
    }
}

/// The librdkafka properties of a destination: ferry's, then the user's.
pub fn client_config(cfg: &DestinationConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    let tls = cfg
        .tls
        .unwrap_or(cfg.ca_file.is_some() || cfg.tls_cert_file.is_some());
    let protocol = match (cfg.user.is_some(), tls) {
        (false, false) => "plaintext",
        (false, true) => "ssl",
        (true, false) => "sasl_plaintext",
        (true, true) => "sasl_ssl",
    };
    let timeout_ms = cfg
        .timeout
        .as_millis()
        .clamp(1, i32::MAX as u128)
        .to_string();
    c.set(
        "bootstrap.servers",
        cfg.brokers.clone().unwrap_or_default().join(","),
    )
    .set("client.id", "ferry")
    .set("enable.idempotence", "true")
    .set("acks", "all")
    .set("partitioner", "murmur2_random")
    .set("message.timeout.ms", &timeout_ms)
    .set(
        "compression.codec",
        cfg.compression.as_deref().unwrap_or("none"),
    )
    .set("security.protocol", protocol);
    if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
        c.set(
            "sasl.mechanism",
            cfg.sasl_mechanism.as_deref().unwrap_or("PLAIN"),
        )
        .set("sasl.username", user)
        .set("sasl.password", password);
    }
    for (key, path) in [
        ("ssl.ca.location", &cfg.ca_file),
        ("ssl.certificate.location", &cfg.tls_cert_file),
        ("ssl.key.location", &cfg.tls_key_file),
    ] {
        if let Some(p) = path {
            c.set(key, p.to_string_lossy());
        }
    }
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

fn create(config: &ClientConfig, noted: &Noted) -> Result<FutureProducer<Noted>, String> {
    config
        .create_with_context(noted.clone())
        .map_err(|e| format!("cannot create the Kafka producer: {e}"))
}

impl Inner {
    /// The producer; one that hit a fatal error or lost its identity is
    /// replaced first (a new producer id; records already acknowledged stay
    /// acknowledged, the rest are retried).
    fn producer(&self) -> Result<Arc<FutureProducer<Noted>>, Outcome> {
        let mut current = self.producer.lock().unwrap_or_else(|e| e.into_inner());
        let fatal = current.client().fatal_error();
        if fatal.is_some() || self.replace.load(Ordering::Acquire) {
            tracing::warn!(
                "replacing the kafka producer: {}",
                fatal.map_or(
                    "its producer id was fenced or its sequence broken".into(),
                    |(code, reason)| { format!("fatal error {code:?}: {reason}") }
                )
            );
            self.replace.store(false, Ordering::Release);
            *current =
                Arc::new(
                    create(&self.config, &self.noted).map_err(|error| Outcome::Retry {
                        status: None,
                        error,
                        retry_after: None,
                    })?,
                );
        }
        Ok(current.clone())
    }

    /// What one record's delivery report means for its event.
    fn outcome(&self, topic: &str, error: KafkaError) -> Outcome {
        use RDKafkaErrorCode as C;
        let code = error.rdkafka_error_code();
        let last = self
            .noted
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let text = match &last {
            Some(last) if code == Some(C::MessageTimedOut) => {
                format!("{error} (the client last said: {last})")
            }
            _ => error.to_string(),
        };
        if matches!(
            code,
            Some(
                C::ProducerFenced
                    | C::Fenced
                    | C::Fatal
                    | C::InvalidProducerEpoch
                    | C::UnknownProducerId
                    | C::OutOfOrderSequenceNumber
                    | C::InvalidProducerIdMapping
            )
        ) {
            self.replace.store(true, Ordering::Release);
        }
        match code {
            Some(
                C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::InvalidRecord
                | C::MessageBatchTooLarge,
            ) => Outcome::Permanent {
                status: None,
                error: state_excerpt(&format!("refused by Kafka: {text}")),
            },
            Some(C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition) => {
                Outcome::Halt {
                    status: None,
                    error: state_excerpt(&format!(
                        "the Kafka topic {topic:?} does not exist: create it ({text})"
                    )),
                }
            }
            Some(
                C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::SaslAuthenticationFailed
                | C::Authentication
                | C::InvalidTopic,
            ) => Outcome::Halt {
                status: None,
                error: state_excerpt(&format!(
                    "Kafka refuses ferry's records for {topic:?}: {text}"
                )),
            },
            _ => Outcome::Retry {
                status: None,
                error: state_excerpt(&format!("producing to {topic:?} failed: {text}")),
                retry_after: None,
            },
        }
    }
}

impl Sink for Kafka {
    fn send(&self, events: Vec<LoggedEvent>) -> SendFuture {
        let inner = self.inner.clone();
        Box::pin(async move {
            let producer = match inner.producer() {
                Ok(p) => p,
                Err(outcome) => return outcome,
            };
            let topics: Vec<Cow<'_, str>> =
                events.iter().map(|e| inner.topic.render(&e.meta)).collect();
            // Every record is queued before any report is awaited: the events
            // belong to different users, so their order among themselves
            // does not matter.
            let sends = events.iter().zip(&topics).map(|(event, topic)| {
                let mut headers = OwnedHeaders::new_with_capacity(3);
                for (key, value) in event_headers(&event.meta) {
                    headers = headers.insert(Header {
                        key,
                        value: Some(value),
                    });
                }
                let mut record = FutureRecord::to(topic)
                    .payload(&event.body[..])
                    .headers(headers);
                if !event.meta.user.is_empty() {
                    record = record.key(event.meta.user.as_bytes());
                }
                producer.send(record, Timeout::After(inner.timeout))
            });
            let reports = join_all(sends).await;
            let outcomes = reports
                .into_iter()
                .zip(events.iter().zip(&topics))
                .map(|(report, (event, topic))| match report {
                    Ok(_) => {
                        let n = event.body.len() as u64;
                        inner.traffic.json_bytes.fetch_add(n, Ordering::Relaxed);
                        inner.traffic.wire_bytes.fetch_add(n, Ordering::Relaxed);
                        Outcome::Delivered
                    }
                    Err((error, _)) => inner.outcome(topic, error),
                })
                .collect();
            Outcome::PerEvent(outcomes)
        })
    }

    fn traffic(&self) -> Option<&Traffic> {
        Some(&self.inner.traffic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink() -> Kafka {
        let cfg: DestinationConfig = toml::from_str(
            "name = \"k\"\ntype = \"kafka\"\nbrokers = [\"127.0.0.1:1\"]\ntopic = \"t\"\n",
        )
        .unwrap();
        Kafka::new(&cfg).unwrap()
    }

    fn outcome_of(sink: &Kafka, code: RDKafkaErrorCode) -> Outcome {
        sink.inner
            .outcome("t", KafkaError::MessageProduction(code))
            .clone()
    }

    #[test]
    fn errors_dead_letter_pause_or_retry_by_what_a_retry_could_change() {
        let k = sink();
        use RDKafkaErrorCode as C;
        for code in [C::MessageSizeTooLarge, C::InvalidRecord, C::InvalidMessage] {
            assert!(
                matches!(outcome_of(&k, code), Outcome::Permanent { .. }),
                "{code:?}"
            );
        }
        for code in [
            C::UnknownTopicOrPartition,
            C::TopicAuthorizationFailed,
            C::SaslAuthenticationFailed,
        ] {
            assert!(
                matches!(outcome_of(&k, code), Outcome::Halt { .. }),
                "{code:?}"
            );
        }
        match outcome_of(&k, C::UnknownTopicOrPartition) {
            Outcome::Halt { error, .. } => {
                assert!(error.contains("\"t\" does not exist"), "{error}")
            }
            o => panic!("{o:?}"),
        }
        for code in [C::MessageTimedOut, C::AllBrokersDown, C::NotEnoughReplicas] {
            assert!(
                matches!(outcome_of(&k, code), Outcome::Retry { .. }),
                "{code:?}"
            );
        }
        assert!(!k.inner.replace.load(Ordering::Acquire));
    }

    #[test]
    fn a_fenced_producer_is_retried_on_a_new_producer() {
        let k = sink();
        let before = Arc::as_ptr(&k.inner.producer().unwrap());
        let o = outcome_of(&k, RDKafkaErrorCode::ProducerFenced);
        assert!(matches!(o, Outcome::Retry { .. }), "{o:?}");
        let after = Arc::as_ptr(&k.inner.producer().unwrap());
        assert_ne!(before, after, "replaced");
        let again = Arc::as_ptr(&k.inner.producer().unwrap());
        assert_eq!(after, again, "replaced once");
    }
}
