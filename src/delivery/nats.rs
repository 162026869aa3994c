//! The nats sink: one JetStream message per event, published to the
//! destination's subject with `Nats-Msg-Id` set to a stable id of (source,
//! messageId), so the stream's duplicate window drops ferry's own re-sends
//! after a retry, a crash or a restart. An event counts as delivered only
//! once its PubAck arrives (a PubAck marked duplicate counts too).
//!
//! The connection is made on the first request and then kept by the
//! client, which reconnects by itself; publishes while it is away time out
//! and are retried. No stream for the subject, a refused login or a refused
//! publish pause the destination (every event would fail the same way); a
//! message the stream or server refuses for its size is dead-lettered.

use super::backoff::Outcome;
use super::broker::{broker_message_id, event_headers, nats_token_char, Template};
use super::config::DestinationConfig;
use super::event::LoggedEvent;
use super::sink::{SendFuture, Sink, Traffic};
use crate::store::state_excerpt;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{ConnectErrorKind, ConnectOptions, Event, HeaderMap, ServerAddr};
use futures_util::future::join_all;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

/// A nats destination.
pub struct Nats {
    inner: Arc<Inner>,
}

/// What every request shares.
struct Inner {
    servers: Vec<ServerAddr>,
    subject: Template,
    auth: Auth,
    tls: Tls,
    /// Acknowledgement timeout of one publish.
    timeout: Duration,
    /// Publishes awaiting their PubAck at most (requests × events).
    in_flight: usize,
    /// The JetStream context, once connected.
    context: OnceCell<jetstream::Context>,
    /// The last error the server reported on the connection (a refused
    /// publish shows up there, not in the publish's answer).
    server_error: Arc<Mutex<Option<String>>>,
    traffic: Traffic,
}

/// How ferry logs in.
enum Auth {
    None,
    UserPassword(String, String),
    Token(String),
    CredentialsFile(PathBuf),
}

struct Tls {
    required: bool,
    ca_file: Option<PathBuf>,
    client: Option<(PathBuf, PathBuf)>,
}

impl Nats {
    /// Builds the sink from a validated config; connects on first use.
    pub fn new(cfg: &DestinationConfig) -> Result<Nats, String> {
        cfg.check_files()?;
        let url = cfg.url.as_deref().unwrap_or_default();
        let servers = url
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<ServerAddr>()
                    .map_err(|e| format!("{s}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let subject = Template::parse(cfg.subject.as_deref().unwrap_or_default(), nats_token_char)?;
        let auth = match (&cfg.user, &cfg.password, &cfg.token, &cfg.credentials_file) {
            (Some(u), Some(p), _, _) => Auth::UserPassword(u.clone(), p.clone()),
            (_, _, Some(t), _) => Auth::Token(t.clone()),
            (_, _, _, Some(f)) => Auth::CredentialsFile(f.clone()),
            _ => Auth::None,
        };
        let client = cfg.tls_cert_file.clone().zip(cfg.tls_key_file.clone());
        let tls = Tls {
            required: cfg.tls.unwrap_or(cfg.ca_file.is_some() || client.is_some()),
            ca_file: cfg.ca_file.clone(),
            client,
        };
        Ok(Nats {
            inner: Arc::new(Inner {
                servers,
                subject,
                auth,
                tls,
                timeout: cfg.timeout,
                in_flight: cfg.batch_size().saturating_mul(cfg.concurrency()),
                context: OnceCell::new(),
                server_error: Arc::new(Mutex::new(None)),
                traffic: Traffic::default(),
            }),
        })
    }
}

impl Inner {
    /// The JetStream context, connecting first if need be. A failed connect
    /// is this request's outcome; the next request tries again.
    async fn context(&self) -> Result<&jetstream::Context, Outcome> {
        self.context
            .get_or_try_init(|| async {
                let client = self
                    .options()
                    .await?
                    .connect(self.servers.as_slice())
                    .await
                    .map_err(|e| {
                        let error = state_excerpt(&format!(
                            "cannot connect to NATS: {}",
                            crate::error_text::with_causes(&e)
                        ));
                        match e.kind() {
                            ConnectErrorKind::AuthorizationViolation
                            | ConnectErrorKind::Authentication
                            | ConnectErrorKind::Tls => Outcome::Halt {
                                status: None,
                                error,
                            },
                            _ => Outcome::Retry {
                                status: None,
                                error,
                                retry_after: None,
                            },
                        }
                    })?;
                Ok(jetstream::ContextBuilder::new()
                    .timeout(self.timeout)
                    .max_ack_inflight(self.in_flight.max(1))
                    .backpressure_on_inflight(true)
                    .build(client))
            })
            .await
    }

    /// The client's options: name, login, TLS, reconnecting forever, and
    /// server errors noted for the status.
    async fn options(&self) -> Result<ConnectOptions, Outcome> {
        let mut o =
            match &self.auth {
                Auth::None => ConnectOptions::new(),
                Auth::UserPassword(u, p) => {
                    ConnectOptions::with_user_and_password(u.clone(), p.clone())
                }
                Auth::Token(t) => ConnectOptions::with_token(t.clone()),
                Auth::CredentialsFile(f) => ConnectOptions::with_credentials_file(f)
                    .await
                    .map_err(|e| Outcome::Halt {
                        status: None,
                        error: format!("cannot read credentials_file {}: {e}", f.display()),
                    })?,
            };
        if let Some(ca) = &self.tls.ca_file {
            o = o.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls.client {
            o = o.add_client_certificate(cert.clone(), key.clone());
        }
        let noted = self.server_error.clone();
        Ok(o.require_tls(self.tls.required)
            .name("ferry")
            .connection_timeout(self.timeout)
            .max_reconnects(None)
            .event_callback(move |event| {
                let noted = noted.clone();
                async move {
                    let mut noted = noted.lock().unwrap_or_else(|e| e.into_inner());
                    match event {
                        Event::ServerError(e) => *noted = Some(e.to_string()),
                        Event::Connected => *noted = None,
                        _ => {}
                    }
                }
            }))
    }

    /// The last error the server reported, if any since connecting.
    fn server_error(&self) -> Option<String> {
        self.server_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What one publish's answer means for its event.
    fn outcome(
        &self,
        subject: &str,
        result: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    ) -> Outcome {
        let e = match result {
            Ok(_ack) => return Outcome::Delivered,
            Err(e) => e,
        };
        let retry = |error: String| Outcome::Retry {
            status: None,
            error: state_excerpt(&error),
            retry_after: None,
        };
        match e.kind() {
            PublishErrorKind::StreamNotFound => Outcome::Halt {
                status: None,
                error: format!("no JetStream stream captures the subject {subject:?}: create a stream for it, or add the subject to one"),
            },
            PublishErrorKind::MaxPayloadExceeded => Outcome::Permanent {
                status: None,
                error: state_excerpt(&format!("refused by the NATS server: {}", crate::error_text::with_causes(&e))),
            },
            PublishErrorKind::TimedOut => match self.server_error() {
                Some(server) if server.to_ascii_lowercase().contains("permission") => {
                    Outcome::Halt {
                        status: None,
                        error: state_excerpt(&format!("the NATS server refuses to let ferry publish to {subject:?}: {server}")),
                    }
                }
                Some(server) => retry(format!(
                    "no PubAck within {} (the server last said: {server})",
                    humantime::format_duration(self.timeout)
                )),
                None => retry(format!(
                    "no PubAck within {}",
                    humantime::format_duration(self.timeout)
                )),
            },
            _ => {
                let api = std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<jetstream::Error>());
                let text = crate::error_text::with_causes(&e);
                match api.map(|a| a.error_code()) {
                    Some(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM) => Outcome::Permanent {
                        status: None,
                        error: state_excerpt(&format!("refused by the stream: {text}")),
                    },
                    Some(ErrorCode::JETSTREAM_NOT_ENABLED)
                    | Some(ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT) => Outcome::Halt {
                        status: None,
                        error: state_excerpt(&format!("JetStream is not enabled: {text}")),
                    },
                    _ => retry(format!("publish to {subject:?} failed: {text}")),
                }
            }
        }
    }
}

impl Sink for Nats {
    fn send(&self, events: Vec<LoggedEvent>) -> SendFuture {
        let inner = self.inner.clone();
        Box::pin(async move {
            let js = match inner.context().await {
                Ok(js) => js,
                Err(outcome) => return outcome,
            };
            // Publish every event first, then wait for the PubAcks together:
            // the events belong to different users, so their order among
            // themselves does not matter.
            let mut pending = Vec::with_capacity(events.len());
            for event in &events {
                let subject = inner.subject.render(&event.meta).into_owned();
                let mut headers = HeaderMap::new();
                headers.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    broker_message_id(&event.meta),
                );
                for (name, value) in event_headers(&event.meta) {
                    headers.insert(name, value);
                }
                let message = PublishMessage::build()
                    .payload(event.body.clone())
                    .headers(headers);
                let published = js.send_publish(subject.clone(), message).await;
                if published.is_ok() {
                    let n = event.body.len() as u64;
                    inner.traffic.json_bytes.fetch_add(n, Ordering::Relaxed);
                    inner.traffic.wire_bytes.fetch_add(n, Ordering::Relaxed);
                }
                pending.push((subject, published));
            }
            let answers = join_all(pending.into_iter().map(|(subject, published)| async move {
                let answer = match published {
                    Ok(ack) => ack.await,
                    Err(e) => Err(e),
                };
                (subject, answer)
            }))
            .await;
            Outcome::PerEvent(
                answers
                    .into_iter()
                    .map(|(subject, answer)| inner.outcome(&subject, answer))
                    .collect(),
            )
        })
    }

    fn traffic(&self) -> Option<&Traffic> {
        Some(&self.inner.traffic)
    }
}
