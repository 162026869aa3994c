//! Which source sent a request: the write key comes from HTTP Basic auth
//! (user name), `?writeKey=` or `"writeKey"` in the body, in that order.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{header, HeaderMap};
use base64::Engine;

use super::error::IngestError;
use crate::config::SourceConfig;

/// Write key → source name, built once from the configuration.
#[derive(Debug, Default)]
pub(crate) struct Sources {
    /// Names are shared by every stored event of their source.
    by_key: HashMap<String, Arc<str>>,
}

impl Sources {
    /// Indexes the configured sources by write key.
    pub(crate) fn new(sources: &[SourceConfig]) -> Self {
        Sources {
            by_key: sources
                .iter()
                .map(|s| (s.write_key.clone(), Arc::from(s.name.as_str())))
                .collect(),
        }
    }

    /// Finds the source of a request. The first place a key is found in
    /// decides; a key there that no source has is refused even if another
    /// place holds a valid one.
    pub(crate) fn authenticate(
        &self,
        headers: &HeaderMap,
        query_key: Option<&str>,
        body_key: Option<&str>,
    ) -> Result<Arc<str>, IngestError> {
        let key = basic_user(headers)
            .or_else(|| query_key.map(str::to_owned))
            .or_else(|| body_key.map(str::to_owned))
            .filter(|k| !k.is_empty())
            .ok_or(IngestError::MissingWriteKey)?;
        let source = self
            .by_key
            .get(&key)
            .cloned()
            .ok_or(IngestError::UnknownWriteKey)?;
        super::note_source(&source);
        Ok(source)
    }
}

/// The user name of an `Authorization: Basic` header (the password, which
/// SDKs leave empty, is ignored). A header that does not decode yields an
/// empty name, which is refused rather than silently skipped.
fn basic_user(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default();
    let user = decoded.split_once(':').map_or(decoded.as_str(), |(u, _)| u);
    Some(user.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> Sources {
        Sources::new(&[
            SourceConfig {
                name: "web".into(),
                write_key: "wk_web".into(),
            },
            SourceConfig {
                name: "app".into(),
                write_key: "wk_app".into(),
            },
        ])
    }

    fn basic(credentials: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let b64 = base64::engine::general_purpose::STANDARD.encode(credentials);
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {b64}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn basic_auth_user_is_the_key() {
        let s = sources();
        assert_eq!(
            &*s.authenticate(&basic("wk_web:"), None, None).unwrap(),
            "web"
        );
        assert_eq!(
            &*s.authenticate(&basic("wk_app:ignored"), None, None)
                .unwrap(),
            "app"
        );
        assert_eq!(
            &*s.authenticate(&basic("wk_app"), None, None).unwrap(),
            "app"
        );
    }

    #[test]
    fn query_and_body_keys() {
        let s = sources();
        let none = HeaderMap::new();
        assert_eq!(
            &*s.authenticate(&none, Some("wk_web"), None).unwrap(),
            "web"
        );
        assert_eq!(
            &*s.authenticate(&none, None, Some("wk_app")).unwrap(),
            "app"
        );
    }

    #[test]
    fn missing_and_unknown_keys() {
        let s = sources();
        let none = HeaderMap::new();
        assert!(matches!(
            s.authenticate(&none, None, None),
            Err(IngestError::MissingWriteKey)
        ));
        assert!(matches!(
            s.authenticate(&none, Some(""), None),
            Err(IngestError::MissingWriteKey)
        ));
        assert!(matches!(
            s.authenticate(&basic("nope:"), None, Some("wk_web")),
            Err(IngestError::UnknownWriteKey)
        ));
        let mut garbage = HeaderMap::new();
        garbage.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert!(s.authenticate(&garbage, None, Some("wk_web")).is_err());
    }
}
