//! What the HTTP sinks (webhook, segment) share: one reqwest client per
//! destination (its own connection pool, timeouts, extra CA certificates,
//! configured headers), and how a request that got no answer is retried.

use super::backoff::Outcome;
use super::config::DestinationConfig;
use crate::store::state_excerpt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

/// The User-Agent of every HTTP request ferry's destinations make.
pub const USER_AGENT: &str = concat!("ferry/", env!("CARGO_PKG_VERSION"));

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// The configured `headers` of a destination, then `fixed` (which win).
pub(crate) fn headers(cfg: &DestinationConfig, fixed: HeaderMap) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for (k, v) in &cfg.headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| format!("destinations[{}].headers: {k:?}: {e}", cfg.name))?;
        let value = HeaderValue::from_str(v)
            .map_err(|e| format!("destinations[{}].headers.{k}: {e}", cfg.name))?;
        headers.insert(name, value);
    }
    headers.extend(fixed);
    Ok(headers)
}

/// A client with a pool of its own (so a dead destination cannot starve
/// another's connections), the destination's timeout for connecting and for
/// each whole request, and the CA certificates of `ca_file` trusted besides
/// the built-in roots. `follow_redirects: false` hands 3xx answers back.
pub(crate) fn client(
    cfg: &DestinationConfig,
    default_headers: HeaderMap,
    follow_redirects: bool,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .default_headers(default_headers)
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout)
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(cfg.concurrency());
    if !follow_redirects {
        builder = builder.redirect(reqwest::redirect::Policy::none());
    }
    if let Some(path) = &cfg.ca_file {
        for cert in ca_certificates(path)
            .map_err(|e| format!("destinations[{}].ca_file {}: {e}", cfg.name, path.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| format!("destinations[{}]: {e}", cfg.name))
}

/// The certificates of a PEM file; an error unless it holds at least one.
fn ca_certificates(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(certs)
}

/// A request that got no answer (timeout, refused or failed connection,
/// DNS failure, broken transfer) is worth another try.
pub(crate) fn no_answer(e: &reqwest::Error) -> Outcome {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    Outcome::Retry {
        status: None,
        error: state_excerpt(&format!("{kind}: {}", crate::error_text::with_causes(e))),
        retry_after: None,
    }
}
