//! The webhook sink: HTTP POST of JSON with a stable User-Agent, the
//! messageId header, an optional HMAC-SHA256 signature, one connection pool
//! per destination (so a dead destination cannot starve another's).

use super::backoff::{parse_retry_after, retryable_status, Outcome};
use super::config::DestinationConfig;
use super::event::LoggedEvent;
use super::http_client;
use super::sink::{body, SendFuture, Sink};
use crate::store::state_excerpt;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use sha2::Sha256;
use std::time::SystemTime;

/// The User-Agent of every webhook request.
pub const USER_AGENT: &str = http_client::USER_AGENT;
/// Header carrying the event's messageId (unbatched requests) so receivers can dedup.
pub const MESSAGE_ID_HEADER: &str = "x-ferry-message-id";
/// Header carrying `sha256=<hex>` of the body when a secret is configured.
pub const SIGNATURE_HEADER: &str = "x-ferry-signature";

/// A webhook destination.
pub struct Webhook {
    client: reqwest::Client,
    url: String,
    secret: Option<Vec<u8>>,
    batched: bool,
}

impl Webhook {
    /// Builds the sink (and its own connection pool) from a validated config.
    pub fn new(cfg: &DestinationConfig) -> Result<Webhook, String> {
        let mut fixed = HeaderMap::new();
        fixed.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let headers = http_client::headers(cfg, fixed)?;
        let client = http_client::client(cfg, headers, true)?;
        Ok(Webhook {
            client,
            url: cfg.url.clone().unwrap_or_default(),
            secret: cfg.secret.as_ref().map(|s| s.as_bytes().to_vec()),
            batched: cfg.batch_size() > 1,
        })
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Sink for Webhook {
    fn send(&self, events: Vec<LoggedEvent>) -> SendFuture {
        let body = body(&events, self.batched);
        let mut req = self.client.post(&self.url);
        if let Some(secret) = &self.secret {
            req = req.header(SIGNATURE_HEADER, signature(secret, &body));
        }
        if events.len() == 1 {
            req = req.header(MESSAGE_ID_HEADER, events[0].meta.message_id.as_str());
        }
        let req = req.body(body);
        Box::pin(async move {
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => return http_client::no_answer(&e),
            };
            let status = resp.status().as_u16();
            if resp.status().is_success() {
                return Outcome::Delivered;
            }
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            let text = resp.text().await.unwrap_or_default();
            let error = state_excerpt(&format!("HTTP {status}: {text}"));
            if retryable_status(status) {
                let retry_after = if status == 429 || status == 503 {
                    retry_after
                } else {
                    None
                };
                Outcome::Retry {
                    status: Some(status),
                    error,
                    retry_after,
                }
            } else {
                Outcome::Permanent {
                    status: Some(status),
                    error,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        let sig = signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
