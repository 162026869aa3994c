//! The checks of the broker destinations' keys (NATS JetStream, Kafka):
//! what each type requires, which keys go together, and that the files
//! they name can be read. Part of `DestinationConfig::validate`; the
//! message always names the key.

use super::broker::{kafka_topic_char, nats_token_char, Template};
use super::config::DestinationConfig;
use crate::stored_event::EventMeta;

impl DestinationConfig {
    /// Checks the keys of a NATS destination; the message names the key.
    pub(super) fn validate_nats(&self, at: impl Fn(&str) -> String) -> Result<(), String> {
        let Some(url) = self.url.as_deref() else {
            return Err(format!("{} is required for a nats destination", at("url")));
        };
        for server in url.split(',').map(str::trim) {
            if let Err(e) = server.parse::<async_nats::ServerAddr>() {
                return Err(format!(
                "{} {server:?} is not a NATS server address (nats://host:port, tls://host:port): {e}",
                at("url")
            ));
            }
        }
        let Some(subject) = self.subject.as_deref() else {
            return Err(format!(
                "{} is required for a nats destination",
                at("subject")
            ));
        };
        let template = Template::parse(subject, nats_token_char)
            .map_err(|e| format!("{} {e}", at("subject")))?;
        // As published: each placeholder renders as at least one allowed character.
        let sample = template.render(&EventMeta {
            source: "s".into(),
            kind: "t".into(),
            event: None,
            user: String::new(),
            message_id: String::new(),
        });
        let token_ok = |t: &str| !t.is_empty() && t.chars().all(nats_token_char);
        if !sample.split('.').all(token_ok) {
            return Err(format!(
            "{} {subject:?} is not a NATS subject to publish to (tokens separated by '.', no spaces or wildcards)",
            at("subject")
        ));
        }
        both_or_neither(self, &at)?;
        let ways = [
            self.user.is_some(),
            self.token.is_some(),
            self.credentials_file.is_some(),
        ];
        if ways.iter().filter(|&&w| w).count() > 1 {
            return Err(format!(
                "{}: set one of user/password, token or credentials_file",
                at("user")
            ));
        }
        client_certificate(self, &at)
    }

    /// Checks the keys of a Kafka destination; the message names the key.
    pub(super) fn validate_kafka(&self, at: impl Fn(&str) -> String) -> Result<(), String> {
        if !cfg!(feature = "kafka") {
            return Err(format!("{}: {NO_KAFKA}", at("type")));
        }
        let brokers = self.brokers.as_deref().unwrap_or_default();
        if brokers.is_empty() {
            return Err(format!(
                "{} is required for a kafka destination (e.g. [\"127.0.0.1:9092\"])",
                at("brokers")
            ));
        }
        for b in brokers {
            let ok = b
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(format!("{} {b:?} is not host:port", at("brokers")));
            }
        }
        let Some(topic) = self.topic.as_deref() else {
            return Err(format!(
                "{} is required for a kafka destination",
                at("topic")
            ));
        };
        let template =
            Template::parse(topic, kafka_topic_char).map_err(|e| format!("{} {e}", at("topic")))?;
        if template
            .literal()
            .flat_map(str::chars)
            .any(|c| !kafka_topic_char(c))
            || topic.len() > 249
        {
            return Err(format!(
            "{} {topic:?} is not a Kafka topic name (letters, digits, '.', '_', '-'; at most 249)",
            at("topic")
        ));
        }
        both_or_neither(self, &at)?;
        if let Some(m) = &self.sasl_mechanism {
            if !SASL_MECHANISMS.contains(&m.as_str()) {
                return Err(format!(
                    "{} {m:?} is not one of {}",
                    at("sasl_mechanism"),
                    SASL_MECHANISMS.join(", ")
                ));
            }
            if self.user.is_none() {
                return Err(format!("{} needs user and password", at("sasl_mechanism")));
            }
        }
        if let Some(c) = &self.compression {
            if !COMPRESSIONS.contains(&c.as_str()) {
                return Err(format!(
                    "{} {c:?} is not one of {}",
                    at("compression"),
                    COMPRESSIONS.join(", ")
                ));
            }
        }
        for key in self.properties.keys() {
            if let Some(why) = OWNED_PROPERTIES
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, why)| why)
            {
                return Err(format!(
                    "{} cannot be set: {why}",
                    at(&format!("properties.\"{key}\""))
                ));
            }
        }
        client_certificate(self, &at)?;
        #[cfg(feature = "kafka")]
        self.check_properties(&at)?;
        Ok(())
    }

    /// Checks that the files a broker destination names can be read, so a
    /// wrong path stops start-up instead of pausing the destination later.
    pub fn check_files(&self) -> Result<(), String> {
        for (key, path) in [
            ("ca_file", &self.ca_file),
            ("tls_cert_file", &self.tls_cert_file),
            ("tls_key_file", &self.tls_key_file),
            ("credentials_file", &self.credentials_file),
        ] {
            if let Some(path) = path {
                std::fs::File::open(path).map_err(|e| {
                    format!("destinations[{}].{key} {}: {e}", self.name, path.display())
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(feature = "kafka")]
impl DestinationConfig {
    /// The Kafka client checks each property's name and value, without
    /// connecting.
    fn check_properties(&self, at: &impl Fn(&str) -> String) -> Result<(), String> {
        let mut client = rdkafka::ClientConfig::new();
        for (k, v) in &self.properties {
            client.set(k, v);
        }
        client.create_native_config().map_err(|e| match e {
            rdkafka::error::KafkaError::ClientConfig(_, desc, key, _) => {
                format!("{}: {desc}", at(&format!("properties.\"{key}\"")))
            }
            other => format!("{}: {other}", at("properties")),
        })?;
        Ok(())
    }
}

/// Why a kafka destination is refused by a build without the `kafka` feature.
pub(super) const NO_KAFKA: &str =
    "this ferry was built without Kafka support (cargo feature `kafka`, on by default)";

/// SASL mechanisms a Kafka destination can use.
pub const SASL_MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];
/// Compression codecs a Kafka destination can use.
pub const COMPRESSIONS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// Client properties ferry sets itself, because its guarantees or other
/// keys depend on them.
const OWNED_PROPERTIES: [(&str, &str); 9] = [
    ("bootstrap.servers", "set `brokers` instead"),
    ("metadata.broker.list", "set `brokers` instead"),
    (
        "enable.idempotence",
        "ferry's per-user order and acknowledgements need the idempotent producer",
    ),
    (
        "acks",
        "ferry acknowledges only what all in-sync replicas hold (acks=all)",
    ),
    (
        "request.required.acks",
        "ferry acknowledges only what all in-sync replicas hold (acks=all)",
    ),
    (
        "partitioner",
        "ferry partitions by user with murmur2, as Java clients do",
    ),
    ("sasl.username", "set `user` instead"),
    ("sasl.password", "set `password` instead"),
    ("compression.type", "set `compression` instead"),
];

fn both_or_neither(cfg: &DestinationConfig, at: &impl Fn(&str) -> String) -> Result<(), String> {
    if cfg.user.is_some() != cfg.password.is_some() {
        let missing = if cfg.user.is_some() {
            "password"
        } else {
            "user"
        };
        return Err(format!(
            "{} is required with user and password",
            at(missing)
        ));
    }
    Ok(())
}

fn client_certificate(cfg: &DestinationConfig, at: &impl Fn(&str) -> String) -> Result<(), String> {
    if cfg.tls_cert_file.is_some() != cfg.tls_key_file.is_some() {
        let missing = if cfg.tls_cert_file.is_some() {
            "tls_key_file"
        } else {
            "tls_cert_file"
        };
        return Err(format!(
            "{} is required with tls_cert_file and tls_key_file (a client certificate needs its key)",
            at(missing)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_cannot_be_read_is_named_with_its_key() {
        for key in ["ca_file", "credentials_file"] {
            let text = format!(
                "name = \"bus\"\ntype = \"nats\"\nurl = \"nats://h:4222\"\nsubject = \"s\"\n{key} = \"/nonexistent/x.pem\"\n"
            );
            let cfg: DestinationConfig = toml::from_str(&text).unwrap();
            cfg.validate().unwrap();
            let e = crate::delivery::make_sink(&cfg).err().expect("refused");
            assert!(
                e.contains(&format!("destinations[bus].{key} /nonexistent/x.pem")),
                "{e}"
            );
        }
    }
}
