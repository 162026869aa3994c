//! Reading request bodies under a size cap: the cap holds on the wire and
//! again while gzip is inflated, so a gzip bomb stops at the cap.

use std::io::Read;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use http_body_util::BodyExt;

use super::error::IngestError;

/// First two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads the whole body (at most `limit` bytes on the wire) and decodes
/// `Content-Encoding: gzip` (at most `limit` bytes once inflated). A body
/// that starts with the gzip magic is inflated even without the header:
/// JSON never starts with those bytes.
pub(crate) async fn read(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, IngestError> {
    let gzip = match headers.get(header::CONTENT_ENCODING) {
        None => false,
        Some(v) => match v.to_str().map(|s| s.trim().to_ascii_lowercase()) {
            Ok(s) if s.is_empty() || s == "identity" => false,
            Ok(s) if s == "gzip" || s == "x-gzip" => true,
            Ok(s) => return Err(IngestError::UnsupportedEncoding(s)),
            Err(_) => return Err(IngestError::UnsupportedEncoding("(not ASCII)".into())),
        },
    };
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|len| len.to_str().ok()?.parse::<u64>().ok());
    if length.is_some_and(|n| n > limit as u64) {
        return Err(IngestError::RequestTooLarge { limit });
    }
    // Room for the announced length up front: growing the buffer frame by
    // frame copies a 100 KB body several times over.
    let expected = length.map_or(0, |n| n as usize);
    let raw = tokio::time::timeout(timeout, collect(body, limit, expected))
        .await
        .map_err(|_| IngestError::BodyTimeout)??;
    if gzip || raw.starts_with(&GZIP_MAGIC) {
        inflate(&raw, limit)
    } else {
        Ok(raw)
    }
}

/// Collects frames, failing as soon as the total passes `limit`;
/// `expected` (at most `limit`): the bytes the client announced.
async fn collect(mut body: Body, limit: usize, expected: usize) -> Result<Vec<u8>, IngestError> {
    let mut out = Vec::with_capacity(expected);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| IngestError::BadRequest(format!("reading body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(IngestError::RequestTooLarge { limit });
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// Inflates gzip (several concatenated members allowed), reading at most one
/// byte past `limit` so the work done on a bomb is bounded by the limit.
pub(crate) fn inflate(compressed: &[u8], limit: usize) -> Result<Vec<u8>, IngestError> {
    let mut out = Vec::with_capacity((compressed.len() * 4).min(limit));
    flate2::read::MultiGzDecoder::new(compressed)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| IngestError::BadGzip(e.to_string()))?;
    if out.len() > limit {
        return Err(IngestError::RequestTooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), v.parse().unwrap());
        }
        h
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn plain_and_gzip_bodies() {
        let plain = read(Body::from("{\"a\":1}"), &HeaderMap::new(), 100, T)
            .await
            .unwrap();
        assert_eq!(plain, b"{\"a\":1}");
        let h = headers(&[(header::CONTENT_ENCODING, "gzip")]);
        let z = read(Body::from(gzip(b"{\"a\":1}")), &h, 100, T)
            .await
            .unwrap();
        assert_eq!(z, b"{\"a\":1}");
        // Sniffed without the header.
        let z = read(Body::from(gzip(b"[]")), &HeaderMap::new(), 100, T)
            .await
            .unwrap();
        assert_eq!(z, b"[]");
    }

    #[tokio::test]
    async fn wire_cap() {
        let e = read(Body::from(vec![b' '; 101]), &HeaderMap::new(), 100, T)
            .await
            .unwrap_err();
        assert!(matches!(e, IngestError::RequestTooLarge { limit: 100 }));
        let h = headers(&[(header::CONTENT_LENGTH, "5000")]);
        let e = read(Body::from("{}"), &h, 100, T).await.unwrap_err();
        assert!(matches!(e, IngestError::RequestTooLarge { .. }));
        assert_eq!(
            read(Body::from(vec![b' '; 100]), &HeaderMap::new(), 100, T)
                .await
                .unwrap()
                .len(),
            100
        );
    }

    #[test]
    fn gzip_bomb_stops_at_the_cap() {
        let bomb = gzip(&vec![0u8; 50 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024);
        let e = inflate(&bomb, 1024 * 1024).unwrap_err();
        assert!(matches!(e, IngestError::RequestTooLarge { .. }));
        assert_eq!(inflate(&gzip(&[7; 1000]), 1000).unwrap().len(), 1000);
    }

    #[test]
    fn garbage_gzip_is_a_client_error() {
        let mut z = gzip(b"{\"a\":1}");
        z.truncate(z.len() - 6);
        assert!(matches!(inflate(&z, 100), Err(IngestError::BadGzip(_))));
    }

    #[tokio::test]
    async fn other_encodings_are_refused() {
        let h = headers(&[(header::CONTENT_ENCODING, "br")]);
        let e = read(Body::from("x"), &h, 100, T).await.unwrap_err();
        assert!(matches!(e, IngestError::UnsupportedEncoding(_)));
    }
}
