//! Delivery end to end: a real log, real redb state, and destinations that
//! are either scripted in-process sinks (paused time, for backoff math) or
//! the tests' webhook on 127.0.0.1 playing scripted status sequences.

mod common;

use common::events::{step, user_seq};
use common::webhook::{first_deliveries, flaky, Deliveries, Reply, Webhook};
use common::{delivery_env, DeliveryEnv};
use ferry::delivery::backoff::{ceiling, Outcome};
use ferry::delivery::config::DestinationConfig;
use ferry::delivery::event::LoggedEvent;
use ferry::delivery::sink::{SendFuture, Sink};
use ferry::delivery::{make_sink, Delivery};
use ferry::log::LogOptions;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn dest(toml_text: &str) -> DestinationConfig {
    let c: DestinationConfig = toml::from_str(toml_text).unwrap();
    c.validate().unwrap();
    c
}

fn env() -> DeliveryEnv {
    delivery_env(LogOptions {
        segment_bytes: 4096,
        min_free_bytes: 0,
        ..LogOptions::default()
    })
}

/// Checks per-user order over first deliveries and that every expected id came.
fn assert_complete_and_ordered(seen: &[String], users: &[String], per_user: u64) {
    let first = first_deliveries(seen);
    for u in users {
        let seqs: Vec<u64> = first
            .iter()
            .map(|id| user_seq(id))
            .filter(|(user, _)| user == u)
            .map(|(_, seq)| seq)
            .collect();
        assert_eq!(
            seqs,
            (0..per_user).collect::<Vec<_>>(),
            "user {u}: first deliveries out of order or missing"
        );
    }
}

// ---------- scripted sink, paused time ----------

/// A sink that answers from a script per messageId and records attempt times.
struct Scripted {
    script: Mutex<HashMap<String, VecDeque<Outcome>>>,
    attempts: Mutex<Vec<(String, tokio::time::Instant)>>,
    seen: Deliveries,
}

impl Scripted {
    /// A sink that plays `script` (outcomes per messageId, in turn; then
    /// success), and what it delivered.
    fn new(script: &[(&str, Vec<Outcome>)]) -> (Arc<Scripted>, Deliveries) {
        let seen = Deliveries::default();
        let script = script
            .iter()
            .map(|(id, outcomes)| (id.to_string(), VecDeque::from(outcomes.clone())))
            .collect();
        let sink = Arc::new(Scripted {
            script: Mutex::new(script),
            attempts: Mutex::default(),
            seen: seen.clone(),
        });
        (sink, seen)
    }
}

impl Sink for Scripted {
    fn send(&self, events: Vec<LoggedEvent>) -> SendFuture {
        let mut outcome = Outcome::Delivered;
        for e in &events {
            let id = e.meta.message_id.clone();
            self.attempts
                .lock()
                .unwrap()
                .push((id.clone(), tokio::time::Instant::now()));
            if let Some(o) = self
                .script
                .lock()
                .unwrap()
                .get_mut(&id)
                .and_then(|q| q.pop_front())
            {
                outcome = o;
            }
        }
        if outcome == Outcome::Delivered {
            self.seen
                .push(events.iter().map(|e| e.meta.message_id.clone()));
        }
        Box::pin(async move { outcome })
    }
}

fn retry(status: u16, after: Option<Duration>) -> Outcome {
    Outcome::Retry {
        status: Some(status),
        error: format!("HTTP {status}"),
        retry_after: after,
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_follows_full_jitter_and_retry_after_with_paused_time() {
    let e = env();
    let (sink, seen) = Scripted::new(&[
        (
            "a-0",
            vec![
                retry(500, None),
                retry(503, None),
                retry(502, None),
                retry(500, None),
            ],
        ),
        ("b-0", vec![retry(429, Some(Duration::from_secs(7)))]),
    ]);
    let cfg = dest(
        "name='s'\ntype='file'\npath='/unused'\nbatch_size=1\n[retry]\nbase='1s'\ncap='5m'\nmax_duration='4h'\n",
    );
    for (u, s) in [("a", 0), ("a", 1), ("b", 0)] {
        e.log.append(vec![step(u, s).logged()]).await.unwrap();
    }
    let delivery = Delivery::start(
        e.log.clone(),
        e.store.clone(),
        vec![(cfg.clone(), sink.clone())],
    )
    .unwrap();
    seen.wait_until(|s| s.len() == 3).await;
    delivery.shutdown().await;
    // a-1 only after a-0 finally succeeded.
    let order = seen.snapshot();
    assert!(
        order.iter().position(|x| x == "a-0") < order.iter().position(|x| x == "a-1"),
        "{order:?}"
    );
    let attempts = sink.attempts.lock().unwrap().clone();
    let times = |id: &str| {
        attempts
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, t)| *t)
            .collect::<Vec<_>>()
    };
    let a = times("a-0");
    assert_eq!(a.len(), 5);
    for (n, w) in a.windows(2).enumerate() {
        let gap = w[1] - w[0];
        assert!(
            gap <= ceiling(&cfg.retry, n as u32),
            "retry {n} waited {gap:?}, above min(cap, base*2^{n})"
        );
    }
    let b = times("b-0");
    assert_eq!(b.len(), 2);
    assert_eq!(
        b[1] - b[0],
        Duration::from_secs(7),
        "Retry-After is honoured exactly"
    );
    // The cursor passed everything.
    assert_eq!(e.store.cursors().unwrap()["s"], 3);
}

/// A file destination at its defaults writes many events per write (each
/// write fsynced before its events count as delivered): 3,000 events of 300
/// users take a handful of writes, and the file holds every event once, each
/// user's in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_destination_at_its_defaults_writes_batches() {
    let e = env();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("events.jsonl");
    let cfg = dest(&format!(
        "name='f'\ntype='file'\npath='{}'\n",
        path.display()
    ));
    for seq in 0..10 {
        let batch: Vec<Vec<u8>> = (0..300)
            .map(|u| step(&format!("u{u}"), seq).logged())
            .collect();
        e.log.append(batch).await.unwrap();
    }
    let metrics = Arc::new(ferry::metrics::Metrics::new());
    let delivery = Delivery::start_with(
        e.log.clone(),
        e.store.clone(),
        vec![(cfg.clone(), make_sink(&cfg).unwrap())],
        metrics.clone(),
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while e.store.cursors().unwrap().get("f") != Some(&3000) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered: {:?}",
            e.store.cursors()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    delivery.shutdown().await;
    let text = std::fs::read_to_string(&path).unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["messageId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 3000, "every event once");
    let users: Vec<String> = (0..300).map(|u| format!("u{u}")).collect();
    assert_complete_and_ordered(&ids, &users, 10);
    let rendered = metrics.render(&e.log.stats(), None);
    let writes: f64 = rendered
        .lines()
        .find(|l| l.starts_with("ferry_delivery_requests_sent_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    // One event per user per write: at least 10 writes (each user has 10
    // events), and far fewer than one per event.
    assert!(
        (10.0..=60.0).contains(&writes),
        "{writes} writes for 3000 events"
    );
}

/// A file destination batches by default: one request carries the heads of
/// many users; a failed request is retried after the backoff, each user's
/// later events waiting behind its head.
#[tokio::test(start_paused = true)]
async fn a_batched_request_carries_one_event_per_user_and_keeps_order() {
    let e = env();
    let (sink, seen) = Scripted::new(&[("a-0", vec![retry(500, None), retry(503, None)])]);
    let cfg = dest(
        "name='s'\ntype='file'\npath='/unused'\n[retry]\nbase='1s'\ncap='5m'\nmax_duration='4h'\n",
    );
    assert_eq!(
        cfg.batch_size(),
        1000,
        "a file destination batches by default"
    );
    for (u, s) in [("a", 0), ("a", 1), ("b", 0), ("a", 2)] {
        e.log.append(vec![step(u, s).logged()]).await.unwrap();
    }
    let delivery = Delivery::start(
        e.log.clone(),
        e.store.clone(),
        vec![(cfg.clone(), sink.clone())],
    )
    .unwrap();
    seen.wait_until(|s| s.len() == 4).await;
    delivery.shutdown().await;
    let order = seen.snapshot();
    let at = |id: &str| order.iter().position(|x| x == id).unwrap();
    assert!(at("a-0") < at("a-1") && at("a-1") < at("a-2"), "{order:?}");
    let attempts = sink.attempts.lock().unwrap().clone();
    let first: Vec<&str> = attempts.iter().take(2).map(|(i, _)| i.as_str()).collect();
    assert_eq!(first, ["a-0", "b-0"], "one request, one head per user");
    let tries = |id: &str| attempts.iter().filter(|(i, _)| i == id).count();
    assert_eq!(tries("a-0"), 3, "failed twice, then delivered");
    assert_eq!(tries("b-0"), 2, "failed with a-0's request, then delivered");
    assert_eq!(tries("a-1"), 1, "sent only once a-0 was delivered");
    assert_eq!(tries("a-2"), 1);
    assert_eq!(e.store.cursors().unwrap()["s"], 4);
}

#[tokio::test(start_paused = true)]
async fn giving_up_after_max_duration_dead_letters_and_moves_on() {
    let e = env();
    let (sink, seen) = Scripted::new(&[("a-0", vec![retry(500, None); 1000])]);
    let cfg = dest(
        "name='s'\ntype='file'\npath='/unused'\nbatch_size=1\n[retry]\nbase='1s'\ncap='1m'\nmax_duration='1h'\n",
    );
    e.log
        .append(vec![step("a", 0).logged(), step("a", 1).logged()])
        .await
        .unwrap();
    let delivery =
        Delivery::start(e.log.clone(), e.store.clone(), vec![(cfg, sink.clone())]).unwrap();
    seen.wait_within(Duration::from_secs(3 * 3600), |s| s == ["a-1"])
        .await;
    delivery.shutdown().await;
    let dead = e.store.dead_letters("s").unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id, "a-0");
    assert!(dead[0].attempts > 5);
    assert!(dead[0].last_attempt_ms - dead[0].first_attempt_ms <= 3_600_000);
    assert!(
        dead[0].last_error.contains("gave up"),
        "{}",
        dead[0].last_error
    );
    assert_eq!(e.store.cursors().unwrap()["s"], 2);
}

/// A segment destination retries transient failures for as long as they
/// last (about eight hours here, in paused time; a webhook gives up after
/// four by default): nothing becomes a dead letter.
#[tokio::test(start_paused = true)]
async fn a_segment_destination_never_gives_up_on_transient_failures() {
    let e = env();
    let seen = Deliveries::default();
    let mut script = HashMap::new();
    // 100 failures, mostly up to 10 minutes apart.
    script.insert(
        "a-0".to_string(),
        VecDeque::from(vec![retry(503, None); 100]),
    );
    let sink = Arc::new(Scripted {
        script: Mutex::new(script),
        attempts: Mutex::default(),
        seen: seen.clone(),
    });
    let cfg = dest("name='up'\ntype='segment'\nurl='http://127.0.0.1:9'\nwrite_key='k'\nbatch_size=1\n[retry]\nbase='1m'\ncap='10m'\n");
    assert_eq!(cfg.give_up_after(), None);
    e.log
        .append(vec![step("a", 0).logged(), step("a", 1).logged()])
        .await
        .unwrap();
    let delivery =
        Delivery::start(e.log.clone(), e.store.clone(), vec![(cfg, sink.clone())]).unwrap();
    let start = tokio::time::Instant::now();
    seen.wait_within(Duration::from_secs(10 * 24 * 3600), |s| s.len() == 2)
        .await;
    let waited = start.elapsed();
    delivery.shutdown().await;
    assert_eq!(seen.snapshot(), ["a-0", "a-1"]);
    assert!(waited > Duration::from_secs(4 * 3600), "{waited:?}");
    assert!(e.store.dead_letters("up").unwrap().is_empty());
    assert_eq!(e.store.cursors().unwrap()["up"], 2);
}

/// `rate_limit` spaces requests out (paused time): 300 events at 50 a
/// second take about five seconds after the first second's burst, and
/// requests stay batches.
#[tokio::test(start_paused = true)]
async fn the_rate_limit_holds_events_per_second() {
    let e = env();
    let seen = Deliveries::default();
    let sink = Arc::new(Scripted {
        script: Mutex::default(),
        attempts: Mutex::default(),
        seen: seen.clone(),
    });
    let cfg = dest(
        "name='up'\ntype='segment'\nurl='http://127.0.0.1:9'\nwrite_key='k'\nbatch_size=20\nrate_limit=50\n",
    );
    let batch: Vec<Vec<u8>> = (0..300)
        .map(|u| step(&format!("u{u}"), 0).logged())
        .collect();
    e.log.append(batch).await.unwrap();
    let delivery =
        Delivery::start(e.log.clone(), e.store.clone(), vec![(cfg, sink.clone())]).unwrap();
    seen.wait_within(Duration::from_secs(60), |s| s.len() == 300)
        .await;
    delivery.shutdown().await;
    let attempts = sink.attempts.lock().unwrap().clone();
    let t0 = attempts[0].1;
    let span = attempts.last().unwrap().1 - t0;
    assert!(
        span >= Duration::from_millis(4500) && span <= Duration::from_secs(6),
        "300 events at 50/s took {span:?}"
    );
    // In any second, at most the rate plus one batch, once the first
    // second's burst (a full bucket) is spent.
    for (_, at) in &attempts {
        let within = attempts
            .iter()
            .filter(|(_, t)| *t >= *at && *t < *at + Duration::from_secs(1))
            .count();
        let most = if *at >= t0 + Duration::from_secs(1) {
            50 + 20
        } else {
            50 + 50 + 20
        };
        assert!(within <= most, "{within} events within a second");
    }
    // Requests are batches, not single events.
    let mut per_instant: HashMap<tokio::time::Instant, usize> = HashMap::new();
    for (_, at) in &attempts {
        *per_instant.entry(*at).or_default() += 1;
    }
    assert!(per_instant.values().all(|n| *n >= 10), "{per_instant:?}");
}

// ---------- the webhook on 127.0.0.1 ----------

fn webhook(name: &str, url: &str, extra: &str) -> DestinationConfig {
    dest(&format!("name='{name}'\ntype='webhook'\nurl='{url}'\ntimeout='2s'\n{extra}\n[retry]\nbase='10ms'\ncap='100ms'\nmax_duration='1m'\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_retries_5xx_429_and_dead_letters_4xx_then_replays_in_order() {
    let e = env();
    let mock = Webhook::builder()
        .script("a-0", [Reply::status(500), Reply::status(503)])
        .script("b-0", [Reply::status(429).retry_after("1")])
        .script("c-0", [Reply::status(400)])
        .script("c-1", [Reply::status(422)])
        .start()
        .await;
    let cfg = webhook("hook", &mock.url(), "secret='s3cret'");
    for (u, s) in [("a", 0), ("a", 1), ("b", 0), ("c", 0), ("c", 1), ("c", 2)] {
        e.log.append(vec![step(u, s).logged()]).await.unwrap();
    }
    let sink = make_sink(&cfg).unwrap();
    let delivery = Delivery::start(
        e.log.clone(),
        e.store.clone(),
        vec![(cfg.clone(), sink.clone())],
    )
    .unwrap();
    mock.delivered.wait_until(|s| s.len() == 4).await;
    let seen = mock.delivered.snapshot();
    let pos = |id: &str| {
        seen.iter()
            .position(|x| x == id)
            .unwrap_or_else(|| panic!("{id} not delivered: {seen:?}"))
    };
    assert!(pos("a-0") < pos("a-1"), "{seen:?}");
    pos("b-0");
    pos("c-2");
    assert_eq!(mock.tries("a-0"), 3, "500, 503, then 200");
    assert_eq!(mock.tries("b-0"), 2, "429 with Retry-After, then 200");
    // c-0 and c-1 were dead-lettered at once (one attempt each), and c-2 still went out after them.
    assert_eq!(mock.tries("c-0"), 1);
    let dead = e.store.dead_letters("hook").unwrap();
    assert_eq!(
        dead.iter()
            .map(|d| d.message_id.as_str())
            .collect::<Vec<_>>(),
        vec!["c-0", "c-1"]
    );
    assert_eq!(dead[0].last_status, Some(400));
    assert!(dead[0].last_error.contains("status 400"));
    // Headers: stable User-Agent, messageId, HMAC signature.
    let first = mock.first_headers();
    assert!(first["user-agent"].to_str().unwrap().starts_with("ferry/"));
    assert!(first.contains_key("x-ferry-message-id"));
    assert!(first["x-ferry-signature"]
        .to_str()
        .unwrap()
        .starts_with("sha256="));
    // Replay: both come back, in original order.
    assert_eq!(e.store.request_replay("hook", None).unwrap(), 2);
    mock.delivered.wait_until(|s| s.len() == 6).await;
    let seen = mock.delivered.snapshot();
    assert_eq!(&seen[4..], ["c-0", "c-1"]);
    delivery.shutdown().await;
    assert!(e.store.dead_letters("hook").unwrap().is_empty());
    assert!(e.store.replay_queue("hook").unwrap().is_empty());
    assert_eq!(e.store.cursors().unwrap()["hook"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_order_holds_under_random_failures_in_both_modes() {
    for (name, extra) in [
        ("single", "concurrency=32"),
        ("batched", "concurrency=8\nbatch_size=20"),
    ] {
        let e = env();
        let mock = Webhook::builder().otherwise(flaky(30)).start().await;
        let cfg = webhook(name, &mock.url(), extra);
        let users: Vec<String> = (0..40).map(|i| format!("user{i}")).collect();
        let per_user = 15u64;
        for s in 0..per_user {
            // One request per round, users interleaved.
            let batch: Vec<Vec<u8>> = users.iter().map(|u| step(u, s).logged()).collect();
            e.log.append(batch).await.unwrap();
        }
        let delivery = Delivery::start(
            e.log.clone(),
            e.store.clone(),
            vec![(cfg.clone(), make_sink(&cfg).unwrap())],
        )
        .unwrap();
        let total = users.len() * per_user as usize;
        mock.delivered
            .wait_until(|s| first_deliveries(s).len() == total)
            .await;
        delivery.shutdown().await;
        assert_complete_and_ordered(&mock.delivered.snapshot(), &users, per_user);
        assert!(
            mock.retried_any(),
            "{name}: the mock should have failed some requests"
        );
        assert_eq!(e.store.cursors().unwrap()[name], total as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_destination_does_not_hold_up_another() {
    let e = env();
    // Every request to the black hole hangs (accepted, never answered).
    let dead_mock = Webhook::builder()
        .otherwise(|_, _| Some(Reply::hang()))
        .start()
        .await;
    let ok_mock = Webhook::start().await;
    let dead_cfg = dest(&format!(
        "name='dead'\ntype='webhook'\nurl='{}'\ntimeout='1h'\nconcurrency=4\n",
        dead_mock.url()
    ));
    let ok_cfg = webhook("ok", &ok_mock.url(), "concurrency=4");
    for s in 0..20 {
        e.log
            .append(
                (0..10)
                    .map(|u| step(&format!("u{u}"), s).logged())
                    .collect(),
            )
            .await
            .unwrap();
    }
    let delivery = Delivery::start(
        e.log.clone(),
        e.store.clone(),
        vec![
            (dead_cfg.clone(), make_sink(&dead_cfg).unwrap()),
            (ok_cfg.clone(), make_sink(&ok_cfg).unwrap()),
        ],
    )
    .unwrap();
    ok_mock.delivered.wait_until(|s| s.len() == 200).await;
    assert_complete_and_ordered(
        &ok_mock.delivered.snapshot(),
        &(0..10).map(|u| format!("u{u}")).collect::<Vec<_>>(),
        20,
    );
    // The black hole holds exactly its concurrency in flight and nothing more.
    assert_eq!(dead_mock.requests(), 4);
    drop(delivery);
}

#[tokio::test]
async fn retention_waits_for_every_committed_cursor() {
    let e = env();
    for s in 0..200 {
        e.log.append(vec![step("u", s).logged()]).await.unwrap();
    }
    let before = e.log.stats().segments;
    assert!(before > 3);
    let board = std::sync::Arc::new(ferry::delivery::CursorBoard::default());
    let names = vec!["a".to_string(), "b".to_string()];
    let retention = ferry::retention::Retention::new(e.log.clone(), board.clone(), names, None);
    board.set("a", 200);
    assert_eq!(retention.apply().unwrap(), 0, "b has not committed yet");
    board.set("b", 0);
    assert_eq!(retention.apply().unwrap(), 0, "b is at the start");
    board.set("b", 120);
    let deleted = retention.apply().unwrap();
    assert!(deleted > 0);
    assert!(e.log.start_offset() <= 120, "never past the lowest cursor");
    assert!(e.log.reader(120).is_ok());
}

/// A destination that cannot deliver while events keep arriving: its status
/// and `ferry_delivery_backlog_growth_events_per_second` say the backlog
/// grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_growth_rate_is_reported_while_a_destination_falls_behind() {
    let e = env();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = webhook("down", &format!("http://127.0.0.1:{port}/hook"), "");
    let metrics = Arc::new(ferry::metrics::Metrics::new());
    let delivery = Delivery::start_with(
        e.log.clone(),
        e.store.clone(),
        vec![(cfg.clone(), make_sink(&cfg).unwrap())],
        metrics.clone(),
    )
    .unwrap();
    let handle = delivery.destination("down").unwrap().clone();
    // Events arrive (bounded) until the status reports growth.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut seq = 0;
    while handle.status().backlog_growth_per_second <= 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no growth reported: {:?}",
            handle.status()
        );
        let batch: Vec<Vec<u8>> = (0..50)
            .map(|i| step(&format!("u{i}"), seq).logged())
            .collect();
        e.log.append(batch).await.unwrap();
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = metrics.render(&e.log.stats(), None);
    let line = text
        .lines()
        .find(|l| l.starts_with("ferry_delivery_backlog_growth_events_per_second{"))
        .expect("the growth gauge is exported");
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value > 0.0, "{line}");
    delivery.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_retried_until_the_destination_comes_up() {
    let e = env();
    // A port with nothing listening: connections are refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = webhook("late", &format!("http://127.0.0.1:{port}/hook"), "");
    e.log
        .append(vec![step("u", 0).logged(), step("u", 1).logged()])
        .await
        .unwrap();
    let delivery = Delivery::start(
        e.log.clone(),
        e.store.clone(),
        vec![(cfg.clone(), make_sink(&cfg).unwrap())],
    )
    .unwrap();
    let handle = delivery.destination("late").unwrap().clone();
    // Wait (bounded) until the refusal has been seen and is being retried.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !handle
        .status()
        .last_error
        .is_some_and(|e| e.contains("connection"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connection error seen: {:?}",
            handle.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        e.store.dead_letters("late").unwrap().is_empty(),
        "a refused connection is retried, not dead-lettered"
    );
    // The destination comes up on that port: both events arrive, in order.
    let mock = Webhook::builder().start_on(port).await;
    mock.delivered.wait_until(|s| s.len() == 2).await;
    assert_eq!(mock.delivered.snapshot(), ["u-0", "u-1"]);
    delivery.shutdown().await;
    assert_eq!(e.store.cursors().unwrap()["late"], 2);
}
