//! Webhooks over https, against the real binary and a TLS server on
//! 127.0.0.1 whose certificate an internal CA (made by the test) signed:
//! with `ca_file` naming that CA, events arrive; without it the certificate
//! is refused, the events are retried with the reason in the destination's
//! status (not dead-lettered, not lost), and a restart with `ca_file`
//! delivers them. A `ca_file` that is missing or holds no certificate stops
//! start-up with a sentence.

mod common;

use common::events::{batch, track};
use common::webhook::Webhook;
use common::{serve_fails, spawn_server, ServerProcess};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

const KEY: &str = "wk_https_test";
const ADMIN_TOKEN: &str = "https-test-admin-token";
const DEADLINE: Duration = Duration::from_secs(30);

/// A CA and a certificate for `localhost` it signed.
struct Pki {
    ca_pem: String,
    cert: rustls::pki_types::CertificateDer<'static>,
    key_der: Vec<u8>,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ferry test internal CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert: cert.der().clone(),
        key_der: key.serialize_der(),
    }
}

/// The shared webhook behind TLS: a listener that hands axum only
/// connections whose handshake succeeded (the webhook itself speaks plain
/// HTTP, so the TLS part stays here).
struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    /// Handshakes one connection at a time: ferry is the only client.
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that refuses the certificate ends the handshake.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// The webhook over https on 127.0.0.1, with the certificate of `pki`.
async fn https_hook(pki: &Pki) -> Webhook {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![pki.cert.clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(pki.key_der.clone().into()),
        )
        .unwrap();
    Webhook::builder().serve(TlsListener {
        tcp: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    })
}

/// `ferry serve` delivering to `https://localhost:{port}/hook`, trusting
/// `ca_file` when given.
fn serve(dir: &Path, port: u16, ca_file: Option<&Path>) -> ServerProcess {
    let config = dir.join("ferry.toml");
    let ca = ca_file.map_or(String::new(), |p| format!("ca_file = {:?}\n", p));
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:0"
data_dir = "{}"
admin_token = "{ADMIN_TOKEN}"
[[sources]]
name = "app"
write_key = "{KEY}"
[[destinations]]
name = "secure"
type = "webhook"
url = "https://localhost:{port}/hook"
retry = {{ base = "50ms", cap = "200ms" }}
{ca}"#,
            dir.join("data").display()
        ),
    )
    .unwrap();
    spawn_server(dir, &["--config", config.to_str().unwrap()], &[])
}

async fn send_three(http: &reqwest::Client, server: &ServerProcess) {
    let events = (0..3).map(|i| {
        track()
            .id(format!("tls-{i}"))
            .user(&format!("u{i}"))
            .name("Paid")
    });
    let r = http
        .post(server.url("/v1/batch"))
        .basic_auth(KEY, Some(""))
        .json(&batch(events))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Waits until the hook has seen the three events (order across users is free).
async fn wait_for_three(hook: &Webhook) {
    hook.delivered
        .wait_within(DEADLINE, |seen| {
            let mut got = seen.to_vec();
            got.sort();
            got.dedup();
            got == ["tls-0", "tls-1", "tls-2"]
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_webhook_signed_by_an_internal_ca_receives_events_with_ca_file() {
    let pki = pki();
    let hook = https_hook(&pki).await;
    let port = hook.addr().port();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("internal-ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let server = serve(dir.path(), port, Some(&ca));
    send_three(&reqwest::Client::new(), &server).await;
    wait_for_three(&hook).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ca_file_the_certificate_is_refused_and_events_wait_for_a_restart_that_trusts_it() {
    let pki = pki();
    let hook = https_hook(&pki).await;
    let port = hook.addr().port();
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let server = serve(dir.path(), port, None);
    send_three(&http, &server).await;

    // Refused for the certificate, and said so; retried, not given up.
    let started = Instant::now();
    let status = loop {
        let d = server.first_destination(&http, ADMIN_TOKEN).await;
        if d["last_error"]
            .as_str()
            .is_some_and(|e| e.to_lowercase().contains("certificate"))
        {
            break d;
        }
        assert!(started.elapsed() < DEADLINE, "no certificate error: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["dead_letters"], 0, "{status}");
    assert_eq!(status["committed_cursor"], 0, "{status}");
    assert!(hook.delivered.snapshot().is_empty());
    assert!(server.terminate().success());

    // Trusted after a restart: nothing was lost meanwhile.
    let ca = dir.path().join("internal-ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let _server = serve(dir.path(), port, Some(&ca));
    wait_for_three(&hook).await;
}

#[test]
fn a_missing_or_empty_ca_file_stops_start_up_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let write = |ca: &Path| {
        let config = dir.path().join("ferry.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n[[destinations]]\nname = \"secure\"\ntype = \"webhook\"\n\
                 url = \"https://localhost:9/hook\"\nca_file = {:?}\n",
                dir.path().join("data"),
                ca
            ),
        )
        .unwrap();
        config
    };
    let missing = dir.path().join("no-such-ca.pem");
    let err = serve_fails(dir.path(), &["--config", write(&missing).to_str().unwrap()]);
    assert!(
        err.contains("destinations[secure].ca_file") && err.contains("no-such-ca.pem"),
        "{err}"
    );
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let err = serve_fails(dir.path(), &["--config", write(&empty).to_str().unwrap()]);
    assert!(
        err.contains("destinations[secure].ca_file") && err.contains("no PEM certificate"),
        "{err}"
    );
}
