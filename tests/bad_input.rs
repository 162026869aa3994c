//! Bad-input corpus: well over 100 hostile or malformed requests (invalid
//! JSON, wrong types, deep nesting, huge strings, invalid UTF-8, NUL bytes,
//! truncated and bomb gzip, wrong encodings, oversized bodies, missing,
//! wrong and duplicate auth, absurd headers, slow bodies) sent as raw bytes.
//! Each gets a 4xx with a JSON error (or, for what the HTTP parser refuses
//! before ferry sees it, a bare 4xx); never a 5xx, a dropped connection or a
//! panic. Afterwards the server is healthy, nothing was stored, and valid
//! traffic is accepted.

mod common;

use common::{config, gzip, start_with, WEB_KEY};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX_REQUEST: usize = 64 * 1024;
const MAX_EVENT: usize = 8 * 1024;

/// What a case must get back.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// This status and JSON error code.
    Code(u16, &'static str),
    /// Any 4xx with a JSON error body.
    Json4xx,
    /// Any 4xx: refused by the HTTP parser before ferry's handlers.
    Protocol4xx,
}

struct Case {
    name: String,
    bytes: Vec<u8>,
    expect: Expect,
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A request with Host, Content-Length, `Connection: close` and, unless
/// `headers` brings its own, Basic auth as the "web" source.
fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    if !has("authorization") && !has("x-no-auth") {
        head.push_str(&format!(
            "Authorization: Basic {}\r\n",
            b64(&format!("{WEB_KEY}:"))
        ));
    }
    if !has("content-length") && !has("transfer-encoding") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        if !k.eq_ignore_ascii_case("x-no-auth") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    request("POST", path, &[], body)
}

fn nested(depth: usize) -> String {
    format!(
        "{{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\",\"properties\":{}{}}}",
        "{\"a\":".repeat(depth) + "1",
        "}".repeat(depth)
    )
}

fn chunked(body: &[u8], piece: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(piece) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn corpus() -> Vec<Case> {
    use Expect::*;
    let mut cases = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>, expect: Expect| {
        cases.push(Case {
            name: name.to_string(),
            bytes,
            expect,
        })
    };

    // Invalid JSON, on a single-event and a batch endpoint.
    let not_json: &[&[u8]] = &[
        b"",
        b"{",
        b"}",
        b"[",
        b"nul",
        b"tru",
        b"{\"a\":}",
        b"{'a':1}",
        b"{\"a\":1,}",
        b"NaN",
        b"{\"a\":NaN}",
        b"{\"a\":Infinity}",
        b"{\"a\":1}{\"b\":2}",
        b"{\"a\" 1}",
        b"\xef\xbb\xbf{}",
        b"{\"a\":\"\\x41\"}",
        b"{\"a\":\"\\u00\"}",
        b"{\"a\":\"\\ud800\"}",
        b"{\"a\":1e999999}",
        b"// c\n{}",
        b"{} x",
        b"{\"a\":01}",
        b"{\"a\":-}",
        b"{\"a\":.5}",
        b"{\"a\":\"unterminated}",
        b"{\"a\":[1,2}",
        b"\x00{}",
        b"{\"a\":\"tab\there\"}",
    ];
    for (i, body) in not_json.iter().enumerate() {
        add(
            &format!("not json #{i} on /v1/track"),
            post("/v1/track", body),
            Code(400, "bad_request"),
        );
        add(
            &format!("not json #{i} on /v1/batch"),
            post("/v1/batch", body),
            Code(400, "bad_request"),
        );
    }
    // JSON of the wrong shape.
    for body in [
        "\"str\"",
        "123",
        "[]",
        "null",
        "true",
        "[{\"type\":\"track\"}]",
    ] {
        add(
            &format!("not an object: {body}"),
            post("/v1/track", body.as_bytes()),
            Code(400, "bad_request"),
        );
    }
    for body in [
        json!({}),
        json!({"batch": {}}),
        json!({"batch": "x"}),
        json!({"batch": []}),
        json!({"batch": null}),
        json!({"events": [{"type": "track", "userId": "u", "event": "E"}]}),
        json!({"batch": [{"type": "page", "userId": "u"}], "sentAt": "later"}),
        json!({"batch": [{"type": "page", "userId": "u"}], "sentAt": 17}),
    ] {
        add(
            &format!("bad batch {body}"),
            post("/v1/batch", body.to_string().as_bytes()),
            Code(400, "bad_request"),
        );
    }
    // Wrong types and missing fields in events.
    let bad_events = [
        json!(1),
        json!(null),
        json!([]),
        json!("track"),
        json!({"type": 5, "userId": "u"}),
        json!({"type": null, "userId": "u"}),
        json!({"type": "evil", "userId": "u"}),
        json!({"type": "TRACK", "userId": "u", "event": "E"}),
        json!({"userId": "u", "event": "E"}),
        json!({"type": "track", "event": "E"}),
        json!({"type": "track", "userId": [], "event": "E"}),
        json!({"type": "track", "userId": {}, "event": "E"}),
        json!({"type": "track", "userId": true, "event": "E"}),
        json!({"type": "track", "userId": "", "anonymousId": null, "event": "E"}),
        json!({"type": "track", "anonymousId": false, "event": "E"}),
        json!({"type": "track", "userId": "u"}),
        json!({"type": "track", "userId": "u", "event": 5}),
        json!({"type": "track", "userId": "u", "event": ""}),
        json!({"type": "track", "userId": "u", "event": ["E"]}),
        json!({"type": "track", "userId": "u", "event": "E", "messageId": 5}),
        json!({"type": "track", "userId": "u", "event": "E", "messageId": ""}),
        json!({"type": "track", "userId": "u", "event": "E", "messageId": "m".repeat(101)}),
        json!({"type": "track", "userId": "u", "event": "E", "timestamp": 5}),
        json!({"type": "track", "userId": "u", "event": "E", "timestamp": "yesterday"}),
        json!({"type": "track", "userId": "u", "event": "E", "timestamp": "2024-13-45T00:00:00Z"}),
        json!({"type": "track", "userId": "u", "event": "E", "timestamp": "2024-05-01"}),
        json!({"type": "track", "userId": "u", "event": "E", "originalTimestamp": {}}),
        json!({"type": "track", "userId": "u", "event": "E", "sentAt": []}),
        json!({"type": "track", "userId": "u", "event": "E", "sentAt": "9999-12-31T23:59:59Z", "originalTimestamp": "0000-01-01T00:00:00Z"}),
        json!({"type": "track", "userId": "u", "event": "E", "timestamp": "9999-12-31T23:59:59-23:59"}),
        json!({"type": "track", "userId": "u", "event": "E", "originalTimestamp": "9999-12-31T23:59:59-23:59"}),
        json!({"type": "track", "userId": "u", "event": "E", "sentAt": "9999-12-31T23:59:59-23:59"}),
        json!({"type": "track", "userId": "u", "event": "E", "timestamp": "0000-01-01T00:00:00+23:59"}),
        json!({"type": "group", "userId": "u"}),
        json!({"type": "group", "userId": "u", "groupId": ""}),
        json!({"type": "alias", "userId": "u"}),
        json!({"type": "alias", "anonymousId": "a", "previousId": "p"}),
    ];
    for (i, e) in bad_events.iter().enumerate() {
        let body = json!({"batch": [{"type": "page", "userId": "ok"}, e]});
        add(
            &format!("invalid event #{i}: {e}"),
            post("/v1/batch", body.to_string().as_bytes()),
            Code(400, "invalid_event"),
        );
    }
    // Deep nesting beyond the JSON parser's recursion limit.
    add(
        "nested objects 200 deep",
        post("/v1/track", nested(200).as_bytes()),
        Code(400, "bad_request"),
    );
    add(
        "nested objects 5000 deep",
        post("/v1/track", nested(5000).as_bytes()),
        Code(400, "bad_request"),
    );
    add(
        "nested arrays 20000 deep",
        post(
            "/v1/batch",
            format!("{{\"batch\":{}}}", "[".repeat(20000)).as_bytes(),
        ),
        Code(400, "bad_request"),
    );
    // Huge strings and oversized requests.
    let huge_event = json!({"type": "track", "userId": "u", "event": "x".repeat(MAX_EVENT + 1)});
    add(
        "event over the event cap",
        post("/v1/track", huge_event.to_string().as_bytes()),
        Code(413, "event_too_large"),
    );
    let huge_id = json!({"type": "track", "userId": "u".repeat(MAX_EVENT * 2), "event": "E"});
    add(
        "userId over the event cap",
        post("/v1/track", huge_id.to_string().as_bytes()),
        Code(413, "event_too_large"),
    );
    let huge_body = json!({"type": "track", "userId": "u", "event": "E", "properties": {"s": "x".repeat(MAX_REQUEST)}});
    add(
        "body over the request cap",
        post("/v1/track", huge_body.to_string().as_bytes()),
        Code(413, "request_too_large"),
    );
    let many: Vec<Value> = (0..3000)
        .map(|i| json!({"type": "page", "userId": format!("u{i}")}))
        .collect();
    let many = json!({ "batch": many }).to_string();
    assert!(many.len() > MAX_REQUEST);
    add(
        "oversized batch",
        post("/v1/batch", many.as_bytes()),
        Code(413, "request_too_large"),
    );
    add(
        "declared 10 MB body (head only)",
        request("POST", "/v1/batch", &[("Content-Length", "10000000")], b""),
        Code(413, "request_too_large"),
    );
    let over = "x".repeat(MAX_REQUEST + 2048);
    add(
        "chunked body over the cap",
        request(
            "POST",
            "/v1/batch",
            &[("Transfer-Encoding", "chunked")],
            &chunked(over.as_bytes(), 4096),
        ),
        Code(413, "request_too_large"),
    );
    // Invalid UTF-8 and NUL bytes.
    for (name, body) in [
        (
            "invalid UTF-8 in a string",
            &b"{\"type\":\"track\",\"userId\":\"\xff\xfe\",\"event\":\"E\"}"[..],
        ),
        (
            "overlong UTF-8",
            b"{\"type\":\"track\",\"userId\":\"\xc0\xaf\",\"event\":\"E\"}",
        ),
        (
            "lone continuation byte",
            b"{\"type\":\"track\",\"userId\":\"\x80\",\"event\":\"E\"}",
        ),
        (
            "truncated multi-byte sequence",
            b"{\"type\":\"track\",\"userId\":\"u\",\"event\":\"\xe2\x82\"}",
        ),
        ("UTF-16 body", b"\xff\xfe{\x00}\x00"),
        (
            "raw NUL inside a string",
            b"{\"type\":\"track\",\"userId\":\"a\x00b\",\"event\":\"E\"}",
        ),
        ("NUL bytes only", b"\x00\x00\x00\x00"),
        (
            "NUL after the object",
            b"{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\"}\x00",
        ),
    ] {
        add(name, post("/v1/track", body), Code(400, "bad_request"));
    }
    // Gzip: truncated, garbage, bomb, wrong encodings.
    let event = br#"{"type":"track","userId":"u","event":"E"}"#;
    let z = gzip(event);
    let gz = [("Content-Encoding", "gzip")];
    add(
        "truncated gzip",
        request("POST", "/v1/track", &gz, &z[..z.len() - 6]),
        Code(400, "bad_gzip"),
    );
    add(
        "gzip header only",
        request("POST", "/v1/track", &gz, &z[..10]),
        Code(400, "bad_gzip"),
    );
    add(
        "gzip magic then garbage",
        request("POST", "/v1/track", &gz, b"\x1f\x8b\x08\x00garbage!"),
        Code(400, "bad_gzip"),
    );
    add(
        "sniffed truncated gzip",
        post("/v1/track", &z[..z.len() / 2]),
        Code(400, "bad_gzip"),
    );
    add(
        "gzip header, plain body",
        request("POST", "/v1/track", &gz, event),
        Code(400, "bad_gzip"),
    );
    let mut bad_crc = z.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 0xff;
    add(
        "gzip with a wrong CRC",
        request("POST", "/v1/track", &gz, &bad_crc),
        Code(400, "bad_gzip"),
    );
    add(
        "gzip of gzip",
        request("POST", "/v1/track", &gz, &gzip(&z)),
        Code(400, "bad_request"),
    );
    add(
        "gzip of not-JSON",
        request("POST", "/v1/track", &gz, &gzip(b"{nope")),
        Code(400, "bad_request"),
    );
    add(
        "gzip bomb",
        request(
            "POST",
            "/v1/batch",
            &gz,
            &gzip(&vec![b' '; 8 * 1024 * 1024]),
        ),
        Code(413, "request_too_large"),
    );
    add(
        "sniffed gzip bomb",
        post("/v1/batch", &gzip(&vec![b'['; 4 * 1024 * 1024])),
        Code(413, "request_too_large"),
    );
    for enc in [
        "br",
        "deflate",
        "compress",
        "zstd",
        "gzip, br",
        "x-unknown",
        "identity;q=0",
    ] {
        add(
            &format!("Content-Encoding {enc:?}"),
            request("POST", "/v1/track", &[("Content-Encoding", enc)], event),
            Code(415, "unsupported_encoding"),
        );
    }
    add(
        "Content-Encoding with a DEL byte",
        request(
            "POST",
            "/v1/track",
            &[("Content-Encoding", "\u{7f}")],
            event,
        ),
        Protocol4xx,
    );
    // Authentication: missing, wrong, malformed, duplicate.
    let noauth = [("X-No-Auth", "1")];
    add(
        "no write key",
        request("POST", "/v1/track", &noauth, event),
        Code(401, "missing_write_key"),
    );
    add(
        "no write key, batch",
        request(
            "POST",
            "/v1/batch",
            &noauth,
            br#"{"batch":[{"type":"page","userId":"u"}]}"#,
        ),
        Code(401, "missing_write_key"),
    );
    add(
        "beacon without writeKey",
        request(
            "POST",
            "/beacon/v1/batch",
            &noauth,
            br#"{"batch":[{"type":"page","userId":"u"}]}"#,
        ),
        Code(401, "missing_write_key"),
    );
    let wrong = format!("Basic {}", b64("wk_nope:"));
    add(
        "unknown key",
        request("POST", "/v1/track", &[("Authorization", &wrong)], event),
        Code(401, "unknown_write_key"),
    );
    add(
        "wrong key in the query",
        request("POST", "/v1/track?writeKey=nope", &noauth, event),
        Code(401, "unknown_write_key"),
    );
    add(
        "wrong key in the body",
        request(
            "POST",
            "/v1/track",
            &noauth,
            br#"{"writeKey":"nope","type":"track","userId":"u","event":"E"}"#,
        ),
        Code(401, "unknown_write_key"),
    );
    add(
        "write key in the body not a string",
        request(
            "POST",
            "/v1/track",
            &noauth,
            br#"{"writeKey":17,"type":"track","userId":"u","event":"E"}"#,
        ),
        Json4xx,
    );
    add(
        "Basic not base64",
        request(
            "POST",
            "/v1/track",
            &[("Authorization", "Basic !!!not-base64!!!")],
            event,
        ),
        Json4xx,
    );
    add(
        "Basic of invalid UTF-8",
        request(
            "POST",
            "/v1/track",
            &[("Authorization", "Basic //79")],
            event,
        ),
        Json4xx,
    );
    add(
        "Basic empty",
        request("POST", "/v1/track", &[("Authorization", "Basic ")], event),
        Json4xx,
    );
    add(
        "Bearer scheme",
        request(
            "POST",
            "/v1/track",
            &[("Authorization", "Bearer wk_web_test")],
            event,
        ),
        Json4xx,
    );
    add(
        "wrong key first, right key second",
        request(
            "POST",
            "/v1/track",
            &[
                ("Authorization", &wrong),
                (
                    "Authorization",
                    &format!("Basic {}", b64(&format!("{WEB_KEY}:"))),
                ),
            ],
            event,
        ),
        Json4xx,
    );
    add(
        "wrong header key, right query key",
        request(
            "POST",
            &format!("/v1/track?writeKey={WEB_KEY}"),
            &[("Authorization", &wrong)],
            event,
        ),
        Code(401, "unknown_write_key"),
    );
    let mut raw_auth = b"POST /v1/track HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic \xff\xfe\xfd\r\n".to_vec();
    raw_auth.extend_from_slice(format!("Content-Length: {}\r\n\r\n", event.len()).as_bytes());
    raw_auth.extend_from_slice(event);
    add("non-ASCII bytes in Authorization", raw_auth, Json4xx);
    // Absurd headers, methods and paths.
    add(
        "SentAt header not a time",
        request("POST", "/v1/track", &[("SentAt", "never")], event),
        Code(400, "bad_request"),
    );
    add(
        "SentAt header far future",
        request(
            "POST",
            "/v1/track",
            &[("SentAt", "99999-01-01T00:00:00Z")],
            event,
        ),
        Code(400, "bad_request"),
    );
    // Large but within the HTTP parser's buffer: ferry answers (here: the body is bad).
    let long_value = "v".repeat(200 * 1024);
    add(
        "one 200 KiB header, bad body",
        request("POST", "/v1/track", &[("X-Big", &long_value)], b"{"),
        Code(400, "bad_request"),
    );
    let huge_value = "v".repeat(1024 * 1024);
    add(
        "one 1 MiB header",
        request("POST", "/v1/track", &[("X-Big", &huge_value)], event),
        Protocol4xx,
    );
    let many_headers: Vec<(String, String)> =
        (0..500).map(|i| (format!("X-H{i}"), "v".into())).collect();
    let many_headers: Vec<(&str, &str)> = many_headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    add(
        "500 headers",
        request("POST", "/v1/track", &many_headers, event),
        Protocol4xx,
    );
    add(
        "Content-Length not a number",
        request("POST", "/v1/track", &[("Content-Length", "lots")], event),
        Protocol4xx,
    );
    add(
        "negative Content-Length",
        request("POST", "/v1/track", &[("Content-Length", "-5")], event),
        Protocol4xx,
    );
    add(
        "two different Content-Lengths",
        request(
            "POST",
            "/v1/track",
            &[("Content-Length", "5"), ("Content-Length", "6")],
            event,
        ),
        Protocol4xx,
    );
    add(
        "unknown Transfer-Encoding",
        request("POST", "/v1/track", &[("Transfer-Encoding", "gzip")], event),
        Protocol4xx,
    );
    add(
        "bad chunk size",
        request(
            "POST",
            "/v1/track",
            &[("Transfer-Encoding", "chunked")],
            b"zz\r\n{}\r\n0\r\n\r\n",
        ),
        Json4xx,
    );
    add(
        "header without a colon",
        b"POST /v1/track HTTP/1.1\r\nHost: x\r\nbroken header\r\n\r\n".to_vec(),
        Protocol4xx,
    );
    add(
        "garbage request line",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
        Protocol4xx,
    );
    add(
        "HTTP/9.9",
        b"POST /v1/track HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
        Protocol4xx,
    );
    add(
        "32 KiB URL, bad body",
        request(
            "POST",
            &format!("/v1/track?{}", "a=b&".repeat(8 * 1024)),
            &[],
            b"[]",
        ),
        Code(400, "bad_request"),
    );
    add(
        "1 MiB URL",
        request(
            "POST",
            &format!("/v1/track?{}", "a=b&".repeat(256 * 1024)),
            &[],
            event,
        ),
        Protocol4xx,
    );
    add(
        "GET an event endpoint",
        request("GET", "/v1/track", &[], b""),
        Code(405, "method_not_allowed"),
    );
    add(
        "PUT an event endpoint",
        request("PUT", "/v1/batch", &[], event),
        Code(405, "method_not_allowed"),
    );
    add(
        "DELETE /health",
        request("DELETE", "/health", &[], b""),
        Code(405, "method_not_allowed"),
    );
    add(
        "made-up method",
        request("FROB", "/v1/track", &[], event),
        Code(405, "method_not_allowed"),
    );
    add(
        "unknown path",
        post("/v2/track", event),
        Code(404, "not_found"),
    );
    add(
        "path traversal",
        post("/v1/../../etc/passwd", event),
        Code(404, "not_found"),
    );
    add(
        "encoded path traversal",
        post("/v1/%2e%2e/%2e%2e/etc/passwd", event),
        Code(404, "not_found"),
    );
    add("pixel with a timestamp past the year 9999", request("GET", &format!("/pixel/v1/track?writeKey={WEB_KEY}&userId=u&event=E&timestamp=9999-12-31T23:59:59-23:59"), &[("X-No-Auth", "1")], b""), Protocol4xx);
    add(
        "pixel with a wrong key",
        request(
            "GET",
            "/pixel/v1/track?writeKey=nope&userId=u&event=E",
            &[("X-No-Auth", "1")],
            b"",
        ),
        Protocol4xx,
    );
    add(
        "pixel without an event name",
        request(
            "GET",
            &format!("/pixel/v1/track?writeKey={WEB_KEY}&userId=u"),
            &[("X-No-Auth", "1")],
            b"",
        ),
        Protocol4xx,
    );
    add(
        "pixel query over the event cap",
        request(
            "GET",
            &format!(
                "/pixel/v1/page?writeKey={WEB_KEY}&userId=u&p={}",
                "x".repeat(MAX_EVENT + 10)
            ),
            &[("X-No-Auth", "1")],
            b"",
        ),
        Protocol4xx,
    );
    cases
}

/// Sends raw bytes and reads the answer until the server closes.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> (u16, String, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer (413, 400) and close before reading everything.
    let _ = stream.write_all(bytes).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "no answer within 20 s");
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(out.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, out[split..].to_vec())
}

/// Checks one answer; returns what is wrong with it.
fn check(case: &str, status: u16, head: &str, body: &[u8], expect: Expect) -> Option<String> {
    let outcome = std::panic::catch_unwind(|| check_inner(case, status, head, body, expect));
    outcome.err().map(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| format!("{case}: check failed"))
    })
}

fn check_inner(case: &str, status: u16, head: &str, body: &[u8], expect: Expect) {
    assert!(
        (400..500).contains(&status),
        "{case}: status {status}, not a 4xx:\n{head}{}",
        String::from_utf8_lossy(body)
    );
    if let Expect::Protocol4xx = expect {
        return;
    }
    let head_lc = head.to_ascii_lowercase();
    assert!(
        head_lc.contains("content-type: application/json"),
        "{case}: not JSON:\n{head}"
    );
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{case}: body is not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    assert_eq!(v["success"], false, "{case}: {v}");
    assert!(
        !v["error"].as_str().unwrap_or("").is_empty(),
        "{case}: no message: {v}"
    );
    if let Expect::Code(want_status, code) = expect {
        assert_eq!(
            (status, v["code"].as_str().unwrap()),
            (want_status, code),
            "{case}: {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_4xx_json_and_store_nothing() {
    let mut c = config();
    c.limits.max_request_bytes = MAX_REQUEST;
    c.limits.max_event_bytes = MAX_EVENT;
    c.limits.body_timeout_secs = 1;
    let s = start_with(c).await;
    let cases = corpus();
    assert!(cases.len() >= 100, "only {} cases", cases.len());
    let mut tally = std::collections::BTreeMap::new();
    let mut failures = Vec::new();
    for case in &cases {
        let (status, head, body) = exchange(s.addr, &case.bytes).await;
        failures.extend(check(&case.name, status, &head, &body, case.expect));
        *tally.entry(status).or_insert(0) += 1;
    }

    // Slow bodies: the head arrives, the body trickles (or stops) past the
    // 1 s body timeout. Each gets 408 body_timeout, all at once.
    let event = br#"{"type":"track","userId":"u","event":"E"}"#;
    let slow = |head: Vec<u8>, first: Vec<u8>, dribble: Vec<u8>| {
        let addr = s.addr;
        async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(&head).await.unwrap();
            stream.write_all(&first).await.unwrap();
            // One byte every 300 ms: each arrives within any per-read
            // timeout, but the whole body never within the 1 s budget.
            let mut tick = tokio::time::interval(Duration::from_millis(300));
            let mut out = Vec::new();
            let mut bytes = dribble.into_iter();
            let answer = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    tokio::select! {
                        n = stream.read_buf(&mut out) => if n.unwrap_or(0) == 0 { break },
                        _ = tick.tick() => if let Some(b) = bytes.next() { let _ = stream.write_all(&[b]).await; },
                    }
                }
            })
            .await;
            assert!(answer.is_ok(), "slow body: no answer within 10 s");
            out
        }
    };
    let mut slow_cases = Vec::new();
    let full = request("POST", "/v1/track", &[], event);
    let split = full.len() - event.len();
    slow_cases.push((
        "dribbled Content-Length body",
        slow(
            full[..split].to_vec(),
            event[..5].to_vec(),
            event[5..].to_vec(),
        ),
    ));
    slow_cases.push((
        "stalled Content-Length body",
        slow(full[..split].to_vec(), event[..5].to_vec(), Vec::new()),
    ));
    let head = request(
        "POST",
        "/v1/batch",
        &[("Transfer-Encoding", "chunked")],
        b"",
    );
    slow_cases.push((
        "dribbled chunked body",
        slow(
            head.clone(),
            b"4\r\n{\"ba\r\n".to_vec(),
            b"5\r\ntch\":\r\n".to_vec(),
        ),
    ));
    slow_cases.push(("stalled chunked body", slow(head, Vec::new(), Vec::new())));
    let names: Vec<&str> = slow_cases.iter().map(|(n, _)| *n).collect();
    let answers = futures_join(slow_cases.into_iter().map(|(_, f)| f).collect()).await;
    for (name, out) in names.iter().zip(answers) {
        let split = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(out.len(), |p| p + 4);
        let head = String::from_utf8_lossy(&out[..split]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        failures.extend(check(
            name,
            status,
            &head,
            &out[split..],
            Expect::Code(408, "body_timeout"),
        ));
        *tally.entry(status).or_insert(0) += 1;
    }
    eprintln!(
        "{} hostile requests, answers by status: {tally:?}",
        cases.len() + names.len()
    );
    assert!(
        failures.is_empty(),
        "{} of the hostile requests got a wrong answer:\n{}",
        failures.len(),
        failures.join("\n---\n")
    );

    // Healthy, nothing stored, and valid traffic still goes through.
    let h: Value = s.get("/health").send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (h["status"].as_str(), h["accepting"].as_bool()),
        (Some("ok"), Some(true)),
        "{h}"
    );
    assert_eq!(
        s.log.durable_end(),
        0,
        "a bad request stored something: {:?}",
        s.events()
    );
    for path in ["/v1/track", "/v1/t"] {
        let r = s
            .post(path)
            .json(&json!({"userId": "u", "event": "After"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = s
        .post("/v1/batch")
        .header("content-encoding", "gzip")
        .body(gzip(br#"{"batch":[{"type":"page","userId":"u"}]}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.events().len(), 3);
    s.stop().await;
}

/// Runs futures concurrently and returns their outputs in order.
async fn futures_join<F: std::future::Future<Output = Vec<u8>> + Send + 'static>(
    fs: Vec<F>,
) -> Vec<Vec<u8>> {
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
