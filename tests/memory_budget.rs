//! The `[memory]` budget through the real server: `/metrics` shows the
//! budget and its split, and the dedup filters it sizes stay within their
//! share while ids arrive.

mod common;

use common::events::{batch, track};
use common::{config, start_with, WEB_KEY};

/// The value of the first `/metrics` line that starts with `name `.
fn gauge(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} missing from {text}"))
        .parse::<f64>()
        .unwrap() as u64
}

#[tokio::test]
async fn a_small_budget_sizes_the_dedup_filters_and_metrics_show_its_split() {
    let mut c = config();
    c.dedup.enabled = true;
    c.memory.budget = 24 << 20;
    let expected = c.dedup_options();
    let server = start_with(c).await;
    // Some ids, so the filters are in use.
    let events: Vec<_> = (0..200)
        .map(|i| track().id(format!("m{i}")).user("u").json())
        .collect();
    let r = server
        .post("/v1/batch")
        .basic_auth(WEB_KEY, Some(""))
        .json(&batch(events))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = server.metrics().await;
    assert_eq!(gauge(&text, "ferry_memory_budget_bytes"), 24 << 20);
    let filters = gauge(
        &text,
        "ferry_memory_budget_part_bytes{part=\"dedup_filters\"}",
    );
    assert_eq!(filters, 6 << 20);
    assert_eq!(
        gauge(
            &text,
            "ferry_memory_budget_part_bytes{part=\"delivery_windows\"}"
        ),
        3 << 20
    );
    // The capacity is the budget's, below the default, and its filters fit.
    let capacity = gauge(&text, "ferry_dedup_capacity_ids");
    assert_eq!(capacity, expected.capacity);
    assert!(capacity < 10_000_000, "{capacity}");
    let bloom = gauge(&text, "ferry_dedup_bloom_bytes");
    assert!(bloom > 0 && bloom <= filters, "{bloom} > {filters}");
    assert!(gauge(&text, "ferry_process_resident_memory_bytes") > 0);
    server.stop().await;
}
