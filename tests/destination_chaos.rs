//! Destination chaos: a raw-TCP mock webhook on 127.0.0.1 answers each
//! request, by a seeded draw, with 200, 5xx, 408, 429 + Retry-After, a slow
//! 200, no answer until the destination's timeout, a connection reset, a close
//! without answer, or a truncated response. Time is compressed (short
//! timeout, small retry base and cap). Every event ends up delivered, none is
//! dead-lettered, and no event of a user is sent before the previous one was
//! answered 2xx. `FERRY_CHAOS_SECS` keeps appending for that long (the long
//! version); `FERRY_CHAOS_SEED` picks the draws.

mod common;

use common::env::env_or;
use common::events::{step, user_seq};
use common::webhook::message_ids;
use ferry::delivery::config::DestinationConfig;
use ferry::delivery::{make_sink, Delivery};
use ferry::log::{Log, LogOptions};
use ferry::store::StateStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The destination's per-request timeout (compressed time).
const TIMEOUT_MS: u64 = 150;
const USERS: usize = 30;

/// What the mock does with one request. Resets, closes and truncated
/// answers happen below HTTP, where the shared webhook (`common::webhook`,
/// an axum server that always sends whole responses) cannot go; so this mock
/// speaks raw TCP, and shares only the events and the parsing of bodies and
/// ids with the other tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Ok,
    Status(u16),
    TooMany(&'static str),
    SlowOk(u64),
    Hang,
    Reset,
    Close,
    Truncated,
}

impl Act {
    /// The act's name, for the tally.
    fn kind(self) -> &'static str {
        match self {
            Act::Ok => "200",
            Act::Status(500) => "500",
            Act::Status(_) => "other 5xx/408",
            Act::TooMany(_) => "429",
            Act::SlowOk(_) => "slow 200",
            Act::Hang => "timeout",
            Act::Reset => "reset",
            Act::Close => "close",
            Act::Truncated => "truncated",
        }
    }
}

fn draw(rng: &mut StdRng) -> Act {
    match rng.random_range(0..100) {
        0..40 => Act::Ok,
        40..50 => Act::Status(500),
        50..55 => Act::Status(503),
        55..60 => Act::Status(502),
        60..63 => Act::Status(504),
        63..66 => Act::Status(408),
        66..73 => Act::TooMany("1"),
        73..76 => Act::TooMany("0"),
        76..86 => Act::SlowOk(rng.random_range(5..TIMEOUT_MS / 4)),
        86..90 => Act::Hang,
        90..95 => Act::Reset,
        95..98 => Act::Close,
        _ => Act::Truncated,
    }
}

/// The mock's record: per user, the highest seq answered 2xx; every ordering
/// violation seen; how often each act was played.
struct Chaos {
    rng: Mutex<StdRng>,
    last_ok: Mutex<HashMap<String, i64>>,
    violations: Mutex<Vec<String>>,
    acts: Mutex<HashMap<&'static str, usize>>,
    /// Events answered 2xx for the first time, counted.
    delivered: watch::Sender<usize>,
}

/// `(user, seq)` of every event in a webhook body (single or batched).
fn events_of(body: &[u8]) -> Vec<(String, i64)> {
    message_ids(body)
        .iter()
        .map(|id| {
            let (user, seq) = user_seq(id);
            (user.to_string(), seq as i64)
        })
        .collect()
}

impl Chaos {
    /// Checks the per-user rule for an arriving request: each event is at
    /// most one past the user's last 2xx.
    fn arrive(&self, events: &[(String, i64)]) {
        let last = self.last_ok.lock().unwrap();
        for (user, seq) in events {
            let done = last.get(user).copied().unwrap_or(-1);
            if *seq > done + 1 {
                self.violations.lock().unwrap().push(format!(
                    "{user}-{seq} sent while {user}-{} was not yet delivered",
                    done + 1
                ));
            }
        }
    }

    fn answered_ok(&self, events: &[(String, i64)]) {
        let mut last = self.last_ok.lock().unwrap();
        let mut fresh = 0;
        for (user, seq) in events {
            let done = last.entry(user.clone()).or_insert(-1);
            if *seq > *done {
                *done = *seq;
                fresh += 1;
            }
        }
        self.delivered.send_modify(|n| *n += fresh);
    }
}

/// Reads one HTTP/1.1 request (head and Content-Length body); None at EOF.
async fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut len = 0usize;
    let mut first = true;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if line == "\r\n" && !first {
            break;
        }
        first = false;
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await.ok()?;
    Some(body)
}

fn response(status: u16, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} Chaos\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
}

async fn connection(chaos: Arc<Chaos>, stream: TcpStream) {
    let mut reader = BufReader::new(stream);
    while let Some(body) = read_request(&mut reader).await {
        let events = events_of(&body);
        chaos.arrive(&events);
        let act = draw(&mut chaos.rng.lock().unwrap());
        *chaos.acts.lock().unwrap().entry(act.kind()).or_default() += 1;
        let out = match act {
            Act::Ok => response(200, "", "ok"),
            Act::SlowOk(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                response(200, "", "ok")
            }
            Act::Status(s) => response(s, "", "chaos"),
            Act::TooMany(after) => response(429, &format!("Retry-After: {after}\r\n"), "slow down"),
            Act::Hang => {
                // No answer until well past the destination's timeout.
                tokio::time::sleep(Duration::from_millis(TIMEOUT_MS * 2)).await;
                return;
            }
            Act::Reset => {
                let stream = reader.into_inner();
                let _ = stream.set_zero_linger();
                return; // dropped: RST
            }
            Act::Close => return,
            Act::Truncated => {
                let _ = reader
                    .get_mut()
                    .write_all(b"HTTP/1.1 500 Chaos\r\nContent-Length: 100\r\n\r\nshort")
                    .await;
                return;
            }
        };
        // Marked before the answer leaves: once ferry reads it, it may send
        // the user's next event on another connection at once. (If the
        // answer is lost, ferry retries the same event, which is allowed.)
        if matches!(act, Act::Ok | Act::SlowOk(_)) {
            chaos.answered_ok(&events);
        }
        if reader.get_mut().write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn start_chaos(seed: u64) -> (Arc<Chaos>, String, watch::Receiver<usize>) {
    let (tx, rx) = watch::channel(0);
    let chaos = Arc::new(Chaos {
        rng: Mutex::new(StdRng::seed_from_u64(seed)),
        last_ok: Mutex::default(),
        violations: Mutex::default(),
        acts: Mutex::default(),
        delivered: tx,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let c = chaos.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(connection(c.clone(), stream));
        }
    });
    (chaos, format!("http://{addr}/hook"), rx)
}

async fn chaos_run(name: &str, extra: &str, seed: u64) {
    let secs: u64 = env_or("FERRY_CHAOS_SECS", 0);
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(
        &tmp.path().join("log"),
        LogOptions {
            segment_bytes: 8192,
            min_free_bytes: 0,
            ..LogOptions::default()
        },
    )
    .unwrap();
    let store = Arc::new(StateStore::open(&tmp.path().join("state.redb")).unwrap());
    let (chaos, url, mut delivered) = start_chaos(seed).await;
    let cfg: DestinationConfig = toml::from_str(&format!(
        "name='{name}'\ntype='webhook'\nurl='{url}'\ntimeout='{TIMEOUT_MS}ms'\n{extra}\n[retry]\nbase='5ms'\ncap='40ms'\nmax_duration='10m'\n"
    ))
    .unwrap();
    cfg.validate().unwrap();
    let delivery = Delivery::start(
        log.clone(),
        store.clone(),
        vec![(cfg.clone(), make_sink(&cfg).unwrap())],
    )
    .unwrap();

    // Rounds of one append holding one event per user; in the long version
    // rounds keep coming for FERRY_CHAOS_SECS while the chaos goes on.
    let started = Instant::now();
    let mut rounds = 0u64;
    while rounds < 20 || started.elapsed() < Duration::from_secs(secs) {
        let batch = (0..USERS)
            .map(|u| step(&format!("u{u}"), rounds).logged())
            .collect();
        log.append(batch).await.unwrap();
        rounds += 1;
        if secs > 0 {
            // Keep the long run at a steady pace instead of one burst.
            let behind = log.durable_end() as usize - *delivered.borrow();
            if behind > 2000 {
                delivered
                    .wait_for(|d| log.durable_end() as usize - *d < 1000)
                    .await
                    .unwrap();
            }
        }
    }
    let total = USERS * rounds as usize;
    let bound = Duration::from_secs(60 + secs);
    let mut waiter = delivered.clone();
    tokio::time::timeout(bound, waiter.wait_for(|n| *n >= total))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{name}: only {} of {total} delivered; acts {:?}; order violations {:?}",
                *delivered.borrow(),
                chaos.acts.lock().unwrap(),
                chaos.violations.lock().unwrap()
            )
        })
        .unwrap();
    // A 2xx may have been lost on the way (reset, timeout): ferry then
    // retries that event. Wait for its committed cursor (every 100 ms) to
    // pass everything, bounded.
    let committed = tokio::time::timeout(Duration::from_secs(30), async {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            if store.cursors().unwrap().get(name) == Some(&(total as u64)) {
                return;
            }
        }
    })
    .await;
    assert!(
        committed.is_ok(),
        "{name}: the cursor never reached {total}: {:?}",
        store.cursors()
    );
    delivery.shutdown().await;

    let violations = chaos.violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "{name}: per-user order broken: {:?}",
        &violations[..violations.len().min(5)]
    );
    let acts = chaos.acts.lock().unwrap().clone();
    eprintln!("{name}: {total} events delivered in order; seed {seed}; acts {acts:?}");
    for act in [
        "500",
        "429",
        "slow 200",
        "timeout",
        "reset",
        "close",
        "truncated",
    ] {
        assert!(
            acts.get(act).is_some_and(|n| *n > 0),
            "{name}: the chaos never played {act}"
        );
    }
    assert_eq!(
        store.cursors().unwrap()[name],
        total as u64,
        "{name}: cursor at the end"
    );
    assert!(
        store.dead_letters(name).unwrap().is_empty(),
        "{name}: nothing dead-lettered"
    );
    let last = chaos.last_ok.lock().unwrap().clone();
    assert_eq!(last.len(), USERS);
    assert!(
        last.values().all(|s| *s == rounds as i64 - 1),
        "{name}: every user complete"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaotic_webhook_gets_everything_in_per_user_order_one_by_one() {
    chaos_run("single", "concurrency=8", env_or("FERRY_CHAOS_SEED", 11)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaotic_webhook_gets_everything_in_per_user_order_in_batches() {
    chaos_run(
        "batched",
        "concurrency=4\nbatch_size=10",
        env_or("FERRY_CHAOS_SEED", 12) + 1,
    )
    .await;
}
