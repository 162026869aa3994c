//! Bearer tokens: the admin API and (with `metrics_token`) `/metrics` take
//! `Authorization: Bearer <token>`, compared in constant time.

use axum::http::{header, HeaderMap};

/// True when `headers` carry `Authorization: Bearer <token>`.
pub fn authorizes(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .is_some_and(|t| same(t.as_bytes(), token.as_bytes()))
}

/// Constant-time comparison, so the token cannot be guessed byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_the_whole_token() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
    }

    #[test]
    fn reads_the_bearer_header_only() {
        let mut h = HeaderMap::new();
        assert!(!authorizes(&h, "t0k"));
        h.insert(header::AUTHORIZATION, "Basic t0k".parse().unwrap());
        assert!(!authorizes(&h, "t0k"));
        h.insert(header::AUTHORIZATION, "Bearer t0k".parse().unwrap());
        assert!(authorizes(&h, "t0k"));
        assert!(!authorizes(&h, "t0k2"));
    }
}
