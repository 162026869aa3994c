//! Delivery into real brokers from a pre-filled log, beside a bare publish
//! loop with the same client, the same messages and the same number of
//! acknowledgements in flight, measured in the same run: NATS JetStream
//! (nats-server, file storage) and Kafka (Tansu, in-memory storage), both
//! on this machine. Runs alternate ferry / bare, ROUNDS times; medians.
//!
//! Run: `cargo bench --bench broker_publish` (env: FERRY_BENCH_EVENTS,
//! default 200000; FERRY_BENCH_ROUNDS, default 3; FERRY_BENCH_USERS, default
//! 1000; FERRY_BENCH_DEST, extra destination keys such as "batch_size = 100").
//! The brokers come from the venv tests/brokers/setup-venv.sh makes.

#[path = "../tests/common/brokers.rs"]
#[allow(dead_code)] // the tests use more of it
mod brokers;
mod common;

use async_nats::jetstream::message::PublishMessage;
use brokers::{tool, Broker, Kind};
use common::{env_or, median};
use ferry::delivery::broker::{broker_message_id, event_headers};
use ferry::delivery::config::DestinationConfig;
use ferry::delivery::event::LoggedEvent;
use ferry::delivery::{make_sink, Delivery};
use ferry::log::{Log, LogOptions};
use ferry::store::StateStore;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An SDK-shaped stored event of user `i % users`.
fn event(i: u64, users: u64) -> Vec<u8> {
    let json = format!(
        r#"{{"type":"track","event":"Product Viewed","userId":"user-{}","anonymousId":"anon-{i}","messageId":"m-{i}","timestamp":"2026-11-26T10:00:00.000Z","sentAt":"2026-11-26T10:00:00.100Z","receivedAt":"2026-11-26T10:00:00.200Z","properties":{{"sku":"SKU-{i}","price":19.99,"currency":"EUR","category":"shoes"}},"context":{{"library":{{"name":"analytics.js","version":"4.1.0"}},"page":{{"path":"/p/{i}","url":"https://shop.example/p/{i}"}},"userAgent":"Mozilla/5.0 (X11; Linux x86_64)"}},"_ferry":{{"source":"web"}}}}"#,
        i % users
    );
    json.into_bytes()
}

/// The destination's requests in flight × events per request, bounded by
/// the users (the order window sends one event per user at a time).
fn acks_in_flight(cfg: &DestinationConfig, users: u64) -> usize {
    (cfg.batch_size() * cfg.concurrency()).min(users as usize)
}

/// Delivers the whole pre-filled log to `cfg`; events/s.
fn ferry_run(rt: &tokio::runtime::Runtime, log: &Log, cfg: DestinationConfig, events: u64) -> f64 {
    let tmp = tempfile::tempdir_in("target").unwrap();
    let store = Arc::new(StateStore::open(&tmp.path().join("state.redb")).unwrap());
    rt.block_on(async {
        let start = Instant::now();
        let sink = make_sink(&cfg).unwrap();
        let delivery = Delivery::start(log.clone(), store, vec![(cfg.clone(), sink)]).unwrap();
        while delivery.board.get(&cfg.name).unwrap_or(0) < events {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let rate = events as f64 / start.elapsed().as_secs_f64();
        delivery.shutdown().await;
        rate
    })
}

/// Publishes `events` with async-nats, `in_flight` PubAcks outstanding; events/s.
fn nats_bare(
    rt: &tokio::runtime::Runtime,
    url: &str,
    subject: &str,
    events: &[LoggedEvent],
    in_flight: usize,
) -> f64 {
    rt.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(30))
            .max_ack_inflight(in_flight)
            .backpressure_on_inflight(true)
            .build(client);
        let start = Instant::now();
        let mut pending = FuturesUnordered::new();
        for e in events {
            if pending.len() >= in_flight {
                let ack: Result<_, _> = pending.next().await.unwrap();
                ack.unwrap();
            }
            let mut message = PublishMessage::build()
                .payload(e.body.clone())
                .message_id(broker_message_id(&e.meta));
            for (name, value) in event_headers(&e.meta) {
                message = message.header(name, value);
            }
            let ack = js.send_publish(subject.to_owned(), message).await.unwrap();
            pending.push(IntoFuture::into_future(ack));
        }
        while let Some(ack) = pending.next().await {
            ack.unwrap();
        }
        events.len() as f64 / start.elapsed().as_secs_f64()
    })
}

/// Produces `events` with rdkafka (ferry's producer settings), `in_flight`
/// delivery reports outstanding; events/s.
fn kafka_bare(
    rt: &tokio::runtime::Runtime,
    cfg: &DestinationConfig,
    topic: &str,
    events: &[LoggedEvent],
    in_flight: usize,
) -> f64 {
    let producer: FutureProducer = ferry::delivery::kafka::client_config(cfg).create().unwrap();
    rt.block_on(async {
        let start = Instant::now();
        let mut pending = FuturesUnordered::new();
        for e in events {
            if pending.len() >= in_flight {
                pending.next().await.unwrap();
            }
            let mut headers = OwnedHeaders::new_with_capacity(3);
            for (key, value) in event_headers(&e.meta) {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let record = FutureRecord::to(topic)
                .payload(&e.body[..])
                .key(e.meta.user.as_bytes())
                .headers(headers);
            let producer = &producer;
            pending.push(async move {
                producer
                    .send(record, Timeout::Never)
                    .await
                    .map(|_| ())
                    .unwrap()
            });
        }
        while pending.next().await.is_some() {}
        events.len() as f64 / start.elapsed().as_secs_f64()
    })
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let events = env_or("FERRY_BENCH_EVENTS", 200_000);
    let rounds = env_or("FERRY_BENCH_ROUNDS", 3);
    let users = env_or("FERRY_BENCH_USERS", 1000);
    // Extra destination keys, e.g. "batch_size = 100" (both brokers).
    let extra = std::env::var("FERRY_BENCH_DEST").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The pre-filled log, and the same events as delivery reads them.
    let tmp = tempfile::tempdir_in("target").unwrap();
    let log = Log::open(
        &tmp.path().join("log"),
        LogOptions {
            min_free_bytes: 0,
            ..LogOptions::default()
        },
    )
    .unwrap();
    let mut stored = Vec::with_capacity(events as usize);
    rt.block_on(async {
        let mut i = 0;
        while i < events {
            let n = 1000.min(events - i);
            let batch: Vec<Vec<u8>> = (i..i + n).map(|i| event(i, users)).collect();
            stored.extend(
                batch
                    .iter()
                    .enumerate()
                    .map(|(k, b)| LoggedEvent::read(i + k as u64, b.clone())),
            );
            log.append(batch).await.unwrap();
            i += n;
        }
    });
    let bytes: usize = stored.iter().map(|e| e.body.len()).sum();
    println!(
        "{events} events of {} bytes on average, {users} users, {rounds} rounds",
        bytes / events as usize
    );

    // NATS JetStream: a stream per run, so no run's ids are duplicates of another's.
    let nats = Broker::start_new(Kind::Nats);
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    let mut in_flight = 0;
    for r in 0..rounds {
        for who in ["ferry", "bare"] {
            let prefix = format!("{who}{r}");
            tool(&[
                "nats-stream",
                &nats.address(),
                &prefix.to_uppercase(),
                &format!("{prefix}.>"),
            ]);
            let cfg: DestinationConfig = toml::from_str(&format!(
                "name = \"bus\"\ntype = \"nats\"\nurl = \"{}\"\nsubject = \"{prefix}.{{source}}.{{type}}\"\ntimeout = \"30s\"\n{extra}\n",
                nats.address()
            ))
            .unwrap();
            in_flight = acks_in_flight(&cfg, users);
            if who == "ferry" {
                ours.push(ferry_run(&rt, &log, cfg, events));
            } else {
                bare.push(nats_bare(
                    &rt,
                    &nats.address(),
                    &format!("{prefix}.web.track"),
                    &stored,
                    in_flight,
                ));
            }
        }
    }
    report("nats (JetStream, file storage)", &ours, &bare, in_flight);
    drop(nats);

    // Kafka (Tansu): a topic of 4 partitions per run.
    let tansu = Broker::start_new(Kind::Tansu);
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        for who in ["ferry", "bare"] {
            let topic = format!("{who}-{r}");
            tool(&["kafka-topic", &tansu.address(), &topic, "4"]);
            let cfg: DestinationConfig = toml::from_str(&format!(
                "name = \"stream\"\ntype = \"kafka\"\nbrokers = [\"{}\"]\ntopic = \"{topic}\"\ntimeout = \"30s\"\n{extra}\n",
                tansu.address()
            ))
            .unwrap();
            in_flight = acks_in_flight(&cfg, users);
            if who == "ferry" {
                ours.push(ferry_run(&rt, &log, cfg, events));
            } else {
                bare.push(kafka_bare(&rt, &cfg, &topic, &stored, in_flight));
            }
        }
    }
    report("kafka (Tansu, memory storage)", &ours, &bare, in_flight);
}

fn report(what: &str, ours: &[f64], bare: &[f64], in_flight: usize) {
    let (o, b) = (median(ours.to_vec()), median(bare.to_vec()));
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "{what}, {in_flight} acks in flight: ferry {o:.0} events/s [{}], bare loop {b:.0} events/s [{}], ratio {:.2}",
        fmt(ours),
        fmt(bare),
        o / b
    );
}
